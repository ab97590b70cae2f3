"""The public surface of pylime.linphone: sorted, complete, and rooted in pylime's error tree."""

from __future__ import annotations

import importlib
import inspect

import pytest

from pylime import LimeError, linphone

MODULES = ["address", "cpim", "envelope", "errors", "events", "fingerprint", "messaging",
           "security", "zrtp"]


@pytest.mark.parametrize("name", ["", *MODULES])
def test_all_is_sorted_and_names_only_what_exists(name):
    """Each module's __all__ is sorted (constants first, as isort and ruff do) and complete."""
    module = importlib.import_module("pylime.linphone" + (f".{name}" if name else ""))
    names = list(module.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for item in names:
        assert hasattr(module, item), item


@pytest.mark.parametrize("name", MODULES)
def test_every_public_class_and_function_is_exported(name):
    """Public classes and functions defined in a module are listed in its __all__."""
    module = importlib.import_module(f"pylime.linphone.{name}")
    defined = {n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
               and getattr(obj, "__module__", "") == module.__name__}
    assert defined <= set(module.__all__)


def test_every_error_is_a_lime_error_with_a_docstring():
    """The package's exceptions hang under LinphoneError, itself a LimeError."""
    errors = importlib.import_module("pylime.linphone.errors")
    for item in errors.__all__:
        cls = getattr(errors, item)
        assert issubclass(cls, errors.LinphoneError) and issubclass(cls, LimeError)
        assert cls.__doc__
    assert issubclass(linphone.DeviceNotInEnvelopeError, LookupError)
    assert issubclass(linphone.EnvelopeError, ValueError)
