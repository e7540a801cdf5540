"""The ChirpStack adapter against the fake ChirpStack gRPC server (real protos, real gRPC on a port)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from jsd_chirpstack.chirpstack import ChirpStackAdapter
from jsd_nsadapter.contract import (
    LINK_TAG,
    AdapterRefused,
    AdapterUnavailable,
    DeviceSpec,
    NsAdapter,
    NsDeviceExists,
    adapter_kinds,
    load_adapter,
)

DEV = bytes.fromhex("0004a30b001c0530")
JOIN = bytes.fromhex("70b3d57ed0000001")


def options(fake: Any, token_file: Path, **extra: Any) -> dict[str, Any]:
    return {
        "server": fake.target,
        "api_token_file": str(token_file),
        "application_id": fake.application_id,
        "device_profile_id": fake.device_profile_id,
        **extra,
    }


@pytest.fixture
async def adapter(chirpstack: Any, chirpstack_token_file: Path) -> Any:
    built = load_adapter("chirpstack", options(chirpstack, chirpstack_token_file, timeout=2))
    yield built
    await built.aclose()


def spec(dev_eui: bytes = DEV, **tags: str) -> DeviceSpec:
    return DeviceSpec(dev_eui, JOIN, f"dev {dev_eui.hex()}", "1.0.3", {LINK_TAG: "acme", **tags})


def test_adapter_is_found_through_the_entry_point_group(chirpstack_token_file: Path) -> None:
    assert "chirpstack" in adapter_kinds()
    with pytest.raises(LookupError, match="installed: .*chirpstack"):
        load_adapter("tts", {})
    with pytest.raises(ValueError, match="unknown ChirpStack option"):
        load_adapter("chirpstack", {"server": "x", "api_key": "secret"})


async def test_adapter_implements_the_protocol(adapter: Any) -> None:
    assert isinstance(adapter, NsAdapter)
    assert isinstance(adapter, ChirpStackAdapter)
    assert "application" in adapter.describe() and "Bearer" not in repr(adapter)


async def test_create_registers_the_device_without_keys(adapter: Any, chirpstack: Any) -> None:
    await adapter.create_device(spec())
    stored = chirpstack.device(DEV.hex())
    assert stored.join_eui == JOIN.hex()
    assert stored.application_id == chirpstack.application_id
    assert stored.device_profile_id == chirpstack.device_profile_id
    assert dict(stored.tags) == {LINK_TAG: "acme"}
    assert not stored.is_disabled
    assert await adapter.has_root_keys(DEV) is False
    assert "CreateKeys" not in chirpstack.state.calls
    chirpstack.state.keys.add(DEV.hex())
    assert await adapter.has_root_keys(DEV) is True


async def test_create_of_an_existing_device_says_whose_it_is(adapter: Any, chirpstack: Any) -> None:
    chirpstack.add_device(DEV.hex(), tags={"site": "roof"})
    with pytest.raises(NsDeviceExists) as raised:
        await adapter.create_device(spec())
    assert raised.value.device.tags == {"site": "roof"}
    assert raised.value.device.link is None
    assert dict(chirpstack.device(DEV.hex()).tags) == {"site": "roof"}


async def test_a_device_of_another_application_is_not_visible(adapter: Any, chirpstack: Any) -> None:
    other = "00000000-0000-0000-0000-000000000001"
    chirpstack.state.applications.add(other)
    chirpstack.add_device(DEV.hex(), application_id=other, tags={LINK_TAG: "acme"})
    assert await adapter.get_device(DEV) is None
    with pytest.raises(NsDeviceExists) as raised:
        await adapter.create_device(spec())
    assert raised.value.device.link is None
    with pytest.raises(AdapterRefused):
        await adapter.update_device(DEV, disabled=True)
    assert not chirpstack.device(DEV.hex()).is_disabled


async def test_update_is_read_modify_write(adapter: Any, chirpstack: Any) -> None:
    """Update replaces the whole device in ChirpStack: what the operator set must survive our changes."""
    chirpstack.add_device(
        DEV.hex(), description="on the roof", variables={"site": "north"},
        tags={LINK_TAG: "acme", "owner_token": "t0k"}, skip_fcnt_check=True,
    )
    updated = await adapter.update_device(DEV, tags={"owner_token": None, "jsd_error": "x"}, disabled=True,
                                          join_eui=JOIN)
    stored = chirpstack.device(DEV.hex())
    assert dict(stored.tags) == {LINK_TAG: "acme", "jsd_error": "x"}
    assert stored.is_disabled and stored.skip_fcnt_check
    assert stored.description == "on the roof" and dict(stored.variables) == {"site": "north"}
    assert stored.join_eui == JOIN.hex()
    assert updated.disabled is True and updated.join_eui == JOIN
    assert chirpstack.state.calls[-2:] == ["Get", "Update"]


async def test_list_pages_through_the_application_at_a_bounded_rate(
    chirpstack: Any, chirpstack_token_file: Path
) -> None:
    for n in range(7):
        chirpstack.add_device(f"00000000000000{n:02x}", tags={"n": str(n)})
    chirpstack.state.applications.add("other-app")
    chirpstack.add_device("ffffffffffffffff", application_id="other-app")
    adapter = load_adapter("chirpstack", options(chirpstack, chirpstack_token_file, page_size=3, max_list_rate=20))
    try:
        started = time.monotonic()
        devices = await adapter.list_devices()
        elapsed = time.monotonic() - started
    finally:
        await adapter.aclose()
    assert [d.dev_eui.hex() for d in devices] == [f"00000000000000{n:02x}" for n in range(7)]
    assert devices[3].tags == {"n": "3"}
    assert chirpstack.state.calls.count("List") == 3
    assert elapsed >= 2 / 20 * 0.9  # three pages, at most 20 List calls per second


async def test_delete_is_idempotent(adapter: Any, chirpstack: Any) -> None:
    chirpstack.add_device(DEV.hex())
    await adapter.delete_device(DEV)
    await adapter.delete_device(DEV)
    assert chirpstack.device(DEV.hex()) is None


async def test_device_profile_mac_version(adapter: Any) -> None:
    assert await adapter.mac_version() == "1.0.3"


async def test_wrong_token_is_refused(chirpstack: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    adapter = load_adapter("chirpstack", options(chirpstack, wrong))
    try:
        with pytest.raises(AdapterRefused, match="UNAUTHENTICATED"):
            await adapter.list_devices()
    finally:
        await adapter.aclose()


async def test_chirpstack_down_is_unavailable_then_recovers(adapter: Any, chirpstack: Any) -> None:
    await chirpstack.stop()
    with pytest.raises(AdapterUnavailable):
        await adapter.create_device(spec())
    await chirpstack.start()
    deadline = time.monotonic() + 10
    while True:  # the channel reconnects with a backoff capped at 5 s; the bridge retries on its next pass
        try:
            await adapter.create_device(spec())
            break
        except AdapterUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert chirpstack.device(DEV.hex()) is not None
