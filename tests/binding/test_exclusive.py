"""One manager per database file at a time, as lime's session cache requires."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pylime import DatabaseInUseError


def test_a_second_manager_on_an_open_database_is_refused(tmp_path, server, backend):
    """While one manager has the file, another (any backend) gets DatabaseInUseError."""
    path = tmp_path / "a.sqlite3"
    with backend(path, server), pytest.raises(DatabaseInUseError):
        backend(path, server)
    with backend(path, server) as again:  # closing released it
        assert not again.closed


def test_another_process_is_refused_too(tmp_path, server, backend):
    """The lock holds across processes."""
    path = tmp_path / "a.sqlite3"
    kind = "pylime.manager:Manager" if backend.__name__ == "Manager" else \
        "pylime.reference:ReferenceManager"
    module, name = kind.split(":")
    script = textwrap.dedent(f"""
        import importlib
        from pylime import DatabaseInUseError
        from pylime.keyserver import KeyServer
        factory = getattr(importlib.import_module({module!r}), {name!r})
        try:
            factory({str(path)!r}, KeyServer())
        except DatabaseInUseError:
            print("refused")
    """)
    with backend(path, server):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.stdout.strip() == "refused", done.stderr


def test_a_dropped_manager_releases_the_database(tmp_path, server, backend):
    """A manager collected without close() frees the file for the next one."""
    import gc

    path = tmp_path / "a.sqlite3"
    manager = backend(path, server)
    del manager
    gc.collect()
    with backend(path, server) as again:
        assert not again.closed
