"""Rows of a bulk import, read one line at a time from CSV or JSON Lines (never the whole file in memory), and
checked one device at a time (`device_spec`) before any key is touched.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jsd.ownership import se
from jsd.ownership.model import HSM_GROUP_RE, DeviceFacts, FieldError, InvalidRequest, OwnershipError
from jsd.ownership.parse import parse_eui, parse_hex, parse_key
from jsd.ownership.rules import boolean, invalid, plain_text

__all__ = [
    "HEADER_PROBLEM",
    "IMPORT_FIELDS",
    "MAX_LINE_BYTES",
    "REQUIRED_COLUMNS",
    "DeviceSpec",
    "Problems",
    "RawRow",
    "csv_rows",
    "device_spec",
    "jsonl_rows",
    "unsupported",
]

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
    """(line number, text, None) per line that is not blank, or (line number, None, why it cannot be read)."""
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
        text = text.rstrip("\r\n")
        if text.strip():
            yield number, text, None


async def jsonl_rows(chunks: AsyncIterable[bytes]) -> AsyncIterator[RawRow]:
    """One JSON object per line; blank lines are skipped."""
    async for number, text, error in _lines(chunks):
        if error is not None or text is None:
            yield RawRow(number, None, error)
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


# -- checking one device ------------------------------------------------------------------------------

_MAC_VERSIONS = {"1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"}
_FIELDS = frozenset(IMPORT_FIELDS)
MAX_REPORTED_ERRORS = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class DeviceSpec(DeviceFacts):
    """One checked import row, before any key is touched."""

    line: int | None
    hsm_group: str
    app_key: bytes | None = None
    nwk_key: bytes | None = None
    generate_keys: bool = False
    tkm: se.TkmInfo | None = None

    @property
    def uses_nwk_key(self) -> bool:
        return self.mac_version == "1.1"

    def digest(self, manufacturer: str) -> str:
        """What makes a re-run of the same row a no-op: every field but the keys themselves."""
        content = {
            **self.facts_dict(),
            "manufacturer": manufacturer,
            "hsm_group": self.hsm_group,
            "generate_keys": self.generate_keys,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class Problems:
    """The bad rows of an import: every row and error counted, the first `MAX_REPORTED_ERRORS` errors kept.

    A row is malformed (the file is wrong: 422) or well formed but refused by the state of the registry or the
    HSM (409, as the same device sent alone would be); a file with only the latter is a conflict.
    """

    def __init__(self) -> None:
        self.kept: list[FieldError] = []
        self.count = 0
        self.rows = 0
        self.header = False
        self.malformed = 0

    def add(self, *errors: FieldError, header: bool = False, state: bool = False) -> None:
        """The errors of one bad row, or of a CSV header; `state`: the row is well formed, the state refuses it."""
        self.header = self.header or header
        self.rows += not header
        self.count += len(errors)
        self.malformed += 0 if state else len(errors)
        self.kept.extend(errors[: max(0, MAX_REPORTED_ERRORS - len(self.kept))])

    def add_refusal(self, exc: OwnershipError, line: int | None) -> None:
        """A refused row, its errors with the row's line (a 409 of the service is the state's refusal)."""
        self.add(*(FieldError(e.field, e.reason, line) for e in exc.errors), state=exc.status == 409)

    @property
    def state_only(self) -> bool:
        """Every problem is the state's: the file itself is well formed."""
        return self.count > 0 and self.malformed == 0

    def detail(self) -> str:
        if self.state_only:
            return f"{self.rows} row(s) refused by what the registry or the HSM holds; nothing was imported"
        rows = [f"{self.rows} bad row(s), {self.count - self.header} problem(s)"] if self.rows else []
        parts = (["the CSV header is wrong"] if self.header else []) + rows
        return f"{', '.join(parts)}; nothing was imported"

    def sorted_errors(self) -> list[FieldError]:
        return sorted(self.kept, key=lambda e: e.line or 0)


def _group(value: object, field: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(HSM_GROUP_RE, value):
        raise invalid(field, "1-48 characters from [A-Za-z0-9._-], the first a letter or digit")
    return value


def device_spec(
    fields: Mapping[str, Any], line: int | None, default_join_eui: bytes | None, default_hsm_group: str
) -> DeviceSpec:
    """Check one device's fields (JSON values or CSV text) without touching keys or the database."""
    errors: list[FieldError] = []

    def get(name: str, parse: Callable[[Any, str], T], default: T | None = None) -> T | None:
        value = fields.get(name)
        if value is None or value == "":
            return default
        try:
            return parse(value, name)
        except InvalidRequest as exc:
            errors.extend(exc.errors)
            return default

    def required(name: str, reason: str) -> None:
        if not any(e.field == name for e in errors):
            errors.append(FieldError(name, reason))

    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        errors.append(FieldError(unknown[0], f"unknown field(s): {', '.join(unknown)}"))
    dev_eui = get("dev_eui", parse_eui)
    if dev_eui is None:
        required("dev_eui", "required")
    join_eui = get("join_eui", parse_eui, default_join_eui)
    if join_eui is None:
        required("join_eui", "required (no ownership.default_join_eui configured)")
    mac_version = fields.get("mac_version")
    if not isinstance(mac_version, str) or mac_version not in _MAC_VERSIONS:
        errors.append(FieldError("mac_version", "one of 1.0.0, 1.0.1, 1.0.2, 1.0.3, 1.0.4, 1.1"))
    secure_element = get("secure_element", boolean, False)
    generate = get("generate_keys", boolean, False)
    app_key = get("app_key", parse_key)
    nwk_key = get("nwk_key", parse_key)
    tkm_raw = get("tkm_info", lambda v, f: parse_hex(v, f, se.TKM_INFO_LEN, "TKM info"))
    group = get("hsm_group", _group, default_hsm_group)
    profile_id = get("profile_id", lambda v, f: parse_hex(v, f, 4, "a TR005 ProfileID"), bytes(4))
    name = get("name", lambda v, f: plain_text(v, f, 255))
    admin_info = get("admin_info", lambda v, f: plain_text(v, f, 4096))
    serial = get("serial", lambda v, f: plain_text(v, f, 32))
    if serial is not None and not re.fullmatch(r"[0-9A-Za-z]{1,32}", serial):
        errors.append(FieldError("serial", "1-32 letters and digits (printed on the TR005 label)"))
    uses_nwk = mac_version == "1.1"
    tkm: se.TkmInfo | None = None
    if secure_element:
        if app_key is not None or nwk_key is not None or generate:
            errors.append(FieldError("app_key", "a secure-element device imports no keys (TKM info only)"))
        if tkm_raw is None:
            required("tkm_info", "required for a secure-element device")
        else:
            tkm = se.TkmInfo.from_bytes(tkm_raw)
    else:
        if tkm_raw is not None:
            errors.append(FieldError("tkm_info", "only for secure-element devices"))
        if generate and (app_key is not None or nwk_key is not None):
            errors.append(FieldError("generate_keys", "either generate keys or import them, not both"))
        elif not generate:
            if app_key is None:
                required("app_key", "required (or generate_keys: true)")
            if uses_nwk and nwk_key is None:
                required("nwk_key", "required for LoRaWAN 1.1")
        if not uses_nwk and nwk_key is not None:
            errors.append(FieldError("nwk_key", "only for LoRaWAN 1.1"))
    if errors:
        raise InvalidRequest("; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    assert dev_eui is not None and join_eui is not None and group is not None and profile_id is not None
    return DeviceSpec(
        line=line,
        dev_eui=dev_eui,
        join_eui=join_eui,
        mac_version=str(mac_version),
        name=name,
        admin_info=admin_info,
        secure_element=bool(secure_element),
        hsm_group=group,
        profile_id=profile_id,
        serial=None if serial is None else serial.upper(),
        app_key=app_key,
        nwk_key=nwk_key,
        generate_keys=bool(generate),
        tkm=tkm,
    )


def unsupported(spec: DeviceSpec) -> FieldError | None:
    """What a well-formed device asks for that this installation does not have: a secure element's key
    derivation no built-in or plugin provides (a state of the daemon, not a malformed row)."""
    if spec.tkm is not None and se.derivation(spec.tkm.derive_algo_id) is None:
        return FieldError("tkm_info", f"unknown DERIVE_ALGO_ID {spec.tkm.derive_algo_id}", spec.line)
    return None
