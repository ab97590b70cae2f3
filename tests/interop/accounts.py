"""Two or more real Linphone clients on our proxy and our HTTPS key server, ready to call or chat."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylime.keyserver.service import ServerThread
from tests.interop.harness import PeerProcess, RecordingKeyServer
from tests.interop.sipproxy import SipProxy

__all__ = ["FACTORY", "Clients", "account_rc", "registry", "start_clients", "start_focus"]


def account_rc(
    name: str,
    proxy: SipProxy,
    keyserver_port: int,
    cert: Path,
    core_dir: Path,
    *,
    lime: dict[str, object] | None = None,
    account: dict[str, object] | None = None,
    transport: str = "udp",
) -> dict[str, dict[str, object]]:
    """The rc sections of a client with one account on ``proxy`` and lime on our key server.

    Identities and the proxy share the domain ``localhost`` (127.0.0.1 only), so that 5.1.65
    routes calls and messages to a device GRUU through the proxy (linphone-5.1.65.md §3.1).
    """
    return {
        "proxy_0": {
            "reg_proxy": proxy.uri_for(transport),
            "reg_identity": f'"{name}" <sip:{name}@{proxy.domain}>',
            "reg_expires": 3600,
            "reg_sendregister": 1,
            "publish": 0,
            **(account or {}),
        },
        "lime": {
            "lime_server_url": f"https://localhost:{keyserver_port}/lime-server",
            "x3dh_db_path": core_dir / "x3dh.c25519.sqlite3",
            **(lime or {}),
        },
        "sip": {"root_ca": cert, "media_encryption": "zrtp"},
    }


@dataclass
class Clients:
    """Registered liblinphone clients in one child process, and where they stand."""

    peer: PeerProcess
    proxy: SipProxy
    keyserver: RecordingKeyServer
    names: list[str]
    registered: dict[str, Any]

    def device_id(self, name: str) -> str:
        """The client's GRUU, which is also its lime device id."""
        return str(self.registered[name]["contact"])

    def lime_dbs(self) -> dict[str, Any]:
        """Every client's lime database (local users, peer devices and statuses)."""
        return self.peer("lime_dbs")  # type: ignore[no-any-return]


def start_clients(
    peer: PeerProcess,
    proxy: SipProxy,
    keyserver: tuple[RecordingKeyServer, ServerThread],
    cert: Path,
    names: list[str],
    *,
    lime: dict[str, object] | None = None,
    account: dict[str, object] | None = None,
    timeout: float = 20.0,
    transport: str = "udp",
) -> Clients:
    """Create one lime + ZRTP client per name, register them, wait for their lime users."""
    server, thread = keyserver
    for name in names:
        rc = account_rc(name, proxy, thread.port, cert, peer.workdir / name, lime=lime, account=account,
                        transport=transport)
        info = peer("core", name=name, extra=_jsonable(rc), root_ca=str(cert), zrtp=True)
        assert info["lime"], "the lime engine was not created"
    registered = peer("register", names=names, timeout=timeout)
    return Clients(peer, proxy, server, names, registered)


def _jsonable(rc: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    return {s: {k: (str(v) if isinstance(v, Path) else v) for k, v in items.items()} for s, items in rc.items()}


FACTORY = "sip:conference-factory@localhost"


def start_focus(peer: PeerProcess, proxy: SipProxy, name: str = "focus", transport: str = "udp") -> dict[str, Any]:
    """A third core in conference-server mode (no lime), reached by the proxy for the factory and rooms.

    As Flexisip's conference server sets it up: ``[misc] conference_server_enabled``, an account
    whose identity is the factory URI that does not register, and rooms named ``chatroom-*``.
    With ``transport="tcp"`` the proxy and the core talk over TCP both ways (no UDP loss in bursts).
    """
    info = peer("server_core", name=name, extra={
        "misc": {"conference_server_enabled": 1, "hide_empty_chat_rooms": 0,
                 "hide_chat_rooms_from_removed_proxies": 0, "empty_chat_room_deletion": 0},
        "proxy_0": {"reg_proxy": proxy.uri_for(transport), "reg_route": proxy.uri_for(transport),
                    "reg_identity": f"<{FACTORY}>",
                    "reg_sendregister": 0, "publish": 0, "conference_factory_uri": FACTORY},
    })
    target = ("127.0.0.1", int(info["tcp" if transport == "tcp" else "udp"]))
    if transport == "tcp":
        proxy.tcp_routes.add(target)
    proxy.routes["chatroom-"] = target
    proxy.routes["conference-factory"] = target
    return info  # type: ignore[no-any-return]


def registry(proxy: SipProxy) -> dict[str, list[list[str]]]:
    """AOR → [GRUU, +org.linphone.specs] of every registered device: what Flexisip's registrar knows."""
    out: dict[str, list[list[str]]] = {}
    for binding in proxy.bindings.values():
        specs = re.search(r'\+org\.linphone\.specs="([^"]*)"', binding.contact_header)
        out.setdefault(binding.aor, []).append([binding.gruu, specs.group(1) if specs else ""])
    return out
