"""Every join refusal has its LBI Result code (TS002-1.0.0 Table 24), in the spelling of the asking protocol."""

from __future__ import annotations

import pytest

from jsd.join import Reason, Refusal
from jsd.lbi import results

CODES = {
    Reason.MALFORMED: ("MalformedRequest", "MalformedMessage"),
    Reason.UNKNOWN_DEVICE: ("UnknownDevEUI", "UnknownDevEUI"),
    Reason.JOIN_EUI_NOT_SERVED: ("UnkownReceiver", "UnkownReceiver"),
    Reason.NOT_HOME_NETWORK: ("ActivationDisallowed", "ActivationDisallowed"),
    Reason.WRONG_MIC: ("MICFailed", "MICFailed"),
    Reason.NONCE_REPLAYED: ("JoinReqFailed", "JoinReqFailed"),
    Reason.JOIN_NONCE_EXHAUSTED: ("JoinReqFailed", "JoinReqFailed"),
    Reason.NO_APPLICATION_KEY: ("ActivationDisallowed", "ActivationDisallowed"),
    Reason.FAILED: ("Other", "Other"),
}


def test_every_reason_is_mapped() -> None:
    assert set(results.RESULT_FOR) == set(Reason) == set(CODES)


@pytest.mark.parametrize("reason", list(Reason), ids=[r.name for r in Reason])
def test_result_code_per_protocol_version(reason: Reason) -> None:
    refusal = Refusal(reason, "why")
    for version, code in zip(("1.0", "1.1"), CODES[reason], strict=True):
        assert results.result_code(refusal, version) == code
        assert results.namer(version)(refusal) == code
