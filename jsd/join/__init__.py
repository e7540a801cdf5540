"""Join use cases: no HTTP types, no SQL text; talks to the registry and the HSM."""

from jsd.join.errors import (
    JoinFailed,
    JoinNonceExhausted,
    JoinRejected,
    MalformedFrame,
    MICMismatch,
    NoApplicationKey,
    NonceReplayed,
    NotHomeNetwork,
    UnknownDevice,
    UnknownReceiver,
)
from jsd.join.service import JoinAccepted, JoinParams, JoinPolicy, JoinService, KeyEnvelope, Sender

__all__ = [
    "JoinAccepted",
    "JoinFailed",
    "JoinNonceExhausted",
    "JoinParams",
    "JoinPolicy",
    "JoinRejected",
    "JoinService",
    "KeyEnvelope",
    "MICMismatch",
    "MalformedFrame",
    "NoApplicationKey",
    "NonceReplayed",
    "NotHomeNetwork",
    "Sender",
    "UnknownDevice",
    "UnknownReceiver",
]
