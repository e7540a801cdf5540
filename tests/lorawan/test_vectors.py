"""jsd.lorawan against the published join vectors of tests/vectors/ (provenance in each vector and its README).

jsd.lorawan only builds bytes; these tests do the AES with `cryptography` to turn MIC inputs and derivation
blocks into MICs and keys, and compare them with the published values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from jsd.lorawan import (
    MHDR_JOIN_ACCEPT,
    FrameError,
    JoinAcceptFields,
    build_join_request,
    build_rejoin_request,
    join_accept_body,
    join_accept_mic_input_legacy,
    join_accept_mic_input_optneg,
    join_accept_optneg_prefix,
    join_request_mic_input,
    js_enc_key_block,
    js_int_key_block,
    parse_join_accept,
    parse_join_accept_body,
    parse_join_request,
    parse_rejoin_request,
    rejoin_mic_input,
    session_key_blocks_10,
    session_key_blocks_11,
)

Vector = dict[str, Any]


VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "join-vectors.json").read_text()
)

# Categories this package is answerable for; key_wrap belongs to jsd.hsm.
OUR_CATEGORIES = (
    "join_request_mic",
    "join_accept",
    "join_accept_encryption",
    "session_keys_10",
    "session_keys_11",
    "rejoin",
    "rejected",
)
_exercised: set[str] = set()


def cases(category: str, when: Callable[[Vector], bool] = lambda v: True) -> list[Any]:
    """One pytest.param per vector of `category` that satisfies `when`, with an id like "rejoin/rj-ttn-type0"."""
    params = []
    for v in VECTORS[category]:
        if when(v):
            _exercised.add(f"{category}/{v['id']}")
            params.append(pytest.param(v, id=f"{category}/{v['id']}"))
    return params


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def num(hex_string: str) -> int:
    return int(hex_string, 16)


def cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def mic(key: bytes, data: bytes) -> bytes:
    return cmac(key, data)[:4]


def aes_encrypt(key: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(data) + e.finalize()


def aes_decrypt(key: bytes, data: bytes) -> bytes:
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return d.update(data) + d.finalize()


# --- the oracle itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v", [pytest.param(v, id=f"aes_cmac/{v['id']}") for v in VECTORS["aes_cmac"] if "mac" in v["expected"]]
)
def test_cmac_oracle_matches_rfc_4493(v: Vector) -> None:
    assert cmac(h(v["key"]), h(v["message"])) == h(v["expected"]["mac"])


# --- Join-request -----------------------------------------------------------------------------------------


def _well_formed(v: Vector) -> bool:
    return v.get("well_formed", True) is True


@pytest.mark.parametrize("v", cases("join_request_mic", _well_formed))
def test_join_request_parses_to_vector_fields(v: Vector) -> None:
    r = parse_join_request(h(v["phypayload"]))
    assert (r.join_eui, r.dev_eui, r.dev_nonce, r.mic) == (
        h(v["join_eui"]),
        h(v["dev_eui"]),
        num(v["dev_nonce"]),
        h(v["expected"]["mic"]),
    )


@pytest.mark.parametrize("v", cases("join_request_mic", _well_formed))
def test_join_request_mic(v: Vector) -> None:
    phy = h(v["phypayload"])
    mic_input = join_request_mic_input(phy)
    assert mic_input == h(v["mhdr"] + v["join_eui_wire"] + v["dev_eui_wire"] + v["dev_nonce_wire"])
    assert mic(h(v["key"]), mic_input) == h(v["expected"]["mic"])


@pytest.mark.parametrize("v", cases("join_request_mic", _well_formed))
def test_join_request_build_round_trip(v: Vector) -> None:
    r = parse_join_request(h(v["phypayload"]))
    assert build_join_request(r.join_eui, r.dev_eui, r.dev_nonce, r.mic) == h(v["phypayload"])


@pytest.mark.parametrize("v", cases("join_request_mic", lambda v: not _well_formed(v)))
def test_join_request_function_level_vector_is_not_a_frame(v: Vector) -> None:
    """The raw 19 bytes carry MHDR 0x01 (Major 1), so only the CMAC truncation is checked; the frame is refused."""
    assert mic(h(v["key"]), h(v["mic_input"])) == h(v["expected"]["mic"])
    with pytest.raises(FrameError, match="Major 1"):
        join_request_mic_input(h(v["mic_input"]) + h(v["expected"]["mic"]))


# --- Join-accept ------------------------------------------------------------------------------------------


def _has_fields(v: Vector) -> bool:
    return "join_nonce" in v


def _rx_delay_in_range(v: Vector) -> bool:
    return _has_fields(v) and num(v["rx_delay"]) <= 0x0F


def _accept_phypayload(v: Vector) -> bytes | None:
    """The encrypted accept: a source literal where there is one, else the vector's derived value."""
    phy = v["expected"].get("phypayload") or v.get("derived", {}).get("phypayload")
    return None if phy is None else h(phy)


def accept_fields(v: Vector) -> JoinAcceptFields:
    return JoinAcceptFields(
        join_nonce=num(v["join_nonce"]),
        net_id=h(v["net_id"]),
        dev_addr=h(v["dev_addr"]),
        dl_settings=num(v["dl_settings"]),
        rx_delay=num(v["rx_delay"]),
        cf_list=h(v["cflist"]) if v["cflist"] else None,
    )


def wire_body(v: Vector) -> bytes:
    """The accept body assembled from the vector's own air-order fields, independent of jsd.lorawan."""
    return h(
        v["join_nonce_wire"]
        + v["net_id_wire"]
        + v["dev_addr_wire"]
        + v["dl_settings"]
        + v["rx_delay"]
        + (v["cflist"] or "")
    )


def accept_mic_key(v: Vector) -> bytes:
    """The accept MIC key: given directly, or JSIntKey derived from NwkKey and DevEUI."""
    derivation = v.get("jsintkey_derivation")
    if derivation is None:
        return h(v["mic_key"])
    return aes_encrypt(h(derivation["nwk_key"]), js_int_key_block(h(derivation["dev_eui"])))


def accept_mic_input(v: Vector, body: bytes) -> bytes:
    if v["mic_formula"] == "legacy":
        return join_accept_mic_input_legacy(body)
    return join_accept_mic_input_optneg(num(v["join_req_type"]), h(v["join_eui"]), num(v["dev_nonce"]), body)


@pytest.mark.parametrize("v", cases("join_accept", _rx_delay_in_range))
def test_join_accept_body_from_fields(v: Vector) -> None:
    body = join_accept_body(accept_fields(v))
    assert body == wire_body(v)
    assert parse_join_accept_body(body) == accept_fields(v)


@pytest.mark.parametrize("v", cases("join_accept", lambda v: _has_fields(v) and not _rx_delay_in_range(v)))
def test_join_accept_body_refuses_rfu_rx_delay(v: Vector) -> None:
    """TTN's test data puts 0x42 in RxDelay; bits 7..4 are RFU, so jsd neither builds nor parses such a body."""
    with pytest.raises(FrameError, match="rx_delay must be 0..15"):
        join_accept_body(accept_fields(v))
    with pytest.raises(FrameError, match="RFU"):
        parse_join_accept_body(wire_body(v))


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "jsintkey_derivation" in v and "derived" in v))
def test_js_int_key_from_nwk_key(v: Vector) -> None:
    assert accept_mic_key(v) == h(v["derived"]["js_int_key"])


@pytest.mark.parametrize("v", cases("join_accept", _has_fields))
def test_join_accept_mic(v: Vector) -> None:
    assert mic(accept_mic_key(v), accept_mic_input(v, wire_body(v))) == h(v["expected"]["mic"])


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "plaintext" in v["expected"]))
def test_join_accept_plaintext_layout(v: Vector) -> None:
    assert h(v["expected"]["plaintext"]) == bytes([MHDR_JOIN_ACCEPT]) + wire_body(v) + h(v["expected"]["mic"])


@pytest.mark.parametrize("v", cases("join_accept", lambda v: "mic_payload" in v))
def test_join_accept_mic_function_level(v: Vector) -> None:
    """mic_payload stands for MHDR | body (13 bytes of 0x01), so the OptNeg prefix is checked on its own."""
    payload = h(v["mic_payload"])
    if v["mic_formula"] == "optneg":
        payload = (
            join_accept_optneg_prefix(num(v["join_req_type"]), h(v["join_eui"]), num(v["dev_nonce"]))
            + payload
        )
    assert mic(accept_mic_key(v), payload) == h(v["expected"]["mic"])


@pytest.mark.parametrize(
    "v", cases("join_accept", lambda v: _has_fields(v) and _accept_phypayload(v) is not None)
)
def test_join_accept_encryption_is_aes_decrypt(v: Vector) -> None:
    phy = _accept_phypayload(v)
    assert phy is not None
    plaintext = wire_body(v) + h(v["expected"]["mic"])
    assert phy[0] == MHDR_JOIN_ACCEPT
    assert aes_decrypt(h(v["enc_key"]), plaintext) == phy[1:]


@pytest.mark.parametrize(
    "v", cases("join_accept", lambda v: _rx_delay_in_range(v) and _accept_phypayload(v) is not None)
)
def test_join_accept_parse_after_device_decryption(v: Vector) -> None:
    phy = _accept_phypayload(v)
    assert phy is not None
    plain = phy[:1] + aes_encrypt(h(v["enc_key"]), phy[1:])
    assert parse_join_accept(plain) == (accept_fields(v), h(v["expected"]["mic"]))


@pytest.mark.parametrize("v", cases("join_accept_encryption"))
def test_join_accept_encryption_key(v: Vector) -> None:
    derivation = v.get("jsenckey_derivation")
    if derivation is None:
        key = h(v["key"])
    else:
        key = aes_encrypt(h(derivation["nwk_key"]), js_enc_key_block(h(derivation["dev_eui"])))
        assert key == h(v["derived"]["js_enc_key"])
    assert aes_decrypt(key, h(v["plaintext"])) == h(v["expected"]["ciphertext"])


# --- Session keys -----------------------------------------------------------------------------------------

_KEYS_10 = {"nwk_s_key": "NwkSKey", "app_s_key": "AppSKey"}
# expected name -> (block name, root key used to encrypt it) for OptNeg=1
_KEYS_11 = {
    "f_nwk_s_int_key": ("FNwkSIntKey", "nwk_key"),
    "s_nwk_s_int_key": ("SNwkSIntKey", "nwk_key"),
    "nwk_s_enc_key": ("NwkSEncKey", "nwk_key"),
    "app_s_key": ("AppSKey", "app_key"),
}
_JS_KEYS = {"js_int_key": js_int_key_block, "js_enc_key": js_enc_key_block}


@pytest.mark.parametrize("v", cases("session_keys_10"))
def test_session_keys_10(v: Vector) -> None:
    blocks = session_key_blocks_10(num(v["join_nonce"]), h(v["net_id"]), num(v["dev_nonce"]))
    fields = h(v["join_nonce_wire"] + v["net_id_wire"] + v["dev_nonce_wire"])
    assert blocks == {
        "NwkSKey": (b"\x01" + fields).ljust(16, b"\0"),
        "AppSKey": (b"\x02" + fields).ljust(16, b"\0"),
    }
    derived = {name: aes_encrypt(h(v["key"]), blocks[_KEYS_10[name]]) for name in v["expected"]}
    assert derived == {name: h(value) for name, value in v["expected"].items()}


@pytest.mark.parametrize("v", cases("session_keys_11", lambda v: v["kind"] in ("session", "session+js")))
def test_session_keys_11_optneg1(v: Vector) -> None:
    blocks = session_key_blocks_11(num(v["join_nonce"]), h(v["join_eui"]), num(v["dev_nonce"]))
    fields = h(v["join_nonce_wire"] + v["join_eui_wire"] + v["dev_nonce_wire"])
    key_types = {"FNwkSIntKey": 0x01, "AppSKey": 0x02, "SNwkSIntKey": 0x03, "NwkSEncKey": 0x04}
    assert blocks == {name: (bytes([t]) + fields).ljust(16, b"\0") for name, t in key_types.items()}
    expected = {name: h(value) for name, value in v["expected"].items() if name in _KEYS_11}
    derived = {name: aes_encrypt(h(v[_KEYS_11[name][1]]), blocks[_KEYS_11[name][0]]) for name in expected}
    assert derived == expected


@pytest.mark.parametrize("v", cases("session_keys_11", lambda v: v["kind"] == "session+js"))
def test_js_keys(v: Vector) -> None:
    derived = {name: aes_encrypt(h(v["nwk_key"]), block(h(v["dev_eui"]))) for name, block in _JS_KEYS.items()}
    assert derived == {name: h(v["expected"][name]) for name in _JS_KEYS}


@pytest.mark.parametrize("v", cases("session_keys_11", lambda v: v["kind"] == "optneg0"))
def test_session_keys_11_device_on_1_0_network(v: Vector) -> None:
    """OptNeg=0: the 1.0 layout under NwkKey; FNwkSIntKey = SNwkSIntKey = NwkSEncKey (1.1 §6.2.3)."""
    blocks = session_key_blocks_10(num(v["join_nonce"]), h(v["net_id"]), num(v["dev_nonce"]))
    network_key = aes_encrypt(h(v["nwk_key"]), blocks["NwkSKey"])
    expected_network_keys = {
        name: v["expected"][name] for name in _KEYS_11 if name != "app_s_key" and name in v["expected"]
    }
    assert expected_network_keys
    assert {h(value) for value in expected_network_keys.values()} == {network_key}


@pytest.mark.parametrize("v", cases("rejected"))
def test_rejected_vector_is_not_our_1_1_derivation(v: Vector) -> None:
    """The source derived rejoin keys with the 1.0 layout under NwkKey; jsd's 1.1 blocks must not reproduce them.

    The 1.0 layout must explain the values, or the vector is not what its stated reason says.
    """
    blocks_11 = session_key_blocks_11(num(v["join_nonce"]), h(v["join_eui"]), num(v["dev_nonce"]))
    legacy = session_key_blocks_10(num(v["join_nonce"]), h(v["net_id"]), num(v["dev_nonce"]))["NwkSKey"]
    key_types = {"f_nwk_s_int_key": 0x01, "app_s_key": 0x02, "s_nwk_s_int_key": 0x03, "nwk_s_enc_key": 0x04}
    for name, value in v["source_values"].items():
        block, root = _KEYS_11[name]
        assert aes_encrypt(h(v[root]), blocks_11[block]) != h(value), name
        assert aes_encrypt(h(v["nwk_key"]), bytes([key_types[name]]) + legacy[1:]) == h(value), name


# --- Rejoin-request ---------------------------------------------------------------------------------------


def _rejoin_identifier(v: Vector) -> tuple[bytes | None, bytes | None]:
    """(net_id, join_eui) as the vector gives them; exactly one is present."""
    return (h(v["net_id"]) if "net_id" in v else None, h(v["join_eui"]) if "join_eui" in v else None)


@pytest.mark.parametrize("v", cases("rejoin"))
def test_rejoin_parses_to_vector_fields(v: Vector) -> None:
    r = parse_rejoin_request(h(v["phypayload"]))
    assert (r.rejoin_type, (r.net_id, r.join_eui), r.dev_eui, r.rj_count, r.mic) == (
        v["rejoin_type"],
        _rejoin_identifier(v),
        h(v["dev_eui"]),
        num(v["rj_count"]),
        h(v["expected"]["mic"]),
    )


@pytest.mark.parametrize("v", cases("rejoin"))
def test_rejoin_mic(v: Vector) -> None:
    identifier_wire = v.get("net_id_wire") or v["join_eui_wire"]
    mic_input = rejoin_mic_input(h(v["phypayload"]))
    assert mic_input == h(v["mhdr"]) + bytes([v["rejoin_type"]]) + h(
        identifier_wire + v["dev_eui_wire"] + v["rj_count_wire"]
    )
    assert mic(h(v["key"]), mic_input) == h(v["expected"]["mic"])


@pytest.mark.parametrize("v", cases("rejoin"))
def test_rejoin_build_round_trip(v: Vector) -> None:
    r = parse_rejoin_request(h(v["phypayload"]))
    rebuilt = build_rejoin_request(r.rejoin_type, r.net_id, r.join_eui, r.dev_eui, r.rj_count, r.mic)
    assert rebuilt == h(v["phypayload"])


# --- completeness -----------------------------------------------------------------------------------------


def test_every_vector_is_exercised() -> None:
    """A vector of a new shape must get a test, not be skipped silently by the filters above."""
    every = {f"{category}/{v['id']}" for category in OUR_CATEGORIES for v in VECTORS[category]}
    assert every - _exercised == set()
