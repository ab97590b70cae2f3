"""Choosing a backend: "auto" takes liblime's binding where it is built, else the reference.

Where the binding is absent (simulated in a child process that cannot import pylime._lime),
``import pylime`` works, the binding's classes raise a typed error naming what to install, and
everything else runs on the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import pylime
from pylime import backend, errors
from pylime.keyserver import KeyServer
from pylime.reference import ReferenceManager
from tests.conftest import requires_lime

# Prepended to a child's code: pylime._lime cannot be imported, as where it was never built.
HIDE_BINDING = textwrap.dedent("""\
    import importlib.abc, sys
    class _NoBinding(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pylime._lime":
                raise ModuleNotFoundError("No module named 'pylime._lime'", name=name)
            return None
    sys.meta_path.insert(0, _NoBinding())
""")


def _without_binding(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE_BINDING + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120, check=False)


@requires_lime
def test_auto_takes_the_binding_where_it_is_built(tmp_path):
    """open_manager's default is liblime's Manager here; "reference" gives the reference."""
    from pylime.manager import Manager

    with KeyServer() as server:
        with pylime.open_manager(tmp_path / "a.sqlite3", server) as m:
            assert type(m) is Manager and m.durability == "wal"
        with pylime.open_manager(tmp_path / "b.sqlite3", server, backend="reference",
                                 durability="full") as m:
            assert type(m) is ReferenceManager and m.durability == "full"
    assert pylime.available_backends() == ("lime", "reference")
    library = pylime.lime_library()
    assert library is not None and library.version.startswith("5.1.")
    assert "liblime" in library.path


def test_an_unknown_backend_is_a_value_error(tmp_path):
    """Only "auto", "lime" and "reference" are backends."""
    with KeyServer() as server, pytest.raises(ValueError, match="'auto', 'lime' or 'reference'"):
        pylime.open_manager(tmp_path / "a.sqlite3", server, backend="liblime")  # type: ignore[arg-type]


def test_without_the_binding_auto_is_the_reference_and_lime_is_a_typed_error():
    """Where _lime is absent: auto gives the reference; "lime" raises BackendUnavailableError
    (a LimeError and an ImportError) naming the packages and the pure-Python backend."""
    done = _without_binding("""
        import tempfile, pathlib, pylime
        from pylime.keyserver import KeyServer
        d = pathlib.Path(tempfile.mkdtemp())
        assert pylime.available_backends() == ("reference",)
        assert pylime.lime_library() is None
        with KeyServer() as server:
            with pylime.open_manager(d / "a.sqlite3", server) as m:
                print(type(m).__name__)
            try:
                pylime.open_manager(d / "b.sqlite3", server, backend="lime")
            except pylime.BackendUnavailableError as exc:
                assert isinstance(exc, ImportError) and isinstance(exc, pylime.LimeError)
                print(exc)
    """)
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.split("\n", 1)
    assert first == "ReferenceManager"
    assert "not built in this installation" in message
    assert "liblime-dev libsoci-sqlite3-4.0 pkg-config" in message
    assert 'backend="reference"' in message


def test_without_the_binding_the_binding_classes_are_stand_ins_that_raise():
    """pylime.Manager and AsyncManager stay importable names; constructing one raises, and
    importing pylime.manager directly raises the same typed error."""
    done = _without_binding("""
        import pylime
        from pylime import *
        for cls in (pylime.Manager, pylime.AsyncManager):
            try:
                cls("x.sqlite3", None)
            except pylime.BackendUnavailableError:
                print(cls.__name__, "refused")
        try:
            import pylime.manager
        except pylime.BackendUnavailableError:
            print("import refused")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["Manager refused", "AsyncManager refused",
                                           "import refused"]


def test_without_the_binding_the_cli_says_so_and_refuses_backend_lime(tmp_path):
    """`pylime --version` names the missing binding; `--backend lime` fails with that reason."""
    run_cli = "import sys, pylime.cli; sys.argv[0] = 'pylime'; pylime.cli.main()"
    version = _without_binding(run_cli, "--version")
    assert version.returncode == 0, version.stderr
    assert "backend lime: not available" in version.stdout
    assert "default backend: reference" in version.stdout
    (tmp_path / "x.sqlite3").touch()
    refused = _without_binding(run_cli, "identity", "show", "sip:a@example.org;gr=x",
                               "--backend", "lime", "--json",
                               "--db", str(tmp_path / "x.sqlite3"))
    assert refused.returncode == 1, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["type"] == "BackendUnavailableError" and "liblime-dev" in error["message"]


def test_the_error_message_says_what_to_do():
    """missing_binding_message names the packages and the reference, whatever the cause."""
    if backend.binding_available():
        assert backend.lime_library() is not None
    assert issubclass(errors.BackendUnavailableError, ImportError)
    assert issubclass(errors.BackendUnavailableError, errors.LimeError)
