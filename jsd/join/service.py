"""Join, rejoin, HomeNS and AppSKey use cases, written as named steps.

Each use case returns its answer or a `Refusal`; a refused join or rejoin of a known device is recorded as a
`join.rejected` event first, in a transaction of its own that never touches the nonce state.

A join reads the device once, checks the nonce rules in pure code, runs all key work in one HSM call and
persists the new nonce state plus the session-key record in one short transaction with an optimistic version
check, before the answer leaves. Losing the race to a concurrent request for the same device restarts the
steps, so a JoinNonce is never issued twice; a crash after the commit only burns a JoinNonce.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from jsd import lorawan, metrics
from jsd.hsm import Derive, Hsm, HsmError, HsmUnavailable, JoinOutput, JoinRecipe, MicMismatch
from jsd.join import nonces
from jsd.join.refusals import Reason, Refusal, RefusalName, Refused
from jsd.lorawan import MACVersion
from jsd.registry import Device, NetworkServer, NonceConflict, NonceState, Registry, RegistryError, SessionKey
from jsd.registry.journal import EventRecord, Journal, new_event
from jsd.registry.networks import RoamingStore

log = logging.getLogger("jsd.join")

NETWORK_KEYS_10 = ("NwkSKey",)
NETWORK_KEYS_11 = ("FNwkSIntKey", "SNwkSIntKey", "NwkSEncKey")


def hsm_failure(exc: HsmError) -> Refused:
    """The refusal for an HSM error: a generic description for the NS, the HSM's own words for the log."""
    if isinstance(exc, HsmUnavailable):
        description = "key service temporarily unavailable; try again"
    else:
        description = "key service could not process this device"
    return Refused(Reason.FAILED, description, detail=f"HSM {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Sender:
    """The authenticated network server asking (from its credential, not from SenderID)."""

    net_id: bytes
    kek_label: str
    answer_url: str | None = None
    async_mode: bool = False


@dataclass(frozen=True)
class JoinParams:
    """What the NS sent with a JoinReq or RejoinReq, decoded from the wire."""

    mac_version: MACVersion
    phy_payload: bytes
    dev_eui: bytes
    dev_addr: bytes
    dl_settings: int
    rx_delay: int
    cf_list: bytes | None
    receiver_id: bytes | None = None


@dataclass(frozen=True)
class KeyEnvelope:
    """A session key wrapped (RFC 3394) under the KEK named by ``kek_label``."""

    kek_label: str
    aes_key: bytes


@dataclass(frozen=True)
class JoinAccepted:
    phy_payload: bytes
    network_keys: dict[str, KeyEnvelope]
    app_s_key: KeyEnvelope | None
    session_key_id: str
    lifetime: int
    join_nonce: int


@dataclass(frozen=True)
class JoinPolicy:
    """The settings the use cases need, copied from the configuration."""

    join_euis: Sequence[str] = ()
    dev_nonce_history: int = 1024
    lifetime: int = 0
    nonce_retries: int = 8
    sender_cache_seconds: float = 10.0
    home_ns_requires_agreement: bool = True


def _served(join_eui: bytes, patterns: Sequence[str]) -> bool:
    """Whether a JoinEUI falls in one of the served EUIs/prefixes ('hex' or 'hex/bits'); empty = all."""
    if not patterns:
        return True
    value = int.from_bytes(join_eui, "big")
    for pattern in patterns:
        eui_hex, _, bits_text = pattern.partition("/")
        bits = int(bits_text) if bits_text else 64
        shift = 64 - bits
        if value >> shift == int(eui_hex, 16) >> shift:
            return True
    return False


Frame = TypeVar("Frame", lorawan.JoinRequest, lorawan.RejoinRequest)


def _parsed(parse: Callable[[bytes], Frame], params: JoinParams) -> Frame:
    """The request's PHYPayload parsed, and checked against the DevEUI the NS sent with it."""
    try:
        frame = parse(params.phy_payload)
    except ValueError as exc:
        raise Refused(Reason.MALFORMED, f"PHYPayload: {exc}") from None
    if frame.dev_eui != params.dev_eui:
        raise Refused(Reason.MALFORMED, "DevEUI does not match the DevEUI in the PHYPayload")
    return frame


class JoinService:
    """Answers JoinReq, RejoinReq, HomeNSReq and AppSKeyReq for registered devices."""

    def __init__(
        self,
        registry: Registry,
        hsm: Hsm,
        policy: JoinPolicy,
        records: Journal | None = None,
        roaming: RoamingStore | None = None,
    ) -> None:
        """`records` receives the events of refused joins and AppSKeyReqs; `roaming` answers roaming questions."""
        self._registry = registry
        self._hsm = hsm
        self._policy = policy
        self._records = records
        self._roaming = roaming
        self._senders: dict[str, tuple[float, Sender | None]] = {}
        self._turns: dict[bytes, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def _device_turn(self, dev_eui: bytes) -> AsyncIterator[None]:
        """Requests for one device take turns inside this process; other processes are caught by the
        registry's version check and retried."""
        lock, users = self._turns.get(dev_eui, (asyncio.Lock(), 0))
        self._turns[dev_eui] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[dev_eui]
            if users == 1:
                del self._turns[dev_eui]
            else:
                self._turns[dev_eui] = (lock, users - 1)

    # -- who is asking ---------------------------------------------------------------------------

    async def sender_for_token(self, token: str) -> Sender | None:
        """The NS owning a bearer token (stored as a SHA-256 hash), cached for a few seconds."""
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        return await self._cached_sender("t:" + token_hash, token_hash, self._registry.network_server_by_token_hash)

    async def sender_for_certificate(self, fingerprint: str) -> Sender | None:
        """The NS registered with a TLS client certificate (SHA-256 of its DER)."""
        return await self._cached_sender("c:" + fingerprint, fingerprint, self._registry.network_server_by_cert)

    async def _cached_sender(
        self, key: str, value: str, lookup: Callable[[str], Awaitable[NetworkServer | None]]
    ) -> Sender | None:
        now = time.monotonic()
        hit = self._senders.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        ns = await lookup(value)
        sender = None
        if ns is not None:
            stored = ns.token_hash if key.startswith("t:") else ns.cert_fingerprint
            if stored is not None and hmac.compare_digest(stored, value):
                sender = Sender(ns.net_id, ns.kek_label, ns.answer_url, ns.async_mode)
        if len(self._senders) > 10_000:
            self._senders.clear()
        self._senders[key] = (now + self._policy.sender_cache_seconds, sender)
        return sender

    # -- JoinReq ---------------------------------------------------------------------------------

    async def join(self, params: JoinParams, sender: Sender, name: RefusalName) -> JoinAccepted | Refusal:
        """Check and answer a JoinRequest from the device's home network server.

        `name` says how the asking protocol names a refusal, for the `join.rejected` event.
        """
        try:
            frame = _parsed(lorawan.parse_join_request, params)
            self._check_receiver(frame.join_eui, params.receiver_id)
            async with self._device_turn(frame.dev_eui):
                return await self._join_steps(params, sender, frame)
        except Refused as refused:
            return await self._recorded(refused.refusal, params.dev_eui, sender, name)

    async def _recorded(self, refusal: Refusal, dev_eui: bytes, sender: Sender, name: RefusalName) -> Refusal:
        """The refusal of a join or rejoin, once recorded.

        The `join.rejected` event goes to the journal in a transaction of its own (the nonce state is not
        touched), for a known DevEUI only (nobody to tell otherwise); failing to record it is logged and
        leaves the refusal as it is.
        """
        if self._records is None:
            return refusal
        try:
            device = await self._registry.get_device(dev_eui)
            if device is not None:
                data = {"net_id": sender.net_id.hex(), "result": name(refusal), "reason": refusal.description}
                await self._record(new_event("join.rejected", device.owner_account, dev_eui.hex(), data))
        except RegistryError:
            log.exception("could not record a refused join of %s", dev_eui.hex())
        except Exception as failure:  # noqa: BLE001 - the refusal stands; only its record was lost
            log.warning("the refused join of %s could not be recorded (%s)", dev_eui.hex(), type(failure).__name__)
        return refusal

    async def _join_steps(self, params: JoinParams, sender: Sender, frame: lorawan.JoinRequest) -> JoinAccepted:
        for _ in range(self._policy.nonce_retries):
            device = await self._device(frame.dev_eui, frame.join_eui)
            self._check_home(device, sender)
            version = self._device_version(device)
            try:
                state = nonces.after_join_request(
                    device.nonces, version, frame.dev_nonce, self._policy.dev_nonce_history
                )
            except Refused as refused:
                if refused.reason is Reason.NONCE_REPLAYED:
                    await self._check_mic_before_replay(device, params.phy_payload, frame.mic)
                raise
            opt_neg = lorawan.is_1_1(version) and lorawan.is_1_1(params.mac_version)
            recipe = self._join_recipe(device, params, sender, frame, state.join_nonce, opt_neg)
            accepted = await self._derive_and_commit(
                device, state, recipe, opt_neg, frame.dev_nonce, "join.accepted", sender,
                {"mac_version": device.mac_version, "dev_nonce": frame.dev_nonce},
            )  # fmt: skip
            if accepted is not None:
                return accepted
        raise Refused(Reason.FAILED, "too many concurrent joins for this device; try again")

    async def _derive_and_commit(
        self,
        device: Device,
        state: NonceState,
        recipe: JoinRecipe,
        opt_neg: bool,
        nonce: int,
        event_type: str,
        sender: Sender,
        event_data: dict[str, object],
    ) -> JoinAccepted | None:
        """The HSM call, then the commit with its event; None when a concurrent request committed first."""
        output = await self._run(recipe)
        accepted = self._accepted(device, output, state.join_nonce, opt_neg)
        record = self._session_record(device, accepted, output, nonce)
        event = new_event(
            event_type,
            device.owner_account,
            device.dev_eui.hex(),
            {
                "net_id": sender.net_id.hex(),
                "join_nonce": state.join_nonce,
                "session_key_id": accepted.session_key_id,
                **event_data,
            },
        )
        started = time.perf_counter()
        try:
            await self._registry.commit_join(device.dev_eui, device.nonces.version, state, record, event)
        except NonceConflict:
            return None
        finally:
            metrics.DB_COMMIT_SECONDS.observe(time.perf_counter() - started)
        return accepted

    def _check_receiver(self, join_eui: bytes, receiver_id: bytes | None) -> None:
        if receiver_id is not None and receiver_id != join_eui:
            raise Refused(
                Reason.JOIN_EUI_NOT_SERVED, f"ReceiverID {receiver_id.hex()} is not the JoinEUI of the request"
            )
        if not _served(join_eui, self._policy.join_euis):
            raise Refused(Reason.JOIN_EUI_NOT_SERVED, f"JoinEUI {join_eui.hex()} is not served by this Join Server")

    async def _device(self, dev_eui: bytes, join_eui: bytes | None) -> Device:
        device = await self._registry.get_device(dev_eui)
        if device is None or (join_eui is not None and device.join_eui != join_eui):
            raise Refused(Reason.UNKNOWN_DEVICE, f"DevEUI {dev_eui.hex()} is not registered for this JoinEUI")
        return device

    @staticmethod
    def _check_home(device: Device, sender: Sender) -> None:
        if device.home_net_id is None:
            raise Refused(Reason.NOT_HOME_NETWORK, f"DevEUI {device.dev_eui.hex()} has no home network")
        if device.home_net_id != sender.net_id:
            raise Refused(
                Reason.NOT_HOME_NETWORK,
                f"NetID {sender.net_id.hex()} is not the home network of DevEUI {device.dev_eui.hex()}",
            )

    @staticmethod
    def _device_version(device: Device) -> MACVersion:
        return lorawan.parse_mac_version(device.mac_version)

    def _root_blob_10(self, device: Device) -> bytes:
        """LoRaWAN 1.0 mode uses the AppKey, or the NwkKey of a 1.1 device on a 1.0 network."""
        if device.nwk_key_blob is not None:
            return device.nwk_key_blob
        return device.app_key_blob

    async def _check_mic_before_replay(self, device: Device, phy: bytes, mic: bytes) -> None:
        """A replayed DevNonce with a wrong MIC is reported as a MIC failure (LBI table)."""
        blob = self._root_blob_10(device)
        try:
            await self._hsm.check_mic(device.hsm_group, blob, lorawan.join_request_mic_input(phy), mic)
        except MicMismatch:
            raise Refused(Reason.WRONG_MIC, "JoinRequest MIC is wrong") from None
        except HsmError as exc:
            metrics.HSM_ERRORS.labels("check_mic").inc()
            raise hsm_failure(exc) from None

    def _accept_body(self, params: JoinParams, sender: Sender, join_nonce: int, opt_neg: bool) -> bytes:
        try:
            return lorawan.join_accept_body(
                lorawan.JoinAcceptFields(
                    join_nonce=join_nonce,
                    net_id=sender.net_id,
                    dev_addr=params.dev_addr,
                    dl_settings=lorawan.with_opt_neg(params.dl_settings, opt_neg),
                    rx_delay=params.rx_delay,
                    cf_list=params.cf_list,
                )
            )
        except ValueError as exc:
            raise Refused(Reason.MALFORMED, str(exc)) from None

    def _join_recipe(
        self,
        device: Device,
        params: JoinParams,
        sender: Sender,
        frame: lorawan.JoinRequest,
        join_nonce: int,
        opt_neg: bool,
    ) -> JoinRecipe:
        body = self._accept_body(params, sender, join_nonce, opt_neg)
        mic_input = lorawan.join_request_mic_input(params.phy_payload)
        if not opt_neg:
            blocks = lorawan.session_key_blocks_10(join_nonce, sender.net_id, frame.dev_nonce)
            return JoinRecipe(
                group=device.hsm_group,
                roots={"root": self._root_blob_10(device)},
                derives=[Derive(name, "root", block, "session") for name, block in blocks.items()],
                request_mic=("root", mic_input, frame.mic),
                accept_mic=("root", lorawan.join_accept_mic_input_legacy(body)),
                accept_body=body,
                accept_encrypt="root",
                wraps=self._wraps(device, sender, NETWORK_KEYS_10),
                store=["AppSKey"],
            )
        assert device.nwk_key_blob is not None
        blocks = lorawan.session_key_blocks_11(join_nonce, frame.join_eui, frame.dev_nonce)
        return JoinRecipe(
            group=device.hsm_group,
            roots={"nwk": device.nwk_key_blob, "app": device.app_key_blob},
            derives=[
                Derive("JSIntKey", "nwk", lorawan.js_int_key_block(device.dev_eui), "mic"),
                *self._derives_11(blocks),
            ],
            request_mic=("nwk", mic_input, frame.mic),
            accept_mic=(
                "JSIntKey",
                lorawan.join_accept_mic_input_optneg(
                    lorawan.JOIN_REQ_TYPE_JOIN, frame.join_eui, frame.dev_nonce, body
                ),
            ),
            accept_body=body,
            accept_encrypt="nwk",
            wraps=self._wraps(device, sender, NETWORK_KEYS_11),
            store=["AppSKey"],
        )

    @staticmethod
    def _derives_11(blocks: dict[str, bytes]) -> list[Derive]:
        return [
            Derive(name, "app" if name == "AppSKey" else "nwk", block, "session")
            for name, block in blocks.items()
        ]

    @staticmethod
    def _wraps(device: Device, sender: Sender, network_keys: Sequence[str]) -> list[tuple[str, str]]:
        wraps = [(name, sender.kek_label) for name in network_keys]
        if device.astk_label:
            wraps.append(("AppSKey", device.astk_label))
        return wraps

    async def _run(self, recipe: JoinRecipe) -> JoinOutput:
        started = time.perf_counter()
        try:
            return await self._hsm.run_join(recipe)
        except MicMismatch:
            raise Refused(Reason.WRONG_MIC, "request MIC is wrong") from None
        except HsmError as exc:
            metrics.HSM_ERRORS.labels("join").inc()
            raise hsm_failure(exc) from None
        finally:
            metrics.HSM_SECONDS.observe(time.perf_counter() - started)

    def _accepted(self, device: Device, output: JoinOutput, join_nonce: int, opt_neg: bool) -> JoinAccepted:
        network = NETWORK_KEYS_11 if opt_neg else NETWORK_KEYS_10
        kek_of = {slot: label for (slot, label) in output.wrapped if slot != "AppSKey"}
        network_keys = {
            name: KeyEnvelope(kek_of[name], output.wrapped[(name, kek_of[name])]) for name in network
        }
        app_s_key = None
        if device.astk_label:
            app_s_key = KeyEnvelope(device.astk_label, output.wrapped[("AppSKey", device.astk_label)])
        return JoinAccepted(
            phy_payload=bytes([lorawan.MHDR_JOIN_ACCEPT]) + output.encrypted_accept,
            network_keys=network_keys,
            app_s_key=app_s_key,
            session_key_id=secrets.token_hex(16),
            lifetime=self._policy.lifetime,
            join_nonce=join_nonce,
        )

    @staticmethod
    def _session_record(device: Device, accepted: JoinAccepted, output: JoinOutput, dev_nonce: int) -> SessionKey:
        return SessionKey(
            session_key_id=accepted.session_key_id,
            dev_eui=device.dev_eui,
            hsm_group=device.hsm_group,
            app_s_key_blob=output.stored["AppSKey"],
            join_nonce=accepted.join_nonce,
            dev_nonce=dev_nonce,
        )

    # -- RejoinReq -------------------------------------------------------------------------------

    async def rejoin(self, params: JoinParams, sender: Sender, name: RefusalName) -> JoinAccepted | Refusal:
        """Answer a LoRaWAN 1.1 RejoinRequest (types 0, 1, 2) with a rejoin-accept under JSEncKey.

        Refusals are recorded as for `join`.
        """
        try:
            frame = _parsed(lorawan.parse_rejoin_request, params)
            if frame.join_eui is not None:
                self._check_receiver(frame.join_eui, params.receiver_id)
            async with self._device_turn(frame.dev_eui):
                return await self._rejoin_steps(params, sender, frame)
        except Refused as refused:
            return await self._recorded(refused.refusal, params.dev_eui, sender, name)

    async def _rejoin_steps(self, params: JoinParams, sender: Sender, frame: lorawan.RejoinRequest) -> JoinAccepted:
        for _ in range(self._policy.nonce_retries):
            device = await self._device(frame.dev_eui, frame.join_eui)
            if frame.join_eui is None:
                self._check_receiver(device.join_eui, params.receiver_id)
            self._check_home(device, sender)
            if device.nwk_key_blob is None or not lorawan.is_1_1(self._device_version(device)):
                raise Refused(Reason.MALFORMED, "RejoinRequest from a device that is not LoRaWAN 1.1")
            state = nonces.after_rejoin_request(device.nonces, frame.rejoin_type, frame.rj_count)
            recipe = self._rejoin_recipe(device, params, sender, frame, state.join_nonce)
            accepted = await self._derive_and_commit(
                device, state, recipe, True, frame.rj_count, "rejoin.accepted", sender,
                {"rejoin_type": frame.rejoin_type},
            )  # fmt: skip
            if accepted is not None:
                return accepted
        raise Refused(Reason.FAILED, "too many concurrent rejoins for this device; try again")

    def _rejoin_recipe(
        self,
        device: Device,
        params: JoinParams,
        sender: Sender,
        frame: lorawan.RejoinRequest,
        join_nonce: int,
    ) -> JoinRecipe:
        assert device.nwk_key_blob is not None
        body = self._accept_body(params, sender, join_nonce, opt_neg=True)
        blocks = lorawan.session_key_blocks_11(join_nonce, device.join_eui, frame.rj_count)
        request_mic = None
        if frame.rejoin_type == 1:
            request_mic = ("JSIntKey", lorawan.rejoin_mic_input(params.phy_payload), frame.mic)
        return JoinRecipe(
            group=device.hsm_group,
            roots={"nwk": device.nwk_key_blob, "app": device.app_key_blob},
            derives=[
                Derive("JSIntKey", "nwk", lorawan.js_int_key_block(device.dev_eui), "mic"),
                Derive("JSEncKey", "nwk", lorawan.js_enc_key_block(device.dev_eui), "enc"),
                *self._derives_11(blocks),
            ],
            request_mic=request_mic,
            accept_mic=(
                "JSIntKey",
                lorawan.join_accept_mic_input_optneg(frame.rejoin_type, device.join_eui, frame.rj_count, body),
            ),
            accept_body=body,
            accept_encrypt="JSEncKey",
            wraps=self._wraps(device, sender, NETWORK_KEYS_11),
            store=["AppSKey"],
        )

    # -- HomeNSReq and AppSKeyReq ----------------------------------------------------------------

    async def home_net_id(self, dev_eui: bytes, sender: Sender | None = None) -> bytes | Refusal:
        """The home NetID of a device (activation away from home).

        With `home_ns_requires_agreement`, only the home NS itself or an NS with a roaming agreement with
        it may ask; any other asker is told the device is unknown, so it learns nothing.
        """
        device = await self._registry.get_device(dev_eui)
        unknown = Refusal(Reason.UNKNOWN_DEVICE, f"DevEUI {dev_eui.hex()} is not registered")
        if device is None:
            return unknown
        if device.home_net_id is None:
            return Refusal(Reason.NOT_HOME_NETWORK, f"DevEUI {dev_eui.hex()} has no home network")
        if self._policy.home_ns_requires_agreement and sender is not None and sender.net_id != device.home_net_id:
            allowed = self._roaming is not None and await self._roaming.roaming_allowed(
                device.home_net_id.hex(), sender.net_id.hex()
            )
            if not allowed:
                return unknown
        return device.home_net_id

    async def _record(self, event: EventRecord) -> None:
        if self._records is not None:
            await self._records.record(events_=[event])

    async def app_s_key(
        self, dev_eui: bytes, session_key_id: str, sender: Sender | None = None
    ) -> KeyEnvelope | Refusal:
        """The AppSKey of a past session, wrapped under the device's ASTK."""
        device = await self._registry.get_device(dev_eui)
        record = None if device is None else await self._registry.get_session_key(dev_eui, session_key_id)
        if device is None or record is None:
            return Refusal(Reason.UNKNOWN_DEVICE, f"no session {session_key_id} for DevEUI {dev_eui.hex()}")
        if not device.astk_label:
            return Refusal(Reason.NO_APPLICATION_KEY, f"DevEUI {dev_eui.hex()} has no application server transport key")
        try:
            wrapped = await self._hsm.rewrap(record.hsm_group, record.app_s_key_blob, device.astk_label)
        except HsmError as exc:
            metrics.HSM_ERRORS.labels("rewrap").inc()
            return hsm_failure(exc).refusal
        await self._record(
            new_event(
                "appskey.answered",
                device.owner_account,
                dev_eui.hex(),
                {"net_id": None if sender is None else sender.net_id.hex(), "session_key_id": session_key_id},
            )
        )
        return KeyEnvelope(device.astk_label, wrapped)
