"""``jsd labels``: TR005 QR labels (PNG, SVG) and a CSV index from the answers that carry owner tokens.

Those answers are the only place the owner tokens appear, so this reads them as they are and needs neither the
daemon nor the HSM: the JSON Lines of a device import, or the JSON of ``jsd devices release``/``reissue-token``
(``{"device": {...}, "owner_token"}``; with ``--out`` the token is in its own file, given as ``--token-file``).
Lines without a token (``unchanged`` devices, the summary) get no label. The labels hold owner tokens, so every
file is written for the user alone (0600) and a new directory is 0700.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import io
import itertools
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from jsd.lorawan.tr005 import DeviceQr, QrCodeError, build_qr
from jsd_cli.progress import Progress

if TYPE_CHECKING:
    import segno

SCALE = 8
BORDER = 4  # modules of quiet zone: the minimum ISO/IEC 18004 asks for
PNG_COMPRESSION = 3  # zlib level: with the "up" rows below, files ~1/5 larger than Pillow's default at 2/5 the CPU
CSV_COLUMNS = ("dev_eui", "join_eui", "profile_id", "name", "qr")
CHUNK = 64  # labels per task of a worker process
PARALLEL_FROM = 4 * CHUNK  # fewer labels than this are drawn in the command's own process
_HEX = re.compile(r"[0-9A-Fa-f]+")
_GREY = bytes.maketrans(b"\x00\x01", b"\xff\x00")  # a light module white, a dark one black


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

    @property
    def captions(self) -> list[str]:
        """The human-readable lines under the code: the DevEUI, and the serial number when known."""
        return [self.dev_eui] + ([f"S/N {self.qr.serial}"] if self.qr.serial else [])

    def csv_row(self) -> list[str]:
        """The values of CSV_COLUMNS, hex in uppercase as on the label."""
        return [self.dev_eui, self.qr.join_eui.hex().upper(), self.qr.profile_id.hex().upper(), self.name, self.text]


def read_label(line: str | Any, default_profile: bytes, checksum: bool) -> Label | None:
    """The label for one answer line (or parsed entry); None for the closing summary line of an import.

    A release or reissue answer nests the device (``{"device": {...}, "owner_token"}``); its fields are read
    from there.
    """
    if isinstance(line, str):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
    else:
        entry = line
    if not isinstance(entry, dict):
        raise BadLine("not a JSON object")
    if "summary" in entry and "dev_eui" not in entry:
        return None
    if isinstance(entry.get("device"), dict) and "dev_eui" not in entry:
        entry = {**entry["device"], "owner_token": entry.get("owner_token")}
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
    """Error correction M exactly; an uppercase TR005 string lets segno pick the compact alphanumeric mode.

    The symbol is segno's, with the data mask segno would choose, found about four times faster.
    """
    from jsd_cli.qrmask import make_qr_m

    return make_qr_m(text)


def label_svg(symbol: segno.QRCode, captions: list[str]) -> str:
    """The code with its caption lines centred in a band below the quiet zone, as one SVG document."""
    width, height = symbol.symbol_size(scale=SCALE, border=BORDER)
    font = round(width / 11, 1)  # 16 monospace characters at about 0.6 em fill 87 % of the width
    total = round(height + (0.25 + 1.25 * len(captions)) * font, 1)
    texts = "".join(
        f'<text x="{width / 2}" y="{round(height + (1 + 1.25 * index) * font, 1)}" font-family="monospace" '
        f'font-size="{font}" text-anchor="middle">{caption}</text>'
        for index, caption in enumerate(captions)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" viewBox="0 0 {width} {total}">'
        f'<rect width="100%" height="100%" fill="#fff"/>{symbol.svg_inline(scale=SCALE, border=BORDER)}'
        f"{texts}</svg>\n"
    )


def label_png(symbol: segno.QRCode, captions: list[str]) -> bytes:
    """The code with its caption lines centred below it, as one greyscale PNG (Pillow draws the text)."""
    from PIL import Image, ImageDraw

    modules = len(symbol.matrix)
    dark = b"".join(symbol.matrix).translate(_GREY)
    side = (modules + 2 * BORDER) * SCALE
    code = Image.frombytes("L", (modules, modules), dark).resize((modules * SCALE,) * 2, Image.Resampling.NEAREST)
    size = max(10, side // 12)
    step = round(size * 1.25)
    image = Image.new("L", (side, side + step * len(captions) + size // 2), 255)
    image.paste(code, (BORDER * SCALE, BORDER * SCALE))
    draw = ImageDraw.Draw(image)
    for index, caption in enumerate(captions):
        draw.text((side / 2, side + step * index), caption, fill=0, font=_font(size), anchor="ma")
    return grey_png(image.width, image.height, image.tobytes())


def grey_png(width: int, height: int, pixels: bytes) -> bytes:
    """An 8-bit greyscale PNG of ``pixels`` (row after row), written here rather than by Pillow, in half its time.

    A row equal to the one above (most of a label: every module is SCALE rows high) goes out with PNG's "up"
    filter, all zeros, which zlib packs fast and small; any other row unfiltered.
    """
    same = b"\x02" + bytes(width)
    rows, previous = [], b""
    for start in range(0, width * height, width):
        row = pixels[start : start + width]
        rows.append(same if row == previous else b"\x00" + row)
        previous = row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # bit depth 8, greyscale, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(rows), PNG_COMPRESSION)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def private_file(path: Path) -> IO[bytes]:
    """Open ``path`` for writing, readable by the user alone (also when it existed with a wider mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def write_label(label: Label, out_dir: Path, fmt: str) -> None:
    symbol = make_symbol(label.text)
    if fmt in ("png", "both"):
        with private_file(out_dir / f"{label.dev_eui}.png") as handle:
            handle.write(label_png(symbol, label.captions))
    if fmt in ("svg", "both"):
        with private_file(out_dir / f"{label.dev_eui}.svg") as handle:
            handle.write(label_svg(symbol, label.captions).encode("utf-8"))


def _write_chunk(labels: list[Label], out_dir: Path, fmt: str) -> int:
    for label in labels:
        write_label(label, out_dir, fmt)
    return len(labels)


def workers(count: int) -> int:
    """Processes to draw ``count`` labels with: one per usable core, none extra for a few labels."""
    if count < PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, count // CHUNK))


def write_labels(labels: list[Label], out_dir: Path, fmt: str, processes: int) -> Iterator[int]:
    """Write every label's files, in chunks over ``processes`` worker processes; yields each chunk's size once
    written. Drawing a label is CPU-bound Python (segno, Pillow), so only processes use more than one core."""
    chunks = [labels[start : start + CHUNK] for start in range(0, len(labels), CHUNK)]
    if processes < 2:
        for chunk in chunks:
            yield _write_chunk(chunk, out_dir, fmt)
        return
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        yield from pool.map(_write_chunk, chunks, itertools.repeat(out_dir), itertools.repeat(fmt))


def entries(text: str) -> Iterator[tuple[str, str | Any]]:
    """(where, line or parsed entry) for each device of the input: one JSON document or JSON Lines."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        yield "input", document
    elif isinstance(document, list):
        for number, item in enumerate(document, start=1):
            yield f"item {number}", item
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield f"line {number}", line


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
    help="Directory for the labels (made 0700 if new; every file in it 0600).",
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
@click.option(
    "--token-file",
    type=click.File("r", encoding="utf-8"),
    help="The owner token of a release/reissue answer whose token went to its own file (--out).",
)
@click.option("--no-checksum", is_flag=True, help="Leave out the C (checksum) extension.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def labels_command(
    devices: IO[str],
    out_dir: Path,
    fmt: str,
    default_profile: bytes,
    token_file: IO[str] | None,
    no_checksum: bool,
    as_json: bool,
) -> None:
    """Write a TR005 QR label per device of DEVICES, or - for stdin: the JSON Lines answer of a device import,
    or the JSON answer of ``jsd devices release`` / ``reissue-token`` (with --token-file if its token went to
    a file).

    Each label is <DEVEUI>.png and/or <DEVEUI>.svg in --out, the DevEUI (and the serial number) printed under
    the code, all listed in labels.csv. Bad lines are reported with their numbers and skipped; the others still
    get labels, and the exit code says that some were bad.
    """
    found = list(entries(devices.read()))
    if token_file is not None:
        token = token_file.read().strip()
        if len(found) != 1 or not isinstance(found[0][1], dict):
            raise click.UsageError("--token-file goes with one release or reissue answer (one device)")
        where, entry = found[0]
        assert isinstance(entry, dict)
        inner = entry["device"] if isinstance(entry.get("device"), dict) else entry
        if entry.get("owner_token") not in (None, token):
            raise click.UsageError("the answer has another owner token than --token-file")
        found = [(where, {**inner, "owner_token": token})]
    if not out_dir.exists():
        out_dir.mkdir(parents=True, mode=0o700)
    without_token = bad = 0
    seen: dict[bytes, str] = {}
    ready: list[Label] = []
    progress = Progress("printing labels", len(found), unit="entries")
    with private_file(out_dir / "labels.csv") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as index:
        rows = csv.writer(index)
        rows.writerow(CSV_COLUMNS)
        for where, line in found:
            try:
                label = read_label(line, default_profile, checksum=not no_checksum)
                if label is not None and label.qr.dev_eui in seen:
                    raise BadLine(f"device {label.dev_eui} already on {seen[label.qr.dev_eui]}")
            except NoToken as exc:
                click.echo(f"{where}: {exc}, skipped", err=True)
                without_token += 1
                label = None
            except BadLine as exc:
                click.echo(f"{where}: {exc}", err=True)
                bad += 1
                label = None
            if label is None:
                progress.advance()
                continue
            seen[label.qr.dev_eui] = where
            ready.append(label)
        done = 0
        for count in write_labels(ready, out_dir, fmt, workers(len(ready))):
            rows.writerows(label.csv_row() for label in ready[done : done + count])  # the index lists written ones
            done += count
            progress.advance(count)
    written = len(ready)
    progress.finish()
    if as_json:
        counts = {"written": written, "without_token": without_token, "bad": bad}
        click.echo(json.dumps({"out": str(out_dir), "format": fmt, **counts}, indent=2))
    else:
        click.echo(
            f"labels: {written} written to {out_dir} ({fmt}), {without_token} without owner_token, {bad} bad lines"
        )
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
