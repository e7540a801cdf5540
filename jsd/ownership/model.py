"""Values and errors of the ownership workflow; what the REST API and MQTT commands render.

Every error carries the stable problem slug of docs/api.md and its HTTP status, so the transports only map
`OwnershipError.problem` to their own wire form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from jsd.hsm.recipe import GROUP_PATTERN
from jsd.registry.journal import AuditEntry

__all__ = [
    "ACCOUNT_ID_RE",
    "ANSWER_URL_RE",
    "HSM_GROUP_RE",
    "NOT_TEXT",
    "is_text",
    "DEFAULT_SCOPES",
    "SCOPES",
    "AccountKind",
    "AccountView",
    "AlreadyExported",
    "ApiKeyView",
    "AstkView",
    "AuditEntry",
    "ClaimFailed",
    "Conflict",
    "DeviceFacts",
    "DeviceView",
    "EventView",
    "FieldError",
    "Forbidden",
    "HsmDown",
    "ImportConflict",
    "ImportFailed",
    "ImportedDevice",
    "InvalidRequest",
    "NetworkServerView",
    "NewApiKey",
    "NoSuchResource",
    "OwnershipError",
    "PROBLEM_TYPE_PREFIX",
    "Principal",
    "RateLimited",
    "Unauthenticated",
    "wire_time",
]

ACCOUNT_ID_RE = r"[a-z0-9][a-z0-9-]{0,62}"
NOT_TEXT = (
    "\\x00-\\x1f\\x7f-\\xa0\\xad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891\\u08e2\\u1680\\u180e"
    "\\u2000-\\u200b\\u200e-\\u200f\\u2028-\\u202f\\u205f-\\u2064\\u2066-\\u206f\\u3000\\ue000-\\uf8ff"
    "\\ufeff\\ufff9-\\ufffb"
)
"""What names and other free text may not hold, as a regex character class: controls, separators other than
the space, invisible format characters (bidi overrides, soft hyphen) and private use. Every script
and emoji passes; ZWNJ and ZWJ (U+200C, U+200D) pass because Persian, Indic scripts and emoji sequences need
them. The Basic Multilingual Plane's non-printable characters of Unicode 14 (`str.isprintable` in Python 3.11),
written out so the rule does not move with the Python version; one class for the service, pydantic, the
OpenAPI document and schemathesis alike (unpaired surrogates, which no JSON body gets past `jsd.bodies`, are
refused by `is_text` only: JSON Schema validators cannot write them in a class)."""
HSM_GROUP_RE = GROUP_PATTERN
"""An HSM group's name: `jsd.hsm`'s own pattern, so the API never admits a group the HSM refuses."""
ANSWER_URL_RE = (
    r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"(?:[/?#][!-~]{0,2000})?"
)
"""An NS's listener for asynchronous answers: http(s), a host name or IPv4 address, an optional port in range,
then printable ASCII. Strict enough that every URL it admits can be parsed and posted to (an IPv6 literal
is refused: the NS can be named by a host name)."""
PROBLEM_TYPE_PREFIX = "urn:jsd:problem:"
"""RFC 7807 `type` of every problem: this prefix and the slug (docs/api.md)."""

_TEXT = re.compile(f"[^{NOT_TEXT}\\ud800-\\udfff]*")


def is_text(value: str) -> bool:
    """Whether `value` holds only characters a name or note may have (see `NOT_TEXT`)."""
    return _TEXT.fullmatch(value) is not None


def wire_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and 'Z' (``2026-11-27T10:00:00.000Z``), the one form REST, MQTT and
    events show; a naive time (SQLite) is UTC. A fixed width keeps times comparable as strings."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AccountKind(StrEnum):
    MANUFACTURER = "manufacturer"
    SUBSCRIBER = "subscriber"
    OPERATOR = "operator"


SCOPES = ("devices:read", "devices:write", "claim", "astk", "audit:read", "events:read", "admin")
DEFAULT_SCOPES: dict[AccountKind, frozenset[str]] = {
    AccountKind.MANUFACTURER: frozenset({"devices:read", "devices:write", "audit:read", "events:read"}),
    AccountKind.SUBSCRIBER: frozenset({"devices:read", "devices:write", "claim", "astk", "audit:read", "events:read"}),
    AccountKind.OPERATOR: frozenset(SCOPES),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account behind an API key, with the key's scopes and where the call came from."""

    account: str
    kind: AccountKind
    scopes: frozenset[str]
    key_id: str | None
    source: str

    @property
    def is_operator(self) -> bool:
        return self.kind is AccountKind.OPERATOR


@dataclass(frozen=True)
class FieldError:
    """One reason a request or an import row was refused; `line` only for bulk imports."""

    field: str | None
    reason: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.line is not None:
            out = {"line": self.line, **out}
        return out


class OwnershipError(Exception):
    """A refused ownership call; `problem` and `status` are the RFC 7807 type slug and HTTP status."""

    problem: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init_subclass__(cls, *, problem: str = "", status: int = 0, title: str = "", **kwargs: Any) -> None:
        """A subclass names its slug, status and title in its class line; one it leaves out is inherited."""
        super().__init_subclass__(**kwargs)
        cls.problem = problem or cls.problem
        cls.status = status or cls.status
        cls.title = title or cls.title

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        retry_after: int | None = None,
        error_count: int | None = None,
    ):
        """`errors` may be a capped list; `error_count` is how many there were in all (default: the list's)."""
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after
        self.error_count = len(self.errors) if error_count is None else error_count

    def problem_members(self) -> dict[str, Any]:
        """The RFC 7807 members REST answers and MQTT replies share; `errors` where the slug has them."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + self.problem,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors or self.problem == "invalid-request":
            body["errors"] = [e.as_dict() for e in self.errors]
        return body


class Unauthenticated(OwnershipError, problem="unauthenticated", status=401, title="Authentication required"):
    """No API key, or one that is unknown or revoked."""


class Forbidden(OwnershipError, problem="forbidden", status=403, title="Not allowed"):
    """The caller is known but its scopes or account kind do not allow the call."""


class NoSuchResource(OwnershipError, problem="not-found", status=404, title="Not found"):
    """Absent, or not visible to the caller: the two are never told apart."""


class InvalidRequest(OwnershipError, problem="invalid-request", status=400, title="Invalid request"):
    """A field is missing, malformed or out of range; `errors` says which."""


class ImportFailed(OwnershipError, problem="import-failed", status=422, title="Import refused"):
    """Rows of a bulk import were refused; `errors` lists them by line."""


class ImportConflict(ImportFailed, problem="conflict", status=409, title="Conflict"):
    """A well-formed import file whose rows only the registry's or the HSM's state refuses (a DevEUI there with
    other content, TKM info used before, a lot master key or key derivation not here): 409 as for one device,
    with the rows listed as for a malformed file."""


class Conflict(OwnershipError, problem="conflict", status=409, title="Conflict"):
    """The resource exists already or is in a state that forbids the change."""


class ClaimFailed(OwnershipError, problem="claim-failed", status=403, title="Claim failed"):
    """An unknown device or a wrong owner token: the answer never says which."""


class RateLimited(OwnershipError, problem="rate-limited", status=429, title="Too many failed attempts"):
    """Too many failed claims or sign-ins; `retry_after` says when to try again."""


class AlreadyExported(OwnershipError, problem="already-exported", status=409, title="Key cannot be exported"):
    """An ASTK leaves the HSM once, and never when it was imported."""


class HsmDown(OwnershipError, problem="hsm-unavailable", status=503, title="HSM unavailable"):
    """The HSM did not answer, so nothing that needs a key can be done."""


@dataclass(frozen=True)
class AccountView:
    id: str
    kind: AccountKind
    name: str
    created_at: datetime


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made API key: `key` is shown this once and never stored."""

    key_id: str
    account: str
    key: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class ApiKeyView:
    key_id: str
    account: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DeviceFacts:
    """What a maker states about a device and every viewer may read: an import row and a view start alike."""

    dev_eui: bytes
    join_eui: bytes
    mac_version: str
    name: str | None
    admin_info: str | None
    secure_element: bool
    profile_id: bytes
    serial: str | None

    def facts_dict(self) -> dict[str, Any]:
        """The facts in wire form, in the order of docs/api.md's Device; an import's digest hashes them too."""
        return {
            "dev_eui": self.dev_eui.hex(),
            "join_eui": self.join_eui.hex(),
            "mac_version": self.mac_version,
            "name": self.name,
            "admin_info": self.admin_info,
            "secure_element": self.secure_element,
            "profile_id": self.profile_id.hex(),
            "serial": self.serial,
        }


@dataclass(frozen=True)
class DeviceView(DeviceFacts):
    """What an account may see of a device: never keys, blobs or token hashes."""

    manufacturer: str | None
    owner: str | None
    home_net_id: bytes | None
    astk: str | None
    keys_exported: bool
    created_at: datetime
    claimed_at: datetime | None

    @property
    def state(self) -> str:
        return "claimed" if self.owner is not None else "unclaimed"

    def as_dict(self) -> dict[str, Any]:
        """The Device shape of docs/api.md, shared by the REST answers and the MQTT command replies."""
        return {
            **self.facts_dict(),
            "state": self.state,
            "manufacturer": self.manufacturer,
            "owner": self.owner,
            "home_net_id": None if self.home_net_id is None else self.home_net_id.hex(),
            "astk": self.astk,
            "keys_exported": self.keys_exported,
            "created_at": wire_time(self.created_at),
            "claimed_at": None if self.claimed_at is None else wire_time(self.claimed_at),
        }


@dataclass(frozen=True)
class ImportedDevice(DeviceFacts):
    """One answer line of an import: the row's facts and what became of it; the owner token and generated keys
    only when the device was created."""

    created: bool
    line: int | None
    owner_token: str | None
    app_key: bytes | None
    nwk_key: bytes | None


@dataclass(frozen=True)
class AstkView:
    """An ASTK as its owner sees it: `kek_label` is the KEKLabel of the AppSKey envelopes it wraps."""

    name: str
    kek_label: str
    origin: str
    exported: bool
    created_at: datetime


@dataclass(frozen=True)
class NetworkServerView:
    net_id: bytes
    name: str
    kek_label: str
    has_token: bool
    cert_fingerprint: str | None
    answer_url: str | None
    async_mode: bool


@dataclass(frozen=True)
class EventView:
    seq: int
    event_id: str
    type: str
    time: datetime
    account: str
    dev_eui: bytes | None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event's JSON form, shared by REST and MQTT (docs/api.md, "Events")."""
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "type": self.type,
            "time": wire_time(self.time),
            "account": self.account,
            "dev_eui": None if self.dev_eui is None else self.dev_eui.hex(),
            "data": self.data,
        }
