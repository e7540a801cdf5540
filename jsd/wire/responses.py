"""What /api/v1 answers: the JSON shapes jsd/api/render.py builds (lowercase hex, RFC 3339 'Z' times).

Used for the OpenAPI document; schemathesis and the API tests hold the rendered answers to them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from jsd.wire.base import Closed
from jsd.wire.types import AccountKindName, Eui, Key, KeyId, NetId, Scope, Time

ProfileId = Annotated[str, Field(pattern="^[0-9a-f]{8}$", description="TR005 ProfileID")]
PROBLEM_PREFIX = "urn:jsd:problem:"


class FieldError(Closed):
    field: str | None
    reason: str
    line: Annotated[int, Field(ge=1, description="bulk import only: the line of the row")] | None = None


class Problem(Closed):
    """RFC 7807 problem details; `type` is one of the stable urn:jsd:problem: URIs."""

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    errors: list[FieldError] | None = None
    error_count: Annotated[int, Field(ge=0)] | None = None


class Me(Closed):
    account: str
    kind: AccountKindName
    key_id: str | None
    scopes: list[Scope]


class Account(Closed):
    id: str
    kind: AccountKindName
    name: str | None
    created_at: Time


class AccountList(Closed):
    accounts: list[Account]


class NewApiKey(Closed):
    key_id: KeyId
    key: Annotated[str, Field(description="jsd_<key_id>_<secret>; shown this once")]
    scopes: list[Scope]


class AccountCreated(Closed):
    account: Account
    api_key: NewApiKey


class ApiKey(Closed):
    key_id: str
    account: str
    scopes: list[Scope]
    created_at: Time
    revoked_at: Time | None


class ApiKeyList(Closed):
    keys: list[ApiKey]


class ImportedDevice(Closed):
    """One import answer line; owner token and keys only when created (shown this once)."""

    line: Annotated[int, Field(ge=1)] | None = None
    dev_eui: Eui
    join_eui: Eui
    profile_id: ProfileId
    name: str | None
    serial: Annotated[str | None, Field(description="printed in the TR005 label's S field")]
    status: Literal["created", "unchanged"]
    owner_token: str | None = None
    app_key: Key | None = None
    nwk_key: Key | None = None


class ImportCounts(Closed):
    created: Annotated[int, Field(ge=0)]
    unchanged: Annotated[int, Field(ge=0)]


class ImportSummary(Closed):
    """The last line of an import answer."""

    summary: ImportCounts


class ImportProgress(Closed):
    """Rows of a running import checked and staged so far (their keys are in the HSM)."""

    import_id: str
    staged: Annotated[int, Field(ge=0)]


class Device(Closed):
    """manufacturer and owner are shown to the operator and to that account only (else null)."""

    dev_eui: Eui
    join_eui: Eui
    mac_version: Literal["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"]
    name: str | None
    admin_info: str | None
    secure_element: bool
    profile_id: ProfileId
    serial: str | None
    state: Literal["unclaimed", "claimed"]
    manufacturer: str | None
    owner: str | None
    home_net_id: NetId | None
    astk: str | None
    keys_exported: bool
    created_at: Time
    claimed_at: Time | None
    warnings: (
        Annotated[
            list[str],
            Field(
                description="only in the answer of a change that took effect but may not work yet "
                "(set-netid: no network server with that NetID is registered)"
            ),
        ]
        | None
    ) = None


class DevicePage(Closed):
    devices: list[Device]
    next: Eui | None


class Nonces(Closed):
    """The device's nonce bookkeeping, for an operator diagnosing refused joins."""

    dev_eui: Eui
    join_nonce: Annotated[int, Field(ge=0, le=0xFFFFFF, description="the last JoinNonce issued (0: none yet)")]
    last_dev_nonce: Annotated[int | None, Field(ge=0, le=0xFFFF, description="the last DevNonce accepted")]
    used_dev_nonces: Annotated[int, Field(ge=0, description="how many DevNonces are remembered as used")]


class Released(Closed):
    device: Device
    owner_token: Annotated[str, Field(description="the new token, shown this once")]


class Astk(Closed):
    name: str
    kek_label: Annotated[
        str,
        Field(
            pattern="^astk-",
            description="the KEKLabel of the AppSKey envelopes wrapped under this ASTK (LBI KeyEnvelope, "
            "ChirpStack joinServerContext.appSKey.kekLabel): the application server looks its ASTK up by it",
        ),
    ]
    origin: Literal["generated", "imported"]
    exported: bool
    created_at: Time


class AstkList(Closed):
    astks: list[Astk]


class AstkExport(Closed):
    name: str
    key: Key


class NetworkServer(Closed):
    net_id: NetId
    name: str
    kek_label: Annotated[str, Field(description="the HSM label of the KEK its session keys are wrapped under")]
    has_token: Annotated[bool, Field(description="it may authenticate with a bearer token")]
    cert_fingerprint: Annotated[str | None, Field(description="SHA-256 of its client certificate, hex")]
    answer_url: Annotated[str | None, Field(description="where asynchronous answers go")]
    async_mode: bool


class NetworkServerCreated(Closed):
    network_server: NetworkServer
    token: Annotated[str, Field(description="the generated bearer token, shown this once")] | None = None


class NetworkServerList(Closed):
    network_servers: list[NetworkServer]


class RoamingAgreement(Closed):
    home_net_id: NetId
    visited_net_id: NetId


class RoamingAgreementList(Closed):
    roaming_agreements: list[RoamingAgreement]


class AuditEntry(Closed):
    id: int
    at: Time
    account: str | None
    key_id: str | None
    source: str
    action: str
    dev_eui: Eui | None
    details: dict[str, Any]


class AuditPage(Closed):
    entries: list[AuditEntry]
    next: int | None


class Event(Closed):
    """One event as GET /events lists it and MQTT publishes it; docs/events.md has each type's `data`."""

    event_id: Annotated[str, Field(pattern="^[0-9a-f]{32}$")]
    seq: int
    type: str
    time: Time
    account: str
    dev_eui: Eui | None
    data: dict[str, Any]


class EventPage(Closed):
    events: list[Event]
    next: int | None
