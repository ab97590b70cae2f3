"""The sans-IO pieces of pylime.sip: message layer, digest, conference state, store, IMDN."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylime.linphone.cpim import CpimMessage
from pylime.linphone.imdn import (
    ImdnStatus,
    build_imdn,
    build_imdn_cpim,
    is_imdn,
    parse_imdn,
    parse_imdns,
)
from pylime.sip.digest import Challenge, DigestCredentials, authorization
from pylime.sip.errors import MessageTooLargeError, SipParseError
from pylime.sip.message import (
    BadInput,
    NameAddr,
    StreamParser,
    make_response,
    parse_message,
    split_list,
)
from pylime.sip.rooms import Room, parse_conference_info, parse_resource_list
from pylime.sip.store import Store

GRUU = "sip:alice@localhost;gr=urn:uuid:d36d3606-12fc-0026-9b98-b84ae6b3fa3f"


def raw(body: bytes = b"hello", **extra: str) -> bytes:
    """A valid MESSAGE datagram."""
    lines = ["MESSAGE sip:bob@localhost SIP/2.0", "v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport",
             "f: <sip:alice@localhost>;tag=a1", "t: <sip:bob@localhost>", "i: call-1", "CSeq: 7 MESSAGE",
             *(f"{k}: {v}" for k, v in extra.items()), f"l: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_quoted_pub_gruu_keeps_its_semicolon_and_the_specs_their_comma() -> None:
    """``pub-gruu="sip:u@d;gr=…"`` is one parameter; a comma inside quotes does not split a list."""
    contact = (f'<sip:alice@127.0.0.1:5555;transport=udp>;+sip.instance="<urn:uuid:1>";'
               f'+org.linphone.specs="groupchat/1.1,lime";expires=3600;pub-gruu="{GRUU}"')
    addr = NameAddr.parse(contact)
    assert addr.param("pub-gruu") == GRUU and addr.param("+sip.instance") == "<urn:uuid:1>"
    assert addr.uri == "sip:alice@127.0.0.1:5555;transport=udp" and str(addr) == contact
    assert split_list(f"{contact}, <sip:x@y>") == [contact, "<sip:x@y>"]


def test_a_datagram_parses_with_compact_headers_and_a_trimmed_body() -> None:
    """Compact forms are expanded, the body is cut at Content-Length, serialising round-trips."""
    message = parse_message(raw(b"hello") + b"trailing")
    assert message.call_id == "call-1" and message.cseq.number == 7 and message.body == b"hello"
    assert message.from_.tag == "a1" and message.vias[0].branch == "z9hG4bK1"
    assert parse_message(bytes(message)).headers == message.headers


@pytest.mark.parametrize(("data", "answerable"), [
    (b"garbage\r\n\r\n", False),
    (raw().replace(b"CSeq: 7 MESSAGE", b"CSeq: 7 INVITE"), True),
    (raw().replace(b"i: call-1\r\n", b""), False),
    (raw(b"hello").replace(b"l: 5", b"l: 50"), True),
    (raw().replace(b"CSeq: 7 MESSAGE", b"CSeq 7 MESSAGE"), False),
    (raw().replace(b"t: <sip:bob@localhost>", b"t: <sip:bob@localhost>\r\nX-Bad header"), True),
])
def test_malformed_heads_are_refused_with_what_an_answer_needs(data: bytes, answerable: bool) -> None:
    """A SipParseError carries the head when Via, From, To, Call-ID and CSeq still parse (for 400)."""
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert (getattr(info.value, "head", None) is not None) is answerable


def test_an_oversized_body_is_too_large() -> None:
    """A body beyond max_body raises MessageTooLargeError (answered 413)."""
    with pytest.raises(MessageTooLargeError):
        parse_message(raw(b"x" * 100), max_body=10)


def test_a_stream_is_cut_by_content_length_across_any_chunking() -> None:
    """Two messages and a keep-alive in odd chunks give the two messages and a ping."""
    data = raw(b"one") + b"\r\n\r\n" + raw(b"two")
    parser = StreamParser()
    items = [item for i in range(0, len(data), 7) for item in parser.feed(data[i:i + 7])]
    assert [getattr(m, "body", m) for m in items] == [b"one", b"ping", b"two"]


def test_an_oversized_body_on_a_stream_is_skipped_and_the_stream_stays_in_step() -> None:
    """413-able BadInput for the big one, then the next message parses."""
    parser = StreamParser(max_body=10)
    items = parser.feed(raw(b"x" * 50) + raw(b"ok"))
    assert isinstance(items[0], BadInput) and isinstance(items[0].error, MessageTooLargeError)
    assert items[0].head is not None and items[1].body == b"ok"  # type: ignore[union-attr]
    assert not parser.broken


def test_a_stream_without_content_length_is_broken() -> None:
    """Content-Length is mandatory on streams: the connection cannot be resynchronised."""
    parser = StreamParser()
    items = parser.feed(raw().replace(b"l: 5\r\n", b""))
    assert isinstance(items[0], BadInput) and parser.broken


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_a_parse_error(data: bytes) -> None:
    """parse_message and StreamParser refuse garbage only with SipParseError / BadInput."""
    try:
        parse_message(data)
    except SipParseError:
        pass
    StreamParser().feed(data)


def test_a_response_copies_the_transaction_headers_and_tags_to() -> None:
    """make_response keeps Via, From, Call-ID, CSeq and adds a To tag."""
    request = parse_message(raw())
    response = make_response(request, 488, to_tag="t9")
    assert response.status == 488 and response.reason == "Not Acceptable Here"
    assert response.to.tag == "t9" and response.call_id == "call-1" and response.vias == request.vias


def test_digest_answers_match_the_rfc_vectors() -> None:
    """RFC 2617 §3.5 (MD5, qop=auth) and RFC 7616 §3.9.1 (SHA-256) give the published responses."""
    md5 = Challenge.parse('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                          'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    answer = authorization(md5, DigestCredentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html",
                           cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in answer and "nc=00000001" in answer
    sha = Challenge.parse('Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
                          'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                          'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    answer = authorization(sha, DigestCredentials("Mufasa", "Circle of Life"), "GET", "/dir/index.html",
                           cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in answer


def test_digest_refuses_what_it_cannot_answer_and_hides_the_password() -> None:
    """auth-int only, an unknown algorithm or scheme: SipParseError; repr shows no password."""
    with pytest.raises(SipParseError):
        authorization(Challenge.parse('Digest realm="r", nonce="n", qop="auth-int"'),
                      DigestCredentials("u", "p"), "REGISTER", "sip:d")
    with pytest.raises(SipParseError):
        authorization(Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-512-256'),
                      DigestCredentials("u", "p"), "REGISTER", "sip:d")
    with pytest.raises(SipParseError):
        Challenge.parse('Basic realm="r"')
    assert "secret" not in repr(DigestCredentials("u", "secret"))


def _info(state: str, version: int, users: str) -> bytes:
    return (f'<?xml version="1.0"?><conference-info xmlns="urn:ietf:params:xml:ns:conference-info" '
            f'entity="sip:chatroom-x@localhost" state="{state}" version="{version}">'
            f'<conference-description><subject>S</subject></conference-description>'
            f'<users>{users}</users></conference-info>').encode()


def _user(aor: str, state: str, *endpoints: tuple[str, str]) -> str:
    eps = "".join(f'<endpoint entity="{e}" state="{s}"/>' for e, s in endpoints)
    return f'<user entity="{aor}" state="{state}">{eps}</user>'


def test_conference_notifications_build_the_room_device_list() -> None:
    """Full state, then partial additions and deletions; a stale partial one is ignored."""
    bob = "sip:bob@localhost;gr=urn:uuid:00000000-0000-4000-8000-000000000002"
    bob2 = "sip:bob@localhost;gr=urn:uuid:00000000-0000-4000-8000-000000000003"
    room = Room("sip:chatroom-x@localhost;gr=urn:uuid:5e4ee4e4-0000-4000-8000-000000000001")
    assert room.apply(parse_conference_info(_info("full", 1, _user("sip:alice@localhost", "full", (GRUU, "full")))))
    assert room.subject == "S" and room.all_devices() == [GRUU] and room.known
    assert room.apply(parse_conference_info(_info("partial", 2, _user("sip:bob@localhost", "full", (bob, "full"),
                                                                        (bob2, "full")))))
    assert room.recipients(GRUU) == [bob, bob2]
    assert not room.apply(parse_conference_info(_info("partial", 2, _user("sip:bob@localhost", "deleted"))))
    assert room.apply(parse_conference_info(_info("partial", 3, _user("sip:bob@localhost", "partial",
                                                                        (bob2, "deleted")))))
    assert room.all_devices() == [GRUU, bob] and room.has_device(bob) and not room.has_device(bob2)
    assert Room.from_json(room.to_json()) == room


def test_conference_and_resource_lists_refuse_doctypes_and_garbage() -> None:
    """A DOCTYPE (entity expansion) or broken XML is a SipParseError; entries are read in order."""
    with pytest.raises(SipParseError):
        parse_conference_info(b'<!DOCTYPE x [<!ENTITY a "b">]><conference-info/>')
    with pytest.raises(SipParseError):
        parse_resource_list(b"<not-closed>")
    body = (b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>'
            b'<entry uri="sip:a@d"/><entry uri="sip:b@d"/></list></resource-lists>')
    assert parse_resource_list(body) == ["sip:a@d", "sip:b@d"]


def test_the_store_keeps_the_instance_and_hands_each_entry_over_once(tmp_path: Path) -> None:
    """Owner-only file; instance kept; an entry is pending until handed, then wiped; dedupe by id."""
    path = tmp_path / "agent.sqlite3"
    store = Store(path)
    instance = store.instance()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    seq = store.record("c|1|t", "sip:room@d", 200, sender=GRUU, message_id="m1", kind="message", cpim=b"x")
    store.record("c|1|t", "sip:room@d", 488)  # the same transaction again: ignored
    assert store.answer_for("c|1|t") == 200 and store.seen(GRUU, "m1") and not store.seen(GRUU, "m2")
    assert [e.seq for e in store.pending()] == [seq]
    store.mark_handed(seq)
    store.close()
    again = Store(path)
    assert again.instance() == instance and again.pending() == []
    assert again.entry(seq) is not None and again.entry(seq).cpim == b""  # type: ignore[union-attr]
    again.close()


def test_imdns_round_trip_single_failed_and_aggregated() -> None:
    """Our IMDNs parse back; 5.1.65's failed-with-488 form and its multipart aggregate parse too."""
    doc = build_imdn("m1", ImdnStatus.DISPLAYED)
    assert parse_imdn(doc).status is ImdnStatus.DISPLAYED and b"<display-notification>" in doc
    cpim = build_imdn_cpim(GRUU, "sip:room@d", "m2", ImdnStatus.FAILED, reason_code=488, reason="Not acceptable here")
    assert is_imdn(cpim) and cpim.content_header("Content-Disposition") == "notification"
    failed = parse_imdn(cpim.content)
    assert (failed.status, failed.reason_code) == (ImdnStatus.FAILED, 488)
    b = "-" * 29 + "14737809831466499882746641449"
    parts = "".join(f"--{b}\r\nContent-Type: message/imdn+xml\r\n\r\n"
                    f"{build_imdn(i, ImdnStatus.DELIVERED).decode()}\r\n" for i in ("a", "b"))
    aggregate = CpimMessage((), (("Content-Type", f"multipart/mixed;boundary={b}"),),
                            (parts + f"--{b}--\r\n").encode())
    assert is_imdn(aggregate) and [i.message_id for i in parse_imdns(aggregate)] == ["a", "b"]
