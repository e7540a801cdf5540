"""The DevNonce, RJcount and JoinNonce rules of `jsd.join.nonces`, as a table: pure code, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from jsd.join import Reason
from jsd.join.nonces import MAX_JOIN_NONCE, after_join_request, after_rejoin_request
from jsd.join.refusals import Refused
from jsd.lorawan import MACVersion
from jsd.registry import NonceState

FRESH = NonceState(version=3, join_nonce=7, last_dev_nonce=None, used_dev_nonces=(), rj_count0=None, rj_count1=None)


def state(**changes: Any) -> NonceState:
    return replace(FRESH, **changes)


@dataclass(frozen=True)
class JoinCase:
    version: MACVersion
    before: NonceState
    dev_nonce: int
    after: NonceState | Reason
    history: int = 4


JOINS = {
    "1.0.2 first": JoinCase(MACVersion.V1_0_2, FRESH, 9, state(join_nonce=8, last_dev_nonce=9, used_dev_nonces=(9,))),
    "1.0.2 random order": JoinCase(
        MACVersion.V1_0_2, state(last_dev_nonce=9, used_dev_nonces=(9,)), 2,
        state(join_nonce=8, last_dev_nonce=2, used_dev_nonces=(9, 2)),
    ),
    "1.0.2 reused": JoinCase(MACVersion.V1_0_2, state(used_dev_nonces=(1, 9)), 9, Reason.NONCE_REPLAYED),
    "1.0.3 history keeps the newest": JoinCase(
        MACVersion.V1_0_3, state(used_dev_nonces=(1, 2)), 3,
        state(join_nonce=8, last_dev_nonce=3, used_dev_nonces=(2, 3)), history=2,
    ),
    "1.0.3 no history": JoinCase(
        MACVersion.V1_0_3, FRESH, 3, state(join_nonce=8, last_dev_nonce=3, used_dev_nonces=()), history=0
    ),
    "1.0.4 counter grows": JoinCase(MACVersion.V1_0_4, state(last_dev_nonce=4), 5, state(join_nonce=8, last_dev_nonce=5)),
    "1.0.4 counter repeated": JoinCase(MACVersion.V1_0_4, state(last_dev_nonce=4), 4, Reason.NONCE_REPLAYED),
    "1.1 counter going back": JoinCase(MACVersion.V1_1, state(last_dev_nonce=4), 3, Reason.NONCE_REPLAYED),
    "1.1 clears the RJcounts": JoinCase(
        MACVersion.V1_1, state(last_dev_nonce=4, rj_count0=2, rj_count1=6), 5, state(join_nonce=8, last_dev_nonce=5)
    ),
    "JoinNonce exhausted": JoinCase(MACVersion.V1_1, state(join_nonce=MAX_JOIN_NONCE), 1, Reason.JOIN_NONCE_EXHAUSTED),
}  # fmt: skip


@pytest.mark.parametrize("case", JOINS.values(), ids=JOINS.keys())
def test_after_join_request(case: JoinCase) -> None:
    if isinstance(case.after, Reason):
        with pytest.raises(Refused) as refused:
            after_join_request(case.before, case.version, case.dev_nonce, case.history)
        assert refused.value.reason is case.after
    else:
        assert after_join_request(case.before, case.version, case.dev_nonce, case.history) == case.after


REJOINS = {
    "type 0 sets RJcount0": (state(rj_count0=5), 0, 0, state(join_nonce=8, rj_count0=0)),
    "type 2 sets RJcount0": (FRESH, 2, 3, state(join_nonce=8, rj_count0=3)),
    "type 1 first": (FRESH, 1, 0, state(join_nonce=8, rj_count1=0)),
    "type 1 grows": (state(rj_count1=4), 1, 5, state(join_nonce=8, rj_count1=5)),
    "type 1 repeated": (state(rj_count1=4), 1, 4, Reason.NONCE_REPLAYED),
    "JoinNonce exhausted": (state(join_nonce=MAX_JOIN_NONCE), 0, 1, Reason.JOIN_NONCE_EXHAUSTED),
}


@pytest.mark.parametrize(("before", "rejoin_type", "rj_count", "after"), REJOINS.values(), ids=REJOINS.keys())
def test_after_rejoin_request(before: NonceState, rejoin_type: int, rj_count: int, after: NonceState | Reason) -> None:
    if isinstance(after, Reason):
        with pytest.raises(Refused) as refused:
            after_rejoin_request(before, rejoin_type, rj_count)
        assert refused.value.reason is after
    else:
        assert after_rejoin_request(before, rejoin_type, rj_count) == after
