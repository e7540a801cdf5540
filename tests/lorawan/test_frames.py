"""Frame, MIC-input and derivation-block layouts on hand-written bytes: round trips and refusals."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from jsd.lorawan import (
    JOIN_REQ_TYPE_JOIN,
    OPT_NEG,
    FrameError,
    JoinAcceptFields,
    JoinRequest,
    RejoinRequest,
    build_join_request,
    build_rejoin_request,
    has_opt_neg,
    join_accept_body,
    join_accept_mic_input_legacy,
    join_accept_mic_input_optneg,
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
    with_opt_neg,
)

JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
DEV_EUI = bytes.fromhex("0004a30b001c0530")
NET_ID = bytes.fromhex("000013")
DEV_ADDR = bytes.fromhex("26012e43")
MIC = bytes.fromhex("a1b2c3d4")
# EU868 867.1, 867.3, 867.5, 867.7, 867.9 MHz (100 Hz units, little endian), CFListType 0
CF_LIST = bytes.fromhex("184f84 e85684 b85e84 886684 586e84 00")

JOIN_REQUEST = bytes.fromhex("00 010000d07ed5b370 30051c000ba30400 3412 a1b2c3d4")
REJOIN_0 = bytes.fromhex("c000 130000 30051c000ba30400 0200 a1b2c3d4")
REJOIN_1 = bytes.fromhex("c001 010000d07ed5b370 30051c000ba30400 ffff a1b2c3d4")
REJOIN_2 = bytes.fromhex("c002 130000 30051c000ba30400 0000 a1b2c3d4")
ACCEPT_FIELDS = JoinAcceptFields(
    join_nonce=0xABCDEF, net_id=NET_ID, dev_addr=DEV_ADDR, dl_settings=0x83, rx_delay=15, cf_list=CF_LIST
)
ACCEPT_BODY = bytes.fromhex("efcdab 130000 432e0126 83 0f") + CF_LIST


# --- round trips ------------------------------------------------------------------------------------------


def test_join_request_layout() -> None:
    r = parse_join_request(JOIN_REQUEST)
    assert r == JoinRequest(join_eui=JOIN_EUI, dev_eui=DEV_EUI, dev_nonce=0x1234, mic=MIC)
    assert build_join_request(JOIN_EUI, DEV_EUI, 0x1234, MIC) == JOIN_REQUEST
    assert join_request_mic_input(JOIN_REQUEST) == JOIN_REQUEST[:19]


def test_join_request_ignores_rfu_mhdr_bits() -> None:
    """MHDR bits 4..2 are RFU: accepted, and kept in the MIC input because the device MIC'ed them."""
    phy = b"\x1c" + JOIN_REQUEST[1:]
    assert parse_join_request(phy).dev_nonce == 0x1234
    assert join_request_mic_input(phy)[0] == 0x1C


@pytest.mark.parametrize(
    ("phy", "expected"),
    [
        pytest.param(REJOIN_0, RejoinRequest(0, NET_ID, None, DEV_EUI, 2, MIC), id="rejoin/type-0"),
        pytest.param(REJOIN_1, RejoinRequest(1, None, JOIN_EUI, DEV_EUI, 0xFFFF, MIC), id="rejoin/type-1"),
        pytest.param(REJOIN_2, RejoinRequest(2, NET_ID, None, DEV_EUI, 0, MIC), id="rejoin/type-2"),
    ],
)
def test_rejoin_request_layout(phy: bytes, expected: RejoinRequest) -> None:
    assert parse_rejoin_request(phy) == expected
    e = expected
    assert build_rejoin_request(e.rejoin_type, e.net_id, e.join_eui, e.dev_eui, e.rj_count, e.mic) == phy
    assert rejoin_mic_input(phy) == phy[:-4]


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        pytest.param(ACCEPT_FIELDS, ACCEPT_BODY, id="join_accept/cflist/limits"),
        pytest.param(
            JoinAcceptFields(0, NET_ID, DEV_ADDR, 0, 0, None),
            bytes.fromhex("000000 130000 432e0126 00 00"),
            id="join_accept/no-cflist/zero",
        ),
    ],
)
def test_join_accept_body_layout(fields: JoinAcceptFields, body: bytes) -> None:
    assert join_accept_body(fields) == body
    assert parse_join_accept_body(body) == fields
    assert parse_join_accept(b"\x20" + body + MIC) == (fields, MIC)


def test_join_accept_mic_inputs() -> None:
    assert join_accept_mic_input_legacy(ACCEPT_BODY) == b"\x20" + ACCEPT_BODY
    optneg = join_accept_mic_input_optneg(JOIN_REQ_TYPE_JOIN, JOIN_EUI, 0x1234, ACCEPT_BODY)
    assert optneg == bytes.fromhex("ff 010000d07ed5b370 3412 20") + ACCEPT_BODY
    rejoin = join_accept_mic_input_optneg(2, JOIN_EUI, 7, ACCEPT_BODY)
    assert rejoin[:11] == bytes.fromhex("02 010000d07ed5b370 0700")


@pytest.mark.parametrize(
    ("dl_settings", "opt_neg", "expected"),
    [(0x00, True, 0x80), (0x7F, True, 0xFF), (0xFF, False, 0x7F), (0x80, False, 0x00), (0x23, False, 0x23)],
    ids=lambda value: (
        f"{value:#04x}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    ),
)
def test_opt_neg_bit(dl_settings: int, opt_neg: bool, expected: int) -> None:
    assert with_opt_neg(dl_settings, opt_neg) == expected
    assert has_opt_neg(expected) is opt_neg
    assert has_opt_neg(expected) is bool(expected & OPT_NEG)


def test_derivation_blocks_layout() -> None:
    pad = bytes(16)
    blocks_10 = session_key_blocks_10(0xABCDEF, NET_ID, 0x1234)
    fields_10 = bytes.fromhex("efcdab 130000 3412")
    assert blocks_10 == {
        "NwkSKey": (b"\x01" + fields_10 + pad)[:16],
        "AppSKey": (b"\x02" + fields_10 + pad)[:16],
    }
    blocks_11 = session_key_blocks_11(0xABCDEF, JOIN_EUI, 0x1234)
    fields_11 = bytes.fromhex("efcdab 010000d07ed5b370 3412")
    assert blocks_11 == {
        name: (bytes([key_type]) + fields_11 + pad)[:16]
        for name, key_type in (("FNwkSIntKey", 1), ("AppSKey", 2), ("SNwkSIntKey", 3), ("NwkSEncKey", 4))
    }
    assert js_int_key_block(DEV_EUI) == (bytes.fromhex("06 30051c000ba30400") + pad)[:16]
    assert js_enc_key_block(DEV_EUI) == (bytes.fromhex("05 30051c000ba30400") + pad)[:16]


# --- refusals ---------------------------------------------------------------------------------------------


def _accept(**changes: Any) -> Callable[[], object]:
    fields = {**ACCEPT_FIELDS.__dict__, **changes}
    return lambda: join_accept_body(JoinAcceptFields(**fields))


REFUSALS: list[Any] = [
    # Join-request frames
    pytest.param(
        lambda: parse_join_request(JOIN_REQUEST[:22]),
        "JoinRequest must be 23 bytes, got 22",
        id="join_request/short",
    ),
    pytest.param(
        lambda: parse_join_request(JOIN_REQUEST + b"\0"),
        "JoinRequest must be 23 bytes, got 24",
        id="join_request/long",
    ),
    pytest.param(lambda: parse_join_request(b""), "JoinRequest is empty", id="join_request/empty"),
    pytest.param(
        lambda: parse_join_request(b"\x20" + JOIN_REQUEST[1:]),
        "JoinRequest needs MType 000, got 001 (JoinAccept) in MHDR 0x20",
        id="join_request/mtype-join-accept",
    ),
    pytest.param(
        lambda: parse_join_request(b"\x40" + JOIN_REQUEST[1:]),
        "got 010 (UnconfirmedDataUp)",
        id="join_request/mtype-data-up",
    ),
    pytest.param(
        lambda: parse_join_request(b"\x01" + JOIN_REQUEST[1:]),
        "JoinRequest MHDR 0x01 has Major 1; only 0 (LoRaWAN R1) is defined",
        id="join_request/major-1",
    ),
    pytest.param(
        lambda: parse_join_request(b"\x03" + JOIN_REQUEST[1:]), "has Major 3", id="join_request/major-3"
    ),
    pytest.param(
        lambda: join_request_mic_input(REJOIN_1[:23]),
        "got 110 (RejoinRequest)",
        id="join_request/mic-input-of-rejoin",
    ),
    pytest.param(
        lambda: build_join_request(JOIN_EUI[:7], DEV_EUI, 1, MIC),
        "join_eui must be 8 bytes, got 7",
        id="join_request/build-join-eui",
    ),
    pytest.param(
        lambda: build_join_request(JOIN_EUI, DEV_EUI + b"\0", 1, MIC),
        "dev_eui must be 8 bytes, got 9",
        id="join_request/build-dev-eui",
    ),
    pytest.param(
        lambda: build_join_request(JOIN_EUI, DEV_EUI, 0x10000, MIC),
        "dev_nonce must be 0..65535 (2 bytes), got 65536",
        id="join_request/build-dev-nonce-too-big",
    ),
    pytest.param(
        lambda: build_join_request(JOIN_EUI, DEV_EUI, -1, MIC),
        "got -1",
        id="join_request/build-dev-nonce-negative",
    ),
    pytest.param(
        lambda: build_join_request(JOIN_EUI, DEV_EUI, 1, MIC[:3]),
        "mic must be 4 bytes, got 3",
        id="join_request/build-mic",
    ),
    # Rejoin-request frames
    pytest.param(
        lambda: parse_rejoin_request(b"\xc0"),
        "RejoinRequest must be 19 or 24 bytes, got 1",
        id="rejoin/one-byte",
    ),
    pytest.param(
        lambda: parse_rejoin_request(b"\xc0\x03" + REJOIN_0[2:]),
        "RejoinType must be 0, 1 or 2, got 3",
        id="rejoin/type-3",
    ),
    pytest.param(
        lambda: parse_rejoin_request(REJOIN_0 + bytes(5)),
        "RejoinRequest type 0 must be 19 bytes, got 24",
        id="rejoin/type-0-long",
    ),
    pytest.param(
        lambda: parse_rejoin_request(REJOIN_1[:19]),
        "RejoinRequest type 1 must be 24 bytes, got 19",
        id="rejoin/type-1-short",
    ),
    pytest.param(
        lambda: parse_rejoin_request(JOIN_REQUEST), "got 000 (JoinRequest)", id="rejoin/mtype-join-request"
    ),
    pytest.param(lambda: parse_rejoin_request(b"\xc2" + REJOIN_0[1:]), "has Major 2", id="rejoin/major-2"),
    pytest.param(
        lambda: rejoin_mic_input(REJOIN_2[:-1]),
        "type 2 must be 19 bytes, got 18",
        id="rejoin/mic-input-short",
    ),
    pytest.param(
        lambda: build_rejoin_request(3, NET_ID, None, DEV_EUI, 0, MIC),
        "RejoinType must be 0, 1 or 2, got 3",
        id="rejoin/build-type-3",
    ),
    pytest.param(
        lambda: build_rejoin_request(1, None, None, DEV_EUI, 0, MIC),
        "type 1 needs join_eui",
        id="rejoin/build-type-1-no-join-eui",
    ),
    pytest.param(
        lambda: build_rejoin_request(0, NET_ID, JOIN_EUI, DEV_EUI, 0, MIC),
        "type 0 carries no join_eui; pass None",
        id="rejoin/build-type-0-with-join-eui",
    ),
    pytest.param(
        lambda: build_rejoin_request(2, DEV_ADDR, None, DEV_EUI, 0, MIC),
        "net_id must be 3 bytes, got 4",
        id="rejoin/build-net-id",
    ),
    pytest.param(
        lambda: build_rejoin_request(1, None, JOIN_EUI, DEV_EUI, 0x10000, MIC),
        "rj_count must be 0..65535 (2 bytes), got 65536",
        id="rejoin/build-rj-count",
    ),
    # Join-accept body
    pytest.param(
        _accept(rx_delay=16),
        "rx_delay must be 0..15 (RxDelay bits 7..4 are RFU), got 16",
        id="join_accept/rx-delay-16",
    ),
    pytest.param(
        _accept(join_nonce=2**24),
        "join_nonce must be 0..16777215 (3 bytes), got 16777216",
        id="join_accept/join-nonce-2**24",
    ),
    pytest.param(
        _accept(join_nonce=-1),
        "join_nonce must be 0..16777215 (3 bytes), got -1",
        id="join_accept/join-nonce-negative",
    ),
    pytest.param(
        _accept(cf_list=CF_LIST[:15]), "cf_list must be 16 bytes, got 15", id="join_accept/cflist-15"
    ),
    pytest.param(_accept(cf_list=b""), "cf_list must be 16 bytes, got 0", id="join_accept/cflist-empty"),
    pytest.param(
        _accept(dl_settings=256),
        "dl_settings must be one byte (0..255), got 256",
        id="join_accept/dl-settings-256",
    ),
    pytest.param(_accept(net_id=NET_ID[:2]), "net_id must be 3 bytes, got 2", id="join_accept/net-id"),
    pytest.param(
        _accept(dev_addr=DEV_ADDR + b"\0"), "dev_addr must be 4 bytes, got 5", id="join_accept/dev-addr"
    ),
    pytest.param(
        lambda: parse_join_accept_body(ACCEPT_BODY[:11]),
        "JoinAccept body must be 12 or 28 bytes, got 11",
        id="join_accept/parse-body-11",
    ),
    pytest.param(
        lambda: parse_join_accept_body(ACCEPT_BODY[:27]),
        "JoinAccept body must be 12 or 28 bytes, got 27",
        id="join_accept/parse-body-27",
    ),
    pytest.param(
        lambda: parse_join_accept_body(ACCEPT_BODY[:11] + b"\x10"),
        "JoinAccept RxDelay 0x10 has RFU bits 7..4 set",
        id="join_accept/parse-rx-delay-rfu",
    ),
    pytest.param(
        lambda: parse_join_accept(b"\x20" + ACCEPT_BODY[:12] + MIC[:3]),
        "decrypted JoinAccept must be 17 or 33 bytes, got 16",
        id="join_accept/parse-short",
    ),
    pytest.param(
        lambda: parse_join_accept(b"\x00" + ACCEPT_BODY + MIC),
        "JoinAccept needs MType 001, got 000",
        id="join_accept/parse-mtype",
    ),
    # MIC inputs
    pytest.param(
        lambda: join_accept_mic_input_legacy(ACCEPT_BODY[:13]),
        "JoinAccept body must be 12 or 28 bytes, got 13",
        id="mic/legacy-body-13",
    ),
    pytest.param(
        lambda: join_accept_mic_input_optneg(3, JOIN_EUI, 1, ACCEPT_BODY),
        "join_req_type must be 0xff (Join-request) or 0, 1, 2 (Rejoin), got 3",
        id="mic/optneg-join-req-type-3",
    ),
    pytest.param(
        lambda: join_accept_mic_input_optneg(JOIN_REQ_TYPE_JOIN, JOIN_EUI[:7], 1, ACCEPT_BODY),
        "join_eui must be 8 bytes, got 7",
        id="mic/optneg-join-eui",
    ),
    pytest.param(
        lambda: join_accept_mic_input_optneg(JOIN_REQ_TYPE_JOIN, JOIN_EUI, 0x10000, ACCEPT_BODY),
        "dev_nonce must be 0..65535",
        id="mic/optneg-dev-nonce",
    ),
    # derivation blocks
    pytest.param(
        lambda: session_key_blocks_10(1, DEV_ADDR, 1),
        "net_id must be 3 bytes, got 4",
        id="derivation/10-net-id",
    ),
    pytest.param(
        lambda: session_key_blocks_10(2**24, NET_ID, 1),
        "join_nonce must be 0..16777215",
        id="derivation/10-join-nonce",
    ),
    pytest.param(
        lambda: session_key_blocks_11(1, JOIN_EUI[:7], 1),
        "join_eui must be 8 bytes, got 7",
        id="derivation/11-join-eui",
    ),
    pytest.param(
        lambda: session_key_blocks_11(1, JOIN_EUI, 0x10000),
        "dev_nonce must be 0..65535",
        id="derivation/11-dev-nonce",
    ),
    pytest.param(
        lambda: js_int_key_block(DEV_EUI[:7]),
        "dev_eui must be 8 bytes, got 7",
        id="derivation/js-int-dev-eui",
    ),
    pytest.param(
        lambda: js_enc_key_block(b""), "dev_eui must be 8 bytes, got 0", id="derivation/js-enc-dev-eui"
    ),
]


@pytest.mark.parametrize(("call", "message"), REFUSALS)
def test_refusal_names_the_problem(call: Callable[[], object], message: str) -> None:
    with pytest.raises(FrameError, match=re.escape(message)):
        call()


def test_frame_error_is_a_value_error() -> None:
    assert issubclass(FrameError, ValueError)
