"""The bridge daemon: keeps a network server's device registry in step with a subscriber's claims.

A *link* joins a subscriber account of the Join Server (its API key and the daemon's URL) to one application
of a network server (an ``NsAdapter``, ChirpStack by default). Two ways in, one way of converging:

- Events: ``device.claimed`` / ``device.released`` (and other device events) on
  ``{topic_prefix}/accounts/{account}/devices/+/events/+`` make the bridge converge that one device at once.
- Passes: every ``interval`` seconds (and after each MQTT reconnect) a full pass compares
  ``GET /api/v1/devices`` with the application's devices and repairs the difference. Events are an
  optimisation; the passes are what make a network-server outage or a lost event harmless.

Rules: a device the bridge creates carries ``jsd_link = <link name>``; a device without that tag is never
changed or deleted (a DevEUI already registered by someone else is logged and left alone). A claimed device
is created with its JoinEUI and no keys; a device no longer claimed is deleted, or disabled with
``jsd_released`` if the link says ``on_release = "disable"``. A pass is abandoned, changing nothing, if either
side cannot be listed: an unreachable daemon must not look like "no claims".

Reverse path: an operator creates a device in the application with an ``owner_token`` tag (or a ``tr005`` tag
holding a TR005 QR string). The bridge claims it for the link's account (``POST /api/v1/claims``), sets its
home NetID to the link's ``net_id`` (``PUT /api/v1/devices/{dev_eui}/net-id``), removes the request tag and
adopts the device (``jsd_link``). A refusal is reported in a ``jsd_error`` tag and the request tag is removed,
so a wrong token is not retried into the daemon's rate limit; a daemon that is down is retried next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsd_nsadapter.contract import (
    ERROR_TAG,
    LINK_TAG,
    OWNER_TOKEN_TAG,
    QR_TAG,
    RELEASED_TAG,
    AdapterError,
    AdapterUnavailable,
    DeviceSpec,
    NsAdapter,
    NsDevice,
    NsDeviceExists,
    load_adapter,
)
from jsd_nsadapter.jsclient import JsClient, JsError, JsRefused, JsUnavailable
from jsd_nsadapter.settings import MqttSettings, SettingsError, check_keys, load_toml, read_secret

log = logging.getLogger(__name__)

ON_RELEASE = ("delete", "disable")
IDENTIFY_RETRY = 60.0  # seconds before reconnecting to subscribe links whose account was not known yet
ERROR_TAG_LIMIT = 200
DEFAULT_ADAPTER = "chirpstack"  # a link without ``adapter = …`` (the bridge had only this one at first)
RUN_BY = "jsd chirpstack"  # the command that runs the bridge, named in the description of devices it creates


@dataclass(frozen=True)
class LinkConfig:
    """One subscriber account ↔ one network-server application."""

    name: str
    jsd_url: str
    api_key: str = field(repr=False)
    adapter: str
    adapter_options: Mapping[str, Any]
    net_id: bytes | None = None
    on_release: str = "delete"


@dataclass(frozen=True)
class BridgeConfig:
    links: tuple[LinkConfig, ...]
    mqtt: MqttSettings | None = None
    topic_prefix: str = "jsd/v1"
    interval: float = 300.0

    @classmethod
    def load(cls, path: str | Path) -> BridgeConfig:
        """Read ``conf/chirpstack/bridge.toml``-shaped TOML; secrets come from the files it names."""
        return cls.from_mapping(load_toml(path))

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> BridgeConfig:
        check_keys(config, "bridge config", {"bridge", "mqtt", "links"}, {"links"})
        bridge = dict(config.get("bridge", {}))
        check_keys(bridge, "bridge", {"interval"})
        mqtt = None
        topic_prefix = "jsd/v1"
        if "mqtt" in config:
            table = dict(config["mqtt"])
            topic_prefix = str(table.pop("topic_prefix", topic_prefix)).rstrip("/")
            mqtt = MqttSettings.from_table(table, "mqtt")
        links = tuple(_link(i, table) for i, table in enumerate(config["links"]))
        if not links:
            raise SettingsError("[[links]]: at least one link")
        names = [link.name for link in links]
        if len(set(names)) != len(names):
            raise SettingsError("[[links]]: link names must differ (the name is the jsd_link tag value)")
        interval = float(bridge.get("interval", 300.0))
        if interval <= 0:
            raise SettingsError("[bridge] interval: seconds > 0")
        return cls(links, mqtt, topic_prefix, interval)


def _link(index: int, table: Mapping[str, Any]) -> LinkConfig:
    where = f"links[{index}]"
    adapter = str(table.get("adapter", DEFAULT_ADAPTER))
    check_keys(table, where, {"name", "jsd_url", "api_key_file", "net_id", "on_release", "adapter", adapter},
               {"name", "jsd_url", "api_key_file", adapter})
    name = str(table["name"])
    if not name or len(name) > 64:
        raise SettingsError(f"[{where}] name: 1 to 64 characters")
    net_id = None
    if table.get("net_id") is not None:
        try:
            net_id = bytes.fromhex(str(table["net_id"]))
        except ValueError:
            net_id = b""
        if len(net_id) != 3:
            raise SettingsError(f"[{where}] net_id: 6 hex digits (the network server's NetID)")
    on_release = str(table.get("on_release", "delete"))
    if on_release not in ON_RELEASE:
        raise SettingsError(f"[{where}] on_release: one of {', '.join(ON_RELEASE)}")
    return LinkConfig(
        name=name,
        jsd_url=str(table["jsd_url"]),
        api_key=read_secret(table["api_key_file"], f"[{where}] api_key_file"),
        adapter=adapter,
        adapter_options=dict(table[adapter]),
        net_id=net_id,
        on_release=on_release,
    )


@dataclass
class PassReport:
    """What one pass (or one event) changed; for logs and tests."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    claim_refused: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.created, self.removed, self.disabled, self.enabled, self.claimed, self.claim_refused))


class PassAbandoned(Exception):
    """One side could not be listed: nothing was changed."""


def _short(text: str) -> str:
    return text if len(text) <= ERROR_TAG_LIMIT else text[: ERROR_TAG_LIMIT - 1] + "…"


class Link:
    """A configured link at run time: its adapter, its daemon client, the account behind its key."""

    def __init__(self, config: LinkConfig, adapter: NsAdapter, js: JsClient) -> None:
        self.config = config
        self.adapter = adapter
        self.js = js
        self.account: str | None = None
        self.profile_mac_version: str | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Link({self.config.name}: {self.adapter.describe()})"

    @classmethod
    def from_config(cls, config: LinkConfig) -> Link:
        return cls(config, load_adapter(config.adapter, config.adapter_options), JsClient(config.jsd_url, config.api_key))

    async def identify(self) -> str:
        """The account behind the link's API key (for the event topic); cached once known."""
        if self.account is None:
            me = await self.js.me()
            if me.get("kind") != "subscriber":
                log.warning("link %s: the API key belongs to a %s account, not a subscriber", self.config.name,
                            me.get("kind"))
            self.account = str(me["account"])
        return self.account

    def _claimed(self, device: Mapping[str, Any] | None) -> bool:
        return device is not None and device.get("state") == "claimed" and (
            self.account is None or device.get("owner") in (None, self.account)
        )

    # -- a full pass ------------------------------------------------------------------------------------

    async def reconcile(self) -> PassReport:
        """Converge every device of the account and every request tag of the application."""
        async with self._lock:
            report = PassReport()
            try:
                await self.identify()
                desired = {bytes.fromhex(d["dev_eui"]): d for d in await self.js.devices() if self._claimed(d)}
            except JsError as exc:
                raise PassAbandoned(f"link {self.config.name}: the Join Server cannot be listed: {exc}") from None
            try:
                present = {d.dev_eui: d for d in await self.adapter.list_devices()}
                self.profile_mac_version = await self.adapter.mac_version()
            except AdapterError as exc:
                raise PassAbandoned(f"link {self.config.name}: {exc}") from None
            for device in list(present.values()):
                if OWNER_TOKEN_TAG in device.tags or QR_TAG in device.tags:
                    claimed = await self._claim_request(device, report)
                    if claimed is not None:
                        desired[device.dev_eui], present[device.dev_eui] = claimed
            for dev_eui, wanted in desired.items():
                await self._step(report, dev_eui, self._ensure(wanted, present.get(dev_eui), report))
            for dev_eui, device in present.items():
                if device.link == self.config.name and dev_eui not in desired:
                    await self._step(report, dev_eui, self._retire(device, report))
            return report

    async def _step(self, report: PassReport, dev_eui: bytes, work: Awaitable[None]) -> None:
        """One device's change; a failure is recorded and the pass goes on with the next device."""
        try:
            await work
        except (AdapterError, JsError) as exc:
            report.errors.append(f"{dev_eui.hex()}: {exc}")
            log.warning("link %s, device %s: %s", self.config.name, dev_eui.hex(), exc)

    # -- one device -------------------------------------------------------------------------------------

    async def sync_device(self, dev_eui: bytes) -> PassReport:
        """Converge one device (after an event): the daemon's view decides, the NS follows."""
        async with self._lock:
            report = PassReport()
            await self.identify()
            wanted = await self.js.device(dev_eui)
            present = await self.adapter.get_device(dev_eui)
            if self._claimed(wanted):
                assert wanted is not None
                await self._ensure(wanted, present, report)
            elif present is not None and present.link == self.config.name:
                await self._retire(present, report)
            return report

    async def _ensure(self, wanted: Mapping[str, Any], present: NsDevice | None, report: PassReport) -> None:
        dev_eui = bytes.fromhex(wanted["dev_eui"])
        if present is None:
            if self.profile_mac_version == "1.1" and str(wanted["mac_version"]).startswith("1.0"):
                # The NS would announce 1.1 with OptNeg; the device derives 1.0 keys: it could never join.
                report.errors.append(f"{dev_eui.hex()}: a LoRaWAN {wanted['mac_version']} device needs a 1.0.x "
                                     "device profile, the link's is 1.1; not created")
                return
            spec = DeviceSpec(
                dev_eui=dev_eui,
                join_eui=bytes.fromhex(wanted["join_eui"]),
                name=str(wanted.get("name") or dev_eui.hex()),
                mac_version=str(wanted["mac_version"]),
                tags={LINK_TAG: self.config.name},
                description=f"claimed on the Join Server by {self.account}; managed by {RUN_BY}",
            )
            try:
                await self.adapter.create_device(spec)
            except NsDeviceExists as exc:
                present = exc.device
            else:
                report.created.append(dev_eui.hex())
                log.info("link %s: created %s", self.config.name, dev_eui.hex())
        if present is not None and present.link != self.config.name:
            report.conflicts.append(dev_eui.hex())
            log.warning("link %s: %s is registered already and not managed by this link; left alone",
                        self.config.name, dev_eui.hex())
            return
        if present is not None and RELEASED_TAG in present.tags:
            await self.adapter.update_device(dev_eui, tags={RELEASED_TAG: None}, disabled=False)
            report.enabled.append(dev_eui.hex())
        if self.config.net_id is not None and wanted.get("home_net_id") is None:
            await self.js.set_net_id(dev_eui, self.config.net_id)

    async def _retire(self, present: NsDevice, report: PassReport) -> None:
        if self.config.on_release == "disable":
            if RELEASED_TAG not in present.tags:
                await self.adapter.update_device(present.dev_eui, tags={RELEASED_TAG: "true"}, disabled=True)
                report.disabled.append(present.dev_eui.hex())
            return
        await self.adapter.delete_device(present.dev_eui)
        report.removed.append(present.dev_eui.hex())
        log.info("link %s: removed %s (no longer claimed)", self.config.name, present.dev_eui.hex())

    # -- the reverse path -------------------------------------------------------------------------------

    async def _claim_request(self, device: NsDevice, report: PassReport) -> tuple[dict[str, Any], NsDevice] | None:
        """Claim a tag-requested device; its daemon and NS views on success, None if reported or postponed."""
        dev_eui = device.dev_eui
        try:
            view = await self.js.device(dev_eui)
            if not self._claimed(view):
                view = await self._claim(device)
            assert view is not None
            if self.config.net_id is not None and view.get("home_net_id") != self.config.net_id.hex():
                view = await self.js.set_net_id(dev_eui, self.config.net_id)
            adopted = await self.adapter.update_device(
                dev_eui,
                tags={OWNER_TOKEN_TAG: None, QR_TAG: None, ERROR_TAG: None, LINK_TAG: self.config.name},
                join_eui=bytes.fromhex(view["join_eui"]),
            )
        except (JsUnavailable, AdapterUnavailable) as exc:
            report.errors.append(f"{dev_eui.hex()}: {exc}")
            log.warning("link %s: claim of %s postponed: %s", self.config.name, dev_eui.hex(), exc)
            return None
        except (JsRefused, ValueError, AdapterError) as exc:
            await self._report_refusal(device, str(exc), report)
            return None
        report.claimed.append(dev_eui.hex())
        log.info("link %s: claimed %s for %s", self.config.name, dev_eui.hex(), self.account)
        return view, adopted

    async def _claim(self, device: NsDevice) -> dict[str, Any]:
        qr = device.tags.get(QR_TAG)
        if qr is not None:
            from jsd.lorawan.tr005 import parse_qr

            parsed = parse_qr(qr)  # QrCodeError is a ValueError: reported on the device
            if parsed.dev_eui != device.dev_eui:
                raise ValueError(f"the TR005 string is for DevEUI {parsed.dev_eui.hex()}")
            return await self.js.claim_qr(qr)
        return await self.js.claim(device.dev_eui, device.tags[OWNER_TOKEN_TAG])

    async def _report_refusal(self, device: NsDevice, reason: str, report: PassReport) -> None:
        report.claim_refused.append(device.dev_eui.hex())
        log.warning("link %s: claim of %s refused: %s", self.config.name, device.dev_eui.hex(), reason)
        try:
            await self.adapter.update_device(
                device.dev_eui,
                tags={OWNER_TOKEN_TAG: None, QR_TAG: None, ERROR_TAG: _short(f"claim refused: {reason}")},
            )
        except AdapterError as exc:
            report.errors.append(f"{device.dev_eui.hex()}: {exc}")

    async def aclose(self) -> None:
        await self.js.aclose()
        await self.adapter.aclose()


class Bridge:
    """All links, the pass timer and the MQTT event listener."""

    def __init__(self, config: BridgeConfig, links: list[Link]) -> None:
        self.config = config
        self.links = links
        self._wake = asyncio.Event()
        self.passes = 0

    @classmethod
    async def start(cls, config: BridgeConfig) -> Bridge:
        return cls(config, [Link.from_config(link) for link in config.links])

    async def reconcile_all(self) -> int:
        """One pass of every link; the number of links whose pass was abandoned."""
        failures = 0
        for link in self.links:
            try:
                report = await link.reconcile()
            except PassAbandoned as exc:
                failures += 1
                log.warning("%s", exc)
                continue
            if report.changed or report.errors:
                log.info("link %s: pass %s", link.config.name, report)
        self.passes += 1
        return failures

    def request_pass(self) -> None:
        """Run a full pass now rather than at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        """Passes every ``interval`` seconds, and the event listener if MQTT is configured, until cancelled."""
        async with asyncio.TaskGroup() as group:
            if self.config.mqtt is not None:
                group.create_task(self._listen(self.config.mqtt))
            group.create_task(self._passes())

    async def _passes(self) -> None:
        while True:
            await self.reconcile_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.interval)
            self._wake.clear()

    async def _listen(self, mqtt: MqttSettings) -> None:
        import aiomqtt

        backoff = 1.0
        while True:
            try:
                await self._listen_once(mqtt)
                backoff = 1.0
            except aiomqtt.MqttError as exc:
                log.warning("MQTT: %s; reconnecting in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _listen_once(self, mqtt: MqttSettings) -> None:
        """One connection; returns to be called again when a link's account became known meanwhile."""
        by_account: dict[str, list[Link]] = {}
        unknown = 0
        for link in self.links:
            try:
                by_account.setdefault(await link.identify(), []).append(link)
            except JsError as exc:
                unknown += 1
                log.warning("link %s: account unknown yet (%s); events later", link.config.name, exc)
        async with mqtt.client() as client:
            for account in by_account:
                await client.subscribe(f"{self.config.topic_prefix}/accounts/{account}/devices/+/events/+", qos=1)
            self.request_pass()  # events may have been missed while disconnected
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDENTIFY_RETRY if unknown else None):
                    async for message in client.messages:
                        await self._on_event(by_account, str(message.topic), message.payload)

    async def _on_event(self, by_account: Mapping[str, list[Link]], topic: str, payload: Any) -> None:
        parts = topic[len(self.config.topic_prefix) + 1 :].split("/")
        # accounts/{account}/devices/{dev_eui}/events/{type}
        if len(parts) != 6 or parts[0] != "accounts" or parts[2] != "devices" or parts[4] != "events":
            return
        try:
            dev_eui = bytes.fromhex(parts[3])
            event = json.loads(payload)
        except (ValueError, TypeError):
            log.warning("ignored a malformed event on %s", topic)
            return
        if len(dev_eui) != 8 or not isinstance(event, dict):
            return
        for link in by_account.get(parts[1], []):
            try:
                report = await link.sync_device(dev_eui)
            except (AdapterError, JsError) as exc:
                log.warning("link %s: event %s for %s not applied (%s); the next pass repairs it",
                            link.config.name, event.get("type"), dev_eui.hex(), exc)
                continue
            if report.changed:
                log.info("link %s: event %s: %s", link.config.name, event.get("type"), report)

    async def aclose(self) -> None:
        for link in self.links:
            await link.aclose()
