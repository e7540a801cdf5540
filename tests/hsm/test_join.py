"""`Hsm.run_join` and friends against a real SoftHSM2 token, checked with `cryptography` on the device side.

Known values come from tests/vectors/join-vectors.json (ids in comments); everything else is recomputed
here in software, independently of the token.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from pkcs11 import Attribute
from pkcs11.types import Session

from jsd.hsm import (
    Derive,
    Hsm,
    InvalidKeyBlob,
    JoinRecipe,
    KekExists,
    KeyNotFound,
    MicMismatch,
)

NS_KEK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AS_KEK = bytes.fromhex("f0e0d0c0b0a090807060504030201000")
NS_LABEL = "ns:000013"
AS_LABEL = "as:test-app"
MHDR_JOIN_REQUEST = b"\x00"
MHDR_JOIN_ACCEPT = b"\x20"
MHDR_REJOIN = b"\xc0"
CFLIST = bytes.fromhex("184f84e85684b85e84886684586e8400")


def cmac(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def aes_encrypt(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def aes_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def aes_unwrap(kek: bytes, blob: bytes) -> bytes:
    """What an NS or AS does with a KeyEnvelope: plain RFC 3394."""
    return aes_key_unwrap(kek, blob)


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def block(*parts: bytes) -> bytes:
    data = b"".join(parts)
    return data + bytes(16 - len(data))


async def ensure_kek(hsm: Hsm, label: str, key: bytes) -> None:
    if not await hsm.has_kek(label):
        await hsm.import_kek(label, key)


async def count_session_objects(in_token: Callable[[Callable[[Session], Any]], Awaitable[Any]]) -> int:
    count: int = await in_token(lambda session: len(list(session.get_objects({Attribute.TOKEN: False}))))
    return count


@dataclass(frozen=True)
class Join10:
    """A LoRaWAN 1.0.x join, device side: vector sk10-brocaar-chirpstack plus a made-up DevAddr."""

    app_key: bytes = bytes.fromhex("01020304050607080102030405060708")
    join_eui: bytes = bytes.fromhex("0102030405060708")
    dev_eui: bytes = bytes.fromhex("1112131415161718")
    dev_nonce: int = 0x0102
    join_nonce: int = 0x010000
    net_id: bytes = bytes.fromhex("010203")
    dev_addr: bytes = bytes.fromhex("26012e43")
    cflist: bytes = b""

    @property
    def request(self) -> bytes:
        return MHDR_JOIN_REQUEST + self.join_eui[::-1] + self.dev_eui[::-1] + le(self.dev_nonce, 2)

    @property
    def body(self) -> bytes:
        return le(self.join_nonce, 3) + self.net_id[::-1] + self.dev_addr[::-1] + b"\x00\x01" + self.cflist

    def key_block(self, kind: int) -> bytes:
        return block(bytes([kind]), le(self.join_nonce, 3), self.net_id[::-1], le(self.dev_nonce, 2))

    def recipe(self, blob: bytes, mic: bytes | None = None) -> JoinRecipe:
        mic = cmac(self.app_key, self.request)[:4] if mic is None else mic
        return JoinRecipe(
            group="default",
            roots={"app": blob},
            derives=[
                Derive("nwk_s", "app", self.key_block(0x01), "session"),
                Derive("app_s", "app", self.key_block(0x02), "session"),
            ],
            request_mic=("app", self.request, mic),
            accept_mic=("app", MHDR_JOIN_ACCEPT + self.body),
            accept_body=self.body,
            accept_encrypt="app",
            wraps=[("nwk_s", NS_LABEL), ("app_s", AS_LABEL)],
            store=["app_s"],
        )


@dataclass(frozen=True)
class Join11:
    """A LoRaWAN 1.1 join with OptNeg=1, device side: the keys and ids of vector sk11-ttn."""

    nwk_key: bytes = bytes.fromhex("bec499c69e9c939e413b663961636c61")
    app_key: bytes = bytes.fromhex("bec499c69e9c939e413b663961636c61")
    join_eui: bytes = bytes.fromhex("0000001223224242")
    dev_eui: bytes = bytes.fromhex("0042004213424341")
    dev_nonce: int = 0x7369
    join_nonce: int = 0xAE3B1C
    net_id: bytes = bytes.fromhex("000013")
    dev_addr: bytes = bytes.fromhex("26012e43")
    cflist: bytes = b""

    def request(self) -> bytes:
        return MHDR_JOIN_REQUEST + self.join_eui[::-1] + self.dev_eui[::-1] + le(self.dev_nonce, 2)

    def body(self) -> bytes:
        return le(self.join_nonce, 3) + self.net_id[::-1] + self.dev_addr[::-1] + b"\x80\x01" + self.cflist

    def key_block(self, kind: int, nonce: int) -> bytes:
        return block(bytes([kind]), le(self.join_nonce, 3), self.join_eui[::-1], le(nonce, 2))

    def derives(self, nonce: int) -> list[Derive]:
        return [
            Derive("js_int", "nwk", block(b"\x06", self.dev_eui[::-1]), "mic"),
            Derive("f_nwk_s_int", "nwk", self.key_block(0x01, nonce), "session"),
            Derive("s_nwk_s_int", "nwk", self.key_block(0x03, nonce), "session"),
            Derive("nwk_s_enc", "nwk", self.key_block(0x04, nonce), "session"),
            Derive("app_s", "app", self.key_block(0x02, nonce), "session"),
        ]

    def accept_mic_input(self, join_req_type: int, nonce: int) -> bytes:
        return bytes([join_req_type]) + self.join_eui[::-1] + le(nonce, 2) + MHDR_JOIN_ACCEPT + self.body()

    def wraps(self) -> list[tuple[str, str]]:
        return [
            ("f_nwk_s_int", NS_LABEL),
            ("s_nwk_s_int", NS_LABEL),
            ("nwk_s_enc", NS_LABEL),
            ("app_s", AS_LABEL),
        ]

    def recipe(self, blobs: dict[str, bytes]) -> JoinRecipe:
        return JoinRecipe(
            group="default",
            roots=blobs,
            derives=self.derives(self.dev_nonce),
            request_mic=("nwk", self.request(), cmac(self.nwk_key, self.request())[:4]),
            accept_mic=("js_int", self.accept_mic_input(0xFF, self.dev_nonce)),
            accept_body=self.body(),
            accept_encrypt="nwk",
            wraps=self.wraps(),
            store=["app_s"],
        )


SK11_TTN = {
    "app_s": "b035cce24e4a040eb5cecbf21724412d",
    "f_nwk_s_int": "379084e7ce22ff191bff4b77536f2aa3",
    "s_nwk_s_int": "63c59309d53485bc5164dbf71627aeb9",
    "nwk_s_enc": "ce07a009a3970ac0519a099ed53e550b",
    "js_int": "cb8e9ee114c3fb5ce472a5aa13ab1855",
    "js_enc": "bb711eefb9829b4a75866f8616bacd6d",
}


@pytest.fixture
async def keks(hsm: Hsm) -> None:
    await ensure_kek(hsm, NS_LABEL, NS_KEK)
    await ensure_kek(hsm, AS_LABEL, AS_KEK)


@pytest.mark.parametrize("cflist", [b"", CFLIST], ids=["no-cflist", "cflist"])
async def test_join_10_matches_device_side(hsm: Hsm, keks: None, cflist: bytes) -> None:
    device = Join10(cflist=cflist)
    blob = await hsm.import_root_key("default", device.app_key)

    out = await hsm.run_join(device.recipe(blob))

    nwk_s_key = aes_unwrap(NS_KEK, out.wrapped[("nwk_s", NS_LABEL)])
    app_s_key = aes_unwrap(AS_KEK, out.wrapped[("app_s", AS_LABEL)])
    assert nwk_s_key.hex() == "df53c35f3034ccced0ff354c70de04df"  # sk10-brocaar-chirpstack
    assert app_s_key.hex() == "927b9c911183cffe4cb2ff4b75545f6d"
    plain = aes_encrypt(device.app_key, out.encrypted_accept)  # the device "decrypts" with AES encrypt
    assert plain[:-4] == device.body
    assert plain[-4:] == cmac(device.app_key, MHDR_JOIN_ACCEPT + device.body)[:4]
    assert len(out.encrypted_accept) == len(device.body) + 4
    assert set(out.stored) == {"app_s"}
    assert await hsm.rewrap("default", out.stored["app_s"], AS_LABEL) == out.wrapped[("app_s", AS_LABEL)]


async def test_join_accept_vector_ttn_legacy(hsm: Hsm, keks: None) -> None:
    """ja-ttn-crypto-legacy: AppKey 01*16, JoinNonce/NetID 010203, DevAddr 01020304, RxDelay 1."""
    app_key = bytes([1]) * 16
    body = bytes.fromhex("030201030201040302010001")
    device = Join10(app_key=app_key)
    recipe = JoinRecipe(
        group="default",
        roots={"app": await hsm.import_root_key("default", app_key)},
        derives=[],
        request_mic=("app", device.request, cmac(app_key, device.request)[:4]),
        accept_mic=("app", MHDR_JOIN_ACCEPT + body),
        accept_body=body,
        accept_encrypt="app",
        wraps=[],
        store=[],
    )

    out = await hsm.run_join(recipe)

    assert out.encrypted_accept.hex() == "c9fbb259e11649096a568a9e3b7117c3"
    assert out.wrapped == {} and out.stored == {}


@pytest.mark.parametrize("cflist", [b"", CFLIST], ids=["no-cflist", "cflist"])
async def test_join_11_optneg_matches_device_side(hsm: Hsm, keks: None, cflist: bytes) -> None:
    device = Join11(cflist=cflist)
    blobs = {
        "nwk": await hsm.import_root_key("default", device.nwk_key),
        "app": await hsm.import_root_key("default", device.app_key),
    }

    out = await hsm.run_join(device.recipe(blobs))

    for slot, label in device.wraps():
        kek = NS_KEK if label == NS_LABEL else AS_KEK
        assert aes_unwrap(kek, out.wrapped[(slot, label)]).hex() == SK11_TTN[slot], slot
    js_int_key = bytes.fromhex(SK11_TTN["js_int"])
    plain = aes_encrypt(device.nwk_key, out.encrypted_accept)
    assert plain[:-4] == device.body()
    assert plain[-4:] == cmac(js_int_key, device.accept_mic_input(0xFF, device.dev_nonce))[:4]


async def test_join_11_accept_mic_vector_ttn_optneg(hsm: Hsm) -> None:
    """ja-ttn-js-1.1-optneg-new: the JSIntKey MIC is a literal of the source (ebcd7459)."""
    nwk_key = bytes.fromhex("4242ffffffffffffffffffffffffffff")
    join_eui_wire = bytes.fromhex("ffffffffffffff42")
    body = bytes.fromhex("010000ffff42ffffff42ff42")
    recipe = JoinRecipe(
        group="default",
        roots={"nwk": await hsm.import_root_key("default", nwk_key)},
        derives=[Derive("js_int", "nwk", block(b"\x06", bytes.fromhex("ffffffffffff4242")), "mic")],
        request_mic=None,
        accept_mic=("js_int", b"\xff" + join_eui_wire + b"\x00\x00" + MHDR_JOIN_ACCEPT + body),
        accept_body=body,
        accept_encrypt="nwk",
        wraps=[],
        store=[],
    )

    out = await hsm.run_join(recipe)

    assert aes_encrypt(nwk_key, out.encrypted_accept).hex() == "010000ffff42ffffff42ff42" + "ebcd7459"


@pytest.mark.parametrize("rejoin_type", [0, 1, 2])
async def test_rejoin_accept_uses_js_enc_key(hsm: Hsm, keks: None, rejoin_type: int) -> None:
    """A rejoin-triggered accept: RJcount replaces DevNonce, JSEncKey encrypts, JSIntKey signs.

    Type 1 carries a JSIntKey MIC that the JS checks; types 0/2 are signed with SNwkSIntKey (the NS checks).
    """
    device = Join11()
    rj_count = 0x0102
    blobs = {
        "nwk": await hsm.import_root_key("default", device.nwk_key),
        "app": await hsm.import_root_key("default", device.app_key),
    }
    js_int_key = bytes.fromhex(SK11_TTN["js_int"])
    request_mic: tuple[str, bytes, bytes] | None = None
    if rejoin_type == 1:
        rejoin = MHDR_REJOIN + b"\x01" + device.join_eui[::-1] + device.dev_eui[::-1] + le(rj_count, 2)
        request_mic = ("js_int", rejoin, cmac(js_int_key, rejoin)[:4])
    recipe = JoinRecipe(
        group="default",
        roots=blobs,
        derives=[
            *device.derives(rj_count),
            Derive("js_enc", "nwk", block(b"\x05", device.dev_eui[::-1]), "enc"),
        ],
        request_mic=request_mic,
        accept_mic=("js_int", device.accept_mic_input(rejoin_type, rj_count)),
        accept_body=device.body(),
        accept_encrypt="js_enc",
        wraps=device.wraps(),
        store=[],
    )

    out = await hsm.run_join(recipe)

    plain = aes_encrypt(bytes.fromhex(SK11_TTN["js_enc"]), out.encrypted_accept)
    assert plain[:-4] == device.body()
    assert plain[-4:] == cmac(js_int_key, device.accept_mic_input(rejoin_type, rj_count))[:4]
    app_s_key = aes_unwrap(AS_KEK, out.wrapped[("app_s", AS_LABEL)])
    assert app_s_key == aes_encrypt(device.app_key, device.key_block(0x02, rj_count))
    assert out.stored == {}


async def test_bad_mic_raises_and_leaves_no_object(hsm: Hsm, keks: None, in_token: Any) -> None:
    device = Join10()
    blob = await hsm.import_root_key("default", device.app_key)
    await hsm.run_join(device.recipe(blob))  # KEK copies made: they are the only session objects left
    before = await count_session_objects(in_token)

    with pytest.raises(MicMismatch):
        await hsm.run_join(device.recipe(blob, mic=b"\x00\x00\x00\x00"))

    assert await count_session_objects(in_token) == before


async def test_bad_mic_on_derived_slot_raises_before_accept(hsm: Hsm, keks: None, in_token: Any) -> None:
    device = Join11()
    blobs = {
        "nwk": await hsm.import_root_key("default", device.nwk_key),
        "app": await hsm.import_root_key("default", device.app_key),
    }
    good = device.recipe(blobs)
    await hsm.run_join(good)
    before = await count_session_objects(in_token)
    rejoin = MHDR_REJOIN + b"\x01" + bytes(18)
    bad = JoinRecipe(**{**vars(good), "request_mic": ("js_int", rejoin, b"\x01\x02\x03\x04")})

    with pytest.raises(MicMismatch):
        await hsm.run_join(bad)

    assert await count_session_objects(in_token) == before


async def test_check_mic(hsm: Hsm) -> None:
    device = Join10()
    blob = await hsm.import_root_key("default", device.app_key)
    mic = cmac(device.app_key, device.request)[:4]

    await hsm.check_mic("default", blob, device.request, mic)
    with pytest.raises(MicMismatch):
        await hsm.check_mic("default", blob, device.request, bytes(a ^ 0xFF for a in mic))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda blob: blob[:5] + bytes([blob[5] ^ 1]) + blob[6:], id="bit-flip"),
        pytest.param(lambda blob: blob[:16], id="truncated"),
        pytest.param(lambda blob: blob + bytes(8), id="too-long"),
        pytest.param(lambda blob: bytes(24), id="zeros"),
    ],
)
async def test_tampered_blob_is_invalid_key_blob(
    hsm: Hsm, keks: None, in_token: Any, tamper: Callable[[bytes], bytes]
) -> None:
    device = Join10()
    blob = await hsm.import_root_key("default", device.app_key)
    await hsm.run_join(device.recipe(blob))
    before = await count_session_objects(in_token)

    with pytest.raises(InvalidKeyBlob):
        await hsm.run_join(device.recipe(tamper(blob)))
    with pytest.raises(InvalidKeyBlob):
        await hsm.check_mic("default", tamper(blob), device.request, bytes(4))

    assert await count_session_objects(in_token) == before


async def test_blob_of_another_group_is_invalid(hsm: Hsm, keks: None, groups: tuple[str, str]) -> None:
    device = Join10()
    other = await hsm.import_root_key("other", device.app_key)

    with pytest.raises(InvalidKeyBlob):
        await hsm.run_join(device.recipe(other))


async def test_unknown_kek_label_is_key_not_found(hsm: Hsm, keks: None, in_token: Any) -> None:
    device = Join10()
    blob = await hsm.import_root_key("default", device.app_key)
    recipe = device.recipe(blob)
    unknown = JoinRecipe(**{**vars(recipe), "wraps": [("nwk_s", "ns:nobody"), ("app_s", AS_LABEL)]})
    before = await count_session_objects(in_token)

    with pytest.raises(KeyNotFound, match="'ns:nobody'"):
        await hsm.run_join(unknown)
    with pytest.raises(KeyNotFound, match="'ns:nobody'"):
        await hsm.rewrap("default", blob, "ns:nobody")

    assert await count_session_objects(in_token) == before


async def test_unknown_group_is_key_not_found(hsm: Hsm) -> None:
    with pytest.raises(KeyNotFound, match="'jsd-storage-nowhere'"):
        await hsm.import_root_key("nowhere", bytes(16))


async def test_rewrap_refuses_root_key_blobs(hsm: Hsm, keks: None) -> None:
    """Root blobs and stored session keys live under different KEKs: a root key never leaves via rewrap."""
    blob = await hsm.import_root_key("default", secrets.token_bytes(16))

    with pytest.raises(InvalidKeyBlob):
        await hsm.rewrap("default", blob, AS_LABEL)


async def test_generate_root_key(hsm: Hsm) -> None:
    blob, key = await hsm.generate_root_key("default")
    message = MHDR_JOIN_REQUEST + secrets.token_bytes(18)

    assert len(blob) == 24 and len(key) == 16
    await hsm.check_mic("default", blob, message, cmac(key, message)[:4])


async def test_import_kek_refuses_existing_label(hsm: Hsm) -> None:
    label = f"as:{secrets.token_hex(4)}"
    assert not await hsm.has_kek(label)

    await hsm.import_kek(label, secrets.token_bytes(16))

    assert await hsm.has_kek(label)
    with pytest.raises(KekExists, match=repr(label)):
        await hsm.import_kek(label, secrets.token_bytes(16))


async def test_generate_random(hsm: Hsm) -> None:
    first, second = await hsm.generate_random(16), await hsm.generate_random(16)

    assert len(first) == 16 and first != second
    assert len(await hsm.generate_random(3)) == 3
    with pytest.raises(ValueError):
        await hsm.generate_random(0)


async def test_a_worker_reinitializes_the_module_every_n_operations_and_joins_go_on(
    hsm_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`hsm.reinitialize_every`: between two operations the module is finalised (SoftHSM2 frees destroyed
    session objects only then) and logged in again; cached KEK copies are made anew and every join stays right."""
    from dataclasses import replace

    renewing = await Hsm.open(replace(hsm_settings, reinitialize_every=3))
    try:
        await renewing.ensure_storage_kek("default")
        await ensure_kek(renewing, NS_LABEL, NS_KEK)
        await ensure_kek(renewing, AS_LABEL, AS_KEK)
        login = renewing._login
        first = login.lib.generation
        caplog.set_level("DEBUG", logger="jsd.hsm")
        for _ in range(4):
            device = Join10(cflist=b"")
            out = await renewing.run_join(device.recipe(await renewing.import_root_key("default", device.app_key)))
            plain = aes_encrypt(device.app_key, out.encrypted_accept)
            assert plain[-4:] == cmac(device.app_key, MHDR_JOIN_ACCEPT + device.body)[:4]
            assert len(aes_unwrap(NS_KEK, out.wrapped[("nwk_s", NS_LABEL)])) == 16
        assert login.lib.generation >= first + 2  # 8 joins' worth of operations, renewed every 3
        assert login.operations <= 3
        assert any("re-initialising" in r.getMessage() for r in caplog.records)
    finally:
        await renewing.aclose()


async def test_a_batch_counts_each_of_its_keys_towards_the_renewal(hsm_settings: Any) -> None:
    """A bulk import's one call per chunk creates a session object per key, so it counts each key: a
    100,000-device import renews the module as 100,000 single imports would (docs/benchmarks.md)."""
    from dataclasses import replace

    renewing = await Hsm.open(replace(hsm_settings, reinitialize_every=10))
    try:
        await renewing.ensure_storage_kek("default")
        login = renewing._login
        first = login.lib.generation
        keys = [secrets.token_bytes(16) for _ in range(25)]
        blobs = await renewing.import_root_keys("default", keys)
        assert login.operations == 1 + 25  # the KEK check, then the batch's keys
        await renewing.import_root_keys("default", keys[:3])  # over the limit: renewed before this call
        assert login.lib.generation == first + 1 and login.operations == 3
        await renewing.generate_root_keys("default", 12)  # 15 > 10: renewed before the next call
        await renewing.generate_random(4)
        assert login.lib.generation == first + 2 and login.operations == 1
        device = Join10(cflist=b"", app_key=keys[7])
        out = await renewing.run_join(device.recipe(blobs[7]))  # a blob made before two renewals still works
        plain = aes_encrypt(device.app_key, out.encrypted_accept)
        assert plain[-4:] == cmac(device.app_key, MHDR_JOIN_ACCEPT + device.body)[:4]
    finally:
        await renewing.aclose()
