"""A bulk import's answer is parked sealed in the staging table, read back in file order, and then gone."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

from jsd.ownership.imports import RawRow

from .conftest import World


def _row(**fields: Any) -> dict[str, Any]:
    return {"dev_eui": secrets.token_hex(8), "mac_version": "1.1", **fields}


async def _rows(rows: Iterable[dict[str, Any]]) -> AsyncIterator[RawRow]:
    for number, row in enumerate(rows, 1):
        yield RawRow(number, row)


def _keys() -> dict[str, str]:
    return {"app_key": secrets.token_hex(16), "nwk_key": secrets.token_hex(16)}


async def test_the_answer_is_sealed_while_parked_and_read_back_in_file_order(world: World) -> None:
    s, store = world.service, world.stores.devices
    existing = _row(**_keys())
    await s.devices.import_devices(world.maker, _rows([existing]))
    rows = [_row(**_keys()), existing, _row(generate_keys=True)]
    async with s.devices.import_streamed(world.maker, _rows(rows)) as answer:
        parked = await store.staged_page(answer.batch_id, -1, 100)
        items = [item async for page in answer.pages() for item in page]
    assert [(line, eui) for line, eui, _ in parked] == [(n, row["dev_eui"]) for n, row in enumerate(rows, 1)]
    assert [(i.line, i.dev_eui.hex(), i.created) for i in items] == [
        (n, row["dev_eui"], n != 2) for n, row in enumerate(rows, 1)
    ]
    assert (answer.created, answer.unchanged) == (2, 1)
    assert items[0].owner_token and items[1].owner_token is None
    assert items[2].app_key is not None and items[2].nwk_key is not None
    secrets_given = [items[0].owner_token, items[2].owner_token, items[2].app_key.hex(), items[2].nwk_key.hex()]
    blob = b"".join(sealed for _, _, sealed in parked)
    for secret in secrets_given:
        assert secret is not None
        assert secret.encode() not in blob and secret.lower().encode() not in blob and bytes.fromhex(secret) not in blob
    assert await store.staged_page(answer.batch_id, -1, 100) == []  # gone once the answer is over


async def test_an_answer_left_unread_is_dropped_with_the_import(world: World) -> None:
    s, store = world.service, world.stores.devices
    rows = [_row(**_keys()) for _ in range(3)]
    async with s.devices.import_streamed(world.maker, _rows(rows)) as answer:
        pass  # the client went away before reading its answer: the devices stay, the parked answer does not
    assert await store.staged_page(answer.batch_id, -1, 100) == []
    assert len(await s.devices.list_devices(world.maker)) == 3


async def test_an_import_id_reused_while_an_answer_is_read_keeps_the_answers_apart(world: World) -> None:
    s, import_id = world.service, "reused-import-id-0001"
    first, second = [_row(**_keys())], [_row(**_keys()), _row(**_keys())]
    async with s.devices.import_streamed(world.maker, _rows(first), import_id) as answer:
        again = await s.devices.import_devices(world.maker, _rows(second), import_id)  # the first is committed
        items = [item async for page in answer.pages() for item in page]
    assert [i.dev_eui.hex() for i in items] == [first[0]["dev_eui"]]
    assert [i.dev_eui.hex() for i in again] == [row["dev_eui"] for row in second]
