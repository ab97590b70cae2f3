"""``python -m pylime``: the same as the ``pylime`` command."""

from __future__ import annotations

from pylime.cli import main

if __name__ == "__main__":
    main(prog_name="pylime")
