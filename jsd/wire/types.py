"""The annotated field types the wire models share: hex identifiers, names, text, times.

What the daemon sends is strict (lowercase hex, RFC 3339 'Z' times); what it accepts is lenient where
docs/api.md says so (hex in any case with an optional 0x). The service parses accepted hex to bytes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from jsd.ownership.model import ACCOUNT_ID_RE, HSM_GROUP_RE, NOT_TEXT

__all__ = [
    "ACCOUNT_KINDS", "MAC_VERSIONS", "AccountId", "AccountKindName", "AstkName", "Eui", "EuiIn", "HsmGroup",
    "Key", "KeyIn", "KeyId", "NetId", "NetIdIn", "Scope", "Text", "Time",
]  # fmt: skip

MAC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")
ACCOUNT_KINDS = ("manufacturer", "subscriber", "operator")


Eui = Annotated[str, Field(pattern="^[0-9a-f]{16}$", description="EUI-64, 16 lowercase hex digits")]
NetId = Annotated[str, Field(pattern="^[0-9a-f]{6}$", description="NetID, 6 lowercase hex digits")]
Key = Annotated[str, Field(pattern="^[0-9a-f]{32}$", description="AES-128 key, 32 lowercase hex digits")]
EuiIn = Annotated[
    str, Field(pattern="^(0[xX])?[0-9a-fA-F]{16}$", description="EUI-64: 16 hex digits, any case, optional 0x")
]
NetIdIn = Annotated[
    str, Field(pattern="^(0[xX])?[0-9a-fA-F]{6}$", description="NetID: 6 hex digits, any case, optional 0x")
]
KeyIn = Annotated[
    str, Field(pattern="^(0[xX])?[0-9a-fA-F]{32}$", description="AES-128 key: 32 hex digits, any case, optional 0x")
]
Time = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 UTC with milliseconds",
    ),
]
Text = Annotated[
    str,
    Field(
        max_length=255,
        pattern=f"^[^{NOT_TEXT}]*$",
        description="text in any script (no control, separator other than space, invisible format or private-use characters)",
    ),
]
AccountId = Annotated[str, Field(pattern=f"^{ACCOUNT_ID_RE}$", description="account id")]
AccountKindName = Literal["manufacturer", "subscriber", "operator"]
Scope = Literal["devices:read", "devices:write", "claim", "astk", "audit:read", "events:read", "admin"]
KeyId = Annotated[str, Field(pattern="^[0-9a-f]{12}$", description="API key id")]
HsmGroup = Annotated[str, Field(pattern=f"^{HSM_GROUP_RE}$")]
AstkName = Annotated[str, Field(pattern="^[A-Za-z0-9._-]{1,64}$")]
