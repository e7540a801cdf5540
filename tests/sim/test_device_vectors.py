"""The simulator's device-side crypto against the published vectors in tests/vectors/join-vectors.json.

Function-level vectors exercise the pure builders; vectors with a full frame go through SimDevice so the
device's own decrypt / MIC / derivation path is the one checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jsd_sim.crypto import aes_cmac, aes_ecb_decrypt, aes_ecb_encrypt, key_unwrap, mic4
from jsd_sim.device import (
    SimDevice,
    build_join_request,
    build_rejoin_request,
    derive_js_enc_key,
    derive_js_int_key,
    derive_session_keys_10,
    derive_session_keys_11,
    join_accept_mic_legacy,
    join_accept_mic_optneg,
    parse_join_accept,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "join-vectors.json").read_text()
)


def cases(category: str, pred: Any = None) -> list[Any]:
    return [pytest.param(v, id=v["id"]) for v in VECTORS[category] if pred is None or pred(v)]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def n(s: str) -> int:
    return int(s, 16)


# -- primitives -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", cases("aes_cmac", lambda v: "mac" in v["expected"]))
def test_aes_cmac_rfc4493(v: dict[str, Any]) -> None:
    assert aes_cmac(h(v["key"]), h(v["message"])).hex() == v["expected"]["mac"]


@pytest.mark.parametrize("v", cases("key_wrap"))
def test_key_unwrap(v: dict[str, Any]) -> None:
    assert key_unwrap(h(v["kek"]), h(v["expected"]["wrapped"])).hex() == v["key_data"]


# -- join-request ---------------------------------------------------------------------------------------


def _device_for_request(v: dict[str, Any]) -> SimDevice:
    if v["key_role"] == "NwkKey":
        return SimDevice(h(v["dev_eui"]), h(v["join_eui"]), "1.1", bytes(16), h(v["key"]))
    return SimDevice(h(v["dev_eui"]), h(v["join_eui"]), "1.0.2", h(v["key"]))


@pytest.mark.parametrize("v", cases("join_request_mic", lambda v: "phypayload" in v))
def test_join_request_frame(v: dict[str, Any]) -> None:
    dev = _device_for_request(v)
    frame = dev.join_request(dev_nonce=n(v["dev_nonce"]))
    assert frame.hex() == v["phypayload"]
    assert frame[-4:].hex() == v["expected"]["mic"]
    assert build_join_request(h(v["key"]), h(v["join_eui"]), h(v["dev_eui"]), n(v["dev_nonce"])) == frame


@pytest.mark.parametrize("v", cases("join_request_mic", lambda v: "mic_input" in v))
def test_join_request_mic_function(v: dict[str, Any]) -> None:
    assert mic4(h(v["key"]), h(v["mic_input"])).hex() == v["expected"]["mic"]


# -- join-accept ----------------------------------------------------------------------------------------


def _full_accept(v: dict[str, Any]) -> bool:
    return "mhdr" in v and v.get("enc_key_role") in ("AppKey", "NwkKey") and (
        v["mic_formula"] == "legacy" or "jsintkey_derivation" in v
    ) and "function level" not in v["mac_version"] and "example passes one key" not in v.get("notes", "")


def _accept_phypayload(v: dict[str, Any]) -> bytes:
    """The encrypted frame: a literal one when the source has it, else built from the literal plaintext."""
    if "phypayload" in v["expected"]:
        return h(v["expected"]["phypayload"])
    plain = h(v["expected"]["plaintext"])
    return plain[:1] + aes_ecb_decrypt(h(v["enc_key"]), plain[1:])


@pytest.mark.parametrize("v", cases("join_accept", _full_accept))
def test_device_accepts_vector(v: dict[str, Any]) -> None:
    dev_eui = h(v["jsintkey_derivation"]["dev_eui"]) if "jsintkey_derivation" in v else bytes(8)
    join_eui = h(v["join_eui"]) if "join_eui" in v else bytes(8)
    if v["mic_key_role"] == "AppKey":
        dev = SimDevice(dev_eui, join_eui, "1.0.2", h(v["mic_key"]))
    else:
        dev = SimDevice(dev_eui, join_eui, "1.1", bytes(16), h(v["enc_key"]))
    dev.join_request(dev_nonce=n(v.get("dev_nonce", "0000")))
    session = dev.accept(_accept_phypayload(v))
    assert session.join_nonce == n(v["join_nonce"])
    assert session.net_id.hex() == v["net_id"]
    assert session.dev_addr.hex() == v["dev_addr"]
    assert session.dl_settings == n(v["dl_settings"])
    assert session.rx_delay == n(v["rx_delay"])
    assert session.opt_neg is (v["mic_formula"] == "optneg")
    if "derived" in v and "js_int_key" in v["derived"]:
        assert derive_js_int_key(h(v["enc_key"]), dev_eui).hex() == v["derived"]["js_int_key"]


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "mhdr" in v))
def test_join_accept_mic_from_fields(v: dict[str, Any]) -> None:
    plain = h(v["expected"]["plaintext"]) if "plaintext" in v["expected"] else None
    body = (
        h(v["join_nonce_wire"]) + h(v["net_id_wire"]) + h(v["dev_addr_wire"]) + h(v["dl_settings"])
        + h(v["rx_delay"]) + (h(v["cflist"]) if v["cflist"] else b"")
    )
    if v["mic_formula"] == "legacy":
        mic = join_accept_mic_legacy(h(v["mic_key"]), n(v["mhdr"]), body)
    else:
        if "jsintkey_derivation" in v:
            d = v["jsintkey_derivation"]
            key = derive_js_int_key(h(d["nwk_key"]), h(d["dev_eui"]))
        else:
            key = h(v["mic_key"])
        mic = join_accept_mic_optneg(
            key, n(v["join_req_type"]), h(v["join_eui"]), n(v["dev_nonce"]), n(v["mhdr"]), body
        )
    assert mic.hex() == v["expected"]["mic"]
    if plain is not None:
        fields = parse_join_accept(plain)
        assert fields.body == body and fields.mic == mic


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "mic_payload" in v))
def test_join_accept_mic_function_level(v: dict[str, Any]) -> None:
    payload = h(v["mic_payload"])
    if v["mic_formula"] == "legacy":
        mic = join_accept_mic_legacy(h(v["mic_key"]), payload[0], payload[1:])
    else:
        d = v["jsintkey_derivation"]
        key = derive_js_int_key(h(d["nwk_key"]), h(d["dev_eui"]))
        assert key.hex() == v["derived"]["js_int_key"]
        mic = join_accept_mic_optneg(
            key, n(v["join_req_type"]), h(v["join_eui"]), n(v["dev_nonce"]), payload[0], payload[1:]
        )
    assert mic.hex() == v["expected"]["mic"]


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "example passes one key" in v.get("notes", "")))
def test_join_accept_decrypt_and_optneg_mic_with_given_key(v: dict[str, Any]) -> None:
    plain = aes_ecb_encrypt(h(v["enc_key"]), h(v["expected"]["phypayload"])[1:])
    fields = parse_join_accept(h(v["mhdr"]) + plain)
    assert fields.opt_neg
    mic = join_accept_mic_optneg(
        h(v["mic_key"]), n(v["join_req_type"]), h(v["join_eui"]), n(v["dev_nonce"]), fields.mhdr, fields.body
    )
    assert mic.hex() == v["expected"]["mic"] == fields.mic.hex()


@pytest.mark.parametrize("v", cases("join_accept_encryption"))
def test_join_accept_encryption(v: dict[str, Any]) -> None:
    if "jsenckey_derivation" in v:
        d = v["jsenckey_derivation"]
        key = derive_js_enc_key(h(d["nwk_key"]), h(d["dev_eui"]))
        assert key.hex() == v["derived"]["js_enc_key"]
    else:
        key = h(v["key"])
    assert aes_ecb_encrypt(key, h(v["expected"]["ciphertext"])).hex() == v["plaintext"]


# -- session keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", cases("session_keys_10"))
def test_session_keys_10(v: dict[str, Any]) -> None:
    keys = derive_session_keys_10(h(v["key"]), n(v["join_nonce"]), h(v["net_id"]), n(v["dev_nonce"]))
    assert keys.app_s_key.hex() == v["expected"]["app_s_key"]
    if "nwk_s_key" in v["expected"]:
        assert keys.nwk_s_key.hex() == v["expected"]["nwk_s_key"]


@pytest.mark.parametrize("v", cases("session_keys_11", lambda v: v["kind"] != "optneg0"))
def test_session_keys_11(v: dict[str, Any]) -> None:
    keys = derive_session_keys_11(
        h(v["nwk_key"]), h(v["app_key"]), n(v["join_nonce"]), h(v["join_eui"]), n(v["dev_nonce"])
    )
    e = v["expected"]
    assert keys.f_nwk_s_int_key.hex() == e["f_nwk_s_int_key"]
    assert keys.s_nwk_s_int_key.hex() == e["s_nwk_s_int_key"]
    assert keys.nwk_s_enc_key.hex() == e["nwk_s_enc_key"]
    assert keys.app_s_key.hex() == e["app_s_key"]
    if "js_int_key" in e:
        assert derive_js_int_key(h(v["nwk_key"]), h(v["dev_eui"])).hex() == e["js_int_key"]
        assert derive_js_enc_key(h(v["nwk_key"]), h(v["dev_eui"])).hex() == e["js_enc_key"]


@pytest.mark.parametrize("v", cases("session_keys_11", lambda v: v["kind"] == "optneg0"))
def test_session_keys_11_optneg0(v: dict[str, Any]) -> None:
    keys = derive_session_keys_10(h(v["nwk_key"]), n(v["join_nonce"]), h(v["net_id"]), n(v["dev_nonce"]))
    assert keys.f_nwk_s_int_key.hex() == v["expected"]["f_nwk_s_int_key"]
    assert keys.s_nwk_s_int_key == keys.nwk_s_enc_key == keys.f_nwk_s_int_key


@pytest.mark.parametrize("v", cases("rejected"))
def test_rejected_vector_is_not_reproduced(v: dict[str, Any]) -> None:
    keys = derive_session_keys_11(
        h(v["nwk_key"]), h(v["app_key"]), n(v["join_nonce"]), h(v["join_eui"]), n(v["dev_nonce"])
    )
    assert keys.app_s_key.hex() != v["source_values"]["app_s_key"]
    assert keys.s_nwk_s_int_key.hex() != v["source_values"]["s_nwk_s_int_key"]


# -- rejoin ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", cases("rejoin"))
def test_rejoin_request_frame(v: dict[str, Any]) -> None:
    t = v["rejoin_type"]
    frame = build_rejoin_request(
        h(v["key"]), t, h(v["dev_eui"]), n(v["rj_count"]),
        net_id=h(v["net_id"]) if t != 1 else None, join_eui=h(v["join_eui"]) if t == 1 else None,
    )
    assert frame.hex() == v["phypayload"]
    assert frame[-4:].hex() == v["expected"]["mic"]


def test_every_category_is_exercised() -> None:
    covered = {"join_request_mic", "join_accept", "join_accept_encryption", "session_keys_10",
               "session_keys_11", "rejoin", "key_wrap", "aes_cmac", "rejected"}
    assert covered == set(VECTORS) - {"meta"}
