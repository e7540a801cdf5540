"""The MQTT topic layout, in one place (docs/events.md).

Every topic starts with the configured prefix (``jsd/v1``) and then the account, so a broker ACL with one
pattern per account (``%u``) confines each integrator to its own events, commands and replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Topics"]

_LEVEL = re.compile(r"[^/+#\x00]{1,128}")


@dataclass(frozen=True)
class Topics:
    """Builds and recognises the daemon's topics under one prefix."""

    prefix: str = "jsd/v1"

    def event(self, account: str, dev_eui: str | None, type_: str) -> str:
        """Where an event goes; an event about no device skips the device levels."""
        if dev_eui is None:
            return f"{self.prefix}/accounts/{account}/events/{type_}"
        return f"{self.prefix}/accounts/{account}/devices/{dev_eui.lower()}/events/{type_}"

    def commands(self, account: str) -> str:
        return f"{self.prefix}/accounts/{account}/commands"

    @property
    def all_commands(self) -> str:
        """The daemon's one subscription: every account's command topic."""
        return f"{self.prefix}/accounts/+/commands"

    def replies(self, account: str) -> str:
        """The default reply topic of an account."""
        return f"{self.prefix}/accounts/{account}/replies"

    @property
    def status(self) -> str:
        """Retained 'online' / 'offline' (the latter as the connection's will)."""
        return f"{self.prefix}/status"

    def command_account(self, topic: str) -> str | None:
        """The account level of a command topic, or None if `topic` is not one."""
        head = f"{self.prefix}/accounts/"
        if not topic.startswith(head) or not topic.endswith("/commands"):
            return None
        account = topic[len(head) : -len("/commands")]
        return account if _LEVEL.fullmatch(account) else None

    def reply_allowed(self, account: str, topic: str) -> bool:
        """A reply may only go to the account's replies topic or below it: never onto another's topics."""
        base = self.replies(account)
        if topic == base:
            return True
        if not topic.startswith(base + "/") or len(topic.encode()) > 1024:
            return False
        return all(_LEVEL.fullmatch(level) for level in topic[len(base) + 1 :].split("/"))
