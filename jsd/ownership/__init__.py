"""The ownership workflow: accounts and API keys, pre-commissioning, one-time claims, NetID and ASTK, audit.

Transports (REST in `jsd.api`, MQTT commands in `jsd.events`, the local CLI) call `OwnershipService` with a
`Principal`; the service decides what that principal may see and do (docs/api.md).
"""

from jsd.ownership.model import *  # noqa: F403 - the values and errors are this package's surface
from jsd.ownership.model import __all__ as _model_all
from jsd.ownership.service import DEVICE_STATES, OwnershipPolicy, OwnershipService, event_record, event_view, token_hash

__all__ = [*_model_all, "DEVICE_STATES", "OwnershipPolicy", "OwnershipService", "event_record", "event_view", "token_hash"]
