"""Both backends react the same way to every kind of key-server answer (lime-wire.md §4.5)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from pylime import errors
from pylime.keyserver import KeyServer
from pylime.types import Curve, PeerStatus

from .conftest import FACTORIES, URL

ME = "sip:me@example.org;gr=urn:uuid:1"
PEER = "sip:peer@example.org;gr=urn:uuid:2"

Answer = Callable[[bytes], tuple[int, bytes]]


class Canned:
    """Answers one kind of request with a canned answer, the rest through a real server."""

    def __init__(self, server: KeyServer, msg_type: int, answer: Answer) -> None:
        self.server, self.msg_type, self.answer = server, msg_type, answer

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        if body[1] == self.msg_type:
            return self.answer(body)
        return self.server.post(url, sender, body)


def _raise(_: bytes) -> tuple[int, bytes]:
    raise ConnectionError("down")


ANSWERS: dict[str, Answer] = {
    "http-500": lambda b: (500, b""),
    "empty": lambda b: (200, b""),
    "bad-version": lambda b: (200, b"\x02" + b[1:3]),
    "other-curve": lambda b: (200, b[:2] + bytes([3 - b[2]])),
    "error-user-not-found": lambda b: (200, bytes([1, 0xFF, b[2], 6]) + b"nope"),
    "error-without-code": lambda b: (200, bytes([1, 0xFF, b[2]])),
    "unknown-type": lambda b: (200, bytes([1, 0x42, b[2]])),
    "type-getPeerBundle": lambda b: (200, bytes([1, 5, b[2]])),
    "ack-of-deleteUser": lambda b: (200, bytes([1, 2, b[2]])),
    "transport-raises": _raise,
}


def _outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except errors.LimeError as exc:
        return type(exc).__name__
    return "ok"


@pytest.mark.parametrize("name", list(ANSWERS))
def test_create_user_reacts_like_liblime(tmp_path: pathlib.Path, curve: Curve, name: str) -> None:
    """create_user raises the same error class and leaves the same user state on both."""
    seen = {}
    for kind, factory in FACTORIES.items():
        with KeyServer() as server, factory(
            tmp_path / f"{kind}.sqlite3", transport=Canned(server, 9, ANSWERS[name])
        ) as m:
            seen[kind] = (_outcome(lambda: m.create_user(ME, URL, curve)), m.is_user(ME))
    assert seen["ref"] == seen["lime"]


@pytest.mark.parametrize("name", ["unknown-type", "type-getPeerBundle", "ack-of-deleteUser"])
def test_an_answer_of_the_wrong_type_fails_the_operation_cleanly(
        tmp_path: pathlib.Path, curve: Curve, name: str) -> None:
    """pylime refuses what liblime would take as success: the user is not left half-created."""
    for kind, factory in FACTORIES.items():
        with KeyServer() as server, factory(
            tmp_path / f"{kind}.sqlite3", transport=Canned(server, 9, ANSWERS[name])
        ) as m:
            with pytest.raises(errors.KeyServerError):
                m.create_user(ME, URL, curve)
            assert not m.is_user(ME)
            m._transport = server  # the server behaves again: the same manager registers
            m.create_user(ME, URL, curve)
            assert m.is_user(ME) and server.opk_count(ME) == 100


@pytest.mark.parametrize("name", list(ANSWERS))
def test_encrypt_reacts_like_liblime(tmp_path: pathlib.Path, curve: Curve, name: str) -> None:
    """encrypt raises the same error class when the bundle request gets a bad answer."""
    seen = {}
    for kind, factory in FACTORIES.items():
        with KeyServer() as server:
            with FACTORIES["lime"](tmp_path / f"peer-{kind}.sqlite3", transport=server) as peer:
                peer.create_user(PEER, URL, curve)
            with factory(tmp_path / f"{kind}.sqlite3", transport=Canned(server, 5, ANSWERS[name])) as m:
                m.create_user(ME, URL, curve)
                seen[kind] = (_outcome(lambda: m.encrypt(ME, "sip:peer@example.org", [PEER], b"x")),
                              m.peer_status(PEER))
    assert seen["ref"] == seen["lime"]
    assert seen["lime"][1] == PeerStatus.UNKNOWN


@pytest.mark.parametrize("name", list(ANSWERS))
def test_update_reacts_like_liblime(tmp_path: pathlib.Path, curve: Curve, name: str) -> None:
    """update raises (or not) alike when getSelfOPks gets a bad answer."""
    seen = {}
    for kind, factory in FACTORIES.items():
        with KeyServer() as server, factory(
            tmp_path / f"{kind}.sqlite3", transport=Canned(server, 7, ANSWERS[name])
        ) as m:
            m.create_user(ME, URL, curve, opk_batch=5)
            seen[kind] = (_outcome(lambda: m.update(opk_low_limit=5, opk_batch=2)),
                          server.opk_count(ME))
    assert seen["ref"] == seen["lime"]


class Junk:
    """The real server's answers, with bytes appended to those of one request type."""

    def __init__(self, server: KeyServer, msg_type: int) -> None:
        self.server, self.msg_type = server, msg_type

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        code, answer = self.server.post(url, sender, body)
        return code, answer + (b"\0junk" if body[1] == self.msg_type else b"")


@pytest.mark.parametrize("msg_type", [9, 5, 7], ids=["registerUser", "getPeerBundle",
                                                     "getSelfOPks"])
def test_trailing_bytes_are_refused_alike_and_lose_nothing(
        tmp_path: pathlib.Path, curve: Curve, msg_type: int) -> None:
    """An answer with bytes after the message fails the operation as lost, on both backends;
    with the server behaving again the same manager completes it."""
    for kind, factory in FACTORIES.items():
        with KeyServer() as server:
            with FACTORIES["lime"](tmp_path / f"peer-{kind}.sqlite3", transport=server) as peer:
                peer.create_user(PEER, URL, curve)
            with factory(tmp_path / f"{kind}.sqlite3", transport=Junk(server, msg_type)) as m:
                def operation() -> object:
                    if msg_type == 9:
                        return m.create_user(ME, URL, curve)
                    if msg_type == 5:
                        return m.encrypt(ME, "sip:peer@example.org", [PEER], b"x")
                    return m.update(opk_low_limit=200, opk_batch=2)

                if msg_type != 9:
                    m._transport = server
                    m.create_user(ME, URL, curve, opk_batch=5)
                    m._transport = Junk(server, msg_type)
                with pytest.raises(errors.KeyServerError, match="after its answer") as caught:
                    operation()
                assert caught.value.answer_lost, kind
                assert m.peer_status(PEER) is PeerStatus.UNKNOWN
                m._transport = server
                operation()
                assert m.is_user(ME)
