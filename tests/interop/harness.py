"""The test-process side of the interop harness: child cores, raw SIP, a recording key server.

- :class:`PeerProcess` starts ``tests.interop.peer`` in a child process and sends it commands;
  if liblinphone crashes there, the call raises :class:`PeerCrashed` with the signal.
- :func:`send_message` sends one raw SIP MESSAGE (UDP, or TCP for large bodies) to a core on
  127.0.0.1 and returns the final response status (or None if nothing came back).
- :class:`RecordingKeyServer` is pylime's KeyServer that notes every request it answers.
- :class:`Transcript` collects SIP, key-server and lime-status records into one JSON artifact.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylime.keyserver import KeyServer
from pylime.keyserver.protocol import parse_request

__all__ = [
    "PeerCrashed",
    "PeerProcess",
    "RecordingKeyServer",
    "Transcript",
    "build_message",
    "send_message",
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


class PeerCrashed(RuntimeError):
    """The child process running liblinphone died (``returncode`` < 0 is the signal)."""

    def __init__(self, returncode: int | None, command: str) -> None:
        self.returncode = returncode
        sig = ""
        if returncode is not None and returncode < 0:
            sig = f" ({signal.Signals(-returncode).name})"
        super().__init__(f"the liblinphone peer died with {returncode}{sig} during {command!r}")


class PeerProcess:
    """A child process holding liblinphone cores; every command has a timeout."""

    def __init__(self, workdir: Path, lifetime: float = 150.0) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.interop.peer", str(workdir), str(lifetime)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self._buffer = b""

    def __call__(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        """Run one command in the child and return its result; raise on error or crash.

        ``timeout`` is the child's own bound where the command takes one; we wait 15 s more.
        """
        if timeout is not None:
            args["timeout"] = timeout
        wait = (timeout or 30.0) + 15.0
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise PeerCrashed(self.proc.wait(5), cmd) from None
        deadline = time.monotonic() + wait
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the liblinphone peer did not answer {cmd!r} within {wait} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise PeerCrashed(self.proc.wait(5), cmd)
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"peer command {cmd!r} failed: {answer.get('error')}")
        return answer.get("result")

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """The child's return code once it exits, or None if it still runs after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Ask the child to quit; kill it if it does not."""
        if self.alive():
            try:
                self("quit")
            except (PeerCrashed, TimeoutError, RuntimeError, OSError):
                pass
        if self.wait_exit(10) is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # the child is gone: nothing left to flush to
                    pass

    def __enter__(self) -> PeerProcess:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_message(
    port: int,
    body: bytes,
    headers: dict[str, str],
    *,
    transport: str = "UDP",
    local_port: int = 5999,
    sender: str = "sip:pylime@127.0.0.1",
    to: str = "sip:bob@127.0.0.1",
) -> tuple[bytes, str]:
    """A raw SIP MESSAGE for a core on 127.0.0.1:``port``; returns it and its Call-ID."""
    call_id = uuid.uuid4().hex
    lines = [
        f"MESSAGE sip:bob@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <{sender}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 MESSAGE",
        *(f"{k}: {v}" for k, v in headers.items()),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, call_id


def _status_lines(data: bytes) -> list[int]:
    out = []
    for chunk in data.split(b"SIP/2.0 ")[1:]:
        code = chunk[:3]
        if code.isdigit():
            out.append(int(code))
    return out


def send_message(port: int, body: bytes, headers: dict[str, str], *, tcp: bool = False,
                 timeout: float = 5.0) -> int | None:
    """Send a MESSAGE to a core on 127.0.0.1 and return the final status, or None on silence."""
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            raw, _ = build_message(port, body, headers, transport="TCP", local_port=sock.getsockname()[1])
            sock.sendall(raw)
            deadline = time.monotonic() + timeout
            data = b""
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
                finals = [c for c in _status_lines(data) if c >= 200]
                if finals:
                    return finals[0]
            return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        raw, _ = build_message(port, body, headers, local_port=sock.getsockname()[1])
        sock.sendto(raw, ("127.0.0.1", port))
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            finals = [c for c in _status_lines(data) if c >= 200]
            if finals:
                return finals[0]
        return None


class RecordingKeyServer(KeyServer):
    """pylime's KeyServer, noting each request (sender, message type, sizes) it answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()

    def handle(self, sender: str | None, body: bytes, content_type: str | None = "x3dh/octet-stream") -> bytes:
        answer = super().handle(sender, body, content_type)
        try:
            kind = type(parse_request(body)).__name__
        except Exception as exc:  # noqa: BLE001 (a malformed request is recorded as such)
            kind = f"unparsable ({type(exc).__name__})"
        with self._log_lock:
            self.log.append({"t": round(time.time(), 3), "from": sender, "request": kind,
                             "request_bytes": len(body), "answer_bytes": len(answer),
                             "answer_type": answer[1] if len(answer) > 1 else None})
        return answer

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # A separate read-only connection on the database file (the server keeps its own).
        path = getattr(self.storage, "path", None)
        if not path or path == ":memory:":
            raise RuntimeError("RecordingKeyServer queries need an SQLite database file")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(con.execute(sql, args))
        finally:
            con.close()

    def identity_key(self, device_id: str) -> bytes | None:
        """The Ik stored for ``device_id`` (any curve), without taking an OPk."""
        rows = self._query("SELECT Ik FROM Users WHERE UserId = ?", (device_id,))
        return bytes(rows[0][0]) if rows else None

    def device_ids(self) -> list[str]:
        """Every device id registered."""
        return [r[0] for r in self._query("SELECT UserId FROM Users ORDER BY Uid")]


@dataclass
class Transcript:
    """SIP, key-server and lime-status records of one test, written as JSON."""

    name: str
    records: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, value: Any) -> None:
        """Add or replace one section."""
        self.records[section] = value

    def write(self, directory: Path) -> Path:
        """Write ``<directory>/<name>.json`` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.records, indent=1, default=str))
        return path
