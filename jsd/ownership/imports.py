"""Rows of a bulk import, read one line at a time from CSV or JSON Lines; never the whole file in memory."""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HEADER_PROBLEM", "IMPORT_FIELDS", "MAX_LINE_BYTES", "REQUIRED_COLUMNS", "RawRow", "csv_rows", "jsonl_rows"]

IMPORT_FIELDS = (
    "dev_eui", "join_eui", "mac_version", "name", "admin_info", "secure_element", "app_key", "nwk_key",
    "generate_keys", "tkm_info", "hsm_group", "profile_id", "serial",
)  # fmt: skip
"""The fields of a device to import (docs/api.md, DeviceImport), in the order the docs list them."""

HEADER_PROBLEM = "header: "
"""How the error of a refused CSV header starts (it is not a device row)."""

REQUIRED_COLUMNS = ("dev_eui", "mac_version")
"""Columns every CSV needs; the others may be absent or depend on the row (keys, TKM info)."""

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


def header_problem(header: list[str], columns: Collection[str] = IMPORT_FIELDS) -> str | None:
    """What is wrong with a CSV header, as one message with the expected names; None if it is fine."""
    if len(set(header)) != len(header) or not all(header):
        return HEADER_PROBLEM + "a column is named twice or has an empty name"
    unknown = [name for name in header if name not in columns]
    missing = [name for name in REQUIRED_COLUMNS if name not in header and name in columns]
    if not unknown and not missing:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
        parts.append(f"unknown column {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    if missing:
        parts.append(f"missing column(s) {', '.join(missing)}")
    return f"{HEADER_PROBLEM}{'; '.join(parts)}. The columns are: {', '.join(columns)}"


async def csv_rows(chunks: AsyncIterable[bytes], columns: Collection[str] = IMPORT_FIELDS) -> AsyncIterator[RawRow]:
    """A header line naming the columns, then one device per line; empty cells are absent fields.

    A bad header is one error (with the expected names), not one per row: the rest of the input is then only
    read, not checked. Quoted cells may not span lines (no field of a device needs a newline).
    """
    header: list[str] | None = None
    async for number, text, error in _lines(chunks):
        if header == []:
            continue  # the header was refused: drain the upload without an error per row
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
            problem = header_problem(header, columns)
            if problem is not None:
                yield RawRow(number, None, problem)
                header = []
            continue
        if len(cells) != len(header):
            yield RawRow(number, None, f"{len(cells)} cells, the header has {len(header)}")
            continue
        yield RawRow(number, {name: cell.strip() for name, cell in zip(header, cells, strict=True) if cell.strip()})
