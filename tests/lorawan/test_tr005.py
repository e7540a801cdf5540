"""TR005 QR strings: the spec example, derived checksum vectors, TTS's parser vectors and our stricter refusals.

Sources: the spec example is LoRa Alliance TR005 Appendix A (also in The Things Stack's Console QR parser); the two
round-trip vectors were computed with the CRC-16/MODBUS rule that reproduces the example's ``CAF2C``; the
valid/invalid strings are the vectors of The Things Stack's
``pkg/qrcodegenerator/qrcode/enddevices/lora_alliance_tr005_test.go`` (TheThingsNetwork/lorawan-stack@1d21821).
"""

from __future__ import annotations

import pytest

from jsd.lorawan.tr005 import DeviceQr, QrChecksumError, QrCodeError, build_qr, crc16_modbus, parse_qr

SPEC_EXAMPLE = "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:SYYWWNNNNNN:PFOOBAR:CAF2C"
TTS_VALID = "LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42"
TTS_FIELDS = DeviceQr(
    join_eui=bytes.fromhex("42FFFFFFFFFFFFFF"),
    dev_eui=bytes.fromhex("4242FFFFFFFFFFFF"),
    profile_id=b"\x42\xff\xff\x42",
)

PARSED: dict[str, tuple[str, DeviceQr]] = {
    "spec/appendix A example": (
        SPEC_EXAMPLE,
        DeviceQr(
            join_eui=bytes.fromhex("1122334455667788"),
            dev_eui=bytes.fromhex("AABBCCDDEEFF0011"),
            profile_id=bytes.fromhex("AABB1122"),
            owner_token="AABBCCDDEEFF",
            serial="YYWWNNNNNN",
            proprietary="FOOBAR",
        ),
    ),
    "tts/valid": (TTS_VALID, TTS_FIELDS),
    "tts/empty extensions ignored": (TTS_VALID + ":O:S:P", TTS_FIELDS),
    "unknown tags ignored": (TTS_VALID + ":XFOO:V123:O1234", DeviceQr(**{**vars(TTS_FIELDS), "owner_token": "1234"})),
    "empty parts ignored": (TTS_VALID + "::O1234:", DeviceQr(**{**vars(TTS_FIELDS), "owner_token": "1234"})),
    "lowercase hex normalised": (
        "LW:D0:1122334455667788:aabbccddeeff0011:aabb1122:Oabcd",
        DeviceQr(
            join_eui=bytes.fromhex("1122334455667788"),
            dev_eui=bytes.fromhex("AABBCCDDEEFF0011"),
            profile_id=bytes.fromhex("AABB1122"),
            owner_token="ABCD",
        ),
    ),
    "extensions in any order, checksum verified where it stands": (
        "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:PFOOBAR:SYYWWNNNNNN:OAABBCCDDEEFF:C58D2",
        parse_qr(SPEC_EXAMPLE),
    ),
    "checksum first covers only the mandatory part": (
        "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:C0757:OAABBCCDDEEFF",
        DeviceQr(
            join_eui=bytes.fromhex("1122334455667788"),
            dev_eui=bytes.fromhex("AABBCCDDEEFF0011"),
            profile_id=bytes.fromhex("AABB1122"),
            owner_token="AABBCCDDEEFF",
        ),
    ),
    "surrounding whitespace stripped": (f"  {SPEC_EXAMPLE}\r\n", parse_qr(SPEC_EXAMPLE)),
}


@pytest.mark.parametrize("text, expected", PARSED.values(), ids=PARSED.keys())
def test_parse(text: str, expected: DeviceQr) -> None:
    assert parse_qr(text) == expected


ROUND_TRIPS: dict[str, str] = {
    "spec/appendix A example": SPEC_EXAMPLE,
    "derived/32-hex owner token": (
        "LW:D0:70B3D57ED0000000:0004A30B001C0530:00000000:O0123456789ABCDEF0123456789ABCDEF:CA6B0"
    ),
    "derived/8-hex owner token": "LW:D0:0016C001FFFE0001:0016C001FFFE0002:00000000:OA1B2C3D4:C4BAE",
}


@pytest.mark.parametrize("text", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_round_trip_is_exact(text: str) -> None:
    assert build_qr(parse_qr(text)) == text


def test_build_without_checksum_is_the_canonical_tts_form() -> None:
    assert build_qr(parse_qr(TTS_VALID + ":O:S:P"), checksum=False) == TTS_VALID


def test_build_defaults_profile_to_zero_and_orders_o_s_p_then_c() -> None:
    qr = DeviceQr(join_eui=bytes(8), dev_eui=bytes(range(8)), proprietary="X", serial="S1", owner_token="T1")
    text = build_qr(qr)
    assert text.startswith("LW:D0:0000000000000000:0001020304050607:00000000:OT1:SS1:PX:C")
    assert text == text.upper()
    assert parse_qr(text) == qr


@pytest.mark.parametrize(
    "data, crc",
    [(b"123456789", 0x4B37), (b"", 0xFFFF), (SPEC_EXAMPLE.rsplit(":C", 1)[0].encode(), 0xAF2C)],
    ids=["check value", "empty", "spec example"],
)
def test_crc16_modbus(data: bytes, crc: int) -> None:
    assert crc16_modbus(data) == crc


REFUSED: dict[str, tuple[str, str]] = {
    "tts/too few parts": ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF", "at least 5"),
    "tts/invalid JoinEUI": ("LW:D0:42FFFFFFFF:4242FFFFFFFFFFFF:42FFFF42", "JoinEUI"),
    "tts/invalid ProfileID": ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42AABB", "ProfileID"),
    "invalid DevEUI": ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFG:42FFFF42", "DevEUI"),
    "EUI with spaces": ("LW:D0:42FFFFFFFFFFFF F:4242FFFFFFFFFFFF:42FFFF42", "JoinEUI"),
    "wrong preface": ("URN:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42", "expected LW:D0"),
    "wrong schema": ("LW:D1:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42", "expected LW:D0"),
    "checksum not hex": (TTS_VALID + ":CXYZW", "checksum"),
    "checksum too short": (TTS_VALID + ":C12", "checksum"),
    "owner token punctuation": (TTS_VALID + ":OAB-CD", "extension O"),
    "duplicate tag": (TTS_VALID + ":O12:O34", "twice"),
    "non-ASCII": (TTS_VALID + ":PFOÖ", "non-ASCII"),
}


@pytest.mark.parametrize("text, message", REFUSED.values(), ids=REFUSED.keys())
def test_refused(text: str, message: str) -> None:
    with pytest.raises(QrCodeError, match=message):
        parse_qr(text)


@pytest.mark.parametrize("index", range(2, 8), ids=["JoinEUI", "DevEUI", "ProfileID", "O", "S", "P"])
def test_flipped_character_is_a_checksum_mismatch(index: int) -> None:
    parts = SPEC_EXAMPLE.split(":")
    parts[index] = parts[index][:-1] + ("A" if parts[index][-1] != "A" else "B")
    with pytest.raises(QrChecksumError) as caught:
        parse_qr(":".join(parts))
    assert caught.value.stated == 0xAF2C
    assert caught.value.computed != 0xAF2C


def test_altered_checksum_is_a_mismatch() -> None:
    with pytest.raises(QrChecksumError, match="label says AF2D"):
        parse_qr(SPEC_EXAMPLE[:-1] + "D")


BUILD_REFUSED: dict[str, tuple[DeviceQr, str]] = {
    "short JoinEUI": (DeviceQr(join_eui=bytes(7), dev_eui=bytes(8)), "join_eui"),
    "long DevEUI": (DeviceQr(join_eui=bytes(8), dev_eui=bytes(9)), "dev_eui"),
    "short ProfileID": (DeviceQr(join_eui=bytes(8), dev_eui=bytes(8), profile_id=bytes(3)), "profile_id"),
    "lowercase owner token": (DeviceQr(join_eui=bytes(8), dev_eui=bytes(8), owner_token="abcd"), "owner_token"),
    "empty serial": (DeviceQr(join_eui=bytes(8), dev_eui=bytes(8), serial=""), "serial"),
    "colon in proprietary": (DeviceQr(join_eui=bytes(8), dev_eui=bytes(8), proprietary="A:B"), "proprietary"),
}


@pytest.mark.parametrize("qr, message", BUILD_REFUSED.values(), ids=BUILD_REFUSED.keys())
def test_build_refused(qr: DeviceQr, message: str) -> None:
    with pytest.raises(QrCodeError, match=message):
        build_qr(qr)
