"""DevNonce and RJcount rules, as pure functions over the stored nonce state.

LoRaWAN 1.0.0-1.0.3 devices pick DevNonces at random: the Join Server refuses any value it remembers
(a bounded history). From 1.0.4 and in 1.1 the DevNonce is a counter: it must grow strictly. RJcount1
(rejoin type 1) grows strictly between JoinRequests.
"""

from __future__ import annotations

import dataclasses

from jsd.join.refusals import Reason, Refused
from jsd.lorawan import MACVersion, dev_nonce_is_counter
from jsd.registry import NonceState

MAX_JOIN_NONCE = 0xFFFFFF


def after_join_request(
    state: NonceState, version: MACVersion, dev_nonce: int, history: int
) -> NonceState:
    """The state after accepting ``dev_nonce``; raises `Refused` (NONCE_REPLAYED) if the device may not use it."""
    if dev_nonce_is_counter(version):
        if state.last_dev_nonce is not None and dev_nonce <= state.last_dev_nonce:
            raise Refused(
                Reason.NONCE_REPLAYED,
                f"DevNonce {dev_nonce} is not greater than the last one ({state.last_dev_nonce})",
            )
        used = state.used_dev_nonces
    else:
        if dev_nonce in state.used_dev_nonces:
            raise Refused(Reason.NONCE_REPLAYED, f"DevNonce {dev_nonce} already used")
        used = (state.used_dev_nonces + (dev_nonce,))[-history:] if history > 0 else ()
    return dataclasses.replace(
        state,
        join_nonce=next_join_nonce(state),
        last_dev_nonce=dev_nonce,
        used_dev_nonces=used,
        rj_count0=None,
        rj_count1=None,
    )


def after_rejoin_request(state: NonceState, rejoin_type: int, rj_count: int) -> NonceState:
    """The state after accepting a rejoin.

    Type 1 is MIC'ed with JSIntKey and checked here: RJcount1 must exceed the last one since the last
    JoinRequest. Types 0 and 2 are MIC'ed with the session's SNwkSIntKey and their RJcount0, which restarts
    with every accept, is checked by the network server that holds that key.
    """
    if rejoin_type == 1:
        last = state.rj_count1
        if last is not None and rj_count <= last:
            raise Refused(Reason.NONCE_REPLAYED, f"RJcount1 {rj_count} is not greater than the last one ({last})")
        return dataclasses.replace(state, join_nonce=next_join_nonce(state), rj_count1=rj_count)
    return dataclasses.replace(state, join_nonce=next_join_nonce(state), rj_count0=rj_count)


def next_join_nonce(state: NonceState) -> int:
    """The JoinNonce to issue next; never a value issued before."""
    if state.join_nonce >= MAX_JOIN_NONCE:
        raise Refused(
            Reason.JOIN_NONCE_EXHAUSTED,
            "JoinNonce exhausted (24-bit counter); the device needs new root keys",
        )
    return state.join_nonce + 1
