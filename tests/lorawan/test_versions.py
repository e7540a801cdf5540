"""MAC version strings and the rules that hang on them."""

from __future__ import annotations

import pytest

from jsd.lorawan import MACVersion, dev_nonce_is_counter, is_1_1, parse_mac_version


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1.0.0", MACVersion.V1_0_0),
        ("1.0", MACVersion.V1_0_0),  # The Things Stack's spelling of LoRaWAN 1.0.0
        ("1.0.1", MACVersion.V1_0_1),
        ("1.0.2", MACVersion.V1_0_2),
        ("1.0.3", MACVersion.V1_0_3),
        ("1.0.4", MACVersion.V1_0_4),
        ("1.1", MACVersion.V1_1),
        ("1.1.0", MACVersion.V1_1),
    ],
    ids=lambda value: str(value),
)
def test_parse_mac_version(text: str, version: MACVersion) -> None:
    assert parse_mac_version(text) is version


@pytest.mark.parametrize(
    "text", ["1.0.0.0", "1", "1.0.5", "1.1.1", "1.2", "", " 1.0.3", "v1.0.3", "1.0.3 ", "1_0_3", "V1_1"]
)
def test_parse_mac_version_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=f"unknown LoRaWAN MAC version {text!r}; expected one of '1.0.0'"):
        parse_mac_version(text)


def test_canonical_values() -> None:
    assert [v.value for v in MACVersion] == ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"]


@pytest.mark.parametrize(
    ("version", "counter", "one_one"),
    [
        (MACVersion.V1_0_0, False, False),
        (MACVersion.V1_0_1, False, False),
        (MACVersion.V1_0_2, False, False),
        (MACVersion.V1_0_3, False, False),
        (MACVersion.V1_0_4, True, False),
        (MACVersion.V1_1, True, True),
    ],
    ids=lambda value: value.value if isinstance(value, MACVersion) else str(value),
)
def test_version_rules(version: MACVersion, counter: bool, one_one: bool) -> None:
    assert dev_nonce_is_counter(version) is counter
    assert is_1_1(version) is one_one
