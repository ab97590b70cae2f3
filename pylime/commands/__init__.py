"""The ``pylime`` command groups other than ``keyserver``: one module per group.

- :mod:`~pylime.commands.common`: options every command shares, credentials, output (rich
  tables for people, JSON for scripts), exit codes and the error → exit-code mapping.
- :mod:`~pylime.commands.device`: ``pylime device create|delete|list|update|set-server``.
- :mod:`~pylime.commands.identity`: ``pylime identity show``.
- :mod:`~pylime.commands.peer`: ``pylime peer status|trust|untrust|unsafe|forget``.
- :mod:`~pylime.commands.messages`: ``pylime encrypt``, ``decrypt`` and ``diagnose``.
- :mod:`~pylime.commands.interop`: ``pylime interop``, the end-to-end matrix.

:mod:`pylime.cli` registers each by name and imports it on first use. ``docs/cli.md`` is the
reference for users.
"""
