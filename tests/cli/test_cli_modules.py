"""The command modules themselves: exported names, exit-code table."""

from __future__ import annotations

import importlib
import inspect

import pytest

from pylime.commands import common

MODULES = ["common", "device", "identity", "peer", "messages", "interop"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_names_only_what_exists(name):
    """Each module's __all__ is sorted (constants first, as isort and ruff do) and exists."""
    module = importlib.import_module(f"pylime.commands.{name}")
    names = list(module.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for item in names:
        assert hasattr(module, item), item


# interop is left out: its scenario functions are internal steps of one command.
@pytest.mark.parametrize("name", ["common", "device", "identity", "peer", "messages"])
def test_every_public_class_and_function_is_exported(name):
    """Public classes and functions defined in a module are listed in its __all__."""
    module = importlib.import_module(f"pylime.commands.{name}")
    defined = {n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
               and getattr(obj, "__module__", "") == module.__name__}
    assert defined <= set(module.__all__)


def test_exit_codes_are_distinct_and_named():
    """EXIT_* constants are 0..6, each described once in EXIT_CODES."""
    constants = {n: v for n, v in vars(common).items()
                 if n.startswith("EXIT_") and n != "EXIT_CODES"}
    assert sorted(constants.values()) == list(range(7)) == sorted(common.EXIT_CODES)
