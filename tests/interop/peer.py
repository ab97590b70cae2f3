"""The child-process side of the interop harness: liblinphone cores driven by JSON commands.

Run as ``python -m tests.interop.peer <workdir>``. liblinphone runs only in this process, so a
crash (belle-sip 5.1.64 segfaults on some multipart bodies) ends this process, not the test run.
Protocol: one JSON object per line on stdin (a command), one JSON object per line on the
original stdout (its answer); the C libraries' own output goes to ``<workdir>/stdout.log``.
The process exits on ``quit``, on end of input, or after ``--lifetime`` seconds in any case.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import resource
import select
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from tests.interop import liblinphone as L

LIFETIME = 150.0


def _part(p: L.ReceivedPart) -> dict[str, Any]:
    return {
        "type": p.content_type,
        "content_id": p.content_id,
        "description": p.description,
        "body": base64.b64encode(p.body).decode(),
    }


def _message(m: L.ReceivedMessage) -> dict[str, Any]:
    return {"content_type": m.content_type, "sender": m.sender, "contents": [_part(p) for p in m.contents],
            "text": m.text, "room": m.room}


def lime_db(path: Path) -> dict[str, Any]:
    """lime's database of a core: local users and peer devices, read only."""
    if not path.exists():
        return {"users": [], "peers": []}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        users = [{"user_id": u, "ik": bytes(ik[:32]).hex(), "server": s, "curve": c}
                 for u, ik, s, c in con.execute("SELECT UserId, Ik, server, curveId FROM lime_LocalUsers")]
        peers = [{"device_id": d, "ik": bytes(ik).hex(), "status": st}
                 for d, ik, st in con.execute("SELECT DeviceId, Ik, Status FROM lime_PeerDevices")]
    finally:
        con.close()
    return {"users": users, "peers": peers}


class Peer:
    """Holds this process's cores and answers commands."""

    def __init__(self, workdir: Path, out: Any) -> None:
        self.workdir = workdir
        self.out = out
        self.cores: dict[str, L.Core] = {}
        self.calls: dict[str, int] = {}
        self.rooms: dict[str, int] = {}  # client core name -> its chat room
        self.sent: list[int] = []  # chat messages we sent (kept referenced)
        # Conference server side: the device registry (what Flexisip reads from its registrar),
        # the server rooms we watch and the requests their callbacks left for us.
        self.registry: dict[str, list[tuple[str, str]]] = {}
        self.server_domain_uuid = "urn:uuid:5e4ee4e4-0000-4000-8000-000000000001"
        self.server_rooms: list[int] = []
        self.pending: list[tuple[str, int, str | None]] = []
        self.server_log: list[str] = []

    def reply(self, **answer: Any) -> None:
        self.out.write(json.dumps(answer) + "\n")
        self.out.flush()

    def iterate(self) -> None:
        for core in self.cores.values():
            core.iterate()
        self.serve_pending()

    # ------------------------------------------------------------------ conference server

    def _watch_server_room(self, core: L.Core, room: int, state: int) -> None:
        if state != L.CHAT_ROOM_INSTANTIATED:
            return
        L.lib.linphone_chat_room_ref(room)
        self.server_rooms.append(room)
        cbs = L.lib.linphone_factory_create_chat_room_cbs(L.lib.linphone_factory_get())
        on_address = L.CONFERENCE_ADDRESS_GENERATION(lambda cr: self.pending.append(("address", cr, None)))
        on_devices = L.PARTICIPANT_REGISTRATION_SUBSCRIPTION_REQUESTED(
            lambda cr, addr: self.pending.append(("devices", cr, L.address_string(addr))))
        core._keep += [on_address, on_devices]  # C holds these: keep them alive
        L.lib.linphone_chat_room_cbs_set_conference_address_generation(cbs, ctypes.cast(on_address, ctypes.c_void_p))
        L.lib.linphone_chat_room_cbs_set_participant_registration_subscription_requested(
            cbs, ctypes.cast(on_devices, ctypes.c_void_p))
        L.lib.linphone_chat_room_add_callbacks(room, cbs)
        L.lib.linphone_chat_room_cbs_unref(cbs)

    def serve_pending(self) -> None:
        """Answer the server rooms' requests, outside liblinphone's callbacks (as Flexisip does, later)."""
        while self.pending:
            kind, room, arg = self.pending.pop(0)
            if kind == "address":
                # Flexisip: the generated chatroom-<token> name, bound with the server's GRUU.
                generated = L.address_string(L.lib.linphone_chat_room_get_conference_address(room))
                final = f"{generated};gr={self.server_domain_uuid}"
                addr = L.address(final)
                L.lib.linphone_chat_room_set_conference_address(room, addr)
                L.lib.linphone_address_unref(addr)
                self.server_log.append(f"conference address {final}")
            elif kind == "devices":
                devices = self.registry.get(arg or "", [])
                identities = []
                for gruu, specs in devices:
                    gaddr = L.address(gruu)
                    ident = L.lib.linphone_factory_create_participant_device_identity(
                        L.lib.linphone_factory_get(), gaddr, b"")
                    L.lib.linphone_participant_device_identity_set_capability_descriptor(ident, specs.encode())
                    L.lib.linphone_address_unref(gaddr)
                    identities.append(ident)
                lst = L.c_list(identities)
                paddr = L.address(arg or "")
                L.lib.linphone_chat_room_set_participant_devices(room, paddr, lst)
                L.lib.linphone_address_unref(paddr)
                L.free_list(lst)
                for ident in identities:
                    L.lib.linphone_participant_device_identity_unref(ident)
                self.server_log.append(f"devices of {arg}: {devices}")

    def cmd_server_core(self, name: str, extra: dict[str, dict[str, object]]) -> dict[str, Any]:
        core = L.Core(self.workdir / name, extra)
        core.on_room_state = lambda room, state: self._watch_server_room(core, room, state)
        self.cores[name] = core
        udp, tcp = core.ports()
        return {"udp": udp, "tcp": tcp}

    def cmd_set_registry(self, registry: dict[str, list[list[str]]]) -> dict[str, Any]:
        self.registry = {aor: [(g, s) for g, s in devs] for aor, devs in registry.items()}
        return {}

    def cmd_server_log(self) -> dict[str, Any]:
        return {"log": self.server_log, "errors": self.cores["focus"].errors if "focus" in self.cores else []}

    # ------------------------------------------------------------------ chat rooms (clients)

    def cmd_create_room(self, name: str, participants: list[str], subject: str = "pylime interop",
                        timeout: float = 20.0, group: bool = True) -> dict[str, Any]:
        core = self.cores[name]
        params = L.lib.linphone_core_create_default_chat_room_params(core.core)
        L.lib.linphone_chat_room_params_set_backend(params, L.CHAT_ROOM_BACKEND_FLEXISIP)
        L.lib.linphone_chat_room_params_enable_encryption(params, 1)
        L.lib.linphone_chat_room_params_set_encryption_backend(params, L.CHAT_ROOM_ENCRYPTION_LIME)
        L.lib.linphone_chat_room_params_enable_group(params, int(group))
        L.lib.linphone_chat_room_params_set_subject(params, subject.encode())
        addrs = [L.address(p) for p in participants]
        lst = L.c_list(addrs)
        room = L.lib.linphone_core_create_chat_room_6(core.core, params, None, lst)
        L.free_list(lst)
        for a in addrs:
            L.lib.linphone_address_unref(a)
        L.lib.linphone_chat_room_params_unref(params)
        if not room:
            raise RuntimeError("linphone_core_create_chat_room_6 returned NULL")
        L.lib.linphone_chat_room_ref(room)
        self.rooms[name] = room
        self.wait(lambda: L.lib.linphone_chat_room_get_state(room) in (L.CHAT_ROOM_CREATED, L.CHAT_ROOM_CREATION_FAILED),
                  timeout, "chat room Created")
        return {"state": L.lib.linphone_chat_room_get_state(room),
                "address": L.address_string(L.lib.linphone_chat_room_get_peer_address(room))}

    def cmd_room_state(self, name: str) -> dict[str, Any]:
        room = self.rooms[name]
        return {"state": L.lib.linphone_chat_room_get_state(room),
                "address": L.address_string(L.lib.linphone_chat_room_get_peer_address(room)),
                "security_level": L.lib.linphone_chat_room_get_security_level(room)}

    def cmd_send_text(self, name: str, text: str, settle: float = 0.5) -> dict[str, Any]:
        room = self.rooms.get(name) or self.cores[name].created_rooms[-1]  # created, or joined on invite
        msg = L.lib.linphone_chat_room_create_message_from_utf8(room, text.encode())
        L.lib.linphone_chat_message_send(msg)
        self.sent.append(msg)
        self.settle(settle)
        return {"state": L.lib.linphone_chat_message_get_state(msg)}

    def cmd_send_texts(self, name: str, texts: list[str], settle: float = 0.2) -> dict[str, Any]:
        """Send several texts back to back (a burst): no pause, only one iteration of the cores
        between two sends, so that the conference-server core in this process reads its socket
        (without it, 100 datagrams overflow the socket buffer and UDP retransmissions reorder them)."""
        room = self.rooms.get(name) or self.cores[name].created_rooms[-1]
        for text in texts:
            msg = L.lib.linphone_chat_room_create_message_from_utf8(room, text.encode())
            L.lib.linphone_chat_message_send(msg)
            self.sent.append(msg)
            self.iterate()
        self.settle(settle)
        return {"sent": len(texts)}

    def cmd_mark_read(self, name: str, settle: float = 0.3) -> dict[str, Any]:
        """Mark the client's room read: 5.1.65 sends its display notifications."""
        room = self.rooms.get(name) or self.cores[name].created_rooms[-1]
        L.lib.linphone_chat_room_mark_as_read(room)
        self.settle(settle)
        return {}

    def cmd_message_states(self) -> dict[str, Any]:
        return {"states": [L.lib.linphone_chat_message_get_state(m) for m in self.sent]}

    def wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 10):
            self.iterate()
            if done():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        raise TimeoutError(f"liblinphone: {what} not reached within {timeout} s")

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.iterate()
            time.sleep(0.01)

    # ------------------------------------------------------------------ commands

    def cmd_core(self, name: str, extra: dict[str, dict[str, object]] | None = None,
                 root_ca: str | None = None, zrtp: bool = False) -> dict[str, Any]:
        core = L.Core(self.workdir / name, extra, root_ca=root_ca, zrtp=zrtp)
        self.cores[name] = core
        udp, tcp = core.ports()
        return {"udp": udp, "tcp": tcp, "lime": core.lime_enabled()}

    def cmd_messages(self, name: str, count: int = 0, timeout: float = 5.0) -> dict[str, Any]:
        core = self.cores[name]
        if count:
            self.wait(lambda: len(core.messages) >= count, timeout, f"{count} message(s) on {name}")
        return {"messages": [_message(m) for m in core.messages]}

    def cmd_register(self, names: list[str], lime: bool = True, timeout: float = 20.0) -> dict[str, Any]:
        cores = [self.cores[n] for n in names]
        self.wait(lambda: all(c.registration_state() == L.REGISTRATION_OK for c in cores), timeout,
                  "REGISTER 200 OK")
        if lime:
            self.wait(lambda: all(c.lime_users for c in cores), timeout, "lime user registration")
        return {n: {"contact": c.contact(), "lime_users": c.lime_users} for n, c in zip(names, cores)}

    def cmd_call(self, caller: str, callee: str, target: str, timeout: float = 30.0) -> dict[str, Any]:
        a, b = self.cores[caller], self.cores[callee]
        out = L.lib.linphone_core_invite(a.core, target.encode())
        if not out:
            raise RuntimeError("linphone_core_invite returned NULL")
        self.calls[caller] = L.lib.linphone_call_ref(out)
        self.wait(lambda: bool(L.lib.linphone_core_get_current_call(b.core)), timeout, "incoming call")
        incoming = L.lib.linphone_call_ref(L.lib.linphone_core_get_current_call(b.core))
        self.calls[callee] = incoming
        L.lib.linphone_call_accept(incoming)
        calls = [self.calls[caller], incoming]

        def ready() -> bool:
            return all(L.lib.linphone_call_get_state(c) == L.CallState.STREAMS_RUNNING
                       and L.lib.linphone_call_get_authentication_token(c) for c in calls)

        self.wait(ready, timeout, "StreamsRunning with a SAS on both sides")
        info = {}
        for name, call in ((caller, calls[0]), (callee, calls[1])):
            remote = L.lib.linphone_call_get_remote_params(call)
            current = L.lib.linphone_call_get_current_params(call)
            info[name] = {
                "sas": L._str(L.lib.linphone_call_get_authentication_token(call)),
                "remote_contact": L._str(L.lib.linphone_call_get_remote_contact(call)),
                "remote_ik": {k: L._str(L.lib.linphone_call_params_get_custom_sdp_attribute(remote, k.encode()))
                              for k in ("Ik", "lime-Ik", "lime-Iks")},
                "media_encryption": L.lib.linphone_call_params_get_media_encryption(current),
                "sas_verified": bool(L.lib.linphone_call_get_authentication_token_verified(call)),
            }
        return info

    def cmd_verify(self, name: str, verified: bool, settle: float = 1.0) -> dict[str, Any]:
        L.lib.linphone_call_set_authentication_token_verified(self.calls[name], int(verified))
        self.settle(settle)
        return self.cmd_lime_dbs()

    def cmd_lime_dbs(self) -> dict[str, Any]:
        return {n: lime_db(c.dir / "x3dh.c25519.sqlite3") for n, c in self.cores.items()}

    def cmd_hangup(self, timeout: float = 10.0) -> dict[str, Any]:
        for core in self.cores.values():
            L.lib.linphone_core_terminate_all_calls(core.core)
        self.wait(lambda: all(not L.lib.linphone_core_get_current_call(c.core) for c in self.cores.values()),
                  timeout, "calls ended")
        for call in self.calls.values():
            L.lib.linphone_call_unref(call)
        self.calls.clear()
        return {}

    def cmd_log_grep(self, needle: str) -> dict[str, Any]:
        text = (self.workdir / "linphone.log").read_text("utf-8", "replace")
        return {"lines": [line for line in text.splitlines() if needle in line][:50]}

    def close(self) -> None:
        for msg in self.sent:
            L.lib.linphone_chat_message_unref(msg)
        self.sent.clear()
        for room in [*self.rooms.values(), *self.server_rooms]:
            L.lib.linphone_chat_room_unref(room)
        self.rooms.clear()
        self.server_rooms.clear()
        for call in self.calls.values():
            L.lib.linphone_call_unref(call)
        self.calls.clear()
        for core in self.cores.values():
            core.close()
        self.cores.clear()


def main() -> None:
    # A crash is an expected result here: never leave a core dump behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    workdir = Path(sys.argv[1])
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else LIFETIME
    workdir.mkdir(parents=True, exist_ok=True)
    # Keep the protocol channel; send the C libraries' chatter to a file.
    out = os.fdopen(os.dup(1), "w")
    log = os.open(workdir / "stdout.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = sys.stderr = os.fdopen(1, "w", buffering=1)
    L.set_log_file(workdir)
    peer = Peer(workdir, out)
    deadline = time.monotonic() + lifetime
    buffer = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([0], [], [], 0.01)
            if not ready:
                peer.iterate()
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = json.loads(line)
                name = command.pop("cmd")
                if name == "quit":
                    peer.reply(ok=True)
                    return
                try:
                    result = getattr(peer, f"cmd_{name}")(**command)
                except Exception as exc:  # noqa: BLE001 (report it, keep serving)
                    peer.reply(ok=False, error=f"{type(exc).__name__}: {exc}")
                else:
                    peer.reply(ok=True, result=result)
    finally:
        peer.close()


if __name__ == "__main__":
    main()
