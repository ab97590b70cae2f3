"""The pure-Python reference implementation of lime 5.1.64 (no compiled code).

:class:`ReferenceManager` has the same surface as :class:`pylime.Manager`; it stores its
state in lime's own SQLite schema, so a database moves between the two backends.
:func:`diagnose` explains, from a receiver's database, why a message was refused.
"""

from __future__ import annotations

from pylime.reference.diagnose import diagnose
from pylime.reference.manager import ReferenceManager

__all__ = ["ReferenceManager", "diagnose"]
