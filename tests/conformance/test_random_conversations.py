"""Random conversations between liblime and the reference: every delivery and every replay agree."""

from __future__ import annotations

import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylime.errors import DecryptionError
from pylime.keyserver import KeyServer
from pylime.types import CLASSIC_CURVES, Curve, Policy

from .conftest import Net

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1), st.sampled_from(list(Policy))),
        st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(0, 50)),
        st.tuples(st.just("replay"), st.integers(0, 1), st.integers(0, 50)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, curve=st.sampled_from(list(CLASSIC_CURVES)), lime_first=st.booleans())
def test_random_conversation(actions: list[tuple[str, int, object]], curve: Curve,
                             lime_first: bool) -> None:
    """Pending messages always decrypt in any order, delivered ones never decrypt twice."""
    with tempfile.TemporaryDirectory() as tmp, KeyServer() as server:
        net = Net(pathlib.Path(tmp), server, curve)
        kinds = ("lime", "ref") if lime_first else ("ref", "lime")
        devs = [net.dev("alice", kinds[0]), net.dev("bob", kinds[1])]
        pending: list[list[tuple[bytes, bytes, bytes]]] = [[], []]  # per receiver
        delivered: list[list[tuple[bytes, bytes]]] = [[], []]
        counter = 0
        try:
            for action, who, arg in actions:
                me, other = devs[who], devs[1 - who]
                if action == "send":
                    counter += 1
                    text = b"msg %d " % counter * (counter % 7 + 1)
                    out = me.send(other.user, [other], text, arg)  # type: ignore[arg-type]
                    pending[1 - who].append((out.recipients[0].dr_message, out.cipher_message, text))
                elif action == "deliver" and pending[who]:
                    dr, cipher, text = pending[who].pop(int(arg) % len(pending[who]))  # type: ignore[call-overload]
                    got = me.manager.decrypt(me.device_id, me.user, other.device_id, dr, cipher)
                    assert got.plaintext == text
                    delivered[who].append((dr, cipher))
                elif action == "replay" and delivered[who]:
                    dr, cipher = delivered[who][int(arg) % len(delivered[who])]  # type: ignore[call-overload]
                    x3dh_without_opk = dr[1] & 1 and dr[3] == 0
                    if not x3dh_without_opk:
                        try:
                            me.manager.decrypt(me.device_id, me.user, other.device_id, dr, cipher)
                        except DecryptionError:
                            pass
                        else:
                            raise AssertionError("a replayed message decrypted again")
            for who in (0, 1):  # everything still pending decrypts at the end
                me, other = devs[who], devs[1 - who]
                for dr, cipher, text in pending[who]:
                    got = me.manager.decrypt(me.device_id, me.user, other.device_id, dr, cipher)
                    assert got.plaintext == text
        finally:
            net.close()
