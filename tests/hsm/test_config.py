"""PINs: loaded from a file or the environment, masked everywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jsd.hsm import HsmSettings, Pin, load_pin


def test_pin_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    pin = Pin("1234-secret")
    settings = HsmSettings(module="/lib/x.so", token_label="jsd", pin=pin)

    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("opening %s with %r", settings, pin)

    for text in (repr(pin), str(pin), f"{pin}", f"{pin!r}", repr(settings), str(settings), caplog.text):
        assert "1234-secret" not in text
    assert repr(pin) == "Pin(****)"
    assert pin.reveal() == "1234-secret"


def test_pin_equality_compares_values() -> None:
    assert Pin("a1b2") == Pin("a1b2")
    assert Pin("a1b2") != Pin("a1b3")
    assert hash(Pin("a")) == hash(Pin("b"))


def test_empty_pin_is_refused() -> None:
    with pytest.raises(ValueError):
        Pin("")


def test_load_pin_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSD_HSM_PIN", "from-env")
    monkeypatch.setenv("OTHER_PIN", "other")

    assert load_pin().reveal() == "from-env"
    assert load_pin("OTHER_PIN").reveal() == "other"


def test_load_pin_from_file_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JSD_HSM_PIN", "from-env")
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\n")

    assert load_pin(file=str(pin_file)).reveal() == "from-file"


def test_load_pin_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JSD_HSM_PIN", raising=False)
    empty = tmp_path / "pin"
    empty.write_text("\n")

    with pytest.raises(ValueError, match="JSD_HSM_PIN"):
        load_pin()
    with pytest.raises(ValueError, match="empty"):
        load_pin(file=str(empty))
