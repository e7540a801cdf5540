"""Devices: pre-commissioning (one device, or a whole file all or nothing), what an account sees of its
devices, and what their owner changes (home NetID, ASTK, nonces).

Root keys are wrapped, generated or derived (secure elements) in the HSM; generated keys and owner tokens are
returned once and never stored in clear.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

from jsd import metrics
from jsd.hsm import Hsm, HsmError, KeyNotFound
from jsd.ownership import se
from jsd.ownership.answers import ImportAnswer
from jsd.ownership.imports import HEADER_PROBLEM, DeviceSpec, Problems, RawRow, device_spec, unsupported
from jsd.ownership.model import (
    AccountKind,
    Conflict,
    DeviceFacts,
    DeviceView,
    FieldError,
    Forbidden,
    ImportConflict,
    ImportedDevice,
    ImportFailed,
    InvalidRequest,
    NoSuchResource,
    Principal,
)
from jsd.ownership.rules import (
    DeviceAccess,
    OwnershipPolicy,
    audit,
    hsm_guard,
    invalid,
    need,
    new_owner_token,
    new_owner_tokens,
    page_limit,
    plain_text,
    token_hash,
    view,
)
from jsd.registry import DeviceExists, NonceState, Registry
from jsd.registry.astks import AstkStore
from jsd.registry.devices import DeviceStore, staged_row
from jsd.registry.journal import EventRecord, Journal, new_event

__all__ = ["DEVICE_STATES", "DeviceService"]

_IMPORT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_IMPORT_CHUNK = 500
DEVICE_STATES = ("claimed", "unclaimed", "no_net_id", "net_id_set")
"""Filters of list_devices: claimed or not, and claimed devices without / with a home NetID."""


class DeviceService:
    """Pre-commissioning by manufacturers and operators; reading and changing devices by whoever sees them."""

    def __init__(
        self,
        store: DeviceStore,
        astks: AstkStore,
        journal: Journal,
        registry: Registry,
        hsm: Hsm,
        policy: OwnershipPolicy,
    ) -> None:
        self._store = store
        self._registry = registry
        self._devices = DeviceAccess(store)
        self._astks = astks
        self._journal = journal
        self._hsm = hsm
        self._policy = policy
        self._groups_ready: set[str] = set()

    # -- pre-commissioning --------------------------------------------------------------------------

    async def add_device(self, p: Principal, fields: Mapping[str, Any]) -> ImportedDevice:
        """Pre-commission one device (manufacturer or operator); the owner token comes back once."""
        _need_maker(p)
        if not isinstance(fields, Mapping):
            raise invalid(None, "a device is a JSON object")
        spec = self._spec(fields, None)
        if (missing := unsupported(spec)) is not None:
            raise _hsm_state(missing.field or "", missing.reason)
        existing = await self._store.existing([spec.dev_eui.hex()])
        if existing:
            maker, digest = existing[spec.dev_eui.hex()]
            if maker == p.account and digest == spec.digest(p.account):
                return _imported(spec, created=False)
            raise Conflict(f"device {spec.dev_eui.hex()} exists already")
        row, result = await self._prepare(p, spec)
        try:
            await self._store.add_device(
                row,
                audit(p, "device.precommissioned", spec.dev_eui.hex(), details={"mac_version": spec.mac_version}),
                _precommissioned_events(row),
            )
        except DeviceExists:
            raise Conflict(f"device {spec.dev_eui.hex()} exists already, or its TKM info is in use") from None
        return result

    async def import_devices(
        self, p: Principal, rows: AsyncIterable[RawRow], import_id: str | None = None
    ) -> list[ImportedDevice]:
        """A whole file, all or nothing (see `import_streamed`), its answer collected into one list."""
        async with self.import_streamed(p, rows, import_id) as answer:
            return [item async for page in answer.pages() for item in page]

    @asynccontextmanager
    async def import_streamed(
        self, p: Principal, rows: AsyncIterable[RawRow], import_id: str | None = None
    ) -> AsyncIterator[ImportAnswer]:
        """A whole file, all or nothing: every bad row is reported with its line and nothing is written.

        Rows are checked and their keys wrapped chunk by chunk into a staging table, then moved into the
        registry in one transaction. The answer (tokens, generated keys) is parked sealed beside them and read
        back, in file order, through the `ImportAnswer` this yields once the import is committed; leaving the
        context drops whatever is left of it. A client-chosen `import_id` lets it ask `import_progress` how far
        the import is while it runs.
        """
        _need_maker(p)
        batch_id = secrets.token_hex(16) if import_id is None else _batch_id(p, import_id)
        if import_id is not None and await self._store.staged(batch_id):
            raise Conflict(f"an import with Import-Id {import_id!r} is running; choose a new id")
        answer = ImportAnswer(self._store)
        try:
            await self._import(p, rows, batch_id, answer)
            yield answer
        finally:
            await self._store.drop_batch(batch_id, answer.batch_id)

    async def _import(self, p: Principal, rows: AsyncIterable[RawRow], batch_id: str, answer: ImportAnswer) -> None:
        """Check, stage and commit the file; raises `ImportFailed` (nothing written) if any row is bad
        (`ImportConflict` when every bad row is only refused by the state of the registry or the HSM)."""
        problems = Problems()
        seen: set[bytes] = set()
        seen_tokens: set[str] = set()
        chunk: list[DeviceSpec] = []
        staged = read = 0
        async for raw in rows:
            read += 1
            if raw.fields is None:
                error = raw.error or "unreadable line"
                problems.add(FieldError(None, error, raw.line), header=error.startswith(HEADER_PROBLEM))
                continue
            try:
                spec = self._spec(raw.fields, raw.line)
            except InvalidRequest as exc:
                problems.add_refusal(exc, raw.line)
                continue
            if (missing := unsupported(spec)) is not None:
                problems.add(missing, state=True)
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
                staged += await self._stage(p, batch_id, chunk, answer, problems)
                chunk = []
        if chunk:
            staged += await self._stage(p, batch_id, chunk, answer, problems)
        seen.clear()  # the largest thing held per row: its memory serves the commit's chunks instead
        seen_tokens.clear()
        if problems.count:
            refusal = ImportConflict if problems.state_only else ImportFailed
            failed = refusal(problems.detail(), errors=problems.sorted_errors(), error_count=problems.count)
            await self._refused(p, failed, read - problems.header, problems.rows)
            raise failed
        if staged:
            await self._commit(p, batch_id, staged, answer.created + answer.unchanged, read)

    async def import_progress(self, p: Principal, import_id: str) -> int:
        """Rows of a running import of this account that are checked and staged (keys in the HSM) so far.

        Not found before the first chunk is staged and after the import ended (its staging rows are gone then);
        the caller knows which from its own upload. Any worker process answers: the count is in the database.
        """
        _need_maker(p)
        staged = await self._store.staged(_batch_id(p, import_id))
        if not staged:
            raise NoSuchResource(f"no rows of an import {import_id!r} of this account are staged now")
        return staged

    async def _commit(self, p: Principal, batch_id: str, staged: int, rows: int, read: int) -> None:
        """Move the staged rows into the registry; a device added meanwhile refuses the whole file."""
        try:
            await self._store.commit_batch(
                batch_id,
                audit(p, "devices.imported", details={"created": staged, "rows": rows, "import": batch_id}),
                _precommissioned_events,
                audit(p, "device.precommissioned", details={"import": batch_id}),
            )
            metrics.IMPORTED_DEVICES.inc(staged)
        except DeviceExists:
            failed = ImportConflict(
                "a device or TKM info of the file was added meanwhile; nothing was imported",
                errors=[FieldError("dev_eui", "added by another import meanwhile")],
            )
            await self._refused(p, failed, read, 0)
            raise failed from None

    async def _refused(self, p: Principal, failed: ImportFailed, rows: int, bad_rows: int) -> None:
        """Audit a refused import: who, how many rows and errors, the first errors (reasons name no secret)."""
        details = {
            "rows": rows,
            "bad_rows": bad_rows,
            "errors": failed.error_count,
            "first_errors": [e.as_dict() for e in failed.errors[:5]],
            "detail": failed.detail,
        }
        await self._journal.record([audit(p, "devices.import_refused", details=details)])

    async def _stage(
        self, p: Principal, batch_id: str, chunk: list[DeviceSpec], answer: ImportAnswer, problems: Problems
    ) -> int:
        """Check a chunk against the registry and, while the file is still clean, prepare and park its rows."""
        existing = await self._store.existing([s.dev_eui.hex() for s in chunk])
        unchanged: set[bytes] = set()
        for spec in chunk:
            if spec.dev_eui.hex() in existing:
                maker, digest = existing[spec.dev_eui.hex()]
                if maker != p.account or digest != spec.digest(p.account):
                    reason = f"device {spec.dev_eui.hex()} exists already"
                    problems.add(FieldError("dev_eui", reason, spec.line), state=True)
                unchanged.add(spec.dev_eui)
        if problems.count:
            return 0  # the file is refused anyway: no HSM work for the rest, only checks
        outcomes = await self._prepare_chunk(p, [spec for spec in chunk if spec.dev_eui not in unchanged])
        prepared: list[tuple[int, str, Mapping[str, Any]]] = []
        answers: list[tuple[int, str, bytes]] = []
        for spec in chunk:
            if spec.dev_eui in unchanged:
                answers.append(answer.seal(_imported(spec, created=False)))
                continue
            outcome = outcomes.get(spec.dev_eui)
            if isinstance(outcome, (InvalidRequest, Conflict)):
                problems.add_refusal(outcome, spec.line)
            elif outcome is not None:
                row, result = outcome
                prepared.append((spec.line or 0, row["dev_eui"], staged_row(row)))
                answers.append(answer.seal(result))
        if problems.count:
            return 0
        await self._store.stage(batch_id, prepared, answer.batch_id, answers)
        return len(prepared)

    async def _prepare_chunk(
        self, p: Principal, specs: list[DeviceSpec]
    ) -> dict[bytes, tuple[dict[str, Any], ImportedDevice] | InvalidRequest | Conflict]:
        """`_prepare` for the new rows of a chunk, by DevEUI (in a file, a row the HSM's state refuses is a bad row).

        Rows with imported or generated keys take one HSM call per group for their keys (and one per 64 owner
        tokens) rather than two or three each. If the HSM refuses anything there, the rows are prepared one by
        one so the refusal names its row, and none after it is (the file is refused anyway).
        """
        plain = [spec for spec in specs if spec.tkm is None]
        try:
            outcomes: dict[bytes, tuple[dict[str, Any], ImportedDevice] | InvalidRequest | Conflict] = dict(
                await self._prepare_plain(p, plain)
            )
        except InvalidRequest:
            outcomes = {}
        for spec in specs:
            if spec.dev_eui not in outcomes:
                try:
                    outcomes[spec.dev_eui] = await self._prepare(p, spec)
                except (InvalidRequest, Conflict) as exc:
                    outcomes[spec.dev_eui] = exc
                    break
        return outcomes

    async def _prepare_plain(
        self, p: Principal, specs: list[DeviceSpec]
    ) -> dict[bytes, tuple[dict[str, Any], ImportedDevice]]:
        """Rows without a secure element: their keys wrapped, or generated, one HSM call per group and kind."""
        if not specs:
            return {}
        tokens = await new_owner_tokens(self._hsm, len(specs))
        keys: dict[bytes, tuple[bytes, bytes | None, dict[str, bytes]]] = {}
        groups: dict[str, list[DeviceSpec]] = {}
        for spec in specs:
            groups.setdefault(spec.hsm_group, []).append(spec)
        try:
            with hsm_guard("pre-commissioning"):
                for group, members in groups.items():
                    await self._group_ready(group)
                    made = [s for s in members if s.generate_keys]
                    count = sum(1 + s.uses_nwk_key for s in made)
                    fresh = iter(await self._hsm.generate_root_keys(group, count) if count else ())
                    for s in made:
                        app_blob, app_key = next(fresh)
                        nwk = next(fresh) if s.uses_nwk_key else None
                        exported = {"app_key": app_key} | ({} if nwk is None else {"nwk_key": nwk[1]})
                        keys[s.dev_eui] = (app_blob, None if nwk is None else nwk[0], exported)
                    given = [s for s in members if not s.generate_keys]
                    clear = [k for s in given for k in (s.app_key, s.nwk_key) if k is not None]
                    wrapped = iter(await self._hsm.import_root_keys(group, clear) if clear else ())
                    for s in given:
                        keys[s.dev_eui] = (next(wrapped), None if s.nwk_key is None else next(wrapped), {})
        except (HsmError, ValueError) as exc:
            raise invalid("hsm_group", f"the HSM refused the keys: {type(exc).__name__}") from None
        return {
            spec.dev_eui: self._device_row(p, spec, *keys[spec.dev_eui], token)
            for spec, token in zip(specs, tokens, strict=True)
        }

    def _spec(self, fields: Mapping[str, Any], line: int | None) -> DeviceSpec:
        return device_spec(fields, line, self._policy.default_join_eui, self._policy.default_hsm_group)

    async def _group_ready(self, group: str) -> None:
        if group not in self._groups_ready:  # once per process, not once per imported device
            await self._hsm.ensure_storage_kek(group)
            self._groups_ready.add(group)

    async def _prepare(self, p: Principal, spec: DeviceSpec) -> tuple[dict[str, Any], ImportedDevice]:
        """Wrap, generate or derive the root keys in the HSM and pick the owner token: the device row to store."""
        group = spec.hsm_group
        generated: dict[str, bytes] = {}
        try:
            with hsm_guard("pre-commissioning"):
                await self._group_ready(group)
                if spec.tkm is not None:
                    app_blob, nwk_blob, token = await self._derived(spec.tkm, group, spec.uses_nwk_key)
                elif spec.generate_keys:
                    app_blob, generated["app_key"] = await self._hsm.generate_root_key(group)
                    nwk_blob = None
                    if spec.uses_nwk_key:
                        nwk_blob, generated["nwk_key"] = await self._hsm.generate_root_key(group)
                    token = await new_owner_token(self._hsm)
                else:
                    assert spec.app_key is not None
                    app_blob = await self._hsm.import_root_key(group, spec.app_key)
                    nwk_blob = None if spec.nwk_key is None else await self._hsm.import_root_key(group, spec.nwk_key)
                    token = await new_owner_token(self._hsm)
        except (HsmError, ValueError) as exc:
            raise invalid("hsm_group", f"the HSM refused the keys: {type(exc).__name__}") from None
        return self._device_row(p, spec, app_blob, nwk_blob, generated, token)

    def _device_row(
        self,
        p: Principal,
        spec: DeviceSpec,
        app_blob: bytes,
        nwk_blob: bytes | None,
        generated: Mapping[str, bytes],
        token: str,
    ) -> tuple[dict[str, Any], ImportedDevice]:
        """The device row to store and its answer line (the token and generated keys, once)."""
        row = {
            "dev_eui": spec.dev_eui.hex(),
            "join_eui": spec.join_eui.hex(),
            "mac_version": spec.mac_version,
            "hsm_group": spec.hsm_group,
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
            spec, created=True, owner_token=token, app_key=generated.get("app_key"), nwk_key=generated.get("nwk_key")
        )
        return row, result

    async def _derived(self, tkm: se.TkmInfo, group: str, uses_nwk_key: bool) -> tuple[bytes, bytes | None, str]:
        """A secure element's root keys, derived from its lot master key; its TKM info is its owner token."""
        algorithm = se.derivation(tkm.derive_algo_id)
        assert algorithm is not None
        label = se.lot_master_key_label(tkm)
        blocks = algorithm.blocks(tkm, uses_nwk_key)
        try:
            app_blob = await self._hsm.derive_root_key(group, label, blocks["app_key"])
            nwk_blob = await self._hsm.derive_root_key(group, label, blocks["nwk_key"]) if "nwk_key" in blocks else None
        except KeyNotFound:
            raise _hsm_state("tkm_info", f"no lot master key {label!r} in the HSM") from None
        token = tkm.to_bytes().hex().upper()
        if await self._store.token_in_use(token_hash(token)):
            raise _hsm_state("tkm_info", "this TKM info was used before; it cannot be an owner token again")
        return app_blob, nwk_blob, token

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
        need(p, "devices:read")
        limit = page_limit(limit)
        after_hex = None if after is None else after.hex()
        if state is not None and state not in DEVICE_STATES:
            raise invalid("state", f"one of {', '.join(DEVICE_STATES)}")
        search = plain_text(search, "search", 64) if search is not None else None
        owner, maker = None, None
        if p.kind is AccountKind.MANUFACTURER:
            maker = p.account
        elif not p.is_operator:
            owner = p.account
        found = await self._store.list_devices(
            owner=owner, manufacturer=maker, limit=limit, after=after_hex, search=search or None, state=state
        )
        return [view(p, d) for d in found]

    async def get_device(self, p: Principal, dev_eui: bytes) -> DeviceView:
        need(p, "devices:read")
        return await self._devices.shown(p, dev_eui)

    async def nonce_state(self, p: Principal, dev_eui: bytes) -> NonceState | None:
        """The device's nonce bookkeeping (JoinNonce, DevNonces seen), for an operator's diagnosis."""
        need(p, "admin")
        await self._devices.visible(p, dev_eui)
        found = await self._registry.get_device(dev_eui)
        return None if found is None else found.nonces

    async def delete_device(self, p: Principal, dev_eui: bytes) -> None:
        need(p, "devices:write")
        device = await self._devices.visible(p, dev_eui)
        if not p.is_operator and (p.kind is not AccountKind.MANUFACTURER or device.owner_account is not None):
            raise Forbidden("only the manufacturer of an unclaimed device, or an operator, deletes it")
        deleted = await self._store.delete_device(
            dev_eui.hex(),
            None if p.is_operator else p.account,
            audit(p, "device.deleted", dev_eui.hex(), device.owner_account),
        )
        if not deleted:
            raise NoSuchResource(f"device {dev_eui.hex()} not found")

    async def set_net_id(self, p: Principal, dev_eui: bytes, net_id: bytes | None) -> DeviceView:
        device = await self._devices.owned(p, dev_eui)
        value = None if net_id is None else net_id.hex()
        await self._devices.change(
            p, device, {"home_net_id": value}, "device.netid_set", {"net_id": value}, details={"net_id": value}
        )
        return await self._devices.shown(p, dev_eui)

    async def set_astk(self, p: Principal, dev_eui: bytes, astk: str | None) -> DeviceView:
        device = await self._devices.owned(p, dev_eui)
        label = None
        if astk is not None:
            record = await self._astks.astk(device.owner_account or "", astk) if isinstance(astk, str) else None
            if record is None:
                raise NoSuchResource(f"no ASTK named {astk!r} in the owner's account")
            label = record.label
        await self._devices.change(
            p, device, {"astk_label": label}, "device.astk_set", {"astk": astk}, details={"astk": astk}
        )
        return await self._devices.shown(p, dev_eui)

    async def reset_nonces(self, p: Principal, dev_eui: bytes) -> DeviceView:
        device = await (self._devices.visible if p.is_operator else self._devices.owned)(p, dev_eui)
        if not await self._store.reset_nonces(
            device.dev_eui, audit(p, "device.nonces_reset", device.dev_eui, device.owner_account)
        ):
            raise NoSuchResource(f"device {dev_eui.hex()} not found")
        return await self._devices.shown(p, dev_eui)


def _need_maker(p: Principal) -> None:
    need(p, "devices:write")
    if p.kind not in (AccountKind.MANUFACTURER, AccountKind.OPERATOR):
        raise Forbidden("only manufacturers and operators pre-commission devices")


def _batch_id(p: Principal, import_id: object) -> str:
    """The staging id of a client-named import: per account, so nobody sees another account's progress."""
    if not isinstance(import_id, str) or not _IMPORT_ID.fullmatch(import_id):
        raise invalid("import_id", "16-64 characters from [A-Za-z0-9_-]")
    return hashlib.sha256(f"jsd-import\0{p.account}\0{import_id}".encode()).hexdigest()[:32]


def _imported(
    spec: DeviceSpec,
    *,
    created: bool,
    owner_token: str | None = None,
    app_key: bytes | None = None,
    nwk_key: bytes | None = None,
) -> ImportedDevice:
    facts = {f.name: getattr(spec, f.name) for f in fields(DeviceFacts)}
    return ImportedDevice(
        **facts, created=created, line=spec.line, owner_token=owner_token, app_key=app_key, nwk_key=nwk_key
    )


def _precommissioned_events(row: Mapping[str, Any]) -> list[EventRecord]:
    maker, eui = row["manufacturer"], row["dev_eui"]
    data = {
        "join_eui": row["join_eui"],
        "mac_version": row["mac_version"],
        "secure_element": bool(row["secure_element"]),
        "keys_generated": bool(row["keys_exported"]),
    }
    found = [new_event("device.precommissioned", maker, eui, data)]
    if row["keys_exported"]:
        names = ["app_key"] + (["nwk_key"] if row.get("nwk_key_blob") is not None else [])
        found.append(new_event("device.keys_exported", maker, eui, {"keys": names}))
    return found


def _hsm_state(field: str, reason: str) -> Conflict:
    """A well-formed value the HSM's or the registry's state refuses: 409, naming its field."""
    return Conflict(f"{field}: {reason}", errors=[FieldError(field, reason)])
