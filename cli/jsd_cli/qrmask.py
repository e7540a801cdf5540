"""The QR symbol of a label, module for module the one segno makes, with its data mask chosen in bulk.

segno tries all eight data masks one module at a time in Python, about half of a label's CPU. Here the text is
encoded once with mask 0, that mask is undone, and the eight masks are scored on whole-symbol bit sets (a
Python int with one bit per module, the rows, or the columns, one after the other with a light gap bit between
them) by the same penalty rules, quirks and tie-break as segno's encoder; the winner and its format
information then replace mask 0 in the same symbol. tests/cli/test_qrmask.py holds the result against segno,
and each version's bit sets are checked once against segno's own choice before they are used (``_layout``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import segno

# segno's own layout helpers (untyped): the same function patterns and reserved areas as its encoder uses.
_encoder: Any = importlib.import_module("segno.encoder")
_TO_ASCII = bytes.maketrans(b"\x00\x01", b"01")
_FROM_ASCII = bytes.maketrans(b"01", b"\x00\x01")
_PROBE = "JSD 0123456789"  # any text: the check compares the whole symbol, padding included


@dataclass(frozen=True)
class _Layout:
    """Bit sets of one QR version; bit ``i * (size + 1) + j`` is module (row i, column j), columns transposed."""

    size: int
    reserved: int  # format and version areas: light while masks are scored, as in segno
    reserved_cols: int
    masks: tuple[int, ...]  # the data modules each mask inverts
    mask_cols: tuple[int, ...]
    formats: tuple[int, ...]  # the reserved areas of a symbol made with each mask
    pairs: int  # modules with a right-hand neighbour
    above: int  # modules with a neighbour below
    starts: int  # where a 7-module pattern fits in the row


def _pack(lines: Sequence[bytes | bytearray]) -> int:
    """Lines of 0/1 bytes as one int, line after line, each followed by a zero gap bit."""
    return int(b"\x00".join(lines).translate(_TO_ASCII)[::-1], 2)


def _transpose(lines: Sequence[bytes | bytearray]) -> list[bytes]:
    size = len(lines)
    flat = b"".join(lines)
    return [flat[j::size] for j in range(size)]


def _unpack(bits: int, size: int) -> tuple[bytearray, ...]:
    stride = size + 1
    text = format(bits, f"0{stride * size}b")[::-1].encode().translate(_FROM_ASCII)
    return tuple(bytearray(text[i * stride : i * stride + size]) for i in range(size))


def _where(size: int, keep: Callable[[int, int], bool]) -> int:
    """The bit set of the modules (i, j) for which ``keep(i, j)`` holds."""
    return _pack([bytes(bool(keep(i, j)) for j in range(size)) for i in range(size)])


@functools.cache
def _layout(version: int) -> _Layout | None:
    """The bit sets of a version, or None if they fail a check against segno's own choice for a probe text
    (a segno whose layout helpers changed): segno then chooses the mask itself, slowly but right."""
    size = version * 4 + 17
    template = _encoder.make_matrix(size, size)
    _encoder.add_finder_patterns(template, size, size)
    _encoder.add_alignment_patterns(template, size, size)
    untimed = _encoder.make_matrix(size, size, add_timing=False)  # the timing pattern crosses the format areas
    data = [[cell > 1 for cell in row] for row in template]
    masks = [
        [bytes(data[i][j] and bool(fn(i, j)) for j in range(size)) for i in range(size)]
        for fn in _encoder.get_data_mask_functions(False)
    ]
    reserved = [bytes(a == b == 0 for a, b in zip(*rows, strict=True)) for rows in zip(untimed, template, strict=True)]
    probes = [segno.make_qr("0", error="m", version=version, mask=k, boost_error=False) for k in range(8)]
    layout = _Layout(
        size=size,
        reserved=_pack(reserved),
        reserved_cols=_pack(_transpose(reserved)),
        masks=tuple(_pack(m) for m in masks),
        mask_cols=tuple(_pack(_transpose(m)) for m in masks),
        formats=tuple(_pack(p.matrix) & _pack(reserved) for p in probes),
        pairs=_where(size, lambda i, j: j < size - 1),
        above=_where(size, lambda i, j: i < size - 1),
        starts=_where(size, lambda i, j: j <= size - 7),
    )
    probe = segno.make_qr(_PROBE, error="m", version=version, mask=0, boost_error=False)
    expected = segno.make_qr(_PROBE, error="m", version=version, boost_error=False)
    _remask(probe, layout)
    return layout if (probe.mask, probe.matrix) == (expected.mask, expected.matrix) else None


def _runs(same: int) -> int:
    """N1: a run of k ≥ 5 like modules scores k - 2; ``same`` marks modules equal to their right neighbour."""
    four = same & (same >> 1) & (same >> 2) & (same >> 3)
    return four.bit_count() + 2 * (four & ~(four << 1)).bit_count()


def _finder_like(bits: int, layout: _Layout) -> int:
    """N3 as segno counts it: 1:1:3:1:1 found left to right, 40 when at an edge or with 4 light modules on a
    side (clipped at the edge); after a counted one the search goes on past it, else 4 modules on."""
    size, stride = layout.size, layout.size + 1
    found = bits & ~(bits >> 1) & (bits >> 2) & (bits >> 3) & (bits >> 4) & ~(bits >> 5) & (bits >> 6) & layout.starts
    score, line, resume = 0, -1, 0
    while found:
        lowest = found & -found
        found ^= lowest
        line_here, j = divmod(lowest.bit_length() - 1, stride)
        if line_here != line:
            line, resume = line_here, 0
        if j < resume:
            continue
        base = line * stride
        before = max(j - 4, 0)
        after_end = min(j + 11, size)
        if (
            j in (0, size - 7)
            or not (bits >> (base + before)) & ((1 << (j - before)) - 1)
            or not (bits >> (base + j + 7)) & ((1 << (after_end - j - 7)) - 1)
        ):
            score += 40
            resume = j + 7
        else:
            resume = j + 4
    return score


def _penalty(rows: int, cols: int, layout: _Layout) -> int:
    """N1 + N2 + N3 + N4 of one masked symbol (ISO/IEC 18004 7.8.3.1), the sum segno minimises."""
    stride = layout.size + 1
    same = ~(rows ^ (rows >> 1)) & layout.pairs
    below = ~(rows ^ (rows >> stride)) & layout.above
    n1 = _runs(same) + _runs(~(cols ^ (cols >> 1)) & layout.pairs)
    n2 = 3 * (same & (same >> stride) & below).bit_count()
    n3 = _finder_like(rows, layout) + _finder_like(cols, layout)
    percent = float(rows.bit_count()) / (layout.size**2)
    n4 = 10 * int(abs(percent * 100 - 50) / 5)
    return n1 + n2 + n3 + n4


def make_qr_m(text: str) -> segno.QRCode:
    """``segno.make_qr(text, error="m", boost_error=False)``, the same symbol in about a quarter of the time."""
    symbol = segno.make_qr(text, error="m", boost_error=False, mask=0)
    assert isinstance(symbol.version, int)
    layout = _layout(symbol.version)
    if layout is None:
        return segno.make_qr(text, error="m", boost_error=False)
    _remask(symbol, layout)
    return symbol


def _remask(symbol: segno.QRCode, layout: _Layout) -> None:
    """Replace mask 0 of ``symbol`` by the mask with the lowest penalty (the first of equals), in place."""
    rows = (_pack(symbol.matrix) & ~layout.reserved) ^ layout.masks[0]
    cols = (_pack(_transpose(symbol.matrix)) & ~layout.reserved_cols) ^ layout.mask_cols[0]
    best, best_score = 0, -1
    for k in range(8):
        score = _penalty(rows ^ layout.masks[k], cols ^ layout.mask_cols[k], layout)
        if best_score < 0 or score < best_score:
            best, best_score = k, score
    if best:
        symbol.matrix = _unpack(rows ^ layout.masks[best] | layout.formats[best], layout.size)
        symbol.mask = best
