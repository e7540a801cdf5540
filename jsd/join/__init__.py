"""Join use cases: no HTTP types, no SQL text; talks to the registry and the HSM.

Every use case returns its answer or a `Refusal` (`jsd.join.refusals`); nothing of ours is raised out of it.
"""

from jsd.join.refusals import Reason, Refusal, RefusalName
from jsd.join.service import JoinAccepted, JoinParams, JoinPolicy, JoinService, KeyEnvelope, Sender

__all__ = [
    "JoinAccepted",
    "JoinParams",
    "JoinPolicy",
    "JoinService",
    "KeyEnvelope",
    "Reason",
    "Refusal",
    "RefusalName",
    "Sender",
]
