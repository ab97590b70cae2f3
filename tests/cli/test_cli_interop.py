"""`pylime interop`: the main job, green on both curves and both backends, in under a minute."""

from __future__ import annotations

import time

SCENARIOS = {"one-to-one", "multi-device", "group dr_message", "group cipher_message",
             "group optimize_upload_size", "group optimize_global_bandwidth", "out-of-order",
             "handoff", "stale-session", "prekeys", "trust", "mitm", "envelope", "auth"}


def test_interop_is_green_on_both_curves_and_backends(cli):
    """The full matrix on the embedded key server passes, and fast."""
    start = time.monotonic()
    done = cli("interop", "--curve", "c25519", "--curve", "c448", "--json", timeout=120)
    elapsed = time.monotonic() - start
    assert done.code == 0, done.out + done.err
    data = done.json()
    assert set(data) == {"ok", "server", "embedded", "seconds", "passed", "total", "backends",
                         "lime", "notes", "results"}
    assert data["backends"] == ["lime", "reference"] and data["notes"] == []
    assert data["lime"]["version"].startswith("5.1.")
    assert data["embedded"] is True and data["server"].startswith("https://127.0.0.1:")
    assert data["ok"] is True and data["passed"] == data["total"] == len(data["results"])
    rows = data["results"]
    assert all(set(r) == {"scenario", "curve", "backends", "ok", "seconds", "detail"}
               for r in rows)
    assert {r["scenario"] for r in rows} == SCENARIOS
    assert {r["curve"] for r in rows} == {"c25519", "c448"}
    pairs = {r["backends"] for r in rows if r["scenario"] == "one-to-one"}
    assert pairs == {"lime→lime", "lime→reference", "reference→lime", "reference→reference"}
    assert {r["backends"] for r in rows if r["scenario"] == "handoff"} == \
        {"lime⇒reference", "reference⇒lime"}
    assert elapsed < 60


PQ_SCENARIOS = {"one-to-one", "multi-device", "group dr_message", "group cipher_message",
                "group optimize_upload_size", "group optimize_global_bandwidth", "out-of-order",
                "stale-session", "prekeys", "auth"}


def test_interop_post_quantum_rows_run_on_the_reference(cli):
    """lime 5.4's three algorithms get their rows, reference↔reference (liblime 5.1.64 has
    none of them, so no lime row appears even where the binding is built)."""
    done = cli("interop", "--curve", "c25519k512", "--curve", "c25519mlk512", "--curve",
               "c448mlk1024", "--json", timeout=240)
    assert done.code == 0, done.out + done.err
    data = done.json()
    assert data["ok"] is True and data["passed"] == data["total"] == len(data["results"])
    rows = data["results"]
    assert {r["curve"] for r in rows} == {"c25519k512", "c25519mlk512", "c448mlk1024"}
    assert {r["scenario"] for r in rows} == PQ_SCENARIOS
    assert {r["backends"] for r in rows} <= {"reference", "reference→reference"}
    assert sum(r["scenario"].startswith("group") for r in rows) == 12


def test_interop_prints_one_table_and_keeps_databases_on_request(cli, tmp_path):
    """Text mode: one table with a row per check and the pass count; --keep keeps the DBs."""
    done = cli("interop", "--curve", "c25519", "--backend", "reference", "--keep", "kept",
               timeout=120)
    assert done.code == 0, done.out + done.err
    assert "pylime interop against embedded key server https://127.0.0.1:" in done.out
    assert "passed in" in done.out and "FAIL" not in done.out
    for scenario in ("one-to-one", "group dr_message", "handoff", "mitm", "envelope", "auth"):
        assert scenario in done.out
    kept = sorted(p.name for p in (tmp_path / "kept").glob("*.sqlite3"))
    assert "01-one-to-one-c25519-01-alice-reference.sqlite3" in kept


def test_interop_against_a_key_server_someone_else_runs(cli, keyserver):
    """--against URL with --ca-file and the account from the environment; no secret echoed."""
    env = {"PYLIME_USERNAME": "carol", "PYLIME_PASSWORD": keyserver.passwords["carol"]}
    done = cli("interop", "--against", keyserver.url, "--ca-file", keyserver.ca_file,
               "--curve", "c448", "--backend", "lime", "--json", env=env, timeout=120)
    assert done.code == 0, done.out + done.err
    data = done.json()
    assert (data["server"], data["embedded"], data["ok"]) == (keyserver.url, False, True)
    assert "auth" not in {r["scenario"] for r in data["results"]}
    assert keyserver.passwords["carol"] not in done.out + done.err


def test_interop_against_an_unreachable_server_exits_3(cli):
    """Nothing listens there: exit 3 before any row."""
    done = cli("interop", "--against", "https://127.0.0.1:9/lime", "--json", "--timeout", "2")
    assert done.code == 3
    assert done.json()["ok"] is False


def test_interop_with_wrong_credentials_exits_3(cli, keyserver):
    """A refused account stops the run before any row, with exit 3 and the reason."""
    env = {"PYLIME_USERNAME": "carol", "PYLIME_PASSWORD": "pw-wrong-5d1c"}
    done = cli("interop", "--against", keyserver.url, "--ca-file", keyserver.ca_file,
               "--curve", "c25519", "--backend", "reference", "--json", env=env, timeout=120)
    assert done.code == 3
    error = done.json()["error"]
    assert error["type"] == "KeyServerHTTPError" and "401" in error["message"]
    assert "pw-wrong-5d1c" not in done.out + done.err
