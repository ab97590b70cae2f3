"""`pylime identity show` and `pylime peer ...`: keys, fingerprints, QR codes, trust."""

from __future__ import annotations

import base64
import shutil

import pytest

from tests.cli.conftest import gruu, run_cli


@pytest.fixture(scope="module")
def pair_dbs(keyserver, tmp_path_factory):
    """Alice (lime, a.sqlite3) has written to Bob (reference, b.sqlite3): Bob knows her key."""
    where = tmp_path_factory.mktemp("pair")
    alice, bob = gruu("alice"), gruu("bob")
    for dev, user, db, backend in ((alice, "alice", "a.sqlite3", "lime"),
                                   (bob, "bob", "b.sqlite3", "reference")):
        done = run_cli(["device", "create", dev, "--server", keyserver.url, "--db", db,
                        "--backend", backend, "--opk-batch", "2"], cwd=where,
                       env=keyserver.env(user))
        assert done.code == 0, done.err
    sent = run_cli(["encrypt", "--db", "a.sqlite3", "--from", alice, "--to",
                    "sip:bob@example.org", "-d", bob, "-o", "m.json"], cwd=where, stdin=b"hi",
                   env=keyserver.env("alice"))
    assert sent.code == 0, sent.err
    read = run_cli(["decrypt", "--db", "b.sqlite3", "--backend", "reference", "--device", bob,
                    "-i", "m.json"], cwd=where)
    assert read.code == 0 and read.stdout == b"hi", read.err
    return where, alice, bob


@pytest.fixture
def pair(pair_dbs, tmp_path):
    """A copy of the pair's two databases in the test's directory: (alice, bob)."""
    where, alice, bob = pair_dbs
    for path in where.glob("*.sqlite3*"):
        shutil.copy(path, tmp_path / path.name)
    return alice, bob


def test_identity_show_prints_key_fingerprint_and_qr(cli, pair):
    """Text: device, curve, key in hex, the fingerprint in three lines; --qr draws the code."""
    alice, _ = pair
    done = cli("identity", "show", alice, "--db", "a.sqlite3", "--qr")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == f"device        {alice}" and lines[1] == "curve         c25519"
    assert lines[3].startswith("identity key  ") and len(lines[3].split()[-1]) == 64
    assert "\u2588" in done.out and lines[-1].startswith("pylime:ik:1:1:")
    only = cli("identity", "show", alice, "--db", "a.sqlite3", "--fingerprint")
    assert only.code == 0 and len(only.out.split()) == 12


def test_identity_show_in_json_and_a_qr_file(cli, pair, tmp_path):
    """--json has the documented keys; --qr-file writes a PNG."""
    alice, _ = pair
    data = cli("identity", "show", alice, "--db", "a.sqlite3", "--json", "--qr-file",
               "alice.png").json()
    assert set(data) == {"ok", "device_id", "curve", "server", "identity_key", "fingerprint",
                         "qr_payload"}
    assert len(base64.b64decode(data["identity_key"])) == 32
    assert (tmp_path / "alice.png").read_bytes().startswith(b"\x89PNG")


def test_peer_status_and_trust_by_fingerprint(cli, pair):
    """Bob sees Alice UNTRUSTED, trusts her by the fingerprint read aloud, then TRUSTED."""
    alice, _ = pair
    status = cli("peer", "status", alice, "--db", "b.sqlite3", "--json").json()
    assert status["status"] == "UNTRUSTED" and status["curve"] == "c25519"
    digits = cli("identity", "show", alice, "--db", "a.sqlite3", "--fingerprint").out.strip()
    done = cli("peer", "trust", alice, "--db", "b.sqlite3", "--fingerprint", digits)
    assert (done.code, done.out) == (0, f"{alice}: UNTRUSTED -> TRUSTED\n"), done.err


def test_peer_trust_by_qr_payload_and_by_key(cli, pair):
    """Trust from a scanned QR payload, and from the key in base64, in JSON."""
    alice, _ = pair
    shown = cli("identity", "show", alice, "--db", "a.sqlite3", "--json").json()
    by_qr = cli("peer", "trust", "--qr-payload", shown["qr_payload"], "--db", "b.sqlite3",
                "--backend", "reference", "--json").json()
    assert by_qr == {"ok": True, "peer": alice, "status": "TRUSTED",
                     "previous_status": "UNTRUSTED"}
    by_key = cli("peer", "trust", alice, "--key", shown["identity_key"], "--db", "b.sqlite3",
                 "--json").json()
    assert by_key["status"] == "TRUSTED"


def test_a_wrong_fingerprint_or_key_is_refused_with_exit_6(cli, pair):
    """A fingerprint or key that is not the stored one is never trusted."""
    alice, _ = pair
    wrong = " ".join(["12345"] * 12)
    done = cli("peer", "trust", alice, "--db", "b.sqlite3", "--fingerprint", wrong, "--json")
    assert done.code == 6 and done.json()["error"]["exit_code"] == 6
    other = "11" * 32
    done = cli("peer", "trust", alice, "--db", "b.sqlite3", "--key", other)
    assert done.code == 6 and "not the one lime stores" in done.err
    assert cli("peer", "status", alice, "--db", "b.sqlite3", "--json").json()["status"] == \
        "UNTRUSTED"
    replaced = cli("peer", "trust", alice, "--db", "b.sqlite3", "--key", other, "--replace",
                   "--json")
    assert replaced.json()["status"] == "TRUSTED"


def test_peer_untrust_unsafe_forget(cli, pair):
    """untrust, unsafe and forget move the status as lime does, text and JSON."""
    alice, _ = pair
    assert cli("peer", "unsafe", alice, "--db", "b.sqlite3").out == \
        f"{alice}: UNTRUSTED -> UNSAFE\n"
    still = cli("peer", "untrust", alice, "--db", "b.sqlite3", "--json").json()
    assert still == {"ok": True, "peer": alice, "status": "UNSAFE", "previous_status": "UNSAFE"}
    gone = cli("peer", "forget", alice, "--db", "b.sqlite3", "--json").json()
    assert gone["status"] == "UNKNOWN"
    status = cli("peer", "status", alice, "--db", "b.sqlite3", "--json").json()
    assert status == {"ok": True, "peer": alice, "status": "UNKNOWN", "identity_key": None,
                      "curve": None}


def test_trust_needs_exactly_one_proof(cli, pair):
    """No proof, or two, is a usage error (exit 2)."""
    alice, _ = pair
    assert cli("peer", "trust", alice, "--db", "b.sqlite3").code == 2
    assert cli("peer", "trust", alice, "--db", "b.sqlite3", "--key", "00" * 32,
               "--fingerprint", "1").code == 2
