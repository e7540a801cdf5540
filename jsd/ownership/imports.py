"""Rows of a bulk import, read one line at a time from CSV or JSON Lines; never the whole file in memory."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LINE_BYTES", "RawRow", "csv_rows", "jsonl_rows"]

MAX_LINE_BYTES = 8192
"""A device row is far shorter; a longer line is refused rather than buffered."""


@dataclass(frozen=True)
class RawRow:
    """One input line: its fields, or why it could not be read (the 1-based line number either way)."""

    line: int
    fields: Mapping[str, Any] | None
    error: str | None = None


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, str | None, str | None]]:
    number = 0
    async for raw in chunks:
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            yield number, None, f"line longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None, "not UTF-8"
            continue
        yield number, text.rstrip("\r\n"), None


async def jsonl_rows(chunks: AsyncIterable[bytes]) -> AsyncIterator[RawRow]:
    """One JSON object per line; blank lines are skipped."""
    async for number, text, error in _lines(chunks):
        if error is not None or text is None:
            yield RawRow(number, None, error)
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(number, None, f"not JSON: {exc.msg}")
            continue
        except RecursionError:
            yield RawRow(number, None, "not JSON: nested too deeply")
            continue
        if not isinstance(value, dict):
            yield RawRow(number, None, "a line must be a JSON object")
            continue
        yield RawRow(number, value)


async def csv_rows(chunks: AsyncIterable[bytes]) -> AsyncIterator[RawRow]:
    """A header line naming the columns, then one device per line; empty cells are absent fields.

    Quoted cells may not span lines (no field of a device needs a newline).
    """
    header: list[str] | None = None
    async for number, text, error in _lines(chunks):
        if error is not None or text is None:
            yield RawRow(number, None, error)
            continue
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield RawRow(number, None, f"bad CSV: {exc}")
            continue
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            if len(set(header)) != len(header) or not all(header):
                yield RawRow(number, None, "the header names a column twice or has an empty name")
                header = []
            continue
        if len(cells) != len(header):
            yield RawRow(number, None, f"{len(cells)} cells, the header has {len(header)}")
            continue
        yield RawRow(number, {name: cell.strip() for name, cell in zip(header, cells, strict=True) if cell.strip()})
