"""The ownership use cases against the real HSM and database: who may do what, and what is left behind."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from jsd.hsm import Hsm
from jsd.lorawan.tr005 import DeviceQr, build_qr
from jsd.ownership import (
    AlreadyExported,
    ClaimFailed,
    Conflict,
    Forbidden,
    ImportConflict,
    ImportFailed,
    NoSuchResource,
    Ownership,
    RateLimited,
    Unauthenticated,
    token_hash,
)
from jsd.ownership.imports import RawRow, csv_rows, jsonl_rows
from jsd.ownership.se import AesEcbDerivation, TkmInfo, lot_master_key_label

from .conftest import OPERATOR, World


def _eui() -> str:
    return secrets.token_hex(8)


def _row(**fields: Any) -> dict[str, Any]:
    return {"dev_eui": _eui(), "mac_version": "1.0.3", "app_key": secrets.token_hex(16), **fields}


async def _rows(rows: Iterable[dict[str, Any] | RawRow]) -> AsyncIterator[RawRow]:
    for number, row in enumerate(rows, 1):
        yield row if isinstance(row, RawRow) else RawRow(number, row)


async def _lines(text: str) -> AsyncIterator[bytes]:
    for line in text.encode().splitlines(keepends=True):
        yield line


async def test_api_keys_authenticate_and_revoke(world: World) -> None:
    s = world.service
    key = await s.accounts.create_api_key(world.alice, "alice", ["devices:read"])
    p = await s.accounts.authenticate(key.key, "here")
    assert (p.account, p.scopes, p.source) == ("alice", frozenset({"devices:read"}), "here")
    with pytest.raises(Forbidden):
        await s.claims.claim(p, bytes(8), "00" * 16)
    with pytest.raises(Forbidden):  # beyond the account kind's scopes
        await s.accounts.create_api_key(world.alice, "alice", ["admin"])
    with pytest.raises(NoSuchResource):
        await s.accounts.create_api_key(world.bob, "alice", None)
    with pytest.raises(NoSuchResource):
        await s.accounts.revoke_api_key(world.bob, key.key_id)
    await s.accounts.revoke_api_key(world.alice, key.key_id)
    for bad in (key.key, key.key[:-1] + ("A" if key.key[-1] != "A" else "B"), "jsd_x", ""):
        with pytest.raises(Unauthenticated):
            await s.accounts.authenticate(bad, "here")
    stored = await world.stores.accounts.api_key(key.key_id)
    assert stored is not None and key.key[17:] not in repr(stored)
    with pytest.raises(Forbidden):
        await s.accounts.list_accounts(world.alice)


async def test_import_claim_set_release_reclaim(world: World, hsm: Hsm) -> None:
    s = world.service
    (imported,) = await s.devices.import_devices(world.maker, _rows([_row(name="a")]))
    assert imported.created and imported.owner_token and len(imported.owner_token) == 32
    eui = imported.dev_eui
    assert (await s.devices.get_device(world.maker, eui)).state == "unclaimed"
    with pytest.raises(NoSuchResource):
        await s.devices.get_device(world.alice, eui)

    claimed = await s.claims.claim(world.alice, eui, imported.owner_token.lower())
    assert claimed.owner == "alice" and claimed.state == "claimed"
    with pytest.raises(NoSuchResource):
        await s.devices.get_device(world.maker, eui)
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.bob, eui, imported.owner_token)
    with pytest.raises(NoSuchResource):
        await s.devices.set_net_id(world.bob, eui, b"\0\0\x13")

    await s.astks.create_astk(world.alice, "as1", None)
    key = await s.astks.export_astk(world.alice, "as1")
    assert len(key) == 16
    with pytest.raises(AlreadyExported):
        await s.astks.export_astk(world.alice, "as1")
    with pytest.raises(NoSuchResource):
        await s.devices.set_astk(world.alice, eui, "nope")
    view = await s.devices.set_astk(world.alice, eui, "as1")
    view = await s.devices.set_net_id(world.alice, eui, b"\0\0\x13")
    assert (view.astk, view.home_net_id) == ("as1", b"\0\0\x13")
    device = await world.registry.get_device(eui)
    assert device is not None and device.home_net_id == b"\0\0\x13" and device.astk_label

    released, token = await s.claims.release(world.alice, eui)
    assert released.state == "unclaimed" and token != imported.owner_token
    with pytest.raises(NoSuchResource):
        await s.devices.get_device(world.alice, eui)
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.bob, eui, imported.owner_token)
    again = await s.claims.claim(world.bob, eui, token)
    assert again.owner == "bob" and again.home_net_id is None and again.astk is None

    actions = [e.action for e in await s.journal.audit(OPERATOR, dev_eui=eui)]
    assert {"device.claimed", "device.netid_set", "device.astk_set", "device.released"} <= set(actions)
    alice_sees = {e.action for e in await s.journal.audit(world.alice)}
    assert "device.released" in alice_sees and "api_key.created" not in {
        e.action for e in await s.journal.audit(world.bob) if e.account == "alice"
    }
    types = [e.type for e in await s.journal.events(OPERATOR, dev_eui=eui)]
    assert types == [
        "device.precommissioned",
        "device.claimed",
        "claim.failed",
        "device.astk_set",
        "device.netid_set",
        "device.released",
        "claim.failed",
        "device.claimed",
    ]  # bob tried alice's device, then the spent token after the release
    assert [e.type for e in await s.journal.events(world.bob)] == ["claim.failed", "claim.failed", "device.claimed"]
    texts = [str(e.as_dict()) for e in await s.journal.events(OPERATOR)] + [
        str(a) for a in await s.journal.audit(OPERATOR)
    ]
    for secret in (imported.owner_token, token, key.hex()):
        assert not any(secret.lower() in t.lower() for t in texts)


async def test_a_spent_token_never_works_again_even_for_another_device(world: World) -> None:
    s = world.service
    (first,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    assert first.owner_token
    await s.claims.claim(world.alice, first.dev_eui, first.owner_token)
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.alice, first.dev_eui, first.owner_token)
    again = await s.claims.claim(world.alice, first.dev_eui, first.owner_token, retry=True)  # a command's retry
    assert again.owner == "alice"
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.bob, first.dev_eui, first.owner_token, retry=True)
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.alice, first.dev_eui, "ab" * 16)
    assert await world.stores.devices.token_in_use(token_hash(first.owner_token))
    other = _eui()
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.alice, bytes.fromhex(other), first.owner_token)


async def _one_window(world: World, needed: float = 60.0) -> None:
    """Start a failed-claim test in a fresh counting window, so the counters do not restart in its middle."""
    left = world.policy.claim_window - time.time() % world.policy.claim_window
    if left < needed:
        await asyncio.sleep(left + 0.1)


async def test_unknown_device_and_wrong_token_look_the_same_and_are_rate_limited(world: World) -> None:
    await _one_window(world)
    s = world.service
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    answers = []
    for eui, token in ((bytes(8), "00" * 16), (dev.dev_eui, "11" * 16)):
        with pytest.raises(ClaimFailed) as caught:
            await s.claims.claim(world.alice, eui, token)
        answers.append((type(caught.value), str(caught.value)))
    assert answers[0] == answers[1]
    for _ in range(4):  # claim_failures_per_account = 6 in this world
        with pytest.raises(ClaimFailed):
            await s.claims.claim(world.alice, secrets.token_bytes(8), "22" * 16)
    with pytest.raises(RateLimited) as limited:  # over its own allowance, even the right token waits
        await s.claims.claim(world.alice, dev.dev_eui, dev.owner_token or "")
    assert limited.value.retry_after and limited.value.retry_after > 0
    assert (await s.claims.claim(world.bob, dev.dev_eui, dev.owner_token or "")).owner == "bob"


async def test_the_right_token_claims_after_100_wrong_attempts_from_other_accounts(world: World) -> None:
    await _one_window(world)
    s = world.service
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    strangers = []
    for n in range(10):
        _, key = await s.accounts.create_account(OPERATOR, f"stranger{n}", "subscriber", None)
        strangers.append(await s.accounts.authenticate(key.key, f"http 192.0.2.{n}"))
    checked = refused = 0
    for attempt in range(100):
        try:
            await s.claims.claim(strangers[attempt % 10], dev.dev_eui, secrets.token_hex(16))
        except ClaimFailed:
            checked += 1
        except RateLimited:
            refused += 1
    assert checked + refused == 100
    # A device under attack: after claim_failures_per_device (3) failures, one more guess per account.
    assert checked <= 3 + 10, checked
    assert (await s.claims.claim(world.alice, dev.dev_eui, dev.owner_token or "")).owner == "alice"


async def test_failed_rest_claims_are_limited_per_source_address(world: World) -> None:
    await _one_window(world)
    from dataclasses import replace

    s = Ownership.build(world.stores, world.registry, world.hsm, replace(world.policy, claim_failures_per_source=4))
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    keys = [(await s.accounts.create_account(OPERATOR, f"nat{n}", "subscriber", None))[1] for n in range(3)]
    same = [await s.accounts.authenticate(k.key, "http 198.51.100.7") for k in keys]
    for n in range(4):
        with pytest.raises(ClaimFailed):
            await s.claims.claim(same[n % 2], secrets.token_bytes(8), secrets.token_hex(16))
    with pytest.raises(RateLimited):  # a third account behind the same address shares the address's allowance
        await s.claims.claim(same[2], dev.dev_eui, dev.owner_token or "")
    elsewhere = await s.accounts.authenticate(keys[2].key, "http 203.0.113.9")
    assert (await s.claims.claim(elsewhere, dev.dev_eui, dev.owner_token or "")).owner == "nat2"
    over_mqtt = await s.accounts.authenticate(keys[0].key, "mqtt")  # MQTT claims count against the account only
    with pytest.raises(ClaimFailed):
        await s.claims.claim(over_mqtt, secrets.token_bytes(8), secrets.token_hex(16))


async def test_claim_with_a_tr005_string(world: World) -> None:
    s = world.service
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    assert dev.owner_token
    qr = build_qr(DeviceQr(dev.join_eui, dev.dev_eui, owner_token=dev.owner_token))
    wrong_join = build_qr(DeviceQr(bytes(8), dev.dev_eui, owner_token=dev.owner_token))
    with pytest.raises(ClaimFailed):
        await s.claims.claim_qr(world.alice, wrong_join)
    with pytest.raises(ClaimFailed, match="checksum"):
        await s.claims.claim_qr(world.alice, qr[:-1] + ("0" if qr[-1] != "0" else "1"))
    assert (await s.claims.claim_qr(world.alice, qr)).owner == "alice"


async def test_bulk_import_is_all_or_nothing_and_reports_every_bad_row(world: World) -> None:
    s = world.service
    good = [_row() for _ in range(3)]
    bad = [
        *good,
        {"dev_eui": "zz", "mac_version": "1.0.3", "app_key": "00" * 16},
        _row(mac_version="1.1"),
        dict(good[0]),
        RawRow(7, None, "not JSON"),
        _row(secure_element=True),
    ]
    with pytest.raises(ImportFailed) as failed:
        await s.devices.import_devices(world.maker, _rows(bad))
    lines = sorted({e.line for e in failed.value.errors})
    assert lines == [4, 5, 6, 7, 8]
    assert await s.devices.list_devices(world.maker) == []

    first = await s.devices.import_devices(world.maker, _rows(good))
    assert [d.created for d in first] == [True] * 3
    again = await s.devices.import_devices(world.maker, _rows(good))
    assert [(d.created, d.owner_token) for d in again] == [(False, None)] * 3
    changed = [dict(good[0], name="other")]
    with pytest.raises(ImportConflict) as refused:  # well formed, but the registry holds that DevEUI otherwise
        await s.devices.import_devices(world.maker, _rows(changed))
    assert refused.value.problem_members()["status"] == 409 and refused.value.errors[0].field == "dev_eui"
    with pytest.raises(Forbidden):
        await s.devices.import_devices(world.alice, _rows([_row()]))


async def test_csv_and_jsonl_parsing(world: World) -> None:
    eui1, eui2 = _eui(), _eui()
    csv_text = f'\ufeffdev_eui,mac_version,generate_keys,name\n{eui1},1.1,true,"Sensor, 1"\n{eui2},1.0.2,true,\n'
    result = await world.service.devices.import_devices(world.maker, csv_rows(_lines(csv_text)))
    assert [d.name for d in result] == ["Sensor, 1", None]
    assert result[0].app_key and result[0].nwk_key and result[1].app_key and result[1].nwk_key is None
    view = await world.service.devices.get_device(world.maker, bytes.fromhex(eui1))
    assert view.keys_exported
    events = {e.type for e in await world.service.journal.events(world.maker)}
    assert events == {"device.precommissioned", "device.keys_exported"}

    rows = [r async for r in jsonl_rows(_lines('{"a": 1}\n\n[1]\n{bad\n'))]
    assert [(r.line, r.error is None) for r in rows] == [(1, True), (3, False), (4, False)]


async def test_secure_element_devices_derive_keys_from_the_lot_master_key(world: World, hsm: Hsm) -> None:
    tkm = TkmInfo(0x3, 0x7, secrets.randbelow(16), 1, secrets.token_bytes(8))
    label = lot_master_key_label(tkm)
    if not await hsm.has_kek(label):
        await hsm.import_lot_master_key(label, secrets.token_bytes(16))
    fields = {"dev_eui": _eui(), "mac_version": "1.1", "secure_element": True, "tkm_info": tkm.to_bytes().hex()}
    (dev,) = await world.service.devices.import_devices(world.maker, _rows([fields]))
    assert dev.owner_token == tkm.to_bytes().hex().upper() and dev.app_key is None
    assert set(AesEcbDerivation().blocks(tkm, True)) == {"app_key", "nwk_key"}
    stored = await world.registry.get_device(dev.dev_eui)
    assert stored is not None and stored.nwk_key_blob is not None
    with pytest.raises(ImportConflict) as reused:
        await world.service.devices.import_devices(world.maker, _rows([dict(fields, dev_eui=_eui())]))
    assert "tkm_info" in {e.field for e in reused.value.errors}
    missing = TkmInfo(0xF, 0xF, 0xF, 1, secrets.token_bytes(8))
    with pytest.raises(Conflict, match="lot master key"):
        await world.service.devices.add_device(
            world.maker, {**fields, "dev_eui": _eui(), "tkm_info": missing.to_bytes().hex()}
        )
    await world.service.claims.claim(world.alice, dev.dev_eui, dev.owner_token or "")


async def test_manufacturer_cannot_touch_claim_side_or_admin(world: World) -> None:
    s = world.service
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    with pytest.raises(Conflict):
        await s.devices.set_net_id(OPERATOR, dev.dev_eui, b"\0\0\1")
    with pytest.raises(Forbidden):
        await s.devices.set_net_id(world.maker, dev.dev_eui, b"\0\0\1")
    with pytest.raises(Forbidden):
        await s.networks.add_network_server(world.maker, {"net_id": "000001"})
    await s.devices.delete_device(world.maker, dev.dev_eui)
    with pytest.raises(NoSuchResource):
        await s.devices.get_device(OPERATOR, dev.dev_eui)


async def test_network_servers_and_roaming(world: World) -> None:
    s = world.service
    ns, token = await s.networks.add_network_server(
        OPERATOR, {"net_id": "00AA01", "kek_label": f"ns-{secrets.token_hex(3)}", "kek": secrets.token_hex(16),
                   "generate_token": True},
    )  # fmt: skip
    assert token and ns.has_token
    with pytest.raises(Conflict):
        await s.networks.add_network_server(
            OPERATOR, {"net_id": "00aa01", "kek_label": ns.kek_label, "token": "x" * 20}
        )
    with pytest.raises(Conflict, match="no KEK"):
        await s.networks.add_network_server(
            OPERATOR, {"net_id": "00AA02", "kek_label": "ns-missing-kek", "token": "y" * 20}
        )
    await s.networks.add_roaming(OPERATOR, b"\0\xaa\1", b"\0\xbb\1")
    assert await s.networks.list_roaming(OPERATOR) == [(b"\0\xaa\1", b"\0\xbb\1")]
    await s.networks.remove_roaming(OPERATOR, b"\0\xaa\1", b"\0\xbb\1")
    await s.networks.remove_network_server(OPERATOR, b"\0\xaa\1")
    with pytest.raises(NoSuchResource):
        await s.networks.get_network_server(OPERATOR, b"\0\xaa\1")


async def test_the_audit_log_is_append_only_in_the_database(world: World, database: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from jsd.registry import create_engine

    await world.service.astks.create_astk(world.alice, "k", None)
    engine = create_engine(database.url)
    try:
        for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()
    assert [e.action for e in await world.service.journal.audit(world.alice)][-1] == "astk.created"


async def test_an_unavailable_hsm_is_a_503_not_the_callers_fault(world: World, hsm_settings: Any) -> None:
    from jsd.ownership import HsmDown, OwnershipPolicy

    closed = await Hsm.open(hsm_settings)
    await closed.aclose()
    service = Ownership.build(world.stores, world.registry, closed, OwnershipPolicy(bytes(8)))
    with pytest.raises(HsmDown) as down:
        await service.astks.create_astk(world.alice, "k", None)
    assert down.value.status == 503 and down.value.problem == "hsm-unavailable"
    with pytest.raises(HsmDown):
        await service.devices.import_devices(world.maker, _rows([_row()]))
    assert await world.service.devices.list_devices(world.maker) == []


async def test_a_lost_owner_token_is_replaced_and_dies(world: World) -> None:
    s = world.service
    (dev,) = await s.devices.import_devices(world.maker, _rows([_row()]))
    assert dev.owner_token
    with pytest.raises(NoSuchResource):
        await s.claims.reissue_owner_token(world.alice, dev.dev_eui)
    _, token = await s.claims.reissue_owner_token(world.maker, dev.dev_eui)
    assert token != dev.owner_token
    with pytest.raises(ClaimFailed):
        await s.claims.claim(world.alice, dev.dev_eui, dev.owner_token)
    await s.claims.claim(world.alice, dev.dev_eui, token)
    with pytest.raises(Forbidden):
        await s.claims.reissue_owner_token(world.alice, dev.dev_eui)
    with pytest.raises(Conflict):
        await s.claims.reissue_owner_token(OPERATOR, dev.dev_eui)
    assert "device.owner_token_reissued" in {e.action for e in await s.journal.audit(world.maker)}


async def test_pruning_keeps_the_newest_events_by_count_and_every_unpublished_one(world: World) -> None:
    from jsd.registry.journal import new_event

    store = world.stores.journal
    made = [new_event("device.netid_set", "alice", "00" * 8, {"net_id": None}) for _ in range(8)]
    await store.record(events_=made)
    await store.acknowledge([e.event_id for e in made[:2] + made[3:7]])  # made[2] and made[7] stay unpublished
    async with store._writer.begin() as conn:  # noqa: SLF001 - a gap in seq, as a rolled-back insert leaves
        from sqlalchemy import delete

        from jsd.registry.tables import events

        await conn.execute(delete(events).where(events.c.event_id == made[5].event_id))
    assert await store.prune_events(3) == 3  # made[0], made[1], made[3]
    left = [e.event_id for e in await store.events(account=None, after=None, limit=100)]
    assert left == [made[i].event_id for i in (2, 4, 6, 7)]
    assert await store.prune_events(0) == 2 and len(await store.pending_events(10)) == 2


async def test_an_import_with_more_bad_rows_than_reported_counts_them_all(world: World) -> None:
    rows = [RawRow(n, None, "not JSON") for n in range(1, 1006)]
    with pytest.raises(ImportFailed) as failed:
        await world.service.devices.import_devices(world.maker, _rows(rows))
    assert len(failed.value.errors) == 1000 and failed.value.error_count == 1005
    assert failed.value.problem_members()["type"] == "urn:jsd:problem:import-failed"


async def test_failed_claim_counters_start_again_in_a_new_window(world: World) -> None:
    from jsd.registry.journal import AuditRecord

    audit = AuditRecord(account="alice", key_id=None, source="test", action="device.claim_failed")
    buckets = ["claim:account:alice", "claim:device:00"]
    for _ in range(2):
        await world.stores.claims.count_failure(buckets, 5, audit)
    assert await world.stores.claims.failures(buckets, 5) == {b: 2 for b in buckets}
    await world.stores.claims.count_failure(buckets[:1], 6, audit)
    assert await world.stores.claims.failures(buckets, 6) == {buckets[0]: 1}
    assert await world.stores.claims.failures(buckets, 5) == {buckets[1]: 2}


async def test_every_precommissioned_device_has_its_audit_entry(world: World) -> None:
    s = world.service
    rows = [_row(serial=f"SN{n}") for n in range(3)]
    imported = await s.devices.import_devices(world.maker, _rows(rows))
    single = await s.devices.add_device(world.maker, _row())
    assert [d.serial for d in imported] == ["SN0", "SN1", "SN2"]
    entries = await s.journal.audit(OPERATOR, limit=1000)
    per_device = [e for e in entries if e.action == "device.precommissioned"]
    assert sorted(e.dev_eui for e in per_device if e.dev_eui) == sorted(
        [d.dev_eui for d in imported] + [single.dev_eui]
    )
    assert all(e.account == "maker" for e in per_device)
    (summary,) = [e for e in entries if e.action == "devices.imported"]
    assert summary.details == {"created": 3, "rows": 3, "import": summary.details["import"]}
    bulk = [e for e in per_device if e.dev_eui != single.dev_eui]
    assert [e.details for e in bulk] == [{"import": summary.details["import"]}] * 3
    assert [e.dev_eui for e in bulk] == [d.dev_eui for d in imported]  # in line order
    assert all(e.source == "test" and e.key_id == world.maker.key_id for e in bulk)
    again = await s.devices.import_devices(world.maker, _rows(rows))  # a re-run creates nothing and audits no device
    assert not any(d.created for d in again)
    entries = await s.journal.audit(OPERATOR, limit=1000)
    assert sum(e.action == "device.precommissioned" for e in entries) == 4


async def test_a_refused_import_is_audited_without_secrets_and_counts_rows(world: World) -> None:
    s = world.service
    good = _row()
    bad = {"dev_eui": "nothex", "mac_version": "9", "app_key": "zz", "nwk_key": secrets.token_hex(16)}
    with pytest.raises(ImportFailed) as failed:
        await s.devices.import_devices(world.maker, _rows([good, bad]))
    assert str(failed.value) == "1 bad row(s), 4 problem(s); nothing was imported", str(failed.value)
    assert failed.value.error_count == 4
    (entry,) = [e for e in await s.journal.audit(world.maker, limit=1000) if e.action == "devices.import_refused"]
    assert entry.account == "maker" and entry.dev_eui is None
    assert {k: entry.details[k] for k in ("rows", "bad_rows", "errors")} == {"rows": 2, "bad_rows": 1, "errors": 4}
    assert [e["field"] for e in entry.details["first_errors"]] == ["dev_eui", "mac_version", "app_key", "nwk_key"]
    text = repr(entry.details).lower()
    assert good["app_key"] not in text and bad["nwk_key"] not in text
    assert await s.devices.list_devices(world.maker) == []
