"""The wire models validate as the document says: errors name their field, cross-member rules hold, text is printable."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest

from jsd.api.openapi import document
from jsd.ownership.model import NOT_TEXT, is_text
from jsd.wire import Invalid, validate
from jsd.wire import requests as wire

KEY = "00112233445566778899aabbccddeeff"


def fields(model: Any, value: Any) -> list[str | None]:
    with pytest.raises(Invalid) as refused:
        validate(model, value)
    return [field for field, _ in refused.value.errors]


def test_the_text_rule_refuses_only_characters_python_calls_unprintable() -> None:
    """The rule refuses no printable character, and of the unprintable ones lets through only ZWNJ/ZWJ (which
    scripts and emoji need) and characters beyond the Basic Multilingual Plane; the document's class is the same
    rule but for unpaired surrogates, which JSON bodies cannot carry past jsd.bodies."""
    refused = re.compile(f"[{NOT_TEXT}]")
    assert not any(chr(c).isprintable() for c in range(0x110000) if not is_text(chr(c)))
    let_through = [c for c in range(0x10000) if not chr(c).isprintable() and is_text(chr(c))]
    assert {unicodedata.category(chr(c)) for c in let_through if c not in (0x200C, 0x200D)} <= {"Cn"}
    assert {c for c in range(0x10000) if not is_text(chr(c))} - {c for c in range(0x10000) if refused.match(chr(c))} == set(
        range(0xD800, 0xE000)
    )


@pytest.mark.parametrize(
    "name",
    ["Ferme du Lac", "مزرعة", "खेत", "Ферма", "農場", "نام\u200cها", "🐄 barn", "👨\u200d🌾", "#12 (north)"],
)
def test_names_in_every_script_are_text(name: str) -> None:
    assert is_text(name)
    validate(wire.DeviceImport, {"dev_eui": "0102030405060708", "mac_version": "1.0.3", "generate_keys": True, "name": name})


@pytest.mark.parametrize("name", ["tab\there", "new\nline", "bidi\u202eevil", "soft\xadhyphen", "nul\x00", "pua\ue000"])
def test_control_and_invisible_characters_are_refused(name: str) -> None:
    assert not is_text(name)
    assert fields(wire.DeviceImport, {"dev_eui": "0102030405060708", "mac_version": "1.0.3", "generate_keys": True,
                                      "name": name}) == ["name"]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"dev_eui": "0102030405060708", "mac_version": "1.1", "app_key": KEY}, ["nwk_key"]),
        ({"dev_eui": "0102030405060708", "mac_version": "1.0.3", "app_key": KEY, "nwk_key": KEY}, ["nwk_key"]),
        ({"dev_eui": "01", "mac_version": "1.0.3", "generate_keys": True}, ["dev_eui"]),
        ({"dev_eui": "0102030405060708", "mac_version": "1.0.3", "secure_element": True}, ["tkm_info"]),
        ({"dev_eui": "0102030405060708", "mac_version": "1.0.3", "generate_keys": "yes"}, ["app_key", "generate_keys"]),
    ],
)
def test_a_device_is_refused_naming_its_fields_without_variant_names(body: dict[str, Any], named: list[str]) -> None:
    assert fields(wire.DeviceImport, body) == named


def test_the_device_variants_accept_what_the_document_shows() -> None:
    for body in (
        {"dev_eui": "0X0102030405060708", "mac_version": "1.1", "app_key": KEY, "nwk_key": KEY.upper()},
        {"dev_eui": "0102030405060708", "mac_version": "1.0.2", "generate_keys": True, "name": None},
        {"dev_eui": "0102030405060708", "mac_version": "1.1", "secure_element": True, "tkm_info": "00" * 10},
    ):
        validate(wire.DeviceImport, body)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"net_id": "000013", "kek_label": "ns-1"}, ["token"]),
        ({"net_id": "000013", "kek_label": "ns-1", "token": "t" * 16, "generate_token": True}, ["generate_token"]),
        ({"net_id": "000013", "kek_label": "ns-1", "generate_token": True, "async_mode": True}, ["answer_url"]),
        ({"net_id": "000013", "kek_label": "jsd-1", "generate_token": True}, ["kek_label"]),
    ],
)
def test_a_network_server_needs_one_credential(body: dict[str, Any], named: list[str]) -> None:
    assert fields(wire.NetworkServerIn, body) == named


def test_the_network_server_rules_are_in_the_document_too() -> None:
    schema = document()["components"]["schemas"]["NetworkServerIn"]
    assert {"anyOf", "not", "if", "then"} <= set(schema)


def test_strict_types_and_null_as_absent() -> None:
    assert fields(wire.AccountIn, {"id": "acme", "kind": "operator", "name": 7}) == ["name"]
    assert fields(wire.Page, {"limit": "5"}) == ["limit"]
    assert fields(wire.AstkIn, {"name": "as1", "key": True}) == ["key"]
    assert validate(wire.AstkIn, {"name": "as1", "key": None}).key is None
    assert fields(wire.ClaimByQr, {"qr": "LW:D0:70B3D57ED0000001:0102030405060708:00000000"}) == ["qr"]


def test_the_hsm_group_rule_is_the_one_the_hsm_enforces() -> None:
    """A group the document allows must never reach the HSM's own check and fail there (a 400 from inside)."""
    from jsd.hsm.recipe import check_group

    body = {"dev_eui": "0102030405060708", "mac_version": "1.0.3", "generate_keys": True}
    for refused in ("_x", "-x", ".x", "x" * 49, ""):
        assert fields(wire.DeviceImport, {**body, "hsm_group": refused}) == ["hsm_group"]
        with pytest.raises(ValueError):
            check_group(refused)
    for allowed in ("default", "g-1.x_y", "x" * 48):
        validate(wire.DeviceImport, {**body, "hsm_group": allowed})
        assert check_group(allowed) == allowed
