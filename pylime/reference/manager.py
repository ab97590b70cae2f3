"""ReferenceManager: lime 5.1.64 in pure Python, with the same surface as :class:`pylime.Manager`.

It also speaks lime 5.4's post-quantum algorithms (``Curve.C25519K512``, ``C25519MLK512``,
``C448MLK1024``: :mod:`pylime.reference.hybrid`), which liblime 5.1.64 has not; see
docs/lime54-post-quantum.md for what it stores for them.

It reads and writes lime's own SQLite schema, so a database moves between this class and
the liblime binding mid-conversation. Key-server requests go through the same transports
as the binding's. Where liblime only says "decryption failed", this class raises the
precise :class:`~pylime.errors.DecryptionError` subclass.

Differences from liblime that a caller can see are deliberate and few:

- operations are synchronous (liblime queues encryptions while a bundle request is out);
- a key server that leaves a requested device out of its peerBundle answer makes that
  device FAIL, where liblime would request it again and again;
- ``is_user`` reads the database only, where liblime also consults its in-memory cache;
- an SPk signature is checked with libsodium's stricter rules, where decaf's cofactored
  check also accepts mixed-order identity keys (:func:`~pylime.reference.primitives.ed25519ctx_verify`).

Like the binding, and unlike liblime, it refuses a key-server answer whose message type does
not fit the request (liblime takes an acknowledgement answering registerUser as success
without activating the user). liblime's other quirks are kept on purpose, and pinned by
tests/conformance: a replayed first message without OPk decrypts again (a fresh X3DH
session), and bytes between the seed and the tag of a cipher-mode DR message are ignored.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Union

from pylime import database, errors, sessions
from pylime.answers import OPERATION_FAILS, Kind, judge
from pylime.database import Durability
from pylime.keycheck import dr_message_has_low_order_key
from pylime.keyserver import protocol as proto
from pylime.reference import encoding, hybrid
from pylime.reference.primitives import (
    SIZES,
    InvalidTag,
    XKey,
    aead_decrypt,
    aead_encrypt,
    ed_keypair,
    ed_sign,
    ed_to_x_private,
    ed_to_x_public,
    ed_verify,
    hkdf_sha512,
    wipe,
    x_generate,
    x_key,
    x_keypair,
)
from pylime.reference.ratchet import RANDOM_SEED_INFO, SEED_SIZE, Session
from pylime.reference.storage import INACTIVE_USER_BIT, INVALID_IK, AnySession, Db, LocalUser
from pylime.results import DecryptResult, EncryptResult, RecipientResult
from pylime.transport import Transport
from pylime.types import Curve, PeerStatus, Policy

__all__ = ["ReferenceManager", "x3dh_ad", "x3dh_sk"]

StrPath = Union[str, "os.PathLike[str]"]

X3DH_SK_INFO = b"Lime"
X3DH_AD_INFO = b"X3DH Associated Data"
_ZERO_SALT = bytes(64)
#: Db.skipped_state: (any chain, a chain for the message's DHs, its stored key)
SkippedState = tuple[bool, bool, "tuple[int, bytes] | None"]
_IK_SIZES = (32, 57)


def x3dh_sk(curve: Curve, dhs: Sequence[bytes | bytearray]) -> bytearray:
    """SK = HKDF(64 zero bytes, F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], "Lime", 32); F is Ed-public-size 0xFF."""
    ikm = bytearray(b"\xff" * SIZES[curve].ed_pub)
    for part in dhs:
        ikm += part
    sk = hkdf_sha512(_ZERO_SALT, ikm, X3DH_SK_INFO, 32)
    wipe(ikm)
    return sk


def x3dh_ad(ik_init: bytes, ik_resp: bytes, dev_init: str, dev_resp: str) -> bytes:
    """The session's shared AD: initiator first, whichever side computes it."""
    data = ik_init + ik_resp + _dev(dev_init) + _dev(dev_resp)
    return bytes(hkdf_sha512(_ZERO_SALT, data, X3DH_AD_INFO, 32))


def _dev(device_id: str) -> bytes:
    return device_id.encode("utf-8")


def _check_str(value: str, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    return value


def _check_device_id(value: str, name: str) -> str:
    """A device id that also fits the key-server protocol's 16-bit length."""
    if len(_check_str(value, name).encode("utf-8")) > proto.MAX_DEVICE_ID_SIZE:
        raise ValueError(f"{name} is longer than the protocol's {proto.MAX_DEVICE_ID_SIZE} bytes")
    return value


def _new_prekey(curve: Curve) -> tuple[bytes, bytearray, bytes]:
    """A fresh SPk/OPk: (stored public part, stored private part, published public key).

    The stored blob is public ‖ private in lime's layout for the curve (see
    :func:`pylime.reference.storage.published_prekey`).
    """
    if curve.is_post_quantum:
        key = hybrid.PreKey.generate(curve)
        private = bytearray(key.private_part)
        key.wipe()
        return key.ec_pub, private, key.public
    pub, priv = x_keypair(curve)
    return pub, priv, pub


def _chain_key(session: AnySession) -> bytes:
    """What names a session's receiving chain among the skipped keys."""
    return session.chain_key if isinstance(session, hybrid.HybridSession) else session.dhr


def _direct(policy: Policy, n: int, p: int) -> bool:
    """lime's policy choice (§6): True = payload in each DR message."""
    if policy == Policy.DR_MESSAGE:
        return True
    if policy == Policy.CIPHER_MESSAGE:
        return False
    if policy == Policy.OPTIMIZE_GLOBAL_BANDWIDTH:
        return 2 * n * p <= p + 16 + (2 * SEED_SIZE + p + 16) * n
    return n * p <= p + 16 + SEED_SIZE * n


# Rank of decryption failure reasons: the most specific explanation wins.
_REASON_RANK = [
    errors.TooManySkippedError,
    errors.ReplayError,
    errors.IdentityKeyChangedError,
    errors.UnknownOPkError,
    errors.MalformedMessageError,
    errors.BadTagError,
]


def _best(reasons: list[errors.DecryptionError]) -> errors.DecryptionError:
    for cls in _REASON_RANK:
        for r in reasons:
            if isinstance(r, cls):
                return r
    return reasons[0] if reasons else errors.BadTagError("no session could decrypt the message")


class ReferenceManager:
    """A lime manager in pure Python on one database: the reference twin of ``Manager``.

    Args:
        path: the SQLite database file (lime 5.1.64's schema), created owner-only.
        transport: any object with ``post(url, sender, body) -> (status, body)``.

    Between calls it keeps no secret but, on curve448, the loaded ratchet keys of recent
    sessions (:class:`~pylime.reference.storage.Db`); the identity seed is read from the
    database only for an X3DH or a signature, and wiped after.

    Thread safety: every public method holds one lock, so threads may share an instance.
    """

    def __init__(self, path: StrPath, transport: Transport, durability: Durability = "wal",
                 *, _db: Db | None = None) -> None:
        if not callable(getattr(transport, "post", None)):
            raise TypeError("transport must have a post(url, sender, body) method")
        self._path = os.fspath(path)
        self._durability = database.check(durability)
        self._transport = transport
        self._lock = threading.RLock()
        if _db is not None:  # a snapshot (diagnose): no file to lock
            self._db: Db | None = _db
            self._unlock = weakref.finalize(self, database.unlock, None)
            return
        fd = database.lock(self._path)  # one manager per database, as for the binding
        self._unlock = weakref.finalize(self, database.unlock, fd)
        try:
            self._db = Db(self._path, durability=self._durability)
        except BaseException:
            self._unlock()
            raise

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def durability(self) -> Durability:
        """The storage mode applied: "full", "wal" or "fast" (see :mod:`pylime.database`)."""
        return self._durability

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._db is None

    def close(self) -> None:
        """Close the database and release it for other managers. Idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._unlock()

    def __enter__(self) -> ReferenceManager:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<pylime.reference.ReferenceManager {state} {self._path!r}>"

    def _open_db(self) -> Db:
        if self._db is None:
            raise errors.ManagerClosedError("this ReferenceManager is closed")
        return self._db

    # ------------------------------------------------------------------ key server

    def _post(self, user: LocalUser, body: bytes, failure: type[errors.LimeError]) -> object:
        """Send one request; raise what :func:`pylime.answers.judge` finds, or return the answer.

        An X3DH error message for the user's curve comes back as an ErrorMessage, for the
        caller to act on (update re-registers a user the server does not know).
        """
        try:
            answer: object = self._transport.post(user.url, user.device_id, body)
        except Exception as exc:  # noqa: BLE001 - the judge makes it a TransportError
            answer = exc
        verdict = judge(user.url, body, answer)
        if verdict.kind is Kind.REFUSED and verdict.body[2] == user.curve:
            return verdict.message
        if verdict.problem is not None:
            raise verdict.problem
        if verdict.kind in OPERATION_FAILS:
            raise failure(verdict.detail)
        return verdict.message

    @staticmethod
    def _raise_error(url: str, msg: proto.ErrorMessage) -> None:
        raise errors.KeyServerProtocolError(
            f"key server at {url} refused the request: error 0x{msg.code:02x} {msg.text[:200]!r}",
            msg.code,
        )

    def _handle_ack(self, db: Db, user: LocalUser, answer: object) -> None:
        """The common handling of an answer to register/delete/postSPk/postOPks."""
        if isinstance(answer, proto.ErrorMessage):
            self._raise_error(user.url, answer)
        if isinstance(answer, proto.Ack):
            if answer.type == proto.MessageType.REGISTER_USER:
                with db.transaction() as c:
                    c.execute("UPDATE lime_LocalUsers SET curveId = ? WHERE Uid = ?;",
                              (int(user.curve), user.uid))
                db.users_changed()
            return
        raise errors.KeyServerError(f"key server at {user.url}: unexpected answer")

    def _register_body(self, db: Db, user: LocalUser, opk_count: int) -> bytes:
        """registerUser with the stored Ik and active SPk, stored active OPks or a new batch."""
        spk = db.active_spk(user.uid, user.curve)
        with db.transaction():
            if spk is None:
                pub, priv, published = _new_prekey(user.curve)
                spk = (db.insert_spk(user.uid, pub, bytes(priv)), published)
                wipe(priv)
            opks = db.active_opks(user.uid, user.curve)
            if not opks:
                opks = self._new_opks(db, user, opk_count)
        sig = ed_sign(user.curve, user.ik_priv, spk[1])
        return proto.RegisterUser(
            user.curve, user.ik_pub, spk[1], sig, spk[0],
            tuple(proto.OPk(pub, i) for i, pub in opks),
        ).to_bytes()

    @staticmethod
    def _new_opks(db: Db, user: LocalUser, count: int) -> list[tuple[int, bytes]]:
        made = [_new_prekey(user.curve) for _ in range(count)]
        ids = db.insert_opks(user.uid, [(pub, priv) for pub, priv, _ in made])
        return list(zip(ids, [published for _, _, published in made]))

    # ------------------------------------------------------------------ users

    def create_user(self, device_id: str, server_url: str, curve: Curve,
                    opk_batch: int = 100) -> None:
        """Create a local user, publish its keys on the key server, and wait for the answer.

        ``curve`` may be any :class:`Curve`, lime 5.4's post-quantum ones included.

        Raises:
            InvalidCurveError, UserExistsError, KeyServerError (the local user is removed
            when the server refused it, kept pending when the answer was lost: see
            :meth:`pylime.Manager.create_user`).
        """
        try:
            curve = Curve(int(curve))
        except ValueError:
            raise errors.InvalidCurveError(f"unsupported curve {curve!r}") from None
        if not 0 <= opk_batch <= 0xFFFF:
            raise ValueError("opk_batch must be between 0 and 65535")
        _check_device_id(device_id, "device_id")
        _check_str(server_url, "server_url")
        with self._lock:
            db = self._open_db()
            row = db.conn.execute(
                "SELECT Uid,curveId FROM lime_LocalUsers WHERE UserId = ? LIMIT 1;",
                (device_id,),
            ).fetchone()
            if row is not None and not row[1] & INACTIVE_USER_BIT:
                raise errors.UserExistsError(f"user {device_id!r} already exists")
            if row is None:
                pub, seed = ed_keypair(curve)
                with db.transaction() as c:
                    c.execute(
                        "INSERT INTO lime_LocalUsers(UserId,Ik,server,curveId) "
                        "VALUES (?,?,?,?) ",
                        (device_id, pub + bytes(seed), server_url, INACTIVE_USER_BIT | curve),
                    )
                db.users_changed()
                wipe(seed)
            user = db.load_user(device_id, all_status=True)
            user.url = server_url  # lime posts to the URL given now, even on a re-publish
            try:
                body = self._register_body(db, user, opk_batch)
                self._handle_ack(db, user, self._post(user, body, errors.KeyServerError))
            except errors.LimeError as exc:
                # As the binding: a lost answer keeps the user pending (inactive) with its
                # keys, since the server may have registered them; a refusal removes it.
                if not getattr(exc, "answer_lost", False):  # KeyServerError.answer_lost
                    with db.transaction() as c:
                        c.execute("DELETE FROM lime_LocalUsers WHERE UserId = ?;",
                                  (device_id,))
                    db.users_changed()
                raise
            finally:
                wipe(user.ik_priv)

    def delete_user(self, device_id: str) -> None:
        """Delete a local user locally (it stands), then on the key server."""
        _check_str(device_id, "device_id")
        with self._lock:
            db = self._open_db()
            user = db.load_user(device_id, secret=False)
            with db.transaction() as c:
                c.execute("DELETE FROM lime_LocalUsers WHERE UserId = ?;", (device_id,))
            db.users_changed()
            db.forget_keys()
            answer = self._post(user, proto.DeleteUser(user.curve).to_bytes(),
                                errors.KeyServerError)
            self._handle_ack(db, user, answer)

    def is_user(self, device_id: str) -> bool:
        """True if ``device_id`` is an active local user of this database."""
        _check_str(device_id, "device_id")
        with self._lock:
            try:
                self._open_db().load_user(device_id, secret=False)
            except errors.UserNotFoundError:
                return False
            return True

    def identity_key(self, device_id: str) -> bytes:
        """The public identity key of a local user (32 bytes on curve25519, 57 on curve448)."""
        _check_str(device_id, "device_id")
        with self._lock:
            return self._open_db().load_user(device_id, secret=False).ik_pub

    def server_url(self, device_id: str) -> str:
        """The key server URL a local user publishes to."""
        _check_str(device_id, "device_id")
        with self._lock:
            return self._open_db().load_user(device_id, secret=False).url

    def set_server_url(self, device_id: str, url: str) -> None:
        """Move a local user to another key server URL (its keys are not re-published)."""
        _check_str(device_id, "device_id")
        _check_str(url, "url")
        with self._lock:
            db = self._open_db()
            db.load_user(device_id, secret=False)
            with db.transaction() as c:
                c.execute("UPDATE lime_LocalUsers SET server = ? WHERE UserId = ?;",
                          (url, device_id))
            db.users_changed()

    def update(self, opk_low_limit: int = 100, opk_batch: int = 25) -> None:
        """lime's maintenance for every local user: cleanup, OPk top-up, SPk rotation.

        Every user is processed; the first failure is raised at the end (KeyServerError).
        """
        if not (0 <= opk_low_limit <= 0xFFFF and 0 <= opk_batch <= 0xFFFF):
            raise ValueError("opk_low_limit and opk_batch must be between 0 and 65535")
        low_limit = max(opk_low_limit, 1)
        with self._lock:
            db = self._open_db()
            with db.transaction():
                db.clean()
            db.forget_keys()
            failures: list[errors.LimeError] = []
            for device_id in db.all_local_devices():
                try:
                    user = db.load_user(device_id)
                except errors.UserNotFoundError:
                    continue  # lime fails to load inactive users here; nothing to maintain
                for step in (self._update_opks, self._update_spk):
                    try:
                        step(db, user, low_limit, opk_batch)
                    except errors.LimeError as exc:
                        failures.append(exc)
                wipe(user.ik_priv)
            if failures:
                raise failures[0]

    def _update_opks(self, db: Db, user: LocalUser, low_limit: int, batch: int) -> None:
        answer = self._post(user, proto.GetSelfOPks(user.curve).to_bytes(),
                            errors.KeyServerError)
        if isinstance(answer, proto.ErrorMessage):
            if answer.code == proto.ErrorCode.USER_NOT_FOUND:
                with db.transaction():
                    db.update_opk_status(user.uid, [])
                body = self._register_body(db, user, low_limit)
                self._handle_ack(db, user, self._post(user, body, errors.KeyServerError))
                return
            self._raise_error(user.url, answer)
        if not isinstance(answer, proto.SelfOPks):
            self._handle_ack(db, user, answer)
            return
        with db.transaction():
            db.update_opk_status(user.uid, list(answer.opk_ids))
            count = len(answer.opk_ids)
            if count >= low_limit:
                return
            new = self._new_opks(db, user, max(batch, low_limit - count))
        body = proto.PostOPks(user.curve, tuple(proto.OPk(p, i) for i, p in new)).to_bytes()
        self._handle_ack(db, user, self._post(user, body, errors.KeyServerError))

    def _update_spk(self, db: Db, user: LocalUser, _low: int, _batch: int) -> None:
        if db.current_spk_valid(user.uid):
            return
        pub, priv, published = _new_prekey(user.curve)
        with db.transaction():
            spk_id = db.insert_spk(user.uid, pub, bytes(priv))
        wipe(priv)
        sig = ed_sign(user.curve, user.ik_priv, published)
        body = proto.PostSPk(user.curve, published, sig, spk_id).to_bytes()
        self._handle_ack(db, user, self._post(user, body, errors.KeyServerError))

    # ------------------------------------------------------------------ X3DH

    def _x3dh_initiate(self, db: Db, user: LocalUser, ik_x: XKey,
                       bundle: proto.Bundle) -> AnySession:
        """X3DH initiator for one bundle (§2.1); raises EncryptionError like lime's whole-call failure.

        ``ik_x`` is the user's identity key in X form, prepared once for every bundle.
        """
        assert bundle.ik is not None and bundle.spk is not None
        assert bundle.spk_sig is not None and bundle.spk_id is not None
        curve = user.curve
        if not ed_verify(curve, bundle.ik, bundle.spk, bundle.spk_sig):
            raise errors.EncryptionError(
                f"Error during the peer Bundle processing: SPk signature of "
                f"{bundle.device_id!r} does not verify")
        try:
            did = db.check_peer_device(bundle.device_id, bundle.ik)
        except errors.IdentityKeyChangedError:
            raise errors.EncryptionError(
                f"Error during the peer Bundle processing: {bundle.device_id!r} changed its "
                "identity key") from None
        if curve.is_post_quantum:
            return self._hybrid_initiate(db, user, bundle, did)
        ek_pub, ek = x_generate(curve)
        parts = [
            ik_x.exchange(bundle.spk),
            ek.exchange(ed_to_x_public(curve, bundle.ik)),
            ek.exchange(bundle.spk),
        ]
        if bundle.opk is not None:
            parts.append(ek.exchange(bundle.opk.public))
        sk = x3dh_sk(curve, parts)
        for p in parts:
            wipe(p)
        ek.wipe()
        init = encoding.X3DHInit(
            curve, user.ik_pub, ek_pub, bundle.spk_id,
            bundle.opk.id if bundle.opk is not None else None,
        ).to_bytes()
        ad = x3dh_ad(user.ik_pub, bundle.ik, user.device_id, bundle.device_id)
        session = Session.as_sender(curve, user.uid, did, sk, ad, bundle.spk, init,
                                    bundle.device_id, bundle.ik)
        wipe(sk)
        return session

    @staticmethod
    def _hybrid_initiate(db: Db, user: LocalUser, bundle: proto.Bundle,
                         did: int) -> hybrid.HybridSession:
        """lime 5.4's hybrid X3DH initiator for one (checked) bundle."""
        assert bundle.ik is not None and bundle.spk is not None and bundle.spk_id is not None
        curve = user.curve
        opk = (bundle.opk.public, bundle.opk.id) if bundle.opk is not None else None
        db.load_seed(user)
        try:
            sk, init = hybrid.initiate(curve, user.ik_pub, user.ik_priv, bundle.ik, bundle.spk,
                                       bundle.spk_id, opk)
        except ValueError:
            raise errors.EncryptionError(
                f"Error during the peer Bundle processing: {bundle.device_id!r} sent an "
                "invalid key") from None
        ad = x3dh_ad(user.ik_pub, bundle.ik, user.device_id, bundle.device_id)
        try:
            return hybrid.HybridSession.as_sender(curve, user.uid, did, sk, ad, bundle.spk,
                                                  init.to_bytes(), bundle.device_id, bundle.ik)
        finally:
            wipe(sk)

    def _hybrid_respond(self, db: Db, user: LocalUser, sender: str,
                        init: encoding.X3DHInit) -> hybrid.HybridSession:
        """lime 5.4's hybrid X3DH responder from an X3DH init."""
        curve = user.curve
        blob = db.spk_blob(user.uid, init.spk_id)
        if blob is None:
            raise errors.UnknownOPkError("the X3DH init names a signed prekey this device lacks")
        spk = hybrid.PreKey.from_blob(curve, blob)
        opk = None
        if init.opk_id is not None:
            opk_blob = db.opk_blob(user.uid, init.opk_id)
            if opk_blob is None:
                spk.wipe()
                raise errors.UnknownOPkError(
                    "the X3DH init names a one-time prekey this device does not hold "
                    "(already used, or never published)")
            opk = hybrid.PreKey.from_blob(curve, opk_blob)
        try:
            sk = hybrid.respond(curve, user.ik_pub, user.ik_priv, spk, opk, init)
        except ValueError:
            raise errors.MalformedMessageError("the X3DH init carries an invalid key") from None
        finally:
            if opk is not None:
                opk.wipe()
        ad = x3dh_ad(init.ik, user.ik_pub, sender, user.device_id)
        try:
            did = db.check_peer_device(sender, init.ik)
            return hybrid.HybridSession.as_receiver(curve, user.uid, did, sk, ad, spk,
                                                    init.opk_id or 0, sender, init.ik)
        finally:
            wipe(sk)
            spk.wipe()

    def _x3dh_respond(self, db: Db, user: LocalUser, sender: str,
                      init: encoding.X3DHInit) -> AnySession:
        """X3DH responder (§2.1) from an X3DH init; raises UnknownOPkError/IdentityKeyChangedError."""
        curve = user.curve
        if curve.is_post_quantum:
            return self._hybrid_respond(db, user, sender, init)
        spk = db.get_spk(user.uid, init.spk_id, curve)
        if spk is None:
            raise errors.UnknownOPkError("the X3DH init names a signed prekey this device lacks")
        opk = None
        with_opk = init.opk_id is not None
        if with_opk:
            assert init.opk_id is not None
            opk = db.get_opk(user.uid, init.opk_id, curve)
            if opk is None:
                raise errors.UnknownOPkError(
                    "the X3DH init names a one-time prekey this device does not hold "
                    "(already used, or never published)")
        spk_key = x_key(curve, spk[1])
        ik_x = x_key(curve, ed_to_x_private(curve, user.ik_priv))
        try:
            ik_a_x = ed_to_x_public(curve, init.ik)
            parts = [spk_key.exchange(ik_a_x), ik_x.exchange(init.ek), spk_key.exchange(init.ek)]
            if opk is not None:
                parts.append(x_key(curve, opk[1]).exchange(init.ek))
        except ValueError:
            raise errors.MalformedMessageError("the X3DH init carries an invalid key") from None
        finally:
            ik_x.wipe()
            if opk is not None:
                wipe(opk[1])
        sk = x3dh_sk(curve, parts)
        for p in parts:
            wipe(p)
        ad = x3dh_ad(init.ik, user.ik_pub, sender, user.device_id)
        try:
            did = db.check_peer_device(sender, init.ik)
            session = Session.as_receiver(curve, user.uid, did, sk, ad, spk[0], spk[1],
                                          init.opk_id if with_opk and init.opk_id else 0,
                                          sender, init.ik, spk_key)
        finally:
            wipe(sk)
            spk_key.wipe()
        return session

    # ------------------------------------------------------------------ messages

    def encrypt(self, device_id: str, recipient_user_id: str, recipients: Sequence[str],
                plaintext: bytes, policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> EncryptResult:
        """Encrypt ``plaintext`` from local user ``device_id`` to each recipient device.

        Raises:
            UserNotFoundError, KeyServerError, EncryptionError (no recipient could be reached
            or a bundle failed its checks), ValueError (``recipients`` empty or repeating a
            device id).
        """
        _check_str(device_id, "device_id")
        _check_str(recipient_user_id, "recipient_user_id")
        if isinstance(recipients, str):
            raise TypeError("recipients must be a sequence of device ids, not a str")
        ids = [_check_device_id(r, "recipient device id") for r in recipients]
        if not ids:
            raise ValueError("recipients must not be empty")
        if len(set(ids)) != len(ids):  # refused as the binding must (pylime.manager.encrypt)
            raise ValueError("recipients must not repeat a device id")
        plain = bytes(plaintext)
        policy = Policy(policy)
        with self._lock:
            db = self._open_db()
            user = db.load_user(device_id, secret=False)  # the seed only for an X3DH
            try:
                return self._encrypt(db, user, recipient_user_id, ids, plain, policy)
            finally:
                wipe(user.ik_priv)

    def _encrypt(self, db: Db, user: LocalUser, ruid: str, ids: list[str], plain: bytes,
                 policy: Policy) -> EncryptResult:
        statuses: dict[str, PeerStatus] = {}
        sessions: dict[str, AnySession] = {}
        missing: list[str] = []
        for d, (statuses[d], s) in db.active_sessions_and_statuses(
                user.uid, ids, user.curve).items():
            if s is not None:
                sessions[d] = s
            else:
                missing.append(d)
        try:
            return self._encrypt_to(db, user, ruid, ids, plain, policy, statuses, sessions,
                                    missing)
        finally:
            for s in sessions.values():
                s.wipe()

    def _encrypt_to(self, db: Db, user: LocalUser, ruid: str, ids: list[str], plain: bytes,
                    policy: Policy, statuses: dict[str, PeerStatus],
                    sessions: dict[str, AnySession], missing: list[str]) -> EncryptResult:
        failed: set[str] = set()
        if missing:
            answer = self._post(user, proto.GetPeerBundle(user.curve, tuple(missing)).to_bytes(),
                                errors.EncryptionError)
            if isinstance(answer, proto.ErrorMessage):
                self._raise_error(user.url, answer)
            if not isinstance(answer, proto.PeerBundle):
                raise errors.EncryptionError("encrypt failed: unexpected key server answer")
            answered: set[str] = set()
            db.load_seed(user)
            ik_x = x_key(user.curve, ed_to_x_private(user.curve, user.ik_priv))
            try:
                self._initiate_all(db, user, ik_x, answer, sessions, answered, failed)
            finally:
                ik_x.wipe()
            failed |= {d for d in missing if d not in answered and d not in sessions}
        targets = [d for d in ids if d not in failed]
        if not targets:
            raise errors.EncryptionError(
                "encrypt failed: All recipients failed to provide a key bundle")
        direct = _direct(policy, len(targets), len(plain))
        src = _dev(user.device_id)
        cipher = b""
        if direct:
            payload = plain
            common = _dev(ruid) + src
        else:
            seed = os.urandom(SEED_SIZE)
            key = hkdf_sha512(b"", seed, RANDOM_SEED_INFO, 48)
            cipher = aead_encrypt(key[:32], key[32:], plain, src + _dev(ruid))
            wipe(key)
            payload = seed
            common = cipher[-16:] + src
        messages: dict[int, bytes] = {}
        for index, d in enumerate(ids):
            if d not in failed:
                messages[index] = sessions[d].encrypt(payload, common + _dev(d), direct)
        db.save_many(list({id(sessions[d]): sessions[d] for d in targets}.values()))
        out = []
        for index, d in enumerate(ids):
            if index in messages:
                out.append(RecipientResult(d, statuses[d], messages[index]))
            else:
                out.append(RecipientResult(d, PeerStatus.FAIL, b""))
        return EncryptResult(cipher, tuple(out))

    def _initiate_all(self, db: Db, user: LocalUser, ik_x: XKey, answer: proto.PeerBundle,
                      sessions: dict[str, AnySession], answered: set[str],
                      failed: set[str]) -> None:
        """One X3DH session per bundle of a peerBundle answer."""
        for bundle in answer.bundles:
            answered.add(bundle.device_id)
            if bundle.flag == proto.BundleFlag.NO_BUNDLE:
                failed.add(bundle.device_id)
                continue
            s = self._x3dh_initiate(db, user, ik_x, bundle)
            if bundle.opk is not None or bundle.device_id not in sessions:
                sessions[bundle.device_id] = s

    def decrypt(self, device_id: str, recipient_user_id: str, sender_device_id: str,
                dr_message: bytes, cipher_message: bytes = b"") -> DecryptResult:
        """Decrypt a message for local user ``device_id`` from ``sender_device_id``.

        Returns the sender's status before this message and the plaintext.

        Raises:
            DecryptionError: through the subclass that says why; nothing was changed
                (except when the cipher message alone is altered: as in lime, the DR
                message key is then already consumed).
            UserNotFoundError: no local user ``device_id``.
        """
        _check_str(device_id, "device_id")
        _check_str(recipient_user_id, "recipient_user_id")
        _check_str(sender_device_id, "sender_device_id")
        dr, cipher = bytes(dr_message), bytes(cipher_message)
        if dr_message_has_low_order_key(dr):  # refused as the binding must (pylime.keycheck)
            raise errors.MalformedMessageError("the message carries an invalid (low-order) key")
        with self._lock:
            db = self._open_db()
            user = db.load_user(device_id, secret=False)  # the seed only for an X3DH
            try:
                return self._decrypt(db, user, recipient_user_id, sender_device_id, dr, cipher)
            finally:
                wipe(user.ik_priv)

    def _decrypt(self, db: Db, user: LocalUser, ruid: str, sender: str, dr: bytes,
                 cipher: bytes) -> DecryptResult:
        direct = len(cipher) == 0
        if not direct:
            encoding.parse_cipher_message(cipher)  # MalformedMessageError if < 16 bytes
            prefix = cipher[-16:] + _dev(sender) + _dev(user.device_id)
        else:
            prefix = _dev(ruid) + _dev(sender) + _dev(user.device_id)
        reasons: list[errors.DecryptionError] = []
        # Reasons given by a session the message belongs to (same peer ratchet key, or a
        # chain of skipped keys for it) explain a failure better than any other attempt.
        owned: list[errors.DecryptionError] = []
        try:
            parsed: tuple[encoding.DRHeader, int] | None = encoding.parse_dr_header(
                dr, user.curve)
        except errors.MalformedMessageError:
            parsed = None
        header = parsed[0] if parsed is not None else None
        status, candidates = db.sessions_and_status(user.uid, sender, user.curve)
        for session in candidates:
            state: SkippedState = (False, False, None)
            if header is not None and session.skipped_chains:
                state = db.skipped_state(session.session_id, header.chain_index, header.ns)
                session.skipped_chains = state[0]
            mine = header is not None and (header.chain_index == _chain_key(session) or state[1])
            before = len(reasons)
            payload = self._try(db, session, dr, prefix, direct, reasons, parsed, state)
            if payload is not None:
                return DecryptResult(status, self._finish(user, ruid, sender, payload, cipher))
            if mine:
                owned += reasons[before:]
        if header is None:
            raise errors.MalformedMessageError("the DR message header is malformed")
        if header.x3dh_init is None:
            raise _best(owned or reasons)
        # lime still tries a fresh X3DH session here, even when a session owns the message
        with db.transaction():
            db.load_seed(user)
            try:
                session = self._x3dh_respond(db, user, sender, header.x3dh_init)
            except errors.DecryptionError as exc:
                reasons.append(exc)
                raise _best(owned or reasons) from None
            session.skipped_chains = False
            payload = self._try(db, session, dr, prefix, direct, reasons, parsed)
        if payload is None:
            raise _best(owned or reasons)
        return DecryptResult(status, self._finish(user, ruid, sender, payload, cipher))

    @staticmethod
    def _try(db: Db, session: AnySession, dr: bytes, prefix: bytes, direct: bool,
             reasons: list[errors.DecryptionError],
             parsed: tuple[encoding.DRHeader, int] | None,
             state: SkippedState = (False, False, None)) -> bytes | None:
        """One session's attempt; saved (one transaction) only on success.

        ``state`` is :meth:`Db.skipped_state` for the message's DHs and Ns: the session's
        stored skipped key for the message and whether a chain exists for its DHs.
        """
        sid = session.session_id
        known = parsed[0] if parsed is not None else None

        def lookup(dhr: bytes, nr: int) -> tuple[int, bytes] | None:
            if known is not None and (dhr, nr) == (known.chain_index, known.ns):
                return state[2]
            return db.skipped_key(sid, dhr, nr) if sid else None

        def chain_exists(dhr: bytes) -> bool:
            if known is not None and dhr == known.chain_index:
                return state[1]
            return db.has_chain(sid, dhr) if sid else False

        try:
            payload = session.decrypt(dr, prefix, direct, lookup, chain_exists, parsed)
        except errors.DecryptionError as exc:
            reasons.append(exc)
            session.wipe()
            return None
        except ValueError:  # an invalid peer ratchet key
            reasons.append(errors.MalformedMessageError("the DR header carries an invalid key"))
            session.wipe()
            return None
        db.save(session)
        session.wipe()
        return payload

    @staticmethod
    def _finish(user: LocalUser, ruid: str, sender: str, payload: bytes, cipher: bytes) -> bytes:
        if not cipher:
            return payload
        key = hkdf_sha512(b"", payload, RANDOM_SEED_INFO, 48)
        try:
            return aead_decrypt(key[:32], key[32:], cipher, _dev(sender) + _dev(ruid))
        except InvalidTag:
            raise errors.BadTagError(
                "the DR message decrypted but the cipher message failed authentication"
            ) from None
        finally:
            wipe(key)

    # ------------------------------------------------------------------ peers

    def set_peer_status(self, peer_device_id: str, status: PeerStatus,
                        identity_key: bytes | None = None) -> None:
        """Record what the application knows of a peer device (lime's rules, §7.3)."""
        status = PeerStatus(status)
        _check_str(peer_device_id, "peer_device_id")
        if status in (PeerStatus.FAIL, PeerStatus.UNKNOWN):
            raise ValueError(f"{status.name} is reported by lime, it cannot be set")
        ik = b"" if identity_key is None else bytes(identity_key)
        if status is PeerStatus.TRUSTED and len(ik) not in _IK_SIZES:
            raise ValueError("trusting a peer device needs its identity key "
                             "(32 bytes on curve25519, 57 on curve448)")
        with self._lock:
            db = self._open_db()
            with db.transaction() as c:
                row = c.execute(
                    "SELECT Did, Ik, Status FROM Lime_PeerDevices WHERE DeviceId = ? LIMIT 1;",
                    (peer_device_id,),
                ).fetchone()
                if status is PeerStatus.TRUSTED:
                    if row is None:
                        c.execute("INSERT INTO Lime_PeerDevices(DeviceId, Ik, Status) "
                                  "VALUES(?, ?, ?);", (peer_device_id, ik, 1))
                    elif bytes(row[1]) == ik:
                        c.execute("UPDATE Lime_PeerDevices SET Status = ? WHERE Did = ?;",
                                  (1, row[0]))
                    elif bytes(row[1]) == INVALID_IK:
                        c.execute("UPDATE Lime_PeerDevices SET Status = ?, Ik = ? "
                                  "WHERE Did = ?;", (1, ik, row[0]))
                    else:
                        raise errors.IdentityKeyMismatchError(
                            f"the identity key given for {peer_device_id!r} is not the one "
                            "lime stores")
                    return
                if status is PeerStatus.UNTRUSTED:
                    if row is None or row[2] in (0, 2):
                        return
                    c.execute("UPDATE Lime_PeerDevices SET Status = ? WHERE Did = ?;",
                              (0, row[0]))
                    return
                if row is None:
                    c.execute("INSERT INTO Lime_PeerDevices(DeviceId, Ik, Status) "
                              "VALUES(?, ?, ?);", (peer_device_id, INVALID_IK, 2))
                else:
                    c.execute("UPDATE Lime_PeerDevices SET Status = ? WHERE Did = ?;",
                              (2, row[0]))

    def peer_status(self, peer_device_id: str) -> PeerStatus:
        """The stored status of a peer device; UNKNOWN if never met."""
        _check_str(peer_device_id, "peer_device_id")
        with self._lock:
            return self._open_db().peer_status(peer_device_id)

    def delete_peer(self, peer_device_id: str) -> None:
        """Forget a peer device and every session with it (it becomes UNKNOWN)."""
        _check_str(peer_device_id, "peer_device_id")
        with self._lock:
            db = self._open_db()
            with db.transaction() as c:
                c.execute("DELETE FROM lime_peerDevices WHERE DeviceId = ?;", (peer_device_id,))
            db.forget_keys()

    def prune_stale_sessions(self, keep: int, older_than_days: float = 0.0) -> int:
        """See :meth:`pylime.Manager.prune_stale_sessions` (the reference caches nothing)."""
        with self._lock:
            self._open_db().forget_keys()
            return sessions.prune_unlocked(self._path, keep=keep,
                                           older_than_days=older_than_days)

    def stale_sessions(self, device_id: str, peer_device_id: str) -> None:
        """Retire the active session with a peer: the next encrypt runs a new X3DH."""
        _check_str(device_id, "device_id")
        _check_str(peer_device_id, "peer_device_id")
        with self._lock:
            db = self._open_db()
            user = db.load_user(device_id, secret=False)
            with db.transaction() as c:
                c.execute(
                    "UPDATE DR_sessions SET Status = 0, timeStamp = CURRENT_TIMESTAMP WHERE "
                    "Uid = ? AND Status = 1 AND Did = (SELECT Did FROM lime_PeerDevices WHERE "
                    "DeviceId= ? LIMIT 1)",
                    (user.uid, peer_device_id),
                )

