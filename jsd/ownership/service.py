"""The ownership use cases: accounts and keys, pre-commissioning, claims, NetID/ASTK, release, audit, events.

Every method takes the calling `Principal` and decides itself what it may see and do, so the REST API, the MQTT
commands and the local CLI share one set of rules. A device another account owns is reported exactly like a
device that does not exist. Secrets (API keys, owner tokens) are stored as SHA-256 digests and compared in
constant time; generated secrets are returned once and never stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from jsd import metrics
from jsd.hsm import Hsm, HsmError, HsmUnavailable, KekExists, KeyNotExportable, KeyNotFound
from jsd.lorawan.tr005 import QrCodeError, parse_qr
from jsd.ownership import se
from jsd.ownership.imports import HEADER_PROBLEM, IMPORT_FIELDS, RawRow
from jsd.ownership.model import (
    ACCOUNT_ID_RE,
    DEFAULT_SCOPES,
    SCOPES,
    AccountKind,
    AccountView,
    AlreadyExported,
    ApiKeyView,
    AstkView,
    AuditEntry,
    ClaimFailed,
    Conflict,
    DeviceView,
    EventView,
    FieldError,
    Forbidden,
    HsmDown,
    ImportedDevice,
    ImportFailed,
    InvalidRequest,
    NetworkServerView,
    NewApiKey,
    NotFound,
    Principal,
    RateLimited,
    Unauthenticated,
)
from jsd.ownership.parse import parse_eui, parse_hex, parse_key, parse_net_id
from jsd.registry import DeviceExists, NetworkServer, NetworkServerExists, Registry
from jsd.registry import NotFound as RegistryNotFound
from jsd.registry.ownership import (
    AccountExists,
    ApiKeyRecord,
    AstkExists,
    AstkRecord,
    AuditRecord,
    EventRecord,
    OwnedDevice,
    OwnershipStore,
    StoredEvent,
    new_event,
    staged_row,
)

__all__ = ["DEVICE_STATES", "OwnershipPolicy", "OwnershipService", "event_record", "event_view", "token_hash"]

log = logging.getLogger("jsd.ownership")

_ACCOUNT_ID = re.compile(ACCOUNT_ID_RE)
_API_KEY = re.compile(r"jsd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_ASTK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN = re.compile(r"[0-9A-Fa-f]{1,64}")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")
_IMPORT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_MAC_VERSIONS = {"1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"}
_IMPORT_FIELDS = frozenset(IMPORT_FIELDS)
_NS_FIELDS = {
    "net_id", "name", "kek_label", "kek", "token", "generate_token", "cert_fingerprint", "answer_url", "async_mode",
}  # fmt: skip
_IMPORT_CHUNK = 500
DEVICE_STATES = ("claimed", "unclaimed", "no_net_id", "net_id_set")
"""Filters of list_devices: claimed or not, and claimed devices without / with a home NetID."""
_MAX_REPORTED_ERRORS = 1000
_DUMMY_HASH = "0" * 64


def token_hash(token: str) -> str:
    """The stored form of an owner token: hex digits are case-folded first, so labels may print uppercase."""
    return hashlib.sha256(b"jsd-owner-token\0" + token.strip().upper().encode()).hexdigest()


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(b"jsd-api-key\0" + secret.encode()).hexdigest()


event_record = new_event


@dataclass(frozen=True)
class OwnershipPolicy:
    """Settings of the ownership workflow (section ``[ownership]`` of the configuration)."""

    default_join_eui: bytes | None = None
    default_hsm_group: str = "default"
    claim_failures_per_account: int = 20
    claim_failures_per_source: int = 200
    claim_failures_per_device: int = 5
    claim_window: int = 900
    event_retention: int = 100_000


@dataclass
class _Spec:
    """One checked import row, before any key is touched."""

    line: int | None
    dev_eui: bytes
    join_eui: bytes
    mac_version: str
    name: str | None
    admin_info: str | None
    secure_element: bool
    hsm_group: str
    profile_id: bytes
    serial: str | None
    app_key: bytes | None = None
    nwk_key: bytes | None = None
    generate_keys: bool = False
    tkm: se.TkmInfo | None = None

    @property
    def uses_nwk_key(self) -> bool:
        return self.mac_version == "1.1"

    def digest(self, manufacturer: str) -> str:
        """What makes a re-run of the same row a no-op: every field but the keys themselves."""
        content = {
            "manufacturer": manufacturer,
            "dev_eui": self.dev_eui.hex(),
            "join_eui": self.join_eui.hex(),
            "mac_version": self.mac_version,
            "name": self.name,
            "admin_info": self.admin_info,
            "secure_element": self.secure_element,
            "hsm_group": self.hsm_group,
            "profile_id": self.profile_id.hex(),
            "serial": self.serial,
            "generate_keys": self.generate_keys,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class _HsmCalls:
    """The HSM as the service uses it: an unavailable token becomes `HsmDown` (503), never a caller's fault."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._hsm, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except HsmUnavailable:
                log.warning("HSM unavailable during %s", name)
                raise HsmDown("the HSM cannot be used now; try again later") from None

        return call


class _Problems:
    """The bad rows of an import: every row and error counted, the first `_MAX_REPORTED_ERRORS` errors kept."""

    def __init__(self) -> None:
        self.kept: list[FieldError] = []
        self.count = 0
        self.rows = 0
        self.header = False

    def add(self, *errors: FieldError, header: bool = False) -> None:
        """The errors of one bad row, or of a CSV header."""
        self.header = self.header or header
        self.rows += not header
        self.count += len(errors)
        self.kept.extend(errors[: max(0, _MAX_REPORTED_ERRORS - len(self.kept))])

    def detail(self) -> str:
        rows = [f"{self.rows} bad row(s), {self.count - self.header} problem(s)"] if self.rows else []
        parts = (["the CSV header is wrong"] if self.header else []) + rows
        return f"{', '.join(parts)}; nothing was imported"


class OwnershipService:
    """Use cases of accounts, devices and claims; the transports call these and render the results."""

    def __init__(self, store: OwnershipStore, registry: Registry, hsm: Hsm, policy: OwnershipPolicy) -> None:
        self._store = store
        self._registry = registry
        self._hsm = cast(Hsm, _HsmCalls(hsm))
        self._policy = policy
        self._groups_ready: set[str] = set()

    async def _storage_kek_ready(self, group: str) -> None:
        """Create or check a group's storage KEKs once per process, not once per imported device."""
        if group not in self._groups_ready:
            await self._hsm.ensure_storage_kek(group)
            self._groups_ready.add(group)

    # -- authentication -----------------------------------------------------------------------------

    async def authenticate(self, api_key: str, source: str) -> Principal:
        """The principal behind an API key; unknown, malformed and revoked keys fail alike."""
        match = _API_KEY.fullmatch(api_key.strip()) if isinstance(api_key, str) else None
        record = await self._store.api_key(match.group(1)) if match else None
        presented = _secret_hash(match.group(2)) if match else _DUMMY_HASH
        stored = record.secret_hash if record is not None else _DUMMY_HASH
        if not hmac.compare_digest(presented, stored) or record is None or record.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API key")
        kind = AccountKind(record.account_kind or AccountKind.SUBSCRIBER)
        return Principal(
            account=record.account,
            kind=kind,
            scopes=frozenset(record.scopes) & DEFAULT_SCOPES[kind],
            key_id=record.key_id,
            source=source,
        )

    # -- accounts and keys --------------------------------------------------------------------------

    async def create_account(
        self, p: Principal, account_id: str, kind: str, name: str | None
    ) -> tuple[AccountView, NewApiKey]:
        _need(p, "admin")
        if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
            raise _invalid("id", f"an account id matches {ACCOUNT_ID_RE}")
        try:
            account_kind = AccountKind(kind)
        except ValueError:
            raise _invalid("kind", "one of manufacturer, subscriber, operator") from None
        name = _text(name, "name", 255) or account_id
        key, record = _new_key(account_id, DEFAULT_SCOPES[account_kind])
        try:
            await self._store.create_account(
                account_id,
                account_kind.value,
                name,
                record,
                _audit(p, "account.created", details={"account": account_id, "kind": account_kind.value}),
            )
        except AccountExists:
            raise Conflict(f"account {account_id!r} exists already") from None
        created = await self._store.get_account(account_id)
        assert created is not None
        return AccountView(created.id, AccountKind(created.kind), created.name, created.created_at), key

    async def list_accounts(self, p: Principal) -> list[AccountView]:
        _need(p, "admin")
        return [AccountView(a.id, AccountKind(a.kind), a.name, a.created_at) for a in await self._store.list_accounts()]

    async def get_account(self, p: Principal, account_id: str) -> AccountView:
        self._self_or_admin(p, account_id)
        account = await self._store.get_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} not found")
        return AccountView(account.id, AccountKind(account.kind), account.name, account.created_at)

    async def create_api_key(self, p: Principal, account_id: str, scopes: Iterable[str] | None) -> NewApiKey:
        self._self_or_admin(p, account_id)
        account = await self._store.get_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} not found")
        allowed = DEFAULT_SCOPES[AccountKind(account.kind)]
        wanted = allowed if scopes is None else _scopes(scopes)
        if not wanted <= allowed:
            raise _invalid("scopes", f"not allowed for a {account.kind} account: {' '.join(sorted(wanted - allowed))}")
        if not p.is_operator and not wanted <= p.scopes:
            raise Forbidden("a key cannot grant scopes its creator lacks")
        key, record = _new_key(account_id, wanted)
        await self._store.add_api_key(
            record, _audit(p, "api_key.created", details={"account": account_id, "key_id": key.key_id})
        )
        return key

    async def list_api_keys(self, p: Principal, account_id: str) -> list[ApiKeyView]:
        self._self_or_admin(p, account_id)
        return [
            ApiKeyView(k.key_id, k.account, frozenset(k.scopes), k.created_at or datetime.now(UTC), k.revoked_at)
            for k in await self._store.list_api_keys(account_id)
        ]

    async def revoke_api_key(self, p: Principal, key_id: str) -> None:
        record = await self._store.api_key(key_id) if isinstance(key_id, str) else None
        if record is None or (not p.is_operator and record.account != p.account):
            raise NotFound(f"API key {key_id!r} not found")
        revoked = await self._store.revoke_api_key(
            key_id, _audit(p, "api_key.revoked", details={"account": record.account, "key_id": key_id})
        )
        if not revoked:
            raise Conflict(f"API key {key_id!r} is revoked already")

    def _self_or_admin(self, p: Principal, account_id: str) -> None:
        if not p.is_operator and p.account != account_id:
            raise NotFound(f"account {account_id!r} not found")

    # -- pre-commissioning --------------------------------------------------------------------------

    async def add_device(self, p: Principal, fields: Mapping[str, Any]) -> ImportedDevice:
        """Pre-commission one device (manufacturer or operator); the owner token comes back once."""
        self._need_maker(p)
        if not isinstance(fields, Mapping):
            raise _invalid(None, "a device is a JSON object")
        spec = self._spec(fields, None)
        existing = await self._store.existing([spec.dev_eui.hex()])
        if existing:
            maker, digest = existing[spec.dev_eui.hex()]
            if maker == p.account and digest == spec.digest(p.account):
                return _imported(spec, created=False)
            raise Conflict(f"device {spec.dev_eui.hex()} exists already")
        row, result, events_ = await self._prepare(p, spec)
        try:
            await self._store.add_device(
                row,
                _audit(p, "device.precommissioned", spec.dev_eui.hex(), details={"mac_version": spec.mac_version}),
                events_,
            )
        except DeviceExists:
            raise Conflict(f"device {spec.dev_eui.hex()} exists already, or its TKM info is in use") from None
        return result

    async def import_devices(
        self, p: Principal, rows: AsyncIterable[RawRow], import_id: str | None = None
    ) -> list[ImportedDevice]:
        """A whole file, all or nothing: every bad row is reported with its line and nothing is written.

        Rows are checked and their keys wrapped chunk by chunk into a staging table, then moved into the
        registry in one transaction; the answer (tokens, generated keys) is held only until it is returned.
        A client-chosen `import_id` lets it ask `import_progress` how far the import is while it runs.
        """
        self._need_maker(p)
        batch_id = secrets.token_hex(16) if import_id is None else _batch_id(p, import_id)
        if import_id is not None and await self._store.staged(batch_id):
            raise Conflict(f"an import with Import-Id {import_id!r} is running; choose a new id")
        problems = _Problems()
        results: list[ImportedDevice] = []
        seen: set[bytes] = set()
        seen_tokens: set[str] = set()
        chunk: list[_Spec] = []
        staged = read = 0
        try:
            async for raw in rows:
                read += 1
                if raw.fields is None:
                    error = raw.error or "unreadable line"
                    problems.add(FieldError(None, error, raw.line), header=error.startswith(HEADER_PROBLEM))
                    continue
                try:
                    spec = self._spec(raw.fields, raw.line)
                except InvalidRequest as exc:
                    problems.add(*(FieldError(e.field, e.reason, raw.line) for e in exc.errors))
                    continue
                tkm = None if spec.tkm is None else spec.tkm.to_bytes().hex()
                if spec.dev_eui in seen:
                    problems.add(FieldError("dev_eui", "DevEUI listed twice in the file", raw.line))
                elif tkm is not None and tkm in seen_tokens:
                    problems.add(FieldError("tkm_info", "TKM info listed twice in the file", raw.line))
                else:
                    seen.add(spec.dev_eui)
                    if tkm is not None:
                        seen_tokens.add(tkm)
                    chunk.append(spec)
                if len(chunk) >= _IMPORT_CHUNK:
                    staged += await self._stage(p, batch_id, chunk, results, problems)
                    chunk = []
            if chunk:
                staged += await self._stage(p, batch_id, chunk, results, problems)
            if problems.count:
                failed = ImportFailed(
                    problems.detail(),
                    errors=sorted(problems.kept, key=_by_line),
                    error_count=problems.count,
                )
                await self._refused(p, failed, read - problems.header, problems.rows)
                raise failed
            if staged:
                try:
                    await self._store.commit_batch(
                        batch_id,
                        _audit(
                            p, "devices.imported", details={"created": staged, "rows": len(results), "import": batch_id}
                        ),
                        lambda row: _precommissioned_events(row),
                        _audit(p, "device.precommissioned", details={"import": batch_id}),
                    )
                    metrics.IMPORTED_DEVICES.inc(staged)
                except DeviceExists:
                    failed = ImportFailed(
                        "a device or TKM info of the file was added meanwhile; nothing was imported",
                        errors=[FieldError("dev_eui", "added by another import meanwhile")],
                    )
                    await self._refused(p, failed, read, 0)
                    raise failed from None
        finally:
            await self._store.drop_batch(batch_id)
        return results

    async def import_progress(self, p: Principal, import_id: str) -> int:
        """Rows of a running import of this account that are checked and staged (keys in the HSM) so far.

        Not found before the first chunk is staged and after the import ended (its staging rows are gone then);
        the caller knows which from its own upload. Any worker process answers: the count is in the database.
        """
        self._need_maker(p)
        staged = await self._store.staged(_batch_id(p, import_id))
        if not staged:
            raise NotFound(f"no rows of an import {import_id!r} of this account are staged now")
        return staged

    async def _refused(self, p: Principal, failed: ImportFailed, rows: int, bad_rows: int) -> None:
        """Audit a refused import: who, how many rows and errors, the first errors (reasons name no secret)."""
        details = {
            "rows": rows,
            "bad_rows": bad_rows,
            "errors": failed.error_count,
            "first_errors": [e.as_dict() for e in failed.errors[:5]],
            "detail": failed.detail,
        }
        await self._store.record([_audit(p, "devices.import_refused", details=details)])

    async def _stage(
        self, p: Principal, batch_id: str, chunk: list[_Spec], results: list[ImportedDevice], problems: _Problems
    ) -> int:
        """Check a chunk against the registry and, while the file is still clean, prepare and park its rows."""
        existing = await self._store.existing([s.dev_eui.hex() for s in chunk])
        prepared: list[tuple[int, str, Mapping[str, Any]]] = []
        for spec in chunk:
            eui = spec.dev_eui.hex()
            if eui in existing:
                maker, digest = existing[eui]
                if maker == p.account and digest == spec.digest(p.account):
                    results.append(_imported(spec, created=False))
                else:
                    problems.add(FieldError("dev_eui", f"device {eui} exists already", spec.line))
                continue
            if problems.count:
                continue  # the file is refused anyway: no HSM work for the rest, only checks
            try:
                row, result, _ = await self._prepare(p, spec)
            except InvalidRequest as exc:
                problems.add(*(FieldError(e.field, e.reason, spec.line) for e in exc.errors))
                continue
            prepared.append((spec.line or 0, eui, staged_row(row)))
            results.append(result)
        if prepared and not problems.count:
            await self._store.stage(batch_id, prepared)
        return len(prepared)

    def _spec(self, fields: Mapping[str, Any], line: int | None) -> _Spec:
        """Check one device's fields (JSON values or CSV text) without touching keys or the database."""
        errors: list[FieldError] = []

        def get(name: str, parse: Any, default: Any = None) -> Any:
            value = fields.get(name)
            if value is None or value == "":
                return default
            try:
                return parse(value, name)
            except InvalidRequest as exc:
                errors.extend(exc.errors)
                return default

        unknown = sorted(set(fields) - _IMPORT_FIELDS)
        if unknown:
            errors.append(FieldError(unknown[0], f"unknown field(s): {', '.join(unknown)}"))
        dev_eui = get("dev_eui", parse_eui)
        if dev_eui is None and not any(e.field == "dev_eui" for e in errors):
            errors.append(FieldError("dev_eui", "required"))
        join_eui = get("join_eui", parse_eui, self._policy.default_join_eui)
        if join_eui is None and not any(e.field == "join_eui" for e in errors):
            errors.append(FieldError("join_eui", "required (no ownership.default_join_eui configured)"))
        mac_version = fields.get("mac_version")
        if not isinstance(mac_version, str) or mac_version not in _MAC_VERSIONS:
            errors.append(FieldError("mac_version", "one of 1.0.0, 1.0.1, 1.0.2, 1.0.3, 1.0.4, 1.1"))
        secure_element = get("secure_element", _boolean, False)
        generate = get("generate_keys", _boolean, False)
        app_key = get("app_key", parse_key)
        nwk_key = get("nwk_key", parse_key)
        tkm_raw = get("tkm_info", lambda v, f: parse_hex(v, f, se.TKM_INFO_LEN, "TKM info"))
        group = get("hsm_group", lambda v, f: _group(v, f), self._policy.default_hsm_group)
        profile_id = get("profile_id", lambda v, f: parse_hex(v, f, 4, "a TR005 ProfileID"), bytes(4))
        name = _field_text(fields, "name", 255, errors)
        admin_info = _field_text(fields, "admin_info", 4096, errors)
        serial = _field_text(fields, "serial", 32, errors)
        if serial is not None and not re.fullmatch(r"[0-9A-Za-z]{1,32}", serial):
            errors.append(FieldError("serial", "1-32 letters and digits (printed on the TR005 label)"))
        uses_nwk = mac_version == "1.1"
        tkm: se.TkmInfo | None = None
        if secure_element:
            if app_key is not None or nwk_key is not None or generate:
                errors.append(FieldError("app_key", "a secure-element device imports no keys (TKM info only)"))
            if tkm_raw is None and not any(e.field == "tkm_info" for e in errors):
                errors.append(FieldError("tkm_info", "required for a secure-element device"))
            elif tkm_raw is not None:
                tkm = se.TkmInfo.from_bytes(tkm_raw)
                if se.derivation(tkm.derive_algo_id) is None:
                    errors.append(FieldError("tkm_info", f"unknown DERIVE_ALGO_ID {tkm.derive_algo_id}"))
        else:
            if tkm_raw is not None:
                errors.append(FieldError("tkm_info", "only for secure-element devices"))
            if generate and (app_key is not None or nwk_key is not None):
                errors.append(FieldError("generate_keys", "either generate keys or import them, not both"))
            elif not generate:
                if app_key is None and not any(e.field == "app_key" for e in errors):
                    errors.append(FieldError("app_key", "required (or generate_keys: true)"))
                if uses_nwk and nwk_key is None and not any(e.field == "nwk_key" for e in errors):
                    errors.append(FieldError("nwk_key", "required for LoRaWAN 1.1"))
            if not uses_nwk and nwk_key is not None:
                errors.append(FieldError("nwk_key", "only for LoRaWAN 1.1"))
        if errors:
            raise InvalidRequest("; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
        return _Spec(
            line=line,
            dev_eui=dev_eui,
            join_eui=join_eui,
            mac_version=str(mac_version),
            name=name,
            admin_info=admin_info,
            secure_element=bool(secure_element),
            hsm_group=group,
            profile_id=profile_id,
            serial=None if serial is None else serial.upper(),
            app_key=app_key,
            nwk_key=nwk_key,
            generate_keys=bool(generate),
            tkm=tkm,
        )

    async def _prepare(self, p: Principal, spec: _Spec) -> tuple[dict[str, Any], ImportedDevice, list[EventRecord]]:
        """Wrap, generate or derive the root keys in the HSM and pick the owner token: the device row to store."""
        group = spec.hsm_group
        try:
            await self._storage_kek_ready(group)
            generated: dict[str, bytes] = {}
            if spec.tkm is not None:
                algorithm = se.derivation(spec.tkm.derive_algo_id)
                assert algorithm is not None
                label = se.lot_master_key_label(spec.tkm)
                blocks = algorithm.blocks(spec.tkm, spec.uses_nwk_key)
                try:
                    app_blob = await self._hsm.derive_root_key(group, label, blocks["app_key"])
                    nwk_blob = (
                        await self._hsm.derive_root_key(group, label, blocks["nwk_key"]) if "nwk_key" in blocks else None
                    )
                except KeyNotFound:
                    raise _invalid("tkm_info", f"no lot master key {label!r} in the HSM") from None
                token = spec.tkm.to_bytes().hex().upper()
                if await self._store.token_in_use(token_hash(token)):
                    raise _invalid("tkm_info", "this TKM info was used before; it cannot be an owner token again")
            elif spec.generate_keys:
                app_blob, generated["app_key"] = await self._hsm.generate_root_key(group)
                nwk_blob = None
                if spec.uses_nwk_key:
                    nwk_blob, generated["nwk_key"] = await self._hsm.generate_root_key(group)
                token = (await self._hsm.generate_random(16)).hex().upper()
            else:
                assert spec.app_key is not None
                app_blob = await self._hsm.import_root_key(group, spec.app_key)
                nwk_blob = None if spec.nwk_key is None else await self._hsm.import_root_key(group, spec.nwk_key)
                token = (await self._hsm.generate_random(16)).hex().upper()
        except (HsmError, ValueError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise _invalid("hsm_group", f"the HSM refused the keys: {type(exc).__name__}") from None
        eui = spec.dev_eui.hex()
        row = {
            "dev_eui": eui,
            "join_eui": spec.join_eui.hex(),
            "mac_version": spec.mac_version,
            "hsm_group": group,
            "app_key_blob": app_blob,
            "nwk_key_blob": nwk_blob,
            "name": spec.name,
            "manufacturer": p.account,
            "owner_token_hash": token_hash(token),
            "secure_element": spec.secure_element,
            "admin_info": spec.admin_info,
            "profile_id": spec.profile_id.hex(),
            "serial": spec.serial,
            "keys_exported": bool(generated),
            "import_digest": spec.digest(p.account),
        }
        result = _imported(
            spec,
            created=True,
            owner_token=token,
            app_key=generated.get("app_key"),
            nwk_key=generated.get("nwk_key"),
        )
        return row, result, _precommissioned_events(row)

    def _need_maker(self, p: Principal) -> None:
        _need(p, "devices:write")
        if p.kind not in (AccountKind.MANUFACTURER, AccountKind.OPERATOR):
            raise Forbidden("only manufacturers and operators pre-commission devices")

    # -- devices ------------------------------------------------------------------------------------

    async def list_devices(
        self,
        p: Principal,
        limit: int = 100,
        after: bytes | None = None,
        *,
        search: str | None = None,
        state: str | None = None,
    ) -> list[DeviceView]:
        """A page of the devices the caller sees, in DevEUI order; `search` is a DevEUI or name prefix."""
        _need(p, "devices:read")
        limit = _limit(limit)
        after_hex = None if after is None else after.hex()
        if state is not None and state not in DEVICE_STATES:
            raise _invalid("state", f"one of {', '.join(DEVICE_STATES)}")
        search = _text(search, "search", 64) if search is not None else None
        owner, maker = None, None
        if p.kind is AccountKind.MANUFACTURER:
            maker = p.account
        elif not p.is_operator:
            owner = p.account
        found = await self._store.list_devices(
            owner=owner, manufacturer=maker, limit=limit, after=after_hex, search=search or None, state=state
        )
        return [_view(p, d) for d in found]

    async def get_device(self, p: Principal, dev_eui: bytes) -> DeviceView:
        _need(p, "devices:read")
        return _view(p, await self._visible(p, dev_eui))

    async def _visible(self, p: Principal, dev_eui: bytes) -> OwnedDevice:
        device = await self._store.device(dev_eui.hex())
        if device is None or not _sees(p, device):
            raise NotFound(f"device {dev_eui.hex()} not found")
        return device

    async def _owned(self, p: Principal, dev_eui: bytes) -> OwnedDevice:
        """A claimed device the caller owns (or any claimed device for an operator)."""
        _need(p, "devices:write")
        device = await self._visible(p, dev_eui)
        if p.kind is AccountKind.MANUFACTURER:
            raise Forbidden("a manufacturer cannot change a device's network or keys")
        if device.owner_account is None:
            raise Conflict(f"device {dev_eui.hex()} is not claimed")
        return device

    async def delete_device(self, p: Principal, dev_eui: bytes) -> None:
        _need(p, "devices:write")
        device = await self._visible(p, dev_eui)
        if not p.is_operator and (p.kind is not AccountKind.MANUFACTURER or device.owner_account is not None):
            raise Forbidden("only the manufacturer of an unclaimed device, or an operator, deletes it")
        deleted = await self._store.delete_device(
            dev_eui.hex(),
            None if p.is_operator else p.account,
            _audit(p, "device.deleted", dev_eui.hex(), device.owner_account),
        )
        if not deleted:
            raise NotFound(f"device {dev_eui.hex()} not found")

    # -- claims ---------------------------------------------------------------------------------------

    async def claim_qr(self, p: Principal, qr: str, *, retry: bool = False) -> DeviceView:
        """A claim with the TR005 string of the label; its JoinEUI must match the device's."""
        try:
            parsed = parse_qr(qr) if isinstance(qr, str) else None
        except QrCodeError as exc:
            raise _invalid("qr", str(exc)) from None
        if parsed is None or parsed.owner_token is None:
            raise _invalid("qr", "a TR005 string with an owner token (O extension)")
        return await self.claim(p, parsed.dev_eui, parsed.owner_token, join_eui=parsed.join_eui, retry=retry)

    async def claim(
        self, p: Principal, dev_eui: bytes, owner_token: str, *, join_eui: bytes | None = None, retry: bool = False
    ) -> DeviceView:
        """Take an unclaimed device with its owner token; works once, and the token never works again.

        `retry` (an idempotent command repeated after its reply was lost): a claim that already succeeded for
        this account with this token answers with the device instead of failing.
        """
        _need(p, "claim")
        if not isinstance(owner_token, str) or not _TOKEN.fullmatch(owner_token.strip()):
            raise _invalid("owner_token", "hex digits (32 for a random token, 20 for TKM info)")
        eui = dev_eui.hex()
        window = int(time.time()) // self._policy.claim_window
        limits = self._claimant_limits(p)
        device_bucket = f"claim:device:{eui}"
        counts = await self._store.failures([*limits, device_bucket], window)
        if any(counts.get(bucket, 0) >= limit for bucket, limit in limits.items()):
            wait = self._policy.claim_window - int(time.time()) % self._policy.claim_window
            metrics.CLAIMS.labels("rate_limited").inc()
            raise RateLimited("too many failed claims; try later", retry_after=wait)
        device = await self._store.device(eui)
        presented = token_hash(owner_token)
        stored = device.owner_token_hash if device is not None and device.owner_token_hash else _DUMMY_HASH
        matches = hmac.compare_digest(presented, stored)
        if matches and device is not None and (join_eui is None or join_eui.hex() == device.join_eui):
            claimed = await self._store.claim(
                eui,
                presented,
                p.account,
                _audit(p, "device.claimed", eui, p.account),
                [event_record("device.claimed", p.account, eui, {"join_eui": device.join_eui})],
            )
            if claimed:
                metrics.CLAIMS.labels("claimed").inc()
                return _view(p, await self._visible(p, dev_eui))
        if (
            retry
            and device is not None
            and device.owner_account == p.account
            and (join_eui is None or join_eui.hex() == device.join_eui)
            and await self._store.token_spent(presented)
        ):
            return _view(p, device)  # a retried claim that already succeeded: the caller owns it already
        reason = "unknown device, or the owner token is not valid for it"
        account_bucket = f"claim:account:{p.account}"
        increments = dict.fromkeys([*limits, device_bucket], 1)
        if counts.get(device_bucket, 0) >= self._policy.claim_failures_per_device:
            # A device under attack: each further wrong token costs the claimant its whole allowance.
            increments[account_bucket] = max(1, limits[account_bucket] - counts.get(account_bucket, 0))
        await self._store.count_failure(
            increments,
            window,
            _audit(p, "device.claim_failed", eui),
            [event_record("claim.failed", p.account, eui, {"reason": reason})],
        )
        metrics.CLAIMS.labels("failed").inc()
        raise ClaimFailed(reason)

    def _claimant_limits(self, p: Principal) -> dict[str, int]:
        """The failure buckets of whoever claims: the account, and for REST its source address too.

        The device's own counter never refuses a claim: a stranger's wrong tokens must not lock the owner out.
        """
        limits = {f"claim:account:{p.account}": self._policy.claim_failures_per_account}
        if p.source.startswith("http ") and self._policy.claim_failures_per_source > 0:
            limits[f"claim:source:{p.source[5:][:80]}"] = self._policy.claim_failures_per_source
        return limits

    async def set_net_id(self, p: Principal, dev_eui: bytes, net_id: bytes | None) -> DeviceView:
        device = await self._owned(p, dev_eui)
        value = None if net_id is None else net_id.hex()
        await self._change(
            p, device, {"home_net_id": value}, "device.netid_set", {"net_id": value}, details={"net_id": value}
        )
        return _view(p, await self._visible(p, dev_eui))

    async def net_id_warnings(self, net_id: bytes | None) -> list[str]:
        """Why a home NetID may not work yet: no network server with it is registered (it may be added later)."""
        if net_id is None or await self._registry.get_network_server(net_id) is not None:
            return []
        return [f"no network server with NetID {net_id.hex()} is registered yet: no NS can join the device until one is"]

    async def set_astk(self, p: Principal, dev_eui: bytes, astk: str | None) -> DeviceView:
        device = await self._owned(p, dev_eui)
        label = None
        if astk is not None:
            record = await self._store.astk(device.owner_account or "", astk) if isinstance(astk, str) else None
            if record is None:
                raise _invalid("astk", f"no ASTK named {astk!r} in the owner's account")
            label = record.label
        await self._change(p, device, {"astk_label": label}, "device.astk_set", {"astk": astk}, details={"astk": astk})
        return _view(p, await self._visible(p, dev_eui))

    async def release(self, p: Principal, dev_eui: bytes) -> tuple[DeviceView, str]:
        """Give a device up: a fresh owner token (returned once) lets it be claimed again; its NS and ASTK go."""
        device = await self._owned(p, dev_eui)
        token = (await self._hsm.generate_random(16)).hex().upper()
        values = {
            "owner_account": None,
            "owner_token_hash": token_hash(token),
            "claimed_at": None,
            "home_net_id": None,
            "astk_label": None,
        }
        await self._change(p, device, values, "device.released", {})
        return _view(p, await self._store_device(dev_eui), force=True), token

    async def reissue_owner_token(self, p: Principal, dev_eui: bytes) -> tuple[DeviceView, str]:
        """A new owner token for an unclaimed device (lost label or import answer); the old one dies."""
        _need(p, "devices:write")
        device = await self._visible(p, dev_eui)
        if p.kind is AccountKind.SUBSCRIBER:
            raise Forbidden("only the manufacturer or an operator reissues owner tokens")
        if device.owner_account is not None or device.owner_token_hash is None:
            raise Conflict(f"device {dev_eui.hex()} is claimed: its owner releases it instead")
        token = (await self._hsm.generate_random(16)).hex().upper()
        replaced = await self._store.replace_token(
            device.dev_eui,
            device.owner_token_hash,
            token_hash(token),
            _audit(p, "device.owner_token_reissued", device.dev_eui),
        )
        if not replaced:
            raise Conflict(f"device {dev_eui.hex()} changed meanwhile; try again")
        return _view(p, await self._visible(p, dev_eui)), token

    async def reset_nonces(self, p: Principal, dev_eui: bytes) -> DeviceView:
        device = await self._owned(p, dev_eui) if not p.is_operator else await self._visible(p, dev_eui)
        if not await self._store.reset_nonces(
            device.dev_eui, _audit(p, "device.nonces_reset", device.dev_eui, device.owner_account)
        ):
            raise NotFound(f"device {dev_eui.hex()} not found")
        return _view(p, await self._visible(p, dev_eui))

    async def _change(
        self,
        p: Principal,
        device: OwnedDevice,
        values: Mapping[str, Any],
        event: str,
        data: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> None:
        owner = device.owner_account
        changed = await self._store.update_owned(
            device.dev_eui,
            owner,
            values,
            _audit(p, event, device.dev_eui, owner, details=details or {}),
            [event_record(event, owner, device.dev_eui, data)],
        )
        if not changed:
            raise Conflict(f"device {device.dev_eui} changed meanwhile; try again")

    async def _store_device(self, dev_eui: bytes) -> OwnedDevice:
        device = await self._store.device(dev_eui.hex())
        if device is None:
            raise NotFound(f"device {dev_eui.hex()} not found")
        return device

    # -- ASTKs --------------------------------------------------------------------------------------

    async def create_astk(self, p: Principal, name: str, key: bytes | None) -> AstkView:
        """An application-server transport key: imported, or generated in the HSM for one later export."""
        _need(p, "astk")
        if not isinstance(name, str) or not _ASTK_NAME.fullmatch(name):
            raise _invalid("name", "1-64 characters from [A-Za-z0-9._-]")
        if await self._store.astk(p.account, name) is not None:
            raise Conflict(f"ASTK {name!r} exists already")
        label = f"astk-{secrets.token_hex(8)}"
        try:
            if key is None:
                await self._hsm.generate_exportable_kek(label)
            else:
                await self._hsm.import_kek(label, key)
        except KekExists:
            raise Conflict("label collision in the HSM; try again") from None
        origin = "generated" if key is None else "imported"
        record = AstkRecord(label, p.account, name, origin, key is not None, datetime.now(UTC))
        try:
            await self._store.add_astk(record, _audit(p, "astk.created", details={"astk": name, "origin": origin}))
        except AstkExists:
            raise Conflict(f"ASTK {name!r} exists already") from None
        stored = await self._store.astk(p.account, name)
        assert stored is not None
        return _astk_view(stored)

    async def list_astks(self, p: Principal) -> list[AstkView]:
        _need(p, "astk")
        return [_astk_view(a) for a in await self._store.list_astks(p.account)]

    async def export_astk(self, p: Principal, name: str) -> bytes:
        """The clear value of a generated ASTK, exactly once, for the subscriber's application server."""
        _need(p, "astk")
        record = await self._store.astk(p.account, name) if isinstance(name, str) else None
        if record is None:
            raise NotFound(f"ASTK {name!r} not found")
        if record.exported:
            raise AlreadyExported(f"ASTK {name!r} was imported or exported already")
        if not await self._store.mark_exported(record.label, _audit(p, "astk.exported", details={"astk": name})):
            raise AlreadyExported(f"ASTK {name!r} was exported already")
        try:
            return await self._hsm.export_kek_once(record.label)
        except KeyNotExportable:
            raise AlreadyExported(f"ASTK {name!r} was exported already") from None

    # -- network servers and roaming ----------------------------------------------------------------

    async def add_network_server(
        self, p: Principal, fields: Mapping[str, Any]
    ) -> tuple[NetworkServerView, str | None]:
        """Register an NS (operator): its KEK may be imported here; a bearer token may be generated once."""
        _need(p, "admin")
        if not isinstance(fields, Mapping):
            raise _invalid(None, "a network server is a JSON object")
        unknown = sorted(set(fields) - _NS_FIELDS)
        if unknown:
            raise _invalid(unknown[0], f"unknown field(s): {', '.join(unknown)}")
        net_id = parse_net_id(fields.get("net_id"))
        name = _text(fields.get("name"), "name", 255) or net_id.hex()
        kek_label = fields.get("kek_label")
        if not isinstance(kek_label, str) or not kek_label or len(kek_label) > 64 or not kek_label.isprintable():
            raise _invalid("kek_label", "1-64 printable characters")
        if kek_label.startswith(("jsd-", "astk-", "lmk-")):
            raise _invalid("kek_label", "prefixes jsd-, astk- and lmk- are reserved")
        kek = None if fields.get("kek") in (None, "") else parse_key(fields.get("kek"), "kek")
        token = fields.get("token")
        if token is not None and (not isinstance(token, str) or len(token) < 16 or len(token) > 256):
            raise _invalid("token", "16-256 characters")
        generate = _boolean(fields.get("generate_token", False), "generate_token")
        if generate and token is not None:
            raise _invalid("generate_token", "either give a token or generate one")
        if generate:
            token = secrets.token_urlsafe(32)
        fingerprint = fields.get("cert_fingerprint")
        if fingerprint is not None:
            fingerprint = parse_hex(fingerprint.replace(":", "") if isinstance(fingerprint, str) else fingerprint,
                                    "cert_fingerprint", 32, "a SHA-256 fingerprint").hex()  # fmt: skip
        if token is None and fingerprint is None:
            raise _invalid("token", "a bearer token (token / generate_token) or a cert_fingerprint is required")
        answer_url = fields.get("answer_url")
        if answer_url is not None and (
            not isinstance(answer_url, str) or not re.fullmatch(r"https?://\S{1,2000}", answer_url)
        ):
            raise _invalid("answer_url", "an http(s) URL")
        async_mode = _boolean(fields.get("async_mode", False), "async_mode")
        if async_mode and answer_url is None:
            raise _invalid("answer_url", "required with async_mode")
        if await self._registry.get_network_server(net_id) is not None:
            raise Conflict(f"network server {net_id.hex()} exists already")
        try:
            if kek is not None:
                await self._hsm.import_kek(kek_label, kek)
            elif not await self._hsm.has_kek(kek_label):
                raise _invalid("kek", f"no KEK {kek_label!r} in the HSM: give its value to import it")
        except KekExists:
            raise Conflict(f"a KEK labelled {kek_label!r} is in the HSM already; omit kek to use it") from None
        ns = NetworkServer(
            net_id=net_id,
            name=name,
            kek_label=kek_label,
            token_hash=None if token is None else hashlib.sha256(token.encode()).hexdigest(),
            cert_fingerprint=fingerprint,
            answer_url=answer_url,
            async_mode=async_mode,
        )
        try:
            await self._registry.add_network_server(ns)
        except NetworkServerExists:
            raise Conflict(f"network server {net_id.hex()} clashes with a registered NetID, token or cert") from None
        await self._store.record([_audit(p, "network_server.added", details={"net_id": net_id.hex()})])
        return _ns_view(ns), token if generate else None

    async def list_network_servers(self, p: Principal) -> list[NetworkServerView]:
        _need(p, "admin")
        return [_ns_view(ns) for ns in await self._registry.list_network_servers()]

    async def network_server_choices(self, p: Principal) -> list[tuple[bytes, str]]:
        """NetIDs and names of the registered NSs, for whoever may set a device's home NetID to pick from."""
        _need(p, "devices:write")
        return [(ns.net_id, ns.name) for ns in await self._registry.list_network_servers()]

    async def get_network_server(self, p: Principal, net_id: bytes) -> NetworkServerView:
        _need(p, "admin")
        ns = await self._registry.get_network_server(net_id)
        if ns is None:
            raise NotFound(f"network server {net_id.hex()} not found")
        return _ns_view(ns)

    async def remove_network_server(self, p: Principal, net_id: bytes) -> None:
        _need(p, "admin")
        try:
            await self._registry.remove_network_server(net_id)
        except RegistryNotFound:
            raise NotFound(f"network server {net_id.hex()} not found") from None
        await self._store.record([_audit(p, "network_server.removed", details={"net_id": net_id.hex()})])

    async def add_roaming(self, p: Principal, home_net_id: bytes, visited_net_id: bytes) -> None:
        """Allow the visited NS to ask for (HomeNSReq) devices whose home is `home_net_id`."""
        _need(p, "admin")
        added = await self._store.add_roaming(
            home_net_id.hex(),
            visited_net_id.hex(),
            _audit(p, "roaming.added", details={"home": home_net_id.hex(), "visited": visited_net_id.hex()}),
        )
        if not added:
            raise Conflict("this roaming agreement exists already")

    async def list_roaming(self, p: Principal) -> list[tuple[bytes, bytes]]:
        _need(p, "admin")
        return [(bytes.fromhex(h), bytes.fromhex(v)) for h, v in await self._store.list_roaming()]

    async def remove_roaming(self, p: Principal, home_net_id: bytes, visited_net_id: bytes) -> None:
        _need(p, "admin")
        removed = await self._store.remove_roaming(
            home_net_id.hex(),
            visited_net_id.hex(),
            _audit(p, "roaming.removed", details={"home": home_net_id.hex(), "visited": visited_net_id.hex()}),
        )
        if not removed:
            raise NotFound("no such roaming agreement")

    # -- audit and events ---------------------------------------------------------------------------

    async def audit(
        self,
        p: Principal,
        dev_eui: bytes | None = None,
        after: int | None = None,
        limit: int = 100,
        *,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        _need(p, "audit:read")
        entries = await self._store.audit(
            account=None if p.is_operator else p.account,
            dev_eui=None if dev_eui is None else dev_eui.hex(),
            after=after,
            limit=_limit(limit),
            newest_first=newest_first,
        )
        return [
            AuditEntry(
                e.id, e.at, e.account, e.key_id, e.source, e.action,
                None if e.dev_eui is None else bytes.fromhex(e.dev_eui), e.details,
            )  # fmt: skip
            for e in entries
        ]

    async def events(
        self,
        p: Principal,
        after: int | None = None,
        limit: int = 100,
        dev_eui: bytes | None = None,
        type: str | None = None,  # noqa: A002 - the query parameter's name
        *,
        types: tuple[str, ...] | None = None,
        newest_first: bool = False,
    ) -> list[EventView]:
        """The caller's events in seq order; `types`: any of these; `newest_first`: the last `limit` ones."""
        _need(p, "events:read")
        found = await self._store.events(
            account=None if p.is_operator else p.account,
            after=after,
            limit=_limit(limit),
            dev_eui=None if dev_eui is None else dev_eui.hex(),
            type_=type,
            types=types,
            newest_first=newest_first,
        )
        return [event_view(e) for e in found]

    # -- idempotent commands ------------------------------------------------------------------------

    async def stored_reply(self, account: str, request_id: str) -> dict[str, Any] | None:
        if not _REQUEST_ID.fullmatch(request_id):
            raise _invalid("request_id", "1-64 printable ASCII characters")
        return await self._store.reply(account, request_id)

    async def store_reply(self, account: str, request_id: str, reply: Mapping[str, Any]) -> None:
        await self._store.store_reply(account, request_id, reply)


def event_view(e: StoredEvent) -> EventView:
    return EventView(
        e.seq, e.event_id, e.type, e.time, e.account, None if e.dev_eui is None else bytes.fromhex(e.dev_eui), e.data
    )


# -- helpers ----------------------------------------------------------------------------------------------


def _batch_id(p: Principal, import_id: object) -> str:
    """The staging id of a client-named import: per account, so nobody sees another account's progress."""
    if not isinstance(import_id, str) or not _IMPORT_ID.fullmatch(import_id):
        raise _invalid("import_id", "16-64 characters from [A-Za-z0-9_-]")
    return hashlib.sha256(f"jsd-import\0{p.account}\0{import_id}".encode()).hexdigest()[:32]


def _need(p: Principal, scope: str) -> None:
    if scope not in p.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope")


def _invalid(field: str | None, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])


def _by_line(e: FieldError) -> int:
    return e.line or 0


def _text(value: object, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise _invalid(field, f"printable text of at most {limit} characters")
    return value or None


def _field_text(fields: Mapping[str, Any], name: str, limit: int, errors: list[FieldError]) -> str | None:
    try:
        return _text(fields.get(name), name, limit)
    except InvalidRequest as exc:
        errors.extend(exc.errors)
        return None


def _boolean(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise _invalid(field, "true or false")


def _group(value: object, field: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,48}", value):
        raise _invalid(field, "1-48 characters from [A-Za-z0-9._-]")
    return value


def _scopes(scopes: Iterable[str]) -> frozenset[str]:
    if isinstance(scopes, str):
        raise _invalid("scopes", "a list of scope names")
    wanted = frozenset(scopes)
    unknown = wanted - set(SCOPES)
    if unknown:
        raise _invalid("scopes", f"unknown scope(s): {' '.join(sorted(map(str, unknown)))}")
    return wanted


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise _invalid("limit", "1..1000")
    return limit


def _new_key(account: str, scopes: frozenset[str]) -> tuple[NewApiKey, ApiKeyRecord]:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return (
        NewApiKey(key_id, account, f"jsd_{key_id}_{secret}", scopes),
        ApiKeyRecord(key_id, account, _secret_hash(secret), tuple(sorted(scopes))),
    )


def _audit(
    p: Principal,
    action: str,
    dev_eui: str | None = None,
    owner: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    return AuditRecord(
        account=p.account,
        key_id=p.key_id,
        source=p.source,
        action=action,
        dev_eui=dev_eui,
        owner_account=owner,
        details=details or {},
    )


def _sees(p: Principal, d: OwnedDevice) -> bool:
    if p.is_operator:
        return True
    if d.owner_account is not None:
        return d.owner_account == p.account
    return p.kind is AccountKind.MANUFACTURER and d.manufacturer == p.account


def _view(p: Principal, d: OwnedDevice, *, force: bool = False) -> DeviceView:
    shows_maker = p.is_operator or d.manufacturer == p.account
    shows_owner = p.is_operator or d.owner_account == p.account or force
    return DeviceView(
        dev_eui=bytes.fromhex(d.dev_eui),
        join_eui=bytes.fromhex(d.join_eui),
        mac_version=d.mac_version,
        name=d.name,
        admin_info=d.admin_info,
        secure_element=d.secure_element,
        profile_id=bytes.fromhex(d.profile_id),
        serial=d.serial,
        manufacturer=d.manufacturer if shows_maker else None,
        owner=d.owner_account if shows_owner else None,
        home_net_id=None if d.home_net_id is None else bytes.fromhex(d.home_net_id),
        astk=d.astk_name if d.astk_name is not None else d.astk_label,  # an operator's own label (devices add)
        keys_exported=d.keys_exported,
        created_at=d.created_at,
        claimed_at=d.claimed_at,
    )


def _imported(
    spec: _Spec,
    *,
    created: bool,
    owner_token: str | None = None,
    app_key: bytes | None = None,
    nwk_key: bytes | None = None,
) -> ImportedDevice:
    return ImportedDevice(
        dev_eui=spec.dev_eui,
        join_eui=spec.join_eui,
        profile_id=spec.profile_id,
        name=spec.name,
        created=created,
        line=spec.line,
        owner_token=owner_token,
        serial=spec.serial,
        app_key=app_key,
        nwk_key=nwk_key,
    )


def _precommissioned_events(row: Mapping[str, Any]) -> list[EventRecord]:
    maker, eui = row["manufacturer"], row["dev_eui"]
    found = [
        event_record(
            "device.precommissioned",
            maker,
            eui,
            {
                "join_eui": row["join_eui"],
                "mac_version": row["mac_version"],
                "secure_element": bool(row["secure_element"]),
                "keys_generated": bool(row["keys_exported"]),
            },
        )
    ]
    if row["keys_exported"]:
        names = ["app_key"] + (["nwk_key"] if row.get("nwk_key_blob") is not None else [])
        found.append(event_record("device.keys_exported", maker, eui, {"keys": names}))
    return found


def _astk_view(a: AstkRecord) -> AstkView:
    return AstkView(a.name, a.label, a.origin, a.exported, a.created_at)


def _ns_view(ns: NetworkServer) -> NetworkServerView:
    return NetworkServerView(
        ns.net_id, ns.name, ns.kek_label, ns.token_hash is not None, ns.cert_fingerprint, ns.answer_url, ns.async_mode
    )
