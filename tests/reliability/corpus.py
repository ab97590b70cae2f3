"""The malformed-input corpus of the binding: deterministic hostile inputs, one runner per section.

``scripts/asan_binding`` runs it under AddressSanitizer, ``tests/reliability/test_asan.py`` a
small slice of it. Nothing is random at run time: every input is derived from fixed seeds and
from the layout of genuine messages (which does not depend on key values), so the same
corpus runs everywhere and :func:`digest` names it. Sections:

- ``decrypt``: mutated genuine DR messages (both curves, X3DH-init and chain stages, both
  encryption policies): every truncation, a bit flip of every byte, oversized messages up
  to 1 MiB, interesting integers in every header field, bad points, every message type
  byte, deleted and duplicated fields, plus seeded random recipes of ``fuzzlib``;
- ``answers``: key-server answers to registerUser, getPeerBundle, getSelfOPks, postOPks
  and deleteUser, each truncated at every length, bit-flipped, set to 0x00/0xFF byte by
  byte, with trailing bytes, replaced by error messages or other types, with other HTTP
  codes, non-bytes answers and transport exceptions, and peer bundles with bad device ids;
- ``device-ids``: bad device ids, user ids, URLs, curves, batch sizes and keys in every call
  that takes one;
- ``regressions``: the kept decrypt cases of ``tests/reliability/regressions/lime-decrypt``.

Each runner checks the binding's contract on every input (a typed error or a faithful result,
and the session still works) and calls ``note(section, index, case)`` before trying an
input, so a supervisor can say which input a native crash happened on and resume after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fuzzlib as F

from pylime import errors
from pylime.keyserver import KeyServer
from pylime.keyserver import protocol as proto
from pylime.types import Curve, PeerStatus, Policy

SECTIONS = ("decrypt", "answers", "device-ids", "regressions")
REGRESSIONS = Path(__file__).parent / "regressions" / "lime-decrypt"
URL = F.URL
#: What a binding call may raise on hostile input: the documented tree, and argument errors.
TYPED = (errors.LimeError, ValueError, TypeError, OverflowError)
EXTEND_SIZES = (1, 15, 16, 17, 255, 4096, 65536, 1 << 20)
Note = Callable[[str, int, Any], None]


@dataclass
class Tally:
    """What one section ran: inputs by group and outcome, and invariant findings."""

    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[dict[str, Any]] = field(default_factory=list)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)

    def add(self, case: Any, outcome: str) -> None:
        self.inputs += 1
        self.outcomes[outcome] += 1

    def finding(self, index: int, case: Any, exc: BaseException) -> None:
        self.findings.append({"index": index, "case": _short(case),
                              "finding": f"{type(exc).__name__}: {exc}"[:300]})

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outcomes": dict(sorted(self.outcomes.items())),
                "findings": self.findings, "sha256": self.digest.hexdigest()}


def _short(case: Any) -> Any:
    """The case as JSON, with long hex strings abbreviated (1 MiB extensions)."""
    text = json.dumps(case, sort_keys=True, default=repr)
    if len(text) > 400:
        return text[:200] + f"...({len(text)} chars)"
    return json.loads(text)


def _hash_case(tally: Tally, case: Any) -> None:
    tally.digest.update(json.dumps(case, sort_keys=True, default=repr).encode())


# =========================================================================== decrypt


@dataclass(frozen=True)
class Group:
    """Genuine messages of one kind, and how many seeded random recipes to add to them."""

    curve: Curve
    stage: str
    policy: Policy
    size: int
    randoms: int

    @property
    def key(self) -> str:
        return f"{self.curve.name.lower()}-{self.stage}-{self.policy.name.lower()}-{self.size}"


def decrypt_groups(quick: bool = False) -> list[Group]:
    """Both curves × X3DH/chain stage × DR/cipher policy (a quick run: two groups)."""
    if quick:
        return [Group(Curve.C25519, "x3dh", Policy.CIPHER_MESSAGE, 20, 10),
                Group(Curve.C448, "chain", Policy.DR_MESSAGE, 20, 10)]
    return [Group(c, s, p, 20, 150) for c in (Curve.C25519, Curve.C448)
            for s in ("x3dh", "chain") for p in (Policy.DR_MESSAGE, Policy.CIPHER_MESSAGE)]


_LEAVES = ("version", "type", "curve", "x3dh.flag", "x3dh.ik", "x3dh.ek", "x3dh.spk_id",
           "x3dh.opk_id", "ns", "pn", "dhs", "payload", "tag", "cipher", "cipher.tag")
_INTS = ("version", "curve", "x3dh.flag", "x3dh.spk_id", "x3dh.opk_id", "ns", "pn")


def _pattern(n: int) -> str:
    return (bytes(range(256)) * (n // 256 + 1))[:n].hex()


def group_recipes(group: Group, dr: bytes, cipher: bytes, quick: bool = False) -> list[list]:
    """The recipes of a group, from the layout of one of its genuine messages."""
    curve = group.curve
    regs = F.regions(dr, cipher, curve)
    leaves = [n for n in _LEAVES if n in regs]
    out: list[list] = []
    out += [[["truncate", "dr", n]] for n in range(len(dr))]
    out += [[["truncate", "cipher", n]] for n in range(len(cipher))]
    for which in ("dr", "cipher") if cipher else ("dr",):
        out += [[["extend", which, _pattern(n)]] for n in EXTEND_SIZES]
    for name in leaves:
        _, start, length = regs[name]
        out += [[["flip", name, off, 1 << ((start + off) % 8)]] for off in range(length)]
        out += [[["delete", name]], [["dup", name]], [["fill", name, 0]], [["fill", name, 0xFF]]]
    for name in (n for n in _INTS if n in regs):
        out += [[["int", name, v]] for v in F.INTERESTING_INTS]
    for name in (n for n in ("dhs", "x3dh.ek", "x3dh.ik") if n in regs):
        out += [[["point", name, i]] for i in range(len(F.BAD_POINTS[curve]))]
    out += [[["type_bits", t]] for t in range(256)]
    out += [[["swap"]], [["drop_cipher"]], [["add_cipher", ""]], [["add_cipher", "00" * 16]],
            [["add_cipher", _pattern(48)]]]
    out += [[["random", "dr", n]] for n in (0, 3, 38, 39, 63, 107, 108, 112, len(dr) + 1)]
    rng = random.Random(f"asan-corpus:{group.key}")
    out += [F.random_recipe(rng, dr, cipher, curve) for _ in range(group.randoms)]
    if quick:  # a spread sample: every kind of operation, a fraction of the offsets
        out = out[::12]
    return out


class _Stream:
    """Genuine messages of one group, from a fresh pair whenever the stage needs one."""

    def __init__(self, factory: Callable[..., Any], group: Group, directory: str) -> None:
        self.factory, self.group, self.directory = factory, group, directory
        self.pair: F.Pair | None = None

    def next(self) -> F.Message:
        g = self.group
        while True:
            if self.pair is None or (g.stage == "x3dh" and self.pair.sent >= 3):
                self.close()
                self.pair = F.Pair(self.factory, g.curve, self.directory)
            msg = self.pair.next_message(g.policy, g.size)
            if msg.stage == g.stage:
                return msg
            self.pair.decrypt(msg.dr, msg.cipher)

    def close(self) -> None:
        if self.pair is not None:
            self.pair.close()
            self.pair = None


def run_decrypt(factory: Callable[..., Any], directory: str, note: Note, start: int = 0,
                quick: bool = False) -> Tally:
    """Every recipe of every group against Bob's decrypt; the genuine message after each run."""
    tally = Tally()
    index = -1
    for group in decrypt_groups(quick):
        stream = _Stream(factory, group, directory)
        msg = stream.next()
        consumed = False
        for recipe in group_recipes(group, msg.dr, msg.cipher, quick):
            index += 1
            case = {"group": group.key, "recipe": recipe}
            _hash_case(tally, case)
            if index < start:
                continue
            note("decrypt", index, case)
            try:
                if consumed:
                    F.check_genuine(stream.pair, msg, consumed=True)
                    msg, consumed = stream.next(), False
                outcome = F.check_mutated_decrypt(stream.pair, msg, recipe)
                consumed = outcome in ("consumed", "junk-accepted")
            except F.Finding as exc:
                tally.finding(index, case, exc)
                outcome = "finding"
                stream.close()
                msg, consumed = stream.next(), False
            tally.add(case, f"{group.key}:{outcome}")
        try:
            F.check_genuine(stream.pair, msg, consumed)
        except F.Finding as exc:
            tally.finding(index, {"group": group.key, "genuine": True}, exc)
        stream.close()
    return tally


# =========================================================================== key-server answers

_T = proto.MessageType
#: request type mutated -> the target's name
TARGETS = {"register": _T.REGISTER_USER, "bundle": _T.GET_PEER_BUNDLE,
           "self-opks": _T.GET_SELF_OPKS, "post-opks": _T.POST_OPKS,
           "delete": _T.DELETE_USER}


def answer_ops(genuine: bytes, target: str, curve: Curve, quick: bool = False) -> list[list]:
    """Operations on the genuine answer to one request type."""
    n = len(genuine)
    ops: list[list] = [["truncate", i] for i in range(n)]
    for i in range(n):
        ops += [["flip", i, 1 << (i % 8)], ["set", i, 0x00], ["set", i, 0xFF]]
    ops += [["u16", i, v] for i in range(3, n - 1) for v in (0, 0xFFFF)]
    ops += [["append", _pattern(k)] for k in (1, 2, 16, 4096, 65536)]
    # operations name the genuine answer rather than embed it: its key bytes vary by run
    other = Curve.C448 if curve == Curve.C25519 else Curve.C25519
    ops += [["twice"], ["header", 0, 2], ["header", 2, 3], ["header", 2, int(other)]]
    ops += [["replace", ""], ["replace", "01"], ["replace", "01ff"],
            ["replace", bytes((1, genuine[1], 3)).hex()]]
    types = range(256) if target in ("bundle", "self-opks") else (*range(12), 0xFE, 0xFF)
    ops += [["replace", bytes((1, t, int(curve))).hex()] for t in types]
    ops += [["replace", bytes((1, 0xFF, int(curve), code)).hex()]
            for code in (*range(16), 0x7F, 0x80, 0xFF)]
    ops += [["replace", (bytes((1, 0xFF, int(curve), 0x0B)) + b"\xff" * 300 + b"\0").hex()],
            ["replace", (bytes((1, 0xFF, int(curve), 0x01)) + "no \u2603 such".encode()).hex()]]
    ops += [["http", code] for code in (0, 1, 199, 201, 204, 301, 400, 401, 404, 500, 503, 999,
                                         -1, 2**31 - 1)]
    ops += [["raise", name] for name in ("ConnectionResetError", "TimeoutError", "ValueError",
                                          "RuntimeError")]
    ops += [["nonbytes", kind] for kind in ("none", "str-body", "int", "triple", "bad-code")]
    if target == "bundle":
        ops += [["bundle", kind] for kind in ("empty-id", "other-id", "long-id", "max-id",
                                              "non-utf8-id", "no-bundle", "zero-entries",
                                              "two-entries", "no-opk", "short-sig")]
    if quick:
        ops = ops[::40]
    return ops


def _bundle_variant(genuine: bytes, kind: str) -> bytes:
    pb = proto.parse_response(genuine)
    assert isinstance(pb, proto.PeerBundle)
    b = pb.bundles[0]

    def with_id(device_id: str) -> proto.Bundle:
        return proto.Bundle(device_id, b.ik, b.spk, b.spk_id, b.spk_sig, b.opk)

    if kind == "non-utf8-id":
        raw = b"\xff\xfe" + b.device_id.encode()
        head = proto.PeerBundle(pb.curve, ()).to_bytes()[:3]
        entry = b.to_bytes()
        old = proto.encode_device_id(b.device_id)
        return head + b"\x00\x01" + len(raw).to_bytes(2, "big") + raw + entry[2 + len(old):]
    bundles = {
        "empty-id": (with_id(""),),
        "other-id": (with_id("sip:mallory@example.org;gr=urn:uuid:m"),),
        "long-id": (with_id(b.device_id + "x" * 5000),),
        "max-id": (with_id("x" * proto.MAX_DEVICE_ID_SIZE),),
        "no-bundle": (proto.Bundle(b.device_id),),
        "zero-entries": (),
        "two-entries": (b, b),
        "no-opk": (proto.Bundle(b.device_id, b.ik, b.spk, b.spk_id, b.spk_sig, None),),
    }.get(kind)
    if bundles is not None:
        return proto.PeerBundle(pb.curve, bundles).to_bytes()
    assert kind == "short-sig"
    return genuine[:-(4 + len(b.opk.public) if b.opk else 0) - 10]


def mutate_answer(op: list, genuine: bytes) -> Any:
    """The answer (http code, body), or the exception, a hostile transport gives instead."""
    kind = op[0]
    body = bytearray(genuine)
    if kind == "truncate":
        return 200, bytes(body[:op[1]])
    if kind == "flip":
        body[op[1]] ^= op[2]
    elif kind == "set":
        body[op[1]] = op[2]
    elif kind == "u16":
        body[op[1]:op[1] + 2] = op[2].to_bytes(2, "big")
    elif kind == "append":
        body += bytes.fromhex(op[1])
    elif kind == "twice":
        body += genuine
    elif kind == "header":  # header byte op[1] (version, type, curve) set to op[2]
        body[op[1]] = op[2]
    elif kind == "replace":
        return 200, bytes.fromhex(op[1])
    elif kind == "http":
        return op[1], genuine
    elif kind == "raise":
        return {"ConnectionResetError": ConnectionResetError, "TimeoutError": TimeoutError,
                "ValueError": ValueError, "RuntimeError": RuntimeError}[op[1]]("hostile")
    elif kind == "nonbytes":
        return {"none": None, "str-body": (200, genuine.hex()), "int": 200,
                "triple": (200, genuine, b""), "bad-code": ("OK", genuine)}[op[1]]
    elif kind == "bundle":
        return 200, _bundle_variant(genuine, op[1])
    return 200, bytes(body)


class HostileServer:
    """A real key server, except that one answer to the armed request type is replaced."""

    def __init__(self, server: KeyServer) -> None:
        self.server = server
        self.armed: dict[int, Any] = {}  # request type -> the answer to give, once
        self.recorded: dict[int, bytes] = {}

    def post(self, url: str, sender: str, body: bytes) -> Any:
        if len(body) > 1 and body[1] in self.armed:
            # not forwarded: the server's state stays as the genuine rounds left it
            replacement = self.armed.pop(body[1])
            if isinstance(replacement, BaseException):
                raise replacement
            return replacement
        code, answer = self.server.post(url, sender, body)
        if len(body) > 1:
            self.recorded.setdefault(body[1], answer)
        return code, answer


class _AnswerRig:
    """One curve: Bob (the peer), Alice (bundles, OPk maintenance), a registrar manager."""

    def __init__(self, factory: Callable[..., Any], curve: Curve, directory: str) -> None:
        self.curve = curve
        self.server = KeyServer()
        self.hostile = HostileServer(self.server)
        tag = f"{curve.name.lower()}-{os.getpid()}"
        self.bob_id = f"sip:bob@example.org;gr=urn:uuid:asan-{tag}"
        self.alice_id = f"sip:alice@example.org;gr=urn:uuid:asan-{tag}"
        self.bob = factory(os.path.join(directory, f"ans-bob-{tag}"), transport=self.server)
        self.factory = factory
        self.alice_path = os.path.join(directory, f"ans-alice-{tag}")
        self.alice = factory(self.alice_path, transport=self.hostile)
        self.registrar = factory(os.path.join(directory, f"ans-reg-{tag}"),
                                 transport=self.hostile)
        self.bob.create_user(self.bob_id, URL, curve, opk_batch=5)
        self.alice.create_user(self.alice_id, URL, curve, opk_batch=2)
        self.users = 0
        self.genuine: dict[str, bytes] = {}
        for target in TARGETS:  # one genuine round of each, to record the answers
            self.operate(target, None)

    def _fresh_user(self) -> str:
        self.users += 1
        return f"sip:r{self.users}@example.org;gr=urn:uuid:asan-{self.curve.name}-{self.users}"

    def operate(self, target: str, answer: Any) -> str:
        """Run the operation that sends ``target``'s request, with ``answer`` given to it."""
        kind = TARGETS[target]
        user = self._fresh_user() if target in ("register", "delete") else None
        if target == "delete":
            self.registrar.create_user(user, URL, self.curve, opk_batch=1)
        self.hostile.armed = {} if answer is None else {kind: answer}
        if target == "post-opks":  # the server "has no OPk left": lime must post some
            self.hostile.armed[_T.GET_SELF_OPKS] = (200, bytes((1, _T.SELF_OPKS, self.curve,
                                                                0, 0)))
        try:
            if target == "register":
                self.registrar.create_user(user, URL, self.curve, opk_batch=1)
            elif target == "delete":
                self.registrar.delete_user(user)
            elif target == "bundle":
                self.alice.encrypt(self.alice_id, "sip:bob@example.org", [self.bob_id], b"hi")
            elif target == "self-opks":
                self.alice.update(opk_low_limit=1, opk_batch=1)
            else:
                self.alice.update(opk_low_limit=5, opk_batch=1)
            outcome = "ok"
        except TYPED as exc:
            outcome = type(exc).__name__
        finally:
            armed, self.hostile.armed = self.hostile.armed, {}
        if answer is None:
            self.genuine[target] = self.hostile.recorded[kind]
        elif kind in armed:
            raise F.Finding("not-sent", f"{target}: the operation sent no such request")
        if target == "bundle":  # the next case fetches the bundle again, from a fresh start
            self.alice.delete_peer(self.bob_id)
            self.alice.close()  # lime 5.1.64 keeps deleted sessions in its cache
            self.alice = self.factory(self.alice_path, transport=self.hostile)
        if target == "register" and self.registrar.is_user(user):
            self.registrar.delete_user(user)
        return outcome

    def close(self) -> None:
        for m in (self.alice, self.bob, self.registrar):
            m.close()


def run_answers(factory: Callable[..., Any], directory: str, note: Note, start: int = 0,
                quick: bool = False) -> Tally:
    """Every answer operation of every target, both curves; a genuine round after each target."""
    tally = Tally()
    index = -1
    for curve in (Curve.C25519, Curve.C448):
        rig = _AnswerRig(factory, curve, directory)
        for target in TARGETS:
            for op in answer_ops(rig.genuine[target], target, curve, quick):
                index += 1
                case = {"curve": int(curve), "target": target, "op": op}
                _hash_case(tally, {"curve": int(curve), "target": target, "op": op})
                if index < start:
                    continue
                note("answers", index, case)
                try:
                    outcome = rig.operate(target, mutate_answer(op, rig.genuine[target]))
                except F.Finding as exc:
                    tally.finding(index, case, exc)
                    outcome = "finding"
                except BaseException as exc:  # noqa: BLE001 - an untyped error is a finding
                    tally.finding(index, case, F.Finding("untyped-exception", repr(exc)))
                    outcome = "finding"
                tally.add(case, f"{target}:{outcome}")
            try:  # the manager still works after every hostile answer of this target
                if rig.operate(target, None) != "ok":
                    raise F.Finding("wedged", f"a genuine {target} fails after the corpus")
            except F.Finding as exc:
                tally.finding(index, {"curve": int(curve), "target": target}, exc)
        rig.close()
    return tally


# =========================================================================== device ids

BAD_IDS = ["", " ", "sip:", "a" * 65535, "a" * 65536, "a" * (1 << 20), "\udcff", "a\x00b",
           "\u00e9" * 40000, "sip:x@example.org;gr=" + "\u2603" * 100, "\x7f" * 10, "%00",
           "sip:alice@example.org;gr=urn:uuid:" + "f" * 4000]
BAD_URLS = ["", "x" * (1 << 20), "\udcff", "a\x00b", "https://[::1", "\u2603" * 1000]
BAD_CURVES = [0, 3, -1, 255, 256, 2**31, 2**64, "c25519", None]
BAD_BATCHES = [-1, 2**31, 2**32, 2**64, "5", None]
BAD_KEYS = [None, b"", b"\x00", b"x" * 31, b"x" * 57, b"x" * 58, b"x" * 65536]


def device_id_calls(alice: str, bob: str) -> Iterator[tuple[str, Callable[[Any], Any]]]:
    """(name, call taking the manager) for every call and every bad argument."""
    for i, bad in enumerate(BAD_IDS):
        yield f"create_user[{i}]", lambda m, b=bad: m.create_user(b, URL, Curve.C25519,
                                                                   opk_batch=1)
        yield f"encrypt.recipient[{i}]", lambda m, b=bad: m.encrypt(alice, "u", [b], b"x")
        yield f"encrypt.recipients2[{i}]", lambda m, b=bad: m.encrypt(alice, "u", [bob, b],
                                                                       b"x")
        yield f"encrypt.user[{i}]", lambda m, b=bad: m.encrypt(alice, b, [bob], b"x")
        yield f"encrypt.sender[{i}]", lambda m, b=bad: m.encrypt(b, "u", [bob], b"x")
        yield f"decrypt.sender[{i}]", lambda m, b=bad: m.decrypt(alice, "u", b, b"\x01" * 80)
        yield f"decrypt.device[{i}]", lambda m, b=bad: m.decrypt(b, "u", bob, b"\x01" * 80)
        for status in PeerStatus:
            yield (f"set_peer_status.{status.name}[{i}]",
                   lambda m, b=bad, s=status: m.set_peer_status(b, s, b"x" * 32))
        yield f"peer_status[{i}]", lambda m, b=bad: m.peer_status(b)
        yield f"delete_peer[{i}]", lambda m, b=bad: m.delete_peer(b)
        yield f"stale_sessions.peer[{i}]", lambda m, b=bad: m.stale_sessions(alice, b)
        yield f"stale_sessions.device[{i}]", lambda m, b=bad: m.stale_sessions(b, bob)
        yield f"identity_key[{i}]", lambda m, b=bad: m.identity_key(b)
        yield f"is_user[{i}]", lambda m, b=bad: m.is_user(b)
        yield f"server_url[{i}]", lambda m, b=bad: m.server_url(b)
        yield f"set_server_url[{i}]", lambda m, b=bad: m.set_server_url(b, URL)
        yield f"delete_user[{i}]", lambda m, b=bad: m.delete_user(b)
    for i, bad in enumerate(BAD_URLS):
        yield f"create_user.url[{i}]", lambda m, b=bad: m.create_user(
            f"sip:u{len(b)}@example.org;gr=url", b, Curve.C25519, opk_batch=1)
        yield f"set_server_url.url[{i}]", lambda m, b=bad: m.set_server_url(alice, b)
    yield "set_server_url.restore", lambda m: m.set_server_url(alice, URL)
    for i, bad in enumerate(BAD_CURVES):
        yield f"create_user.curve[{i}]", lambda m, b=bad, j=i: m.create_user(
            f"sip:c{j}@example.org;gr=curve", URL, b, opk_batch=1)
    for i, bad in enumerate(BAD_BATCHES):
        yield f"create_user.opk_batch[{i}]", lambda m, b=bad, j=i: m.create_user(
            f"sip:b{j}@example.org;gr=batch", URL, Curve.C25519, opk_batch=b)
        yield f"update.opk_batch[{i}]", lambda m, b=bad: m.update(opk_low_limit=1, opk_batch=b)
        yield f"update.opk_low_limit[{i}]", lambda m, b=bad: m.update(opk_low_limit=b,
                                                                       opk_batch=1)
    for i, bad in enumerate(BAD_KEYS):
        for status in PeerStatus:
            yield (f"set_peer_status.key.{status.name}[{i}]",
                   lambda m, b=bad, s=status: m.set_peer_status(bob, s, b))
    yield "encrypt.no-recipients", lambda m: m.encrypt(alice, "u", [], b"x")
    yield "encrypt.duplicates", lambda m: m.encrypt(alice, "u", [bob] * 3, b"x")
    yield "encrypt.duplicates-after-reopen", lambda m: (
        _refused_decrypt(m, alice, bob), m.encrypt(alice, "u", [bob, alice, bob], b"x"))
    yield "encrypt.self", lambda m: m.encrypt(alice, "u", [alice], b"x")
    yield "encrypt.empty-plaintext", lambda m: m.encrypt(alice, "u", [bob], b"")
    yield "encrypt.bad-policy", lambda m: m.encrypt(alice, "u", [bob], b"x", policy=9)
    yield "decrypt.empty", lambda m: m.decrypt(alice, "u", bob, b"")
    yield "decrypt.cipher-only", lambda m: m.decrypt(alice, "u", bob, b"", b"\x00" * 64)


def _refused_decrypt(m: Any, alice: str, bob: str) -> None:
    """A refused decrypt: the binding then reloads lime's sessions from the database."""
    try:
        m.decrypt(alice, "u", bob, b"\x01" * 80)
    except errors.DecryptionError:
        pass


def run_device_ids(factory: Callable[..., Any], directory: str, note: Note, start: int = 0,
                   quick: bool = False) -> Tally:
    """Every bad argument in every call: a typed error or a result, then a working manager."""
    tally = Tally()
    server = KeyServer()
    alice = "sip:alice@example.org;gr=urn:uuid:asan-ids"
    bob = "sip:bob@example.org;gr=urn:uuid:asan-ids"
    m = factory(os.path.join(directory, "ids-alice"), transport=server)
    peer = factory(os.path.join(directory, "ids-bob"), transport=server)
    m.create_user(alice, URL, Curve.C25519, opk_batch=2)
    peer.create_user(bob, URL, Curve.C25519, opk_batch=5)
    calls = list(device_id_calls(alice, bob))
    if quick:
        calls = calls[::10]
    for index, (name, call) in enumerate(calls):
        _hash_case(tally, name)
        if index < start:
            continue
        note("device-ids", index, name)
        try:
            call(m)
            outcome = "accepted"
        except TYPED as exc:
            outcome = type(exc).__name__
        except BaseException as exc:  # noqa: BLE001 - an untyped error is a finding
            tally.finding(index, name, F.Finding("untyped-exception", repr(exc)))
            outcome = "finding"
        tally.add(name, f"{name.split('[')[0]}:{outcome}")
    try:  # the manager still encrypts to Bob and Bob decrypts
        out = m.encrypt(alice, "u", [bob], b"still works")
        r = next(x for x in out.recipients if x.device_id == bob)
        if peer.decrypt(bob, "u", alice, r.dr_message, out.cipher_message).plaintext != \
                b"still works":
            raise F.Finding("wrong-plaintext", "after the bad arguments")
    except BaseException as exc:  # noqa: BLE001
        tally.finding(len(calls), "final round trip", exc)
    m.close()
    peer.close()
    return tally


# =========================================================================== kept regressions


def run_regressions(factory: Callable[..., Any], directory: str, note: Note, start: int = 0,
                    quick: bool = False) -> Tally:
    """The kept lime-decrypt cases, replayed in this process on fresh pairs."""
    tally = Tally()
    paths = sorted(REGRESSIONS.glob("*.json"))
    if quick:
        paths = paths[:2]
    for index, path in enumerate(paths):
        case = json.loads(path.read_text())
        _hash_case(tally, case)
        if index < start:
            continue
        note("regressions", index, path.name)
        try:
            outcome = F.replay_decrypt_case(factory, case)
        except F.Finding as exc:
            tally.finding(index, path.name, exc)
            outcome = "finding"
        tally.add(path.name, outcome)
    return tally


RUNNERS = {"decrypt": run_decrypt, "answers": run_answers, "device-ids": run_device_ids,
           "regressions": run_regressions}


def run(section: str, factory: Callable[..., Any], note: Note, start: int = 0,
        quick: bool = False) -> dict[str, Any]:
    """Run one section in a temporary directory; its tally as JSON-able data."""
    with tempfile.TemporaryDirectory(prefix=f"corpus-{section}-") as directory:
        return RUNNERS[section](factory, directory, note, start, quick).as_dict()
