"""`pylime encrypt`, `decrypt` and `diagnose`: raw bundles, binary parts, Linphone envelopes."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from tests.cli.conftest import gruu, run_cli

ROOM = "sip:chatroom-cli@conference.example.org"


@pytest.fixture(scope="module", params=[("lime", "reference", "c25519"),
                                        ("reference", "lime", "c448")],
                ids=["lime-to-reference-c25519", "reference-to-lime-c448"])
def devices_dbs(request, keyserver, tmp_path_factory):
    """Alice (a.sqlite3) and Bob (b.sqlite3) registered, each on its backend and the curve."""
    sender_backend, receiver_backend, curve = request.param
    where = tmp_path_factory.mktemp("messages")
    alice, bob = gruu("alice"), gruu("bob")
    for dev, user, db, backend in ((alice, "alice", "a.sqlite3", sender_backend),
                                   (bob, "bob", "b.sqlite3", receiver_backend)):
        done = run_cli(["device", "create", dev, "--server", keyserver.url, "--db", db,
                        "--curve", curve, "--backend", backend, "--opk-batch", "4"],
                       cwd=where, env=keyserver.env(user))
        assert done.code == 0, done.err
    return where, alice, bob, sender_backend, receiver_backend


@pytest.fixture
def devices(devices_dbs, tmp_path, keyserver):
    """Fresh copies of both databases; returns (alice, bob, a_args, b_args, alice_env)."""
    where, alice, bob, a_backend, b_backend = devices_dbs
    for path in where.glob("*.sqlite3*"):
        shutil.copy(path, tmp_path / path.name)
    return (alice, bob, ["--db", "a.sqlite3", "--backend", a_backend],
            ["--db", "b.sqlite3", "--backend", b_backend], keyserver.env("alice"))


def test_raw_round_trip_through_files_and_stdio(cli, devices, tmp_path):
    """encrypt writes a message bundle; decrypt reads it from stdin and prints the plaintext."""
    alice, bob, a, b, env = devices
    (tmp_path / "plain.txt").write_bytes(b"Hello Bob\n")
    sent = cli("encrypt", *a, "--from", alice, "--to", "sip:bob@example.org", "-d", bob,
               "-i", "plain.txt", "-o", "msg.json", "--policy", "cipher-message", env=env)
    assert sent.code == 0 and sent.out == "", sent.err
    assert f"encrypted for {bob} (UNKNOWN)" in sent.err
    bundle = json.loads((tmp_path / "msg.json").read_text())
    assert set(bundle) == {"format", "sender", "recipient_user_id", "cipher_message",
                           "recipients"}
    assert bundle["format"] == "pylime-message/1" and bundle["cipher_message"]
    assert (tmp_path / "msg.json").stat().st_mode & 0o777 == 0o600
    read = cli("decrypt", *b, "--device", bob, stdin=(tmp_path / "msg.json").read_bytes())
    assert (read.code, read.stdout) == (0, b"Hello Bob\n"), read.err
    assert read.err == f"from {alice} (UNKNOWN)\n"


def test_raw_round_trip_in_json_and_binary_parts(cli, devices, tmp_path):
    """encrypt --json carries the bundle; decrypt takes --dr/--cipher files and answers JSON."""
    alice, bob, a, b, env = devices
    sent = cli("encrypt", *a, "--from", alice, "--to", "sip:bob@example.org", "-d", bob,
               "--json", stdin=b"\x00binary\xff", env=env)
    assert sent.code == 0, sent.err
    message = sent.json()["message"]
    (part,) = message["recipients"]
    assert set(part) == {"device_id", "status", "dr_message"} and part["status"] == "UNKNOWN"
    (tmp_path / "dr.bin").write_bytes(base64.b64decode(part["dr_message"]))
    (tmp_path / "cipher.bin").write_bytes(base64.b64decode(message["cipher_message"]))
    read = cli("decrypt", *b, "--device", bob, "--dr", "dr.bin", "--cipher", "cipher.bin",
               "--from", alice, "--to", "sip:bob@example.org", "--json")
    data = read.json()
    assert set(data) == {"ok", "device_id", "sender", "status", "text", "plaintext",
                         "message_id", "content_type"}
    assert (data["ok"], data["sender"], data["status"]) == (True, alice, "UNKNOWN")
    assert base64.b64decode(data["plaintext"]) == b"\x00binary\xff" and data["text"] is None


def test_envelope_round_trip_and_reply(cli, devices, keyserver):
    """--envelope: Linphone's multipart/encrypted body in a room, then Bob's reply."""
    alice, bob, a, b, env = devices
    sent = cli("encrypt", *a, "--envelope", "--from", alice, "--to", ROOM, "-d", bob,
               "-o", "env.msg", stdin="Salut Bob \u2728".encode(), env=env)
    assert sent.code == 0, sent.err
    read = cli("decrypt", *b, "--envelope", "--device", bob, "-i", "env.msg", "--json").json()
    assert (read["text"], read["sender"], read["content_type"]) == \
        ("Salut Bob \u2728", alice, "text/plain")
    assert read["message_id"]
    reply = cli("encrypt", *b, "--envelope", "--from", bob, "--to", ROOM, "-d", alice, "--json",
                stdin=b"Merci", env=keyserver.env("bob")).json()
    envelope = reply["envelope"]
    assert set(envelope) == {"headers", "body", "message_id", "recipients", "skipped"}
    assert envelope["headers"]["Content-Type"].startswith("multipart/encrypted")
    assert envelope["recipients"] == [{"device_id": alice, "status": "UNTRUSTED"}]
    wire = "".join(f"{k}: {v}\r\n" for k, v in envelope["headers"].items()).encode() + \
        b"\r\n" + base64.b64decode(envelope["body"])
    back = cli("decrypt", *a, "--envelope", "--device", alice, stdin=wire)
    assert (back.code, back.stdout) == (0, b"Merci"), back.err


def test_decrypt_failure_exits_4_and_diagnose_says_why(cli, devices):
    """A replayed message: decrypt exits 4 with a hint; diagnose names ReplayError."""
    alice, bob, a, b, env = devices
    cli("encrypt", *a, "--from", alice, "--to", "sip:bob@example.org", "-d", bob, "-o", "m.json",
        stdin=b"once", env=env)
    assert cli("diagnose", *b, "--device", bob, "-i", "m.json").code == 0
    assert cli("decrypt", *b, "--device", bob, "-i", "m.json").code == 0
    again = cli("decrypt", *b, "--device", bob, "-i", "m.json")
    assert again.code == 4 and "pylime diagnose" in again.err
    why = cli("diagnose", *b, "--device", bob, "-i", "m.json", "--json")
    assert why.code == 4
    assert why.json() == {"ok": True, "device_id": bob, "sender": alice, "decrypts": False,
                          "reason": "ReplayError",
                          "explanation": "The message key for this message was already used."}
    text = cli("diagnose", *b, "--device", bob, "-i", "m.json")
    assert text.out.startswith("ReplayError: ")


def test_diagnose_an_envelope_for_the_wrong_room(cli, devices):
    """diagnose --envelope with another room: BadTagError (the room is lime's associated data)."""
    alice, bob, a, b, env = devices
    cli("encrypt", *a, "--envelope", "--from", alice, "--to", ROOM, "-d", bob, "-o", "e.msg",
        stdin=b"hi", env=env)
    why = cli("diagnose", *b, "--envelope", "--device", bob, "-i", "e.msg",
              "--room", "sip:chatroom-other@conference.example.org", "--json")
    assert why.code == 4 and why.json()["reason"] == "BadTagError"
    assert cli("diagnose", *b, "--envelope", "--device", bob, "-i", "e.msg").code == 0


def test_a_message_without_a_part_for_the_device_exits_5(cli, devices):
    """Decrypting for a device the message does not address: exit 5."""
    alice, bob, a, b, env = devices
    cli("encrypt", *a, "--from", alice, "--to", "sip:bob@example.org", "-d", bob, "-o", "m.json",
        stdin=b"x", env=env)
    done = cli("decrypt", *b, "--device", gruu("bob"), "-i", "m.json", "--json")
    assert done.code == 5 and done.json()["ok"] is False


def test_garbage_input_is_a_usage_error(cli, devices, tmp_path):
    """An input that is no message bundle: exit 2, and the reason."""
    _, bob, _, b, _ = devices
    (tmp_path / "junk").write_text("not json")
    done = cli("decrypt", *b, "--device", bob, "-i", "junk")
    assert done.code == 2 and "message bundle" in done.err


def test_unsafe_peer_blocks_envelope_sending_with_exit_6(cli, devices):
    """After `peer unsafe`, an envelope to that device is refused (exit 6) unless allowed."""
    alice, bob, a, _, env = devices
    assert cli("peer", "unsafe", bob, *a).code == 0
    done = cli("encrypt", *a, "--envelope", "--from", alice, "--to", ROOM, "-d", bob,
               "-o", "e.msg", stdin=b"x", env=env)
    assert done.code == 6, done.err
    allowed = cli("encrypt", *a, "--envelope", "--allow-unsafe", "--from", alice, "--to", ROOM,
                  "-d", bob, "-o", "e.msg", stdin=b"x", env=env)
    assert allowed.code == 0, allowed.err


