"""A simulated LoRaWAN end device: builds join/rejoin requests and checks join-accepts as a device would.

Values in memory follow the project convention (EUIs, NetID, DevAddr big-endian as displayed; nonces and
counters as ``int``); this module alone turns them into little-endian air order. The formulas are those of
LoRaWAN 1.0.2 §6.2, 1.0.4 §6.2 and 1.1 §6.1–6.2 (the published vectors of tests/vectors/ pin them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from jsd_sim.crypto import aes_ecb_encrypt, constant_time_equal, mic4

__all__ = [
    "MAC_VERSIONS",
    "AcceptError",
    "DevNonceExhausted",
    "DeviceSession",
    "JoinAcceptFields",
    "SessionKeys",
    "SimDevice",
    "build_join_request",
    "build_rejoin_request",
    "derive_js_enc_key",
    "derive_js_int_key",
    "derive_session_keys_10",
    "derive_session_keys_11",
    "dev_nonce_is_counter",
    "is_lorawan_11",
    "join_accept_mic_legacy",
    "join_accept_mic_optneg",
    "normalize_mac_version",
    "open_join_accept",
    "parse_join_accept",
]

MAC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")

MHDR_JOIN_REQUEST = 0x00
MHDR_JOIN_ACCEPT = 0x20
MHDR_REJOIN_REQUEST = 0xC0
JOIN_REQ_TYPE_JOIN = 0xFF
OPT_NEG = 0x80
_PAD16 = bytes(16)


class AcceptError(Exception):
    """The join-accept fails a check the device makes (MIC, layout, JoinNonce); a device would drop it."""


class DevNonceExhausted(Exception):
    """The device has no DevNonce left (every 16-bit value used, or the counter reached 65535)."""


def normalize_mac_version(version: str) -> str:
    """Map the spellings seen on the wire ("1.1.0", "1.1") to one name; reject what we do not simulate."""
    v = version.strip()
    if v == "1.1.0":
        v = "1.1"
    if v not in MAC_VERSIONS:
        raise ValueError(f"unsupported LoRaWAN MAC version {version!r}; use one of {', '.join(MAC_VERSIONS)}")
    return v


def is_lorawan_11(version: str) -> bool:
    """1.1 devices have two root keys, OptNeg, JS keys and rejoins."""
    return normalize_mac_version(version) == "1.1"


def dev_nonce_is_counter(version: str) -> bool:
    """From 1.0.4 on DevNonce is a counter; before it is random and only must not repeat."""
    return normalize_mac_version(version) in ("1.0.4", "1.1")


def _le(value: bytes) -> bytes:
    return value[::-1]


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "little")


def _u24(n: int) -> bytes:
    return n.to_bytes(3, "little")


def _check_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, bytes) or len(value) != n:
        raise ValueError(f"{name} must be {n} bytes")


# -- frames ---------------------------------------------------------------------------------------------


def build_join_request(root_key: bytes, join_eui: bytes, dev_eui: bytes, dev_nonce: int) -> bytes:
    """MHDR | JoinEUI | DevEUI | DevNonce | MIC, MIC'ed with AppKey (1.0.x) or NwkKey (1.1)."""
    _check_len("join_eui", join_eui, 8)
    _check_len("dev_eui", dev_eui, 8)
    msg = bytes([MHDR_JOIN_REQUEST]) + _le(join_eui) + _le(dev_eui) + _u16(dev_nonce)
    return msg + mic4(root_key, msg)


def build_rejoin_request(
    mic_key: bytes, rejoin_type: int, dev_eui: bytes, rj_count: int, *, net_id: bytes | None = None,
    join_eui: bytes | None = None,
) -> bytes:
    """Rejoin-request type 0/2 (NetID, MIC with SNwkSIntKey) or type 1 (JoinEUI, MIC with JSIntKey)."""
    _check_len("dev_eui", dev_eui, 8)
    if rejoin_type in (0, 2):
        if net_id is None:
            raise ValueError("a rejoin-request type 0/2 carries the NetID")
        _check_len("net_id", net_id, 3)
        middle = _le(net_id)
    elif rejoin_type == 1:
        if join_eui is None:
            raise ValueError("a rejoin-request type 1 carries the JoinEUI")
        _check_len("join_eui", join_eui, 8)
        middle = _le(join_eui)
    else:
        raise ValueError(f"rejoin type must be 0, 1 or 2, not {rejoin_type}")
    msg = bytes([MHDR_REJOIN_REQUEST, rejoin_type]) + middle + _le(dev_eui) + _u16(rj_count)
    return msg + mic4(mic_key, msg)


def open_join_accept(key: bytes, phy_payload: bytes) -> bytes:
    """Return MHDR | JoinNonce..CFList | MIC in clear: the device AES-*encrypts* to undo the JS's decrypt."""
    if len(phy_payload) not in (17, 33):
        raise AcceptError(f"a join-accept is 17 or 33 bytes, not {len(phy_payload)}")
    if phy_payload[0] != MHDR_JOIN_ACCEPT:
        raise AcceptError(f"join-accept MHDR must be 0x20, not {phy_payload[0]:#04x}")
    return phy_payload[:1] + aes_ecb_encrypt(key, phy_payload[1:])


@dataclass(frozen=True)
class JoinAcceptFields:
    """The clear fields of a join-accept, in display order."""

    mhdr: int
    join_nonce: int
    net_id: bytes
    dev_addr: bytes
    dl_settings: int
    rx_delay: int
    cflist: bytes | None
    mic: bytes

    @property
    def body(self) -> bytes:
        """JoinNonce | NetID | DevAddr | DLSettings | RxDelay | CFList in air order (the MIC input tail)."""
        return (
            _u24(self.join_nonce) + _le(self.net_id) + _le(self.dev_addr)
            + bytes([self.dl_settings, self.rx_delay]) + (self.cflist or b"")
        )

    @property
    def opt_neg(self) -> bool:
        """DLSettings bit 7: the JS answered in LoRaWAN 1.1 mode."""
        return bool(self.dl_settings & OPT_NEG)


def parse_join_accept(plain: bytes) -> JoinAcceptFields:
    """Split a decrypted join-accept (with MHDR) into its fields."""
    if len(plain) not in (17, 33):
        raise AcceptError(f"a join-accept is 17 or 33 bytes, not {len(plain)}")
    return JoinAcceptFields(
        mhdr=plain[0],
        join_nonce=int.from_bytes(plain[1:4], "little"),
        net_id=_le(plain[4:7]),
        dev_addr=_le(plain[7:11]),
        dl_settings=plain[11],
        rx_delay=plain[12],
        cflist=plain[13:29] if len(plain) == 33 else None,
        mic=plain[-4:],
    )


def join_accept_mic_legacy(key: bytes, mhdr: int, body: bytes) -> bytes:
    """1.0.x (and 1.1 with OptNeg=0): CMAC(AppKey | NwkKey, MHDR | JoinNonce..CFList)."""
    return mic4(key, bytes([mhdr]) + body)


def join_accept_mic_optneg(
    js_int_key: bytes, join_req_type: int, join_eui: bytes, dev_nonce: int, mhdr: int, body: bytes
) -> bytes:
    """1.1 with OptNeg=1: CMAC(JSIntKey, JoinReqType | JoinEUI | DevNonce | MHDR | JoinNonce..CFList)."""
    _check_len("join_eui", join_eui, 8)
    return mic4(js_int_key, bytes([join_req_type]) + _le(join_eui) + _u16(dev_nonce) + bytes([mhdr]) + body)


# -- key derivation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKeys:
    """The session keys of one activation; a 1.0 session has f = s = e = NwkSKey."""

    f_nwk_s_int_key: bytes
    s_nwk_s_int_key: bytes
    nwk_s_enc_key: bytes
    app_s_key: bytes

    @property
    def nwk_s_key(self) -> bytes:
        """The LoRaWAN 1.0 name of the (single) network session key."""
        return self.f_nwk_s_int_key

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"


def _block(kind: int, *parts: bytes) -> bytes:
    raw = bytes([kind]) + b"".join(parts)
    return raw + _PAD16[len(raw):]


def derive_js_int_key(nwk_key: bytes, dev_eui: bytes) -> bytes:
    """JSIntKey = aes128_encrypt(NwkKey, 0x06 | DevEUI | pad16) (1.1 §6.1.1.4)."""
    _check_len("dev_eui", dev_eui, 8)
    return aes_ecb_encrypt(nwk_key, _block(0x06, _le(dev_eui)))


def derive_js_enc_key(nwk_key: bytes, dev_eui: bytes) -> bytes:
    """JSEncKey = aes128_encrypt(NwkKey, 0x05 | DevEUI | pad16) (1.1 §6.1.1.4)."""
    _check_len("dev_eui", dev_eui, 8)
    return aes_ecb_encrypt(nwk_key, _block(0x05, _le(dev_eui)))


def derive_session_keys_10(root_key: bytes, join_nonce: int, net_id: bytes, dev_nonce: int) -> SessionKeys:
    """1.0.x layout (also 1.1 with OptNeg=0, root = NwkKey): type | JoinNonce | NetID | DevNonce | pad16."""
    _check_len("net_id", net_id, 3)
    tail = (_u24(join_nonce), _le(net_id), _u16(dev_nonce))
    nwk = aes_ecb_encrypt(root_key, _block(0x01, *tail))
    app = aes_ecb_encrypt(root_key, _block(0x02, *tail))
    return SessionKeys(nwk, nwk, nwk, app)


def derive_session_keys_11(
    nwk_key: bytes, app_key: bytes, join_nonce: int, join_eui: bytes, dev_nonce: int
) -> SessionKeys:
    """1.1 OptNeg=1 layout: type | JoinNonce | JoinEUI | DevNonce (or RJcount) | pad16; AppSKey from AppKey."""
    _check_len("join_eui", join_eui, 8)
    tail = (_u24(join_nonce), _le(join_eui), _u16(dev_nonce))
    return SessionKeys(
        f_nwk_s_int_key=aes_ecb_encrypt(nwk_key, _block(0x01, *tail)),
        s_nwk_s_int_key=aes_ecb_encrypt(nwk_key, _block(0x03, *tail)),
        nwk_s_enc_key=aes_ecb_encrypt(nwk_key, _block(0x04, *tail)),
        app_s_key=aes_ecb_encrypt(app_key, _block(0x02, *tail)),
    )


# -- the device -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSession:
    """What the device learned from an accepted join-accept, and the keys it derived."""

    dev_addr: bytes
    net_id: bytes
    join_nonce: int
    dl_settings: int
    rx_delay: int
    cflist: bytes | None
    opt_neg: bool
    join_req_type: int
    dev_nonce: int
    keys: SessionKeys = field(repr=False)


@dataclass
class _Pending:
    join_req_type: int
    nonce: int


class SimDevice:
    """One end device with its own root keys and nonce state; never shares key code with the daemon."""

    def __init__(
        self,
        dev_eui: bytes,
        join_eui: bytes,
        mac_version: str,
        app_key: bytes,
        nwk_key: bytes | None = None,
        *,
        next_dev_nonce: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        _check_len("dev_eui", dev_eui, 8)
        _check_len("join_eui", join_eui, 8)
        _check_len("app_key", app_key, 16)
        self.mac_version = normalize_mac_version(mac_version)
        if self.is_11:
            if nwk_key is None:
                raise ValueError("a LoRaWAN 1.1 device needs a NwkKey")
            _check_len("nwk_key", nwk_key, 16)
        self.dev_eui = dev_eui
        self.join_eui = join_eui
        self.app_key = app_key
        self.nwk_key = nwk_key if self.is_11 else None
        self.next_dev_nonce = next_dev_nonce
        self.used_dev_nonces: set[int] = set()
        self.last_dev_nonce: int | None = None
        self.last_join_nonce: int | None = None
        self.rj_count0 = 0
        self.rj_count1 = 0
        self.session: DeviceSession | None = None
        self._rng = rng or random.SystemRandom()
        self._pending: _Pending | None = None
        self._reserved: int | None = None

    def __repr__(self) -> str:
        return f"SimDevice(dev_eui={self.dev_eui.hex()}, join_eui={self.join_eui.hex()}, {self.mac_version})"

    @property
    def is_11(self) -> bool:
        """LoRaWAN 1.1 device (NwkKey + AppKey)."""
        return self.mac_version == "1.1"

    @property
    def root_key(self) -> bytes:
        """The key that MICs the join-request: AppKey for 1.0.x, NwkKey for 1.1."""
        return self.nwk_key if self.nwk_key is not None else self.app_key

    def take_dev_nonce(self, *, commit: bool = True) -> int:
        """Next DevNonce by the version's rule: a counter from 1.0.4, a fresh random value before.

        With ``commit=False`` the value is only reserved: the next call returns it again. A request the
        Join Server must reject (wrong key, wrong NetID) uses that, so a later join shows that the rejected
        request left no DevNonce behind.
        """
        if dev_nonce_is_counter(self.mac_version):
            n = self.next_dev_nonce
            if n > 0xFFFF:
                raise DevNonceExhausted(f"{self.dev_eui.hex()}: DevNonce counter exhausted")
            if commit:
                self.next_dev_nonce = n + 1
        else:
            if self._reserved is not None:
                n = self._reserved
            else:
                if len(self.used_dev_nonces) >= 0x10000:
                    raise DevNonceExhausted(f"{self.dev_eui.hex()}: every DevNonce value was used")
                n = self._rng.randrange(0x10000)
                while n in self.used_dev_nonces:
                    n = self._rng.randrange(0x10000)
            self._reserved = None if commit else n
        if commit:
            self.used_dev_nonces.add(n)
        return n

    def join_request(self, dev_nonce: int | None = None, *, root_key: bytes | None = None) -> bytes:
        """A JoinRequest PHYPayload.

        ``dev_nonce`` sends that value and leaves the nonce state alone (a replay, or a reserved value);
        ``root_key`` MICs with another key, to play a device provisioned with the wrong key.
        """
        n = self.take_dev_nonce() if dev_nonce is None else dev_nonce
        self.last_dev_nonce = n
        self._pending = _Pending(JOIN_REQ_TYPE_JOIN, n)
        return build_join_request(root_key or self.root_key, self.join_eui, self.dev_eui, n)

    def rejoin_request(self, rejoin_type: int) -> bytes:
        """A RejoinRequest type 0/2 (needs a 1.1 session) or 1; counts RJcount0/RJcount1 up."""
        if not self.is_11 or self.nwk_key is None:
            raise ValueError("rejoin-requests exist only for LoRaWAN 1.1 devices")
        if rejoin_type not in (0, 1, 2):
            raise ValueError(f"rejoin type must be 0, 1 or 2, not {rejoin_type}")
        count = self.rj_count1 if rejoin_type == 1 else self.rj_count0
        if count > 0xFFFF:
            raise DevNonceExhausted(f"{self.dev_eui.hex()}: RJcount{min(rejoin_type, 1)} exhausted")
        if rejoin_type == 1:
            frame = build_rejoin_request(
                derive_js_int_key(self.nwk_key, self.dev_eui), 1, self.dev_eui, count, join_eui=self.join_eui
            )
            self.rj_count1 = count + 1
        else:
            if self.session is None or not self.session.opt_neg:
                raise ValueError("a rejoin-request type 0/2 needs a LoRaWAN 1.1 (OptNeg) session")
            frame = build_rejoin_request(
                self.session.keys.s_nwk_s_int_key, rejoin_type, self.dev_eui, count, net_id=self.session.net_id
            )
            self.rj_count0 = count + 1
        self._pending = _Pending(rejoin_type, count)
        return frame

    def accept(self, phy_payload: bytes) -> DeviceSession:
        """Decrypt and verify a join-accept for the last request, derive the session keys, keep the session."""
        pending = self._pending
        if pending is None:
            raise AcceptError("no join- or rejoin-request is waiting for an accept")
        rejoin = pending.join_req_type != JOIN_REQ_TYPE_JOIN
        if rejoin:
            assert self.nwk_key is not None
            enc_key = derive_js_enc_key(self.nwk_key, self.dev_eui)
        else:
            enc_key = self.root_key
        fields = parse_join_accept(open_join_accept(enc_key, phy_payload))
        opt_neg = self.is_11 and fields.opt_neg
        if rejoin and not opt_neg:
            raise AcceptError("the accept of a rejoin-request must have OptNeg set")
        if opt_neg:
            assert self.nwk_key is not None
            expected = join_accept_mic_optneg(
                derive_js_int_key(self.nwk_key, self.dev_eui), pending.join_req_type, self.join_eui,
                pending.nonce, fields.mhdr, fields.body,
            )
        else:
            expected = join_accept_mic_legacy(self.root_key, fields.mhdr, fields.body)
        if not constant_time_equal(expected, fields.mic):
            mode = "OptNeg (JSIntKey)" if opt_neg else "legacy"
            raise AcceptError(f"join-accept MIC wrong ({mode} formula)")
        checks_join_nonce = self.mac_version == "1.0.4" or opt_neg
        if checks_join_nonce and self.last_join_nonce is not None and fields.join_nonce <= self.last_join_nonce:
            raise AcceptError(
                f"JoinNonce {fields.join_nonce} not greater than the last accepted {self.last_join_nonce}"
            )
        if opt_neg:
            assert self.nwk_key is not None
            keys = derive_session_keys_11(self.nwk_key, self.app_key, fields.join_nonce, self.join_eui, pending.nonce)
        else:
            keys = derive_session_keys_10(self.root_key, fields.join_nonce, fields.net_id, pending.nonce)
        session = DeviceSession(
            dev_addr=fields.dev_addr, net_id=fields.net_id, join_nonce=fields.join_nonce,
            dl_settings=fields.dl_settings, rx_delay=fields.rx_delay, cflist=fields.cflist, opt_neg=opt_neg,
            join_req_type=pending.join_req_type, dev_nonce=pending.nonce, keys=keys,
        )
        self._pending = None
        self.session = session
        self.last_join_nonce = fields.join_nonce
        self.rj_count0 = 0
        return session

    def state(self) -> dict[str, Any]:
        """Nonce state to carry over to the next run (no keys), so a rerun does not replay DevNonces."""
        return {
            "next_dev_nonce": self.next_dev_nonce,
            "used_dev_nonces": sorted(self.used_dev_nonces) if not dev_nonce_is_counter(self.mac_version) else [],
            "last_join_nonce": self.last_join_nonce,
            "rj_count1": self.rj_count1,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        self.next_dev_nonce = int(state.get("next_dev_nonce", self.next_dev_nonce))
        self.used_dev_nonces = {int(n) for n in state.get("used_dev_nonces", [])}
        jn = state.get("last_join_nonce")
        self.last_join_nonce = None if jn is None else int(jn)
        self.rj_count1 = int(state.get("rj_count1", self.rj_count1))
