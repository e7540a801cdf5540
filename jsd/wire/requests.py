"""What clients send to /api/v1: request bodies, path and query parameters (docs/api.md).

Optional members may be null, which means the same as leaving them out. The service still checks what only
it can know (an ASTK exists, the scopes fit the account kind, a KEK is in the HSM).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, RootModel, Tag, model_validator

from jsd.ownership.model import NOT_TEXT
from jsd.wire.base import Closed, rule_broken
from jsd.wire.types import AccountId, AccountKindName, AstkName, EuiIn, HsmGroup, KeyIn, NetIdIn, Scope, Text

MAX_LIMIT = 1000
MAX_CURSOR = 2**63 - 1

ProfileIdIn = Annotated[
    str, Field(pattern="^(0[xX])?[0-9a-fA-F]{8}$", description="TR005 ProfileID (VendorID + VendorProfileID)")
]
TkmInfoIn = Annotated[
    str,
    Field(
        pattern="^(0[xX])?[0-9a-fA-F]{20}$",
        description="SE_INFO (4 x 4-bit: SE_MANUF_ID, SE_PROD_ID, LMK_ID, DERIVE_ALGO_ID), SE_ID",
    ),
]
Serial = Annotated[str, Field(pattern="^[0-9A-Za-z]{1,32}$", description="printed on the TR005 label")]
AdminInfo = Annotated[str, Field(max_length=4096, pattern=f"^[^{NOT_TEXT}]*$")]
OwnerToken = Annotated[
    str,
    Field(
        pattern="^[0-9A-Fa-f]{1,64}$",
        description="32 hex digits (random token) or 20 (TKM info of a secure-element device); any case",
    ),
]
_QR_PART = "(:[\\x20-\\x39\\x3b-\\x7e]*)*"
Qr = Annotated[
    str,
    Field(
        max_length=512,
        pattern=f"^LW:D0:[0-9A-Fa-f]{{16}}:[0-9A-Fa-f]{{16}}:[0-9A-Fa-f]{{8}}{_QR_PART}:[Oo][0-9A-Za-z]+{_QR_PART}$",
        description="TR005: LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>:…:O<owner token>…; a checksum (C) must match",
    ),
]
KekLabel = Annotated[
    str,
    Field(
        pattern="^(?!jsd-|astk-|lmk-)[\\x20-\\x7e]{1,64}$",
        description="1-64 printable characters; the prefixes jsd-, astk- and lmk- are reserved",
    ),
]
CertFingerprint = Annotated[
    str,
    Field(
        pattern="^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){31}$",
        description="SHA-256 of the NS's client certificate (DER), hex, colons allowed",
    ),
]
ImportId = Annotated[str, Field(pattern="^[A-Za-z0-9_-]{16,64}$")]
ApiKeyName = Annotated[str, Field(pattern="^[0-9a-f]{12}$")]
EventTypeName = Annotated[str, Field(max_length=64)]


class AccountIn(Closed):
    id: AccountId
    kind: AccountKindName
    name: Text | None = None


class ApiKeyIn(Closed):
    scopes: list[Scope] | None = None


class _Device(Closed):
    """The members every DeviceImport variant shares."""

    dev_eui: EuiIn
    join_eui: EuiIn | None = None
    name: Text | None = None
    admin_info: AdminInfo | None = None
    hsm_group: HsmGroup | None = None
    profile_id: ProfileIdIn | None = None
    serial: Serial | None = None


class DeviceWithKeys10(_Device):
    """A LoRaWAN 1.0.x device with its AppKey."""

    mac_version: Literal["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]
    app_key: KeyIn
    generate_keys: Literal[False] | None = None
    secure_element: Literal[False] | None = None


class DeviceWithKeys11(_Device):
    """A LoRaWAN 1.1 device has two root keys: the join server cannot make up the NwkKey."""

    mac_version: Literal["1.1"]
    app_key: KeyIn
    nwk_key: KeyIn
    generate_keys: Literal[False] | None = None
    secure_element: Literal[False] | None = None


class DeviceGeneratingKeys(_Device):
    """Root keys generated in the HSM and handed out once, in the answer."""

    mac_version: Literal["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"]
    generate_keys: Literal[True]
    secure_element: Literal[False] | None = None


class SecureElementDevice(_Device):
    """Root keys derived in the HSM from the secure element's TKM info."""

    mac_version: Literal["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"]
    secure_element: Literal[True]
    tkm_info: TkmInfoIn
    generate_keys: Literal[False] | None = None


def _device_variant(value: Any) -> str:
    """Which variant a body means: the flags first, then the MAC version (so errors speak of that variant)."""
    if not isinstance(value, dict):
        return "variant:keys10"
    if value.get("secure_element") is True:
        return "variant:se"
    if value.get("generate_keys") is True:
        return "variant:generate"
    return "variant:keys11" if value.get("mac_version") == "1.1" else "variant:keys10"


class DeviceImport(RootModel[Any]):
    """One device to pre-commission: its keys (app_key, and nwk_key for 1.1), generate_keys, or a secure
    element's tkm_info."""

    model_config = ConfigDict(defer_build=True)

    root: Annotated[
        Annotated[DeviceWithKeys10, Tag("variant:keys10")]
        | Annotated[DeviceWithKeys11, Tag("variant:keys11")]
        | Annotated[DeviceGeneratingKeys, Tag("variant:generate")]
        | Annotated[SecureElementDevice, Tag("variant:se")],
        Discriminator(_device_variant),
    ]


DEVICE_VARIANTS = (DeviceWithKeys10, DeviceWithKeys11, DeviceGeneratingKeys, SecureElementDevice)
DEVICE_IMPORT_FIELDS = frozenset(name for variant in DEVICE_VARIANTS for name in variant.model_fields)


class ClaimByToken(Closed):
    dev_eui: EuiIn
    owner_token: OwnerToken


class ClaimByQr(Closed):
    qr: Qr


CLAIM_FIELDS = frozenset(ClaimByToken.model_fields) | frozenset(ClaimByQr.model_fields)


class NetIdChoice(Closed):
    """null clears the home NetID."""

    net_id: NetIdIn | None


class AstkChoice(Closed):
    """An ASTK name of the owner; null clears it."""

    astk: AstkName | None


class Empty(Closed):
    """No members: the action needs none (an empty body is the same)."""


class AstkIn(Closed):
    """With key: imported; without: generated in the HSM (exportable once)."""

    name: AstkName
    key: KeyIn | None = None


class NetworkServerIn(Closed):
    """kek is imported into the HSM under kek_label (absent: a KEK already there); a bearer token (token or
    generate_token) or a cert_fingerprint is required; async_mode needs answer_url."""

    model_config = Closed.model_config | {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["token"], "properties": {"token": {"type": "string"}}},
                {"required": ["generate_token"], "properties": {"generate_token": {"const": True}}},
                {"required": ["cert_fingerprint"], "properties": {"cert_fingerprint": {"type": "string"}}},
            ],
            "not": {
                "required": ["token", "generate_token"],
                "properties": {"token": {"type": "string"}, "generate_token": {"const": True}},
            },
            "if": {"required": ["async_mode"], "properties": {"async_mode": {"const": True}}},
            "then": {"required": ["answer_url"], "properties": {"answer_url": {"type": "string"}}},
        }
    }

    net_id: NetIdIn
    kek_label: KekLabel
    name: Text | None = None
    kek: KeyIn | None = None
    token: Annotated[str, Field(min_length=16, max_length=256)] | None = None
    generate_token: bool | None = None
    cert_fingerprint: CertFingerprint | None = None
    answer_url: Annotated[str, Field(pattern="^https?://\\S{1,2000}$")] | None = None
    async_mode: bool | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> NetworkServerIn:
        """The rules of json_schema_extra above, with the service's words."""
        if self.generate_token and self.token is not None:
            raise rule_broken("generate_token", "either give a token or generate one")
        if self.token is None and not self.generate_token and self.cert_fingerprint is None:
            raise rule_broken("token", "a bearer token (token / generate_token) or a cert_fingerprint is required")
        if self.async_mode and self.answer_url is None:
            raise rule_broken("answer_url", "required with async_mode")
        return self


class RoamingAgreementIn(Closed):
    home_net_id: NetIdIn
    visited_net_id: NetIdIn


class Page(Closed):
    """Query: one page of a list, `limit` long."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="page size (default 100)")] | None = None


class DevicesQuery(Page):
    after: Annotated[EuiIn, Field(description="the previous page's `next`")] | None = None


_Cursor = Annotated[int, Field(ge=0, le=MAX_CURSOR, description="the previous page's `next`")]


class AuditQuery(Page):
    dev_eui: Annotated[EuiIn, Field(description="only this device")] | None = None
    after: _Cursor | None = None


class EventsQuery(Page):
    after: _Cursor | None = None
    dev_eui: Annotated[EuiIn, Field(description="only this device")] | None = None
    type: Annotated[EventTypeName, Field(description="only this event type")] | None = None


class Claim(RootModel[Any]):
    """POST /claims: DevEUI and owner token, or the TR005 QR string (which carries both)."""

    model_config = ConfigDict(defer_build=True)

    root: Annotated[
        Annotated[ClaimByToken, Tag("variant:token")] | Annotated[ClaimByQr, Tag("variant:qr")],
        Discriminator(lambda value: "variant:qr" if isinstance(value, dict) and "qr" in value else "variant:token"),
    ]


# Every path parameter of /api/v1 and its type.
PATH_TYPES: dict[str, Any] = {
    "id": AccountId,
    "key_id": Annotated[ApiKeyName, Field(description="API key id")],
    "dev_eui": EuiIn,
    "import_id": Annotated[ImportId, Field(description="the Import-Id of the running import")],
    "name": Annotated[AstkName, Field(description="ASTK name")],
    "net_id": NetIdIn,
    "home_net_id": Annotated[NetIdIn, Field(description="home NetID")],
    "visited_net_id": Annotated[NetIdIn, Field(description="visited NetID")],
}
IMPORT_ID_HEADER = Annotated[
    ImportId, Field(description="client-chosen id to follow the import with GET /devices/import/{id}")
]
