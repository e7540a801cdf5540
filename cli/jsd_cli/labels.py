"""``jsd labels``: TR005 QR labels (PNG, SVG) and a CSV index from the JSON Lines a device import answers.

That answer is the only place the owner tokens appear, so this reads it as it is, line by line, and needs
neither the daemon nor the HSM. Lines without a token (``unchanged`` devices, the summary) get no label.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from jsd.lorawan.tr005 import DeviceQr, QrCodeError, build_qr

if TYPE_CHECKING:
    import segno

SCALE = 8
BORDER = 4  # modules of quiet zone: the minimum ISO/IEC 18004 asks for
CSV_COLUMNS = ("dev_eui", "join_eui", "profile_id", "name", "qr")
_HEX = re.compile(r"[0-9A-Fa-f]+")


class BadLine(ValueError):
    """An input line that cannot become a label; the message says which key and why."""


class NoToken(BadLine):
    """A well-formed line without an owner token: nothing to print, but not the input's fault."""


@dataclass(frozen=True)
class Label:
    """One device's label: the QR text and what the CSV index repeats next to it."""

    qr: DeviceQr
    text: str
    name: str

    @property
    def dev_eui(self) -> str:
        return self.qr.dev_eui.hex().upper()

    def csv_row(self) -> list[str]:
        """The values of CSV_COLUMNS, hex in uppercase as on the label."""
        return [self.dev_eui, self.qr.join_eui.hex().upper(), self.qr.profile_id.hex().upper(), self.name, self.text]


def read_label(line: str, default_profile: bytes, checksum: bool) -> Label | None:
    """The label for one import-answer line; None for the closing summary line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(entry, dict):
        raise BadLine("not a JSON object")
    if "summary" in entry and "dev_eui" not in entry:
        return None
    dev_eui = _hex(entry, "dev_eui", 8)
    token = entry.get("owner_token")
    if token is None:
        raise NoToken(f"device {dev_eui.hex().upper()} has no owner_token")
    qr = DeviceQr(
        join_eui=_hex(entry, "join_eui", 8),
        dev_eui=dev_eui,
        profile_id=_hex(entry, "profile_id", 4, default_profile),
        owner_token=_text(entry, "owner_token").upper(),
        serial=_optional_text(entry, "serial", upper=True),
    )
    try:
        text = build_qr(qr, checksum=checksum)
    except QrCodeError as exc:
        raise BadLine(str(exc)) from None
    return Label(qr=qr, text=text, name=_optional_text(entry, "name") or "")


def make_symbol(text: str) -> segno.QRCode:
    """Error correction M exactly; an uppercase TR005 string lets segno pick the compact alphanumeric mode."""
    import segno

    return segno.make_qr(text, error="m", boost_error=False)


def label_svg(symbol: segno.QRCode, caption: str) -> str:
    """The code with its caption centred in a band below the quiet zone, as one SVG document."""
    width, height = symbol.symbol_size(scale=SCALE, border=BORDER)
    font = round(width / 11, 1)  # 16 monospace characters at about 0.6 em fill 87 % of the width
    total = round(height + 1.5 * font, 1)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" viewBox="0 0 {width} {total}">'
        f'<rect width="100%" height="100%" fill="#fff"/>{symbol.svg_inline(scale=SCALE, border=BORDER)}'
        f'<text x="{width / 2}" y="{height + font}" font-family="monospace" font-size="{font}" '
        f'text-anchor="middle">{caption}</text></svg>\n'
    )


def write_label(label: Label, out_dir: Path, fmt: str) -> None:
    symbol = make_symbol(label.text)
    if fmt in ("png", "both"):
        symbol.save(str(out_dir / f"{label.dev_eui}.png"), kind="png", scale=SCALE, border=BORDER)
    if fmt in ("svg", "both"):
        (out_dir / f"{label.dev_eui}.svg").write_text(label_svg(symbol, label.dev_eui), encoding="utf-8")


def _profile_option(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    if len(value) != 8 or not _HEX.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not 8 hex digits (VendorID, VendorProfileID)")
    return bytes.fromhex(value)


@click.command("labels")
@click.argument("devices", type=click.File("r", encoding="utf-8", errors="replace"))  # bad bytes: a bad line
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the labels.",
)
@click.option("--format", "fmt", type=click.Choice(["png", "svg", "both"]), default="both", show_default=True)
@click.option(
    "--profile-id",
    "default_profile",
    default="00000000",
    show_default=True,
    callback=_profile_option,
    help="ProfileID for lines that carry none.",
)
@click.option("--no-checksum", is_flag=True, help="Leave out the C (checksum) extension.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def labels_command(
    devices: IO[str], out_dir: Path, fmt: str, default_profile: bytes, no_checksum: bool, as_json: bool
) -> None:
    """Write a TR005 QR label per device of DEVICES (the JSON Lines answer of a device import, or - for stdin).

    Each label is <DEVEUI>.png and/or <DEVEUI>.svg in --out, listed in labels.csv. Bad lines are reported with
    their numbers and skipped; the others still get labels, and the exit code says that some were bad.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = without_token = bad = 0
    seen: dict[bytes, int] = {}
    with (out_dir / "labels.csv").open("w", newline="", encoding="utf-8") as index:
        rows = csv.writer(index)
        rows.writerow(CSV_COLUMNS)
        for number, line in enumerate(devices, start=1):
            if not line.strip():
                continue
            try:
                label = read_label(line, default_profile, checksum=not no_checksum)
                if label is not None and label.qr.dev_eui in seen:
                    raise BadLine(f"device {label.dev_eui} already on line {seen[label.qr.dev_eui]}")
            except NoToken as exc:
                click.echo(f"line {number}: {exc}, skipped", err=True)
                without_token += 1
                continue
            except BadLine as exc:
                click.echo(f"line {number}: {exc}", err=True)
                bad += 1
                continue
            if label is None:
                continue
            seen[label.qr.dev_eui] = number
            write_label(label, out_dir, fmt)
            rows.writerow(label.csv_row())
            written += 1
    if as_json:
        counts = {"written": written, "without_token": without_token, "bad": bad}
        click.echo(json.dumps({"out": str(out_dir), "format": fmt, **counts}, indent=2))
    else:
        click.echo(f"labels: {written} written to {out_dir} ({fmt}), {without_token} without owner_token, {bad} bad lines")
    if bad:
        raise click.ClickException(f"{bad} bad input line(s) skipped; see the messages above")


def _hex(entry: dict[str, Any], key: str, size: int, default: bytes | None = None) -> bytes:
    value = entry.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise BadLine(f"{key}: {value!r} is not {2 * size} hex digits")
    return bytes.fromhex(value)


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise BadLine(f"{key}: {value!r} is not a non-empty string")
    return value


def _optional_text(entry: dict[str, Any], key: str, upper: bool = False) -> str | None:
    if entry.get(key) in (None, ""):
        return None
    value = _text(entry, key)
    return value.upper() if upper else value
