"""A fake ChirpStack v4 (the external system) speaking the real gRPC protos, kept in memory, on a free port.

It implements the DeviceService and DeviceProfileService calls the bridge and the application side make, with
ChirpStack's answers as docs/chirpstack.md records them: ``UNAUTHENTICATED`` for a missing or wrong token
and for an application the token may not touch, ``ALREADY_EXISTS`` / ``NOT_FOUND`` by DevEUI, ``Update`` as a
full replace, ``List`` filtered by application (and tags, v4.12+), ``GetKeys`` ``NOT_FOUND`` without keys. It
can be stopped and started again on the same port with its state, as a ChirpStack that goes down for a while.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from chirpstack_api.api import device_pb2, device_pb2_grpc, device_profile_pb2, device_profile_pb2_grpc
from chirpstack_api.common import common_pb2
from google.protobuf import empty_pb2

from jsd_sim.pytest_plugin import sim_device_factory, sim_ns_factory

__all__ = ["sim_device_factory", "sim_ns_factory"]


@dataclass
class FakeState:
    token: str
    applications: set[str] = field(default_factory=set)
    profiles: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, Any] = field(default_factory=dict)  # dev_eui hex -> api.Device
    keys: set[str] = field(default_factory=set)
    queues: dict[str, list[Any]] = field(default_factory=dict)
    f_cnt_down: dict[str, int] = field(default_factory=dict)
    activations: dict[str, Any] = field(default_factory=dict)  # dev_eui -> GetDeviceActivationResponse
    calls: list[str] = field(default_factory=list)


async def _authorize(state: FakeState, context: grpc.aio.ServicerContext, method: str) -> None:
    state.calls.append(method)
    metadata = dict(context.invocation_metadata() or ())
    if metadata.get("authorization") != f"Bearer {state.token}":
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "")


def _valid_eui(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 8
    except ValueError:
        return False


class FakeDeviceService(device_pb2_grpc.DeviceServiceServicer):  # type: ignore[misc]
    def __init__(self, state: FakeState) -> None:
        self.s = state

    async def _device(self, dev_eui: str, context: grpc.aio.ServicerContext) -> Any:
        device = self.s.devices.get(dev_eui.lower())
        if device is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        return device

    async def _check(self, device: Any, context: grpc.aio.ServicerContext) -> None:
        if not _valid_eui(device.dev_eui) or (device.join_eui and not _valid_eui(device.join_eui)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid EUI")
        if not device.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        if device.application_id not in self.s.applications:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "")
        if device.device_profile_id not in self.s.profiles:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown device profile")

    async def Create(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "Create")
        await self._check(request.device, context)
        key = request.device.dev_eui.lower()
        if key in self.s.devices:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "Object already exists")
        device = device_pb2.Device()
        device.CopyFrom(request.device)
        device.dev_eui = key
        self.s.devices[key] = device
        return empty_pb2.Empty()

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "Get")
        device = await self._device(request.dev_eui, context)
        return device_pb2.GetDeviceResponse(device=device)

    async def Update(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "Update")
        await self._device(request.device.dev_eui, context)
        await self._check(request.device, context)
        device = device_pb2.Device()
        device.CopyFrom(request.device)  # a full replace, as ChirpStack does
        device.dev_eui = device.dev_eui.lower()
        self.s.devices[device.dev_eui] = device
        return empty_pb2.Empty()

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "Delete")
        await self._device(request.dev_eui, context)
        del self.s.devices[request.dev_eui.lower()]
        self.s.keys.discard(request.dev_eui.lower())
        return empty_pb2.Empty()

    async def List(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "List")
        if request.application_id not in self.s.applications:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "")
        matching = sorted(
            (
                d
                for d in self.s.devices.values()
                if d.application_id == request.application_id
                and all(d.tags.get(k) == v for k, v in request.tags.items())
            ),
            key=lambda d: d.dev_eui,
        )
        limit = request.limit or len(matching)
        page = matching[request.offset : request.offset + limit]
        items = [
            device_pb2.DeviceListItem(
                dev_eui=d.dev_eui, name=d.name, description=d.description,
                device_profile_id=d.device_profile_id, tags=dict(d.tags),
            )
            for d in page
        ]
        return device_pb2.ListDevicesResponse(total_count=len(matching), result=items)

    async def GetKeys(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "GetKeys")
        await self._device(request.dev_eui, context)
        if request.dev_eui.lower() not in self.s.keys:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        return device_pb2.GetDeviceKeysResponse(device_keys=device_pb2.DeviceKeys(dev_eui=request.dev_eui))

    async def GetActivation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "GetActivation")
        await self._device(request.dev_eui, context)
        return self.s.activations.get(request.dev_eui.lower(), device_pb2.GetDeviceActivationResponse())

    async def GetNextFCntDown(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "GetNextFCntDown")
        key = request.dev_eui.lower()
        await self._device(key, context)
        queued = [item.f_cnt_down + 1 for item in self.s.queues.get(key, [])]
        return device_pb2.GetDeviceNextFCntDownResponse(f_cnt_down=max([self.s.f_cnt_down.get(key, 0), *queued]))

    async def Enqueue(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "Enqueue")
        item = request.queue_item
        key = item.dev_eui.lower()
        await self._device(key, context)
        if item.is_encrypted and item.f_port == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "FPort must be > 0")
        stored = device_pb2.DeviceQueueItem()
        stored.CopyFrom(item)
        stored.id = str(uuid.uuid4())
        self.s.queues.setdefault(key, []).append(stored)
        return device_pb2.EnqueueDeviceQueueItemResponse(id=stored.id)


class FakeDeviceProfileService(device_profile_pb2_grpc.DeviceProfileServiceServicer):  # type: ignore[misc]
    def __init__(self, state: FakeState) -> None:
        self.s = state

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _authorize(self.s, context, "DeviceProfile.Get")
        profile = self.s.profiles.get(request.id)
        if profile is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        return device_profile_pb2.GetDeviceProfileResponse(device_profile=profile)


class FakeChirpStack:
    """The fake's state and its server; ``stop()``/``start()`` keep the state and the port."""

    def __init__(self, token: str) -> None:
        self.state = FakeState(token)
        self.application_id = str(uuid.uuid4())
        self.device_profile_id = str(uuid.uuid4())
        self.state.applications.add(self.application_id)
        self.state.profiles[self.device_profile_id] = device_profile_pb2.DeviceProfile(
            id=self.device_profile_id, name="jsd OTAA 1.0.3", region=common_pb2.Region.EU868,
            mac_version=common_pb2.MacVersion.LORAWAN_1_0_3, supports_otaa=True,
        )
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        device_pb2_grpc.add_DeviceServiceServicer_to_server(FakeDeviceService(self.state), server)
        device_profile_pb2_grpc.add_DeviceProfileServiceServicer_to_server(FakeDeviceProfileService(self.state), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    def add_device(self, dev_eui: str, *, application_id: str | None = None, **fields: Any) -> Any:
        """A device as an operator would create it in the UI."""
        device = device_pb2.Device(
            dev_eui=dev_eui, name=fields.pop("name", f"dev-{dev_eui}"),
            application_id=application_id or self.application_id, device_profile_id=self.device_profile_id, **fields,
        )
        self.state.devices[dev_eui] = device
        return device

    def device(self, dev_eui: str) -> Any | None:
        return self.state.devices.get(dev_eui)


@pytest.fixture
def chirpstack_token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def chirpstack_token_file(tmp_path: Path, chirpstack_token: str) -> Iterator[Path]:
    path = tmp_path / "chirpstack-token"
    path.write_text(chirpstack_token + "\n")
    yield path


@pytest.fixture
async def chirpstack(chirpstack_token: str) -> AsyncIterator[FakeChirpStack]:
    fake = FakeChirpStack(chirpstack_token)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test alone: tests share the real Mosquitto."""
    return f"test-{uuid.uuid4().hex[:12]}"

