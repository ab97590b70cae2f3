"""The key server's logs: uvicorn's and ours, as text or as one JSON object per line.

The key server never logs a password, an HA1, an Authorization header or key material; as a
second line of defence every record also goes through :func:`redact`, which masks what
looks like a credential (a URL's password, a Digest ``response``/``cnonce``, an
``Authorization`` value, ``password=...``) whatever code wrote it.

JSON lines carry ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message``, ``pid``; access lines add ``client``, ``method``, ``path``, ``status``;
an exception adds ``exception``. In JSON mode every record, access lines included, goes to
standard error (in text mode uvicorn writes access lines to standard output).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import re
from typing import Any

import uvicorn.config
import uvicorn.logging

__all__ = ["JsonFormatter", "RedactingFormatter", "log_config", "redact"]

_PATTERNS = [
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@"), r"\1:***@"),
    # Authorization: Digest ... / Basic ... (a header as text)
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"), r"\1***"),
    # Digest parameters that prove knowledge of the password
    (re.compile(r"(?i)\b(response|cnonce)=(\"[^\"]*\"|[^,\s]+)"), r"\1=***"),
    # password=..., passwd: ..., PYLIME_PASSWORD=...
    (
        re.compile(r"(?i)\b([a-z_]*pass(?:word|wd)?[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)"),
        r"\1***",
    ),
]


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A plain-text formatter whose output goes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingDefaultFormatter(uvicorn.logging.DefaultFormatter):
    """uvicorn's text formatter, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingAccessFormatter(uvicorn.logging.AccessFormatter):
    """uvicorn's access-line formatter, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process or os.getpid(),
        }
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == 5
        ):
            client, method, path, version, status = record.args
            out.update(
                message=f"{method} {path} {status}",
                client=str(client),
                method=str(method),
                path=redact(str(path)),
                http=str(version),
                status=int(status),  # type: ignore[call-overload]
            )
        else:
            out["message"] = redact(record.getMessage())
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """A logging dictConfig for uvicorn and the ``pylime`` loggers, text or JSON, redacted."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if fmt == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": JsonFormatter}
        # One stream of JSON records (uvicorn writes access lines to stdout otherwise).
        config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    else:
        # uvicorn's own classes colour and format; ours redact what they produce.
        config["formatters"]["default"]["()"] = RedactingDefaultFormatter
        config["formatters"]["access"]["()"] = RedactingAccessFormatter
    config["loggers"]["pylime"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
