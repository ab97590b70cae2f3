"""Which manager serves: liblime's binding or the pure-Python reference, and how to choose.

Both backends have the same API, the same errors and the same database format (lime's own
SQLite schema), so an application picks one by name and a database moves between them:

- ``"lime"``: :class:`pylime.Manager`, the binding of the system's liblime 5.1.x. It is
  built at install time only where ``pkg-config lime`` finds lime 5.1.x.
- ``"reference"``: :class:`pylime.reference.ReferenceManager`, pure Python on
  ``cryptography`` and PyNaCl, available everywhere pylime installs.
- ``"auto"`` (the default): the binding where it is built, else the reference.

Imports nothing compiled: this module is how the rest of pylime finds out.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pylime.errors import BackendUnavailableError, CurveNotInBindingError
from pylime.types import POST_QUANTUM_CURVES, Curve

if TYPE_CHECKING:
    from typing import TypeAlias

    from pylime.database import Durability
    from pylime.manager import Manager
    from pylime.reference.manager import ReferenceManager
    from pylime.transport import Transport

    AnyManager: TypeAlias = Manager | ReferenceManager

__all__ = [
    "BACKENDS",
    "Backend",
    "LimeLibrary",
    "available_backends",
    "binding_available",
    "lime_library",
    "missing_binding_message",
    "open_manager",
    "require_binding",
    "resolve_backend",
    "unavailable_class",
]

Backend = Literal["auto", "lime", "reference"]
#: The concrete backends, in order of preference for "auto".
BACKENDS: tuple[Literal["lime", "reference"], ...] = ("lime", "reference")
#: What to install for the binding (Debian/Ubuntu package names).
LIME_PACKAGES = "liblime-dev libsoci-sqlite3-4.0 pkg-config"


class LimeLibrary(NamedTuple):
    """The liblime the binding runs on: the version it was built against, the file loaded."""

    version: str
    path: str


@functools.cache
def _import_problem() -> ImportError | None:
    try:
        importlib.import_module("pylime._lime")
    except ImportError as exc:
        return exc
    return None


def binding_available() -> bool:
    """True where liblime's binding (pylime._lime) is built and loads."""
    return _import_problem() is None


def missing_binding_message() -> str:
    """Why the binding is unavailable, what to install for it, and what serves meanwhile."""
    problem = _import_problem()
    if isinstance(problem, ModuleNotFoundError) and problem.name == "pylime._lime":
        why = ("liblime's binding (pylime._lime) is not built in this installation: "
               "pkg-config found no lime 5.1.x when pylime was installed")
    else:
        why = f"liblime's binding (pylime._lime) does not load: {problem}"
    return (f"{why}. For it, install {LIME_PACKAGES} (Debian/Ubuntu) and a C compiler, then "
            "reinstall pylime. Meanwhile the pure-Python backend serves: "
            "pylime.open_manager(path, transport, backend=\"reference\"), or "
            "pylime.reference.ReferenceManager.")


_PQ_IDS = frozenset(int(c) for c in POST_QUANTUM_CURVES)


def require_binding() -> None:
    """Raise :class:`BackendUnavailableError` (an ImportError) where the binding is absent."""
    problem = _import_problem()
    if problem is not None:
        raise BackendUnavailableError(missing_binding_message()) from problem


def available_backends() -> tuple[str, ...]:
    """The backends this installation can run, in order of preference."""
    return tuple(b for b in BACKENDS if b != "lime" or binding_available())


def lime_library() -> LimeLibrary | None:
    """The liblime the binding loaded, or None where the binding is absent."""
    if not binding_available():
        return None
    from pylime._lime import ffi, lib

    return LimeLibrary(ffi.string(lib.pylime_lime_version()).decode(),
                       os.path.realpath(ffi.string(lib.pylime_lime_path()).decode()))


def resolve_backend(backend: str, curves: Iterable[int] = ()) -> Literal["lime", "reference"]:
    """The concrete backend for a choice: "auto" picks the binding where it is built.

    ``curves``: the algorithms the caller will create users on. liblime 5.1.64 has none of
    lime 5.4's post-quantum ones, so "auto" picks the reference when one is among them.

    Raises:
        ValueError: not one of "auto", "lime", "reference".
        BackendUnavailableError: "lime" where the binding is absent.
        CurveNotInBindingError: "lime" with a post-quantum curve.
    """
    pq = sorted(Curve(int(c)).name for c in curves if int(c) in _PQ_IDS)
    if backend == "auto":
        return "lime" if binding_available() and not pq else "reference"
    if backend == "lime":
        if pq:
            raise CurveNotInBindingError(
                f"{', '.join(pq)}: lime 5.4 post-quantum algorithms are not in liblime 5.1.64; "
                "the reference backend has them (backend='reference' or 'auto')")
        require_binding()
        return "lime"
    if backend == "reference":
        return "reference"
    raise ValueError(f"backend must be 'auto', 'lime' or 'reference', not {backend!r}")


def open_manager(path: str | os.PathLike[str], transport: Transport, *,
                 backend: Backend = "auto", durability: Durability = "wal",
                 curves: Iterable[int] = ()) -> AnyManager:
    """A manager on ``path`` from the chosen backend (see the module docstring).

    Args and behaviour are those of :class:`pylime.Manager`; ``backend`` picks the class.
    ``curves`` names the algorithms users will be created on: with a post-quantum one,
    "auto" picks the reference (see :func:`resolve_backend`).
    """
    if resolve_backend(backend, curves) == "lime":
        from pylime.manager import Manager

        return Manager(path, transport, durability=durability)
    from pylime.reference.manager import ReferenceManager

    return ReferenceManager(path, transport, durability=durability)


def unavailable_class(name: str) -> type:
    """A stand-in for a binding class where the binding is absent: constructing it raises.

    ``pylime.Manager`` stays importable (``from pylime import *``, type annotations), and
    the first use says what is missing and what to use instead.
    """

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        require_binding()
        raise AssertionError("unreachable: the binding became available")  # pragma: no cover

    doc = (f"liblime's binding is not built here: constructing {name} raises "
           "BackendUnavailableError (see pylime.backend).")
    return type(name, (), {"__new__": __new__, "__doc__": doc, "__module__": "pylime",
                           "__slots__": ()})
