"""The ChirpStack v4 adapter: one application's devices over the gRPC API (``chirpstack-api``).

ChirpStack facts this relies on (docs/chirpstack.md): a device without a DeviceKeys row makes ChirpStack ask
the external Join Server (v4.6+); ``DeviceService.Update`` replaces the whole device, so every change is a read,
a change and a write back; the API token goes as lowercase ``authorization: Bearer …`` metadata; a key that may
not touch an application gets ``UNAUTHENTICATED``, like a bad key. ``List`` pages are paced (``max_list_rate``)
because polling is the only way to see devices an operator added.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from chirpstack_api.api import device_pb2, device_pb2_grpc, device_profile_pb2, device_profile_pb2_grpc

from jsd_nsadapter.contract import (
    AdapterRefused,
    AdapterUnavailable,
    DeviceChange,
    DeviceSpec,
    NsAdapter,
    NsDevice,
    NsDeviceExists,
)

# Codes that mean "not now" rather than "no".
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}
# A ChirpStack restart should not leave the bridge waiting out gRPC's default 2-minute reconnect backoff.
_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 5000))
# common.MacVersion enum numbers (LORAWAN_1_0_0 = 0 … LORAWAN_1_1_0 = 5) in jsd's spelling.
MAC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")


class _Pacer:
    """At most ``rate`` calls per second, spaced evenly (List is the one call that scales with the registry)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


def _eui(text: str) -> bytes | None:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return value if len(value) == 8 and any(value) else None


def _error(call: str, exc: grpc.RpcError) -> AdapterUnavailable | AdapterRefused:
    code = exc.code()
    name = code.name if code else "UNKNOWN"
    text = f"ChirpStack {call}: {name} {exc.details() or ''}".strip()
    return AdapterUnavailable(text, name) if code in _TRANSIENT else AdapterRefused(text, name)


class ChirpStackClient:
    """A gRPC channel to ChirpStack with the API token; shared by the adapter and the application side."""

    def __init__(
        self, server: str, api_token: str, *, ca_cert: bytes | None = None, tls: bool = False, timeout: float = 10.0
    ) -> None:
        self.server = server
        self._metadata = (("authorization", f"Bearer {api_token}"),)
        self._tls = tls or ca_cert is not None
        self._ca_cert = ca_cert
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> ChirpStackClient:
        """``server``, ``api_token_file`` (the token is never in the config itself), ``tls``, ``ca_cert``, ``timeout``."""
        for name in ("server", "api_token_file"):
            if not isinstance(options.get(name), str) or not options[name]:
                raise ValueError(f"ChirpStack option {name!r} is required")
        token = Path(options["api_token_file"]).read_text().strip()
        if not token:
            raise ValueError(f"{options['api_token_file']} is empty")
        ca_path = options.get("ca_cert")
        return cls(
            options["server"],
            token,
            ca_cert=Path(ca_path).read_bytes() if ca_path else None,
            tls=bool(options.get("tls", False)),
            timeout=float(options.get("timeout", 10.0)),
        )

    def _open(self) -> grpc.aio.Channel:
        # grpc.aio channels belong to the loop they were made on: open on first use, inside the loop.
        if self._channel is None:
            if self._tls:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._ca_cert)
                self._channel = grpc.aio.secure_channel(self.server, credentials, options=_CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.insecure_channel(self.server, options=_CHANNEL_OPTIONS)
        return self._channel

    def devices(self) -> Any:
        """The DeviceService stub."""
        return device_pb2_grpc.DeviceServiceStub(self._open())

    def profiles(self) -> Any:
        """The DeviceProfileService stub."""
        return device_profile_pb2_grpc.DeviceProfileServiceStub(self._open())

    async def call(self, stub: Any, method: str, request: Any, *, not_found: bool = False) -> Any:
        """One unary call with the token and the timeout; errors become adapter errors.

        With ``not_found=True`` a ``NOT_FOUND`` answer returns None instead.
        """
        try:
            return await getattr(stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            if not_found and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _error(method, exc) from None

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


class ChirpStackAdapter(NsAdapter):
    """Devices of one ChirpStack application, created with one device profile and no keys."""

    def __init__(
        self,
        client: ChirpStackClient,
        application_id: str,
        device_profile_id: str,
        *,
        page_size: int = 100,
        max_list_rate: float = 5.0,
    ) -> None:
        self.client = client
        self.application_id = application_id
        self.device_profile_id = device_profile_id
        self._page_size = page_size
        self._pacer = _Pacer(max_list_rate)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> ChirpStackAdapter:
        """Options of a link's ``[links.chirpstack]`` table (see ``conf/chirpstack/bridge.toml``)."""
        known = {"server", "api_token_file", "application_id", "device_profile_id", "tls", "ca_cert", "timeout",
                 "page_size", "max_list_rate"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown ChirpStack option(s): {', '.join(unknown)}")
        for name in ("application_id", "device_profile_id"):
            if not isinstance(options.get(name), str) or not options[name]:
                raise ValueError(f"ChirpStack option {name!r} is required")
        return cls(
            ChirpStackClient.from_config(options),
            options["application_id"],
            options["device_profile_id"],
            page_size=int(options.get("page_size", 100)),
            max_list_rate=float(options.get("max_list_rate", 5.0)),
        )

    def describe(self) -> str:
        return f"chirpstack {self.client.server} application {self.application_id}"

    async def _get(self, dev_eui: bytes) -> Any | None:
        response = await self.client.call(
            self.client.devices(), "Get", device_pb2.GetDeviceRequest(dev_eui=dev_eui.hex()), not_found=True
        )
        return None if response is None else response.device

    @staticmethod
    def _as_ns_device(device: Any) -> NsDevice:
        return NsDevice(
            dev_eui=bytes.fromhex(device.dev_eui),
            name=device.name,
            join_eui=_eui(device.join_eui),
            tags=dict(device.tags),
            disabled=bool(device.is_disabled),
        )

    async def list_devices(self) -> list[NsDevice]:
        devices: list[NsDevice] = []
        stub = self.client.devices()
        offset = 0
        while True:
            await self._pacer.wait()
            page = await self.client.call(
                stub,
                "List",
                device_pb2.ListDevicesRequest(
                    application_id=self.application_id,
                    limit=self._page_size,
                    offset=offset,
                    order_by=device_pb2.ListDevicesRequest.OrderBy.DEV_EUI,
                ),
            )
            for item in page.result:
                devices.append(NsDevice(bytes.fromhex(item.dev_eui), item.name, None, dict(item.tags)))
            offset += len(page.result)
            if not page.result or offset >= page.total_count:
                return devices

    async def get_device(self, dev_eui: bytes) -> NsDevice | None:
        device = await self._get(dev_eui)
        if device is None or device.application_id != self.application_id:
            return None
        return self._as_ns_device(device)

    async def create_device(self, spec: DeviceSpec) -> None:
        device = device_pb2.Device(
            dev_eui=spec.dev_eui.hex(),
            join_eui=spec.join_eui.hex(),
            name=spec.name,
            description=spec.description,
            application_id=self.application_id,
            device_profile_id=self.device_profile_id,
            tags=dict(spec.tags),
            is_disabled=False,
        )
        try:
            await self.client.call(self.client.devices(), "Create", device_pb2.CreateDeviceRequest(device=device))
        except AdapterRefused as exc:
            if exc.code != "ALREADY_EXISTS":
                raise
            existing = await self._get(spec.dev_eui)
            if existing is None:
                raise
            found = self._as_ns_device(existing)
            if existing.application_id != self.application_id:
                # Another application's device: show no tags, so the bridge treats it as not its own.
                found = NsDevice(found.dev_eui, found.name, found.join_eui, {}, found.disabled)
            raise NsDeviceExists(found) from None

    async def change_device(self, dev_eui: bytes, change: DeviceChange) -> NsDevice:
        device = await self._get(dev_eui)
        if device is None or device.application_id != self.application_id:
            raise AdapterRefused(f"ChirpStack Update: DevEUI {dev_eui.hex()} is not in application {self.application_id}")
        for key, value in change.tags.items():
            if value is None:
                device.tags.pop(key, None)
            else:
                device.tags[key] = value
        if change.disabled is not None:
            device.is_disabled = change.disabled
        if change.join_eui is not None:
            device.join_eui = change.join_eui.hex()
        await self.client.call(self.client.devices(), "Update", device_pb2.UpdateDeviceRequest(device=device))
        return self._as_ns_device(device)

    async def delete_device(self, dev_eui: bytes) -> None:
        request = device_pb2.DeleteDeviceRequest(dev_eui=dev_eui.hex())
        await self.client.call(self.client.devices(), "Delete", request, not_found=True)

    async def has_root_keys(self, dev_eui: bytes) -> bool:
        request = device_pb2.GetDeviceKeysRequest(dev_eui=dev_eui.hex())
        return await self.client.call(self.client.devices(), "GetKeys", request, not_found=True) is not None

    async def mac_version(self) -> str | None:
        request = device_profile_pb2.GetDeviceProfileRequest(id=self.device_profile_id)
        profile = (await self.client.call(self.client.profiles(), "Get", request)).device_profile
        if not profile.supports_otaa:
            raise AdapterRefused(f"device profile {self.device_profile_id} does not support OTAA")
        number = int(profile.mac_version)
        return MAC_VERSIONS[number] if 0 <= number < len(MAC_VERSIONS) else None

    async def aclose(self) -> None:
        await self.client.aclose()
