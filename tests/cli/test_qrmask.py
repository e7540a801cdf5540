"""jsd_cli.qrmask makes, module for module, the symbol segno makes: same data mask, format and version info."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import segno

from jsd.lorawan.tr005 import DeviceQr, build_qr
from jsd_cli import qrmask
from jsd_cli.qrmask import make_qr_m

ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def _texts(rng: random.Random) -> list[str]:
    """TR005 label texts of every length a label has, then other modes and sizes up to version 9."""
    texts = []
    for index in range(60):
        serial = None if index % 3 == 0 else "SN" + "".join(rng.choices(ALPHANUMERIC[:36], k=rng.randint(1, 40)))
        qr = DeviceQr(
            join_eui=rng.randbytes(8),
            dev_eui=rng.randbytes(8),
            profile_id=rng.randbytes(4),
            owner_token=rng.randbytes(rng.randint(4, 16)).hex().upper(),
            serial=serial,
        )
        texts.append(build_qr(qr, checksum=index % 4 != 0))
    texts += ["".join(rng.choices("0123456789", k=rng.randint(1, 250))) for _ in range(20)]
    texts += ["".join(rng.choices(ALPHANUMERIC, k=rng.randint(1, 250))) for _ in range(20)]
    return texts


def test_the_same_symbol_as_segno() -> None:
    masks, versions = set(), set()
    for text in _texts(random.Random(16)):
        expected = segno.make_qr(text, error="m", boost_error=False)
        symbol = make_qr_m(text)
        assert (symbol.mask, symbol.version, symbol.mode) == (expected.mask, expected.version, expected.mode), text
        assert symbol.matrix == expected.matrix, text
        masks.add(symbol.mask)
        versions.add(expected.version)
    assert masks == set(range(8))  # every mask's bits and format information were used
    assert {1, 4, 5, 7} <= versions  # without and with alignment patterns and version information


def test_a_segno_whose_layout_helpers_changed_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """If segno's helpers no longer describe its encoder (here: the masks in another order), the layout fails
    its probe and segno chooses the mask itself: the symbol stays right, only slower."""
    real = qrmask._encoder
    shuffled = SimpleNamespace(
        make_matrix=real.make_matrix,
        add_finder_patterns=real.add_finder_patterns,
        add_alignment_patterns=real.add_alignment_patterns,
        get_data_mask_functions=lambda micro: tuple(reversed(real.get_data_mask_functions(micro))),
    )
    assert qrmask._layout.__wrapped__(4) is not None
    monkeypatch.setattr(qrmask, "_encoder", shuffled)
    assert qrmask._layout.__wrapped__(4) is None
    monkeypatch.setattr(qrmask, "_layout", lambda version: None)
    text = "LW:D0:70B3D57ED0000001:0004A30B001C0530:00000000:O0123456789ABCDEF0123456789ABCDEF"
    assert make_qr_m(text).matrix == segno.make_qr(text, error="m", boost_error=False).matrix
