"""Strict LBI decoding: tolerant hex (case, 0x), strict lengths, every field named in the error."""

from __future__ import annotations

from typing import Any

import pytest

from jsd.lbi.codec import DecodeError, decode_header, decode_hex, decode_join_params

JOIN_REQ: dict[str, Any] = {
    "ProtocolVersion": "1.0",
    "SenderID": "000013",
    "ReceiverID": "0000000000000001",
    "TransactionID": 3407751389,
    "MessageType": "JoinReq",
    "MACVersion": "1.0.3",
    "PHYPayload": "00010000000000000008070605040302010100c2b4322f",
    "DevEUI": "0102030405060708",
    "DevAddr": "26011bda",
    "DLSettings": "00",
    "RxDelay": 1,
}


def test_chirpstack_join_req_decodes() -> None:
    header = decode_header(JOIN_REQ)
    params = decode_join_params(JOIN_REQ, header)
    assert header.transaction_id == 3407751389
    assert params.dev_eui == bytes.fromhex("0102030405060708")
    assert params.dev_addr == bytes.fromhex("26011bda")
    assert params.receiver_id == bytes.fromhex("0000000000000001")
    assert params.cf_list is None
    assert len(params.phy_payload) == 23


@pytest.mark.parametrize("value", ["0102030405060708", "0X0102030405060708", "0x0102030405060708", "0102030405060708".upper()])
def test_hex_accepts_case_and_prefix(value: str) -> None:
    assert decode_hex({"DevEUI": value}, "DevEUI", 8) == bytes.fromhex("0102030405060708")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("DevEUI", "01020304050607", "DevEUI must be 8 bytes"),
        ("DevEUI", "zz02030405060708", "DevEUI is not valid hex"),
        ("DevEUI", None, "DevEUI is missing"),
        ("DevEUI", 12, "DevEUI must be a hex string"),
        ("DevAddr", "26011bda00", "DevAddr must be 4 bytes"),
        ("DLSettings", "0000", "DLSettings must be 1 bytes"),
        ("RxDelay", 16, "RxDelay must be between 0 and 15"),
        ("RxDelay", "1", "RxDelay must be an integer"),
        ("RxDelay", True, "RxDelay must be an integer"),
        ("CFList", "00" * 15, "CFList must be 16 bytes"),
        ("MACVersion", "2.0", "MACVersion '2.0' is not a LoRaWAN version"),
        ("MACVersion", None, "MACVersion is missing"),
        ("MACVersion", 1.1, "MACVersion must be a string"),
        ("PHYPayload", "0g", "PHYPayload is not valid hex"),
        ("ReceiverID", "000013", "ReceiverID must be a JoinEUI"),
    ],
)
def test_bad_fields_are_named(field: str, value: Any, message: str) -> None:
    message_body = dict(JOIN_REQ)
    if value is None:
        del message_body[field]
    else:
        message_body[field] = value
    with pytest.raises(DecodeError, match=message):
        decode_join_params(message_body, decode_header(message_body))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MessageType": None}, "MessageType is missing"),
        ({"SenderID": None}, "SenderID is missing"),
        ({"SenderID": ""}, "SenderID is missing"),
        ({"SenderID": {"a": 1}}, "SenderID must be a string"),
        ({"ReceiverID": 1}, "ReceiverID must be a string"),
        ({"MessageType": ["JoinReq"]}, "MessageType must be a string"),
        ({"ProtocolVersion": 1.0}, "ProtocolVersion must be a string"),
        ({"ProtocolVersion": None}, "ProtocolVersion is missing"),
        ({"TransactionID": -1}, "TransactionID"),
        ({"TransactionID": 2**32}, "TransactionID"),
        ({"TransactionID": "7"}, "TransactionID"),
        ({"SenderToken": 5}, "SenderToken"),
    ],
)
def test_bad_headers(change: dict[str, Any], message: str) -> None:
    body = {**JOIN_REQ, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(DecodeError, match=message):
        decode_header(body)


def test_non_object_body() -> None:
    with pytest.raises(DecodeError, match="JSON object"):
        decode_header([JOIN_REQ])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("DevEUI", "01 02 03 04 05 06 07 08"),
        ("DevEUI", "01020304\t05060708"),
        ("DevEUI", "0102030405060708\n"),
        ("DevEUI", " 0102030405060708"),
        ("DevAddr", "2601 1bda"),
        ("DLSettings", "0 0"),
        ("PHYPayload", "00 01"),
        ("CFList", "00" * 15 + " 00"),
        ("DevEUI", "0x 0102030405060708"),
        ("DevEUI", "\u0660102030405060708"),
    ],
)
def test_whitespace_or_other_characters_inside_hex_are_refused(field: str, value: str) -> None:
    body = {**JOIN_REQ, field: value}
    with pytest.raises(DecodeError, match=f"{field} is not valid hex"):
        decode_join_params(body, decode_header(body))


@pytest.mark.parametrize("receiver", ["0000000000000001\n", "00000000 00000001"])
def test_whitespace_in_receiver_id_is_refused(receiver: str) -> None:
    body = {**JOIN_REQ, "ReceiverID": receiver}
    with pytest.raises(DecodeError, match="ReceiverID"):
        decode_join_params(body, decode_header(body))


def test_transaction_id_is_required() -> None:
    body = {k: v for k, v in JOIN_REQ.items() if k != "TransactionID"}
    with pytest.raises(DecodeError, match="TransactionID is missing"):
        decode_header(body)


def test_transaction_id_zero_is_a_value() -> None:
    assert decode_header({**JOIN_REQ, "TransactionID": 0}).transaction_id == 0


def test_the_things_stack_join_req_decodes() -> None:
    """The Things Stack (lorawan-stack pkg/interop): upper-case hex, SenderNSID, MACVersion "1.1", CFList ""."""
    body = {
        "ProtocolVersion": "1.1", "TransactionID": 0, "MessageType": "JoinReq", "SenderID": "000013",
        "ReceiverID": "70B3D57ED0000001", "SenderNSID": "000013", "MACVersion": "1.1",
        "PHYPayload": "00010000000000000008070605040302010100C2B4322F", "DevEUI": "0102030405060708",
        "DevAddr": "26011BDA", "DLSettings": "80", "RxDelay": 5, "CFList": "",
    }
    header = decode_header(body)
    params = decode_join_params(body, header)
    assert (header.protocol_version, header.transaction_id) == ("1.1", 0)
    assert params.receiver_id == bytes.fromhex("70b3d57ed0000001")
    assert params.dev_addr == bytes.fromhex("26011bda") and params.dl_settings == 0x80
    assert params.cf_list is None and params.mac_version.value == "1.1"


def test_chirpstack_1_1_join_req_decodes() -> None:
    """ChirpStack v4 (backend crate): lower-case hex, MACVersion "1.1.0", no CFList member."""
    body = {**JOIN_REQ, "MACVersion": "1.1.0", "DLSettings": "80"}
    params = decode_join_params(body, decode_header(body))
    assert params.mac_version.value == "1.1" and params.cf_list is None


def test_session_key_id_is_strict_hex_of_either_case() -> None:
    from jsd.lbi.codec import decode_session_key_id

    assert decode_session_key_id({"SessionKeyID": "AB" * 16}) == "ab" * 16
    for bad in ("ab ab", "abab\n", "ab" * 65):
        with pytest.raises(DecodeError, match="SessionKeyID"):
            decode_session_key_id({"SessionKeyID": bad})
