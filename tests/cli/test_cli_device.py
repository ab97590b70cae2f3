"""`pylime device ...` as a user runs it: create, list, update, set-server, delete."""

from __future__ import annotations

import pytest

from tests.cli.conftest import REALM, gruu

BACKENDS = [("lime", "c25519"), ("reference", "c448")]


@pytest.mark.parametrize(("backend", "curve"), BACKENDS)
def test_device_lifecycle_in_text(cli, keyserver, backend, curve):
    """create, list, update, set-server and delete print what they did and exit 0."""
    dev = gruu("alice")
    env = keyserver.env("alice")
    common = ["--db", "a.sqlite3", "--backend", backend]
    done = cli("device", "create", dev, "--curve", curve, "--server", keyserver.url,
               "--opk-batch", "5", *common, env=env)
    assert done.code == 0, done.err
    assert done.out == f"created {dev} ({curve}) on {keyserver.url}\n"
    listed = cli("device", "list", *common)
    assert listed.code == 0 and dev in listed.out and curve in listed.out and "yes" in listed.out
    updated = cli("device", "update", "--opk-low-limit", "10", *common, env=env)
    assert (updated.code, updated.out) == (0, "updated 1 device(s)\n"), updated.err
    moved = cli("device", "set-server", dev, "https://keys.other.org/lime", *common)
    assert moved.code == 0 and "https://keys.other.org/lime" in moved.out
    back = cli("device", "set-server", dev, keyserver.url, *common)
    assert back.code == 0
    deleted = cli("device", "delete", dev, *common, env=env)
    assert (deleted.code, deleted.out) == (0, f"deleted {dev}\n"), deleted.err
    assert cli("device", "list", *common).out.startswith("no device in")


@pytest.mark.parametrize(("backend", "curve"), BACKENDS)
def test_device_commands_in_json(cli, keyserver, backend, curve):
    """--json gives one object per command with the documented keys."""
    dev = gruu("bob")
    env = keyserver.env("bob")
    common = ["--db", "b.sqlite3", "--backend", backend, "--json"]
    created = cli("device", "create", dev, "--curve", curve, "--server", keyserver.url,
                  "--opk-batch", "3", *common, env=env).json()
    assert created["ok"] is True
    device = created["device"]
    assert set(device) == {"device_id", "curve", "server", "active", "identity_key",
                           "fingerprint"}
    assert (device["device_id"], device["curve"], device["active"]) == (dev, curve, True)
    assert len(device["fingerprint"].split()) == 12
    listed = cli("device", "list", *common).json()
    assert listed == {"ok": True, "db": "b.sqlite3", "devices": [
        {"device_id": dev, "curve": curve, "server": keyserver.url, "active": True}]}
    assert cli("device", "update", *common, env=env).json() == {"ok": True, "updated": [dev]}
    moved = cli("device", "set-server", dev, "https://k.example.org/x", *common).json()
    assert moved == {"ok": True, "device_id": dev, "server": "https://k.example.org/x",
                     "previous_server": keyserver.url, "curve": curve}
    cli("device", "set-server", dev, keyserver.url, *common)
    assert cli("device", "delete", dev, *common, env=env).json() == {"ok": True, "deleted": dev}


def test_device_create_takes_the_username_from_the_device_id(cli, keyserver):
    """With only PYLIME_PASSWORD set, the account is the device id's user part."""
    env = {"PYLIME_PASSWORD": keyserver.passwords["carol"], "PYLIME_CA_FILE": keyserver.ca_file}
    done = cli("device", "create", gruu("carol"), "--server", keyserver.url, "--opk-batch", "1",
               "--backend", "reference", env=env)
    assert done.code == 0, done.err


def test_device_create_reads_a_credentials_file(cli, keyserver, tmp_path):
    """--credentials FILE gives the account; the file is never echoed."""
    cred = tmp_path / "account"
    cred.write_text(f"# key server account\nusername = carol\n"
                    f"password: {keyserver.passwords['carol']}\n")
    cred.chmod(0o600)
    done = cli("device", "create", gruu("carol"), "--server", keyserver.url, "--credentials",
               str(cred), "--ca-file", keyserver.ca_file, "--backend", "reference",
               "--opk-batch", "1")
    assert done.code == 0, done.err
    assert keyserver.passwords["carol"] not in done.out + done.err
    assert "warning" not in done.err


def test_a_credentials_file_readable_by_others_draws_a_warning(cli, keyserver, tmp_path):
    """A group- or world-readable credentials file works but is reported."""
    cred = tmp_path / "account"
    cred.write_text(f"username=carol\npassword={keyserver.passwords['carol']}\n")
    cred.chmod(0o644)
    done = cli("device", "create", gruu("carol"), "--server", keyserver.url, "--credentials",
               str(cred), "--ca-file", keyserver.ca_file, "--backend", "reference",
               "--opk-batch", "1")
    assert done.code == 0 and "readable by others" in done.err


def test_device_create_needs_a_server(cli):
    """Without --server (or PYLIME_SERVER) create is a usage error (exit 2)."""
    done = cli("device", "create", gruu("alice"), "--json")
    assert done.code == 2
    assert done.json()["error"]["exit_code"] == 2


def test_device_list_of_a_missing_database_exits_5(cli):
    """No such database: exit 5, in text and in JSON."""
    assert cli("device", "list", "--db", "missing.sqlite3").code == 5
    done = cli("device", "list", "--db", "missing.sqlite3", "--json")
    assert done.code == 5 and done.json()["ok"] is False


def test_device_list_works_on_a_database_in_use_by_another_backend(cli, keyserver):
    """list reads lime_LocalUsers read-only, whichever backend wrote it."""
    one, two = gruu("alice"), gruu("alice")
    env = keyserver.env("alice")
    for dev, backend in ((one, "lime"), (two, "reference")):
        assert cli("device", "create", dev, "--server", keyserver.url, "--backend", backend,
                   "--opk-batch", "1", "--db", "shared.sqlite3", env=env).code == 0
    listed = cli("device", "list", "--db", "shared.sqlite3", "--json").json()
    assert [d["device_id"] for d in listed["devices"]] == [one, two]
    assert REALM in one
