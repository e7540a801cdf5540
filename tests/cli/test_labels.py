"""``jsd labels`` on import-answer JSON Lines: files per device, a CSV whose QR text parses back, bad lines reported."""

from __future__ import annotations

import csv
import io
import json
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from jsd.lorawan.tr005 import DeviceQr, parse_qr
from jsd_cli.labels import BORDER, CHUNK, SCALE, labels_command, make_symbol, read_label, workers, write_labels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"

GOOD: list[dict[str, Any]] = [
    {
        "line": 1,
        "dev_eui": "0004a30b001c0530",
        "join_eui": "70b3d57ed0000001",
        "profile_id": "00000000",
        "name": "meter 1",
        "status": "created",
        "owner_token": "0123456789abcdef0123456789abcdef",
    },
    {
        "dev_eui": "0004A30B001C0531",
        "join_eui": "70B3D57ED0000001",
        "owner_token": "C05EA29C",
        "serial": "sn42",
        "app_key": "2b7e151628aed2a6abf7158809cf4f3c",
    },
]
EXPECTED = [
    DeviceQr(
        join_eui=bytes.fromhex("70b3d57ed0000001"),
        dev_eui=bytes.fromhex("0004a30b001c0530"),
        owner_token="0123456789ABCDEF0123456789ABCDEF",
    ),
    DeviceQr(
        join_eui=bytes.fromhex("70b3d57ed0000001"),
        dev_eui=bytes.fromhex("0004a30b001c0531"),
        profile_id=bytes.fromhex("AABB0001"),
        owner_token="C05EA29C",
        serial="SN42",
    ),
]


def _run(tmp_path: Path, lines: list[str], *args: str) -> tuple[Any, Path]:
    source = tmp_path / "answer.jsonl"
    source.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "labels"
    result = CliRunner().invoke(labels_command, [str(source), "--out", str(out), *args])
    return result, out


def _csv(out: Path) -> list[dict[str, str]]:
    with (out / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_labels_for_every_device_with_a_token(tmp_path: Path) -> None:
    lines = [json.dumps(d) for d in GOOD] + [json.dumps({"summary": {"created": 2, "unchanged": 0}})]
    result, out = _run(tmp_path, lines, "--profile-id", "AABB0001")
    assert result.exit_code == 0, result.output
    assert "labels: 2 written" in result.output
    for dev_eui in ("0004A30B001C0530", "0004A30B001C0531"):
        png = (out / f"{dev_eui}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 100
        svg = ET.parse(out / f"{dev_eui}.svg").getroot()
        serial = ["S/N SN42"] if dev_eui.endswith("31") else []
        assert [t.text for t in svg.iter(f"{SVG}text")] == [dev_eui, *serial]
    rows = _csv(out)
    assert [r["dev_eui"] for r in rows] == ["0004A30B001C0530", "0004A30B001C0531"]
    assert [r["name"] for r in rows] == ["meter 1", ""]
    assert [r["profile_id"] for r in rows] == ["00000000", "AABB0001"]
    assert [parse_qr(r["qr"]) for r in rows] == EXPECTED  # parse_qr verifies the C extension
    assert all(r["qr"].rsplit(":", 1)[1].startswith("C") for r in rows)


def test_symbol_is_alphanumeric_at_level_m(tmp_path: Path) -> None:
    result, out = _run(tmp_path, [json.dumps(GOOD[0])])
    symbol = make_symbol(_csv(out)[0]["qr"])
    assert (symbol.mode, symbol.error) == ("alphanumeric", "M")


@pytest.mark.parametrize("fmt, suffixes", [("png", {".png"}), ("svg", {".svg"}), ("both", {".png", ".svg"})])
def test_format_option(tmp_path: Path, fmt: str, suffixes: set[str]) -> None:
    result, out = _run(tmp_path, [json.dumps(GOOD[0])], "--format", fmt)
    assert result.exit_code == 0, result.output
    assert {p.suffix for p in out.iterdir() if p.name != "labels.csv"} == suffixes


def test_no_checksum(tmp_path: Path) -> None:
    result, out = _run(tmp_path, [json.dumps(GOOD[0])], "--no-checksum")
    assert result.exit_code == 0, result.output
    assert _csv(out)[0]["qr"] == "LW:D0:70B3D57ED0000001:0004A30B001C0530:00000000:O0123456789ABCDEF0123456789ABCDEF"


def test_bad_lines_are_numbered_and_the_good_ones_still_printed(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD[0]),
        "{not json",
        json.dumps({**GOOD[1], "join_eui": "70b3d57e"}),
        "",
        json.dumps({"dev_eui": "0004a30b001c0532", "join_eui": "70b3d57ed0000001", "status": "unchanged"}),
        json.dumps({**GOOD[1], "owner_token": "not-hex!"}),
        json.dumps(GOOD[0]),
        json.dumps(GOOD[1]),
        "[1, 2]",
    ]
    result, out = _run(tmp_path, lines)
    assert result.exit_code == 1
    stderr = result.stderr
    assert "line 2: not JSON" in stderr
    assert "line 3: join_eui: '70b3d57e' is not 16 hex digits" in stderr
    assert "line 5: device 0004A30B001C0532 has no owner_token, skipped" in stderr
    assert "line 6: owner_token" in stderr
    assert "line 7: device 0004A30B001C0530 already on line 1" in stderr
    assert "line 9: not a JSON object" in stderr
    assert "labels: 2 written" in result.stdout and "1 without owner_token, 5 bad lines" in result.stdout
    assert "5 bad input line(s) skipped" in stderr
    assert [r["dev_eui"] for r in _csv(out)] == ["0004A30B001C0530", "0004A30B001C0531"]
    assert (out / "0004A30B001C0531.svg").exists()


def test_missing_owner_token_alone_is_not_an_error(tmp_path: Path) -> None:
    line = json.dumps({"dev_eui": "0004a30b001c0532", "join_eui": "70b3d57ed0000001", "owner_token": None})
    result, out = _run(tmp_path, [line, json.dumps(GOOD[0])])
    assert result.exit_code == 0, result.output
    assert "line 1: device 0004A30B001C0532 has no owner_token, skipped" in result.stderr


def test_bad_profile_option(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, [json.dumps(GOOD[0])], "--profile-id", "AABB")
    assert result.exit_code == 2
    assert "8 hex digits" in result.output


def _caption_rows(png: Path, qr: str) -> int:
    """Rows below the QR symbol (quiet zone included) that hold dark pixels: the printed text."""
    image = Image.open(io.BytesIO(png.read_bytes())).convert("L")
    _, code_height = make_symbol(qr).symbol_size(scale=SCALE, border=BORDER)
    assert image.height > code_height
    band = image.crop((0, code_height, image.width, image.height))
    return sum(1 for y in range(band.height) if min(band.getpixel((x, y)) for x in range(band.width)) < 128)  # type: ignore[type-var]


def test_the_png_prints_the_deveui_and_the_serial_under_the_code(tmp_path: Path) -> None:
    result, out = _run(tmp_path, [json.dumps(d) for d in GOOD], "--format", "png")
    assert result.exit_code == 0, result.output
    qr = {r["dev_eui"]: r["qr"] for r in _csv(out)}
    plain = _caption_rows(out / "0004A30B001C0530.png", qr["0004A30B001C0530"])
    with_serial = _caption_rows(out / "0004A30B001C0531.png", qr["0004A30B001C0531"])
    assert plain > 5 and with_serial > plain + 5, (plain, with_serial)
    reference = io.BytesIO()  # the code above the text is exactly segno's rendering of the QR text
    symbol = make_symbol(qr["0004A30B001C0531"])
    symbol.save(reference, kind="png", scale=SCALE, border=BORDER)
    expected = Image.open(io.BytesIO(reference.getvalue())).convert("L")
    label = Image.open(out / "0004A30B001C0531.png").convert("L").crop((0, 0, expected.width, expected.height))
    assert label.tobytes() == expected.tobytes()
    assert parse_qr(qr["0004A30B001C0531"]).serial == "SN42"


def test_labels_are_for_the_user_alone(tmp_path: Path) -> None:
    result, out = _run(tmp_path, [json.dumps(GOOD[0])])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(["labels.csv", "0004A30B001C0530.png", "0004A30B001C0530.svg"], 0o600)
    (out / "labels.csv").chmod(0o644)
    again, _ = _run(tmp_path, [json.dumps(GOOD[0])])
    assert again.exit_code == 0 and stat.S_IMODE((out / "labels.csv").stat().st_mode) == 0o600


RELEASED = {
    "device": {
        "dev_eui": "0004a30b001c0540", "join_eui": "70b3d57ed0000001", "mac_version": "1.0.4", "name": "meter 9",
        "profile_id": "aabb0001", "serial": "SN9", "state": "unclaimed", "owner": "farm",
    },
    "owner_token": "00112233445566778899AABBCCDDEEFF",
}  # fmt: skip


def test_a_release_or_reissue_answer_prints_a_new_label(tmp_path: Path) -> None:
    result, out = _run(tmp_path, json.dumps(RELEASED, indent=2).splitlines())  # as `--json` prints it
    assert result.exit_code == 0, result.output
    (row,) = _csv(out)
    assert parse_qr(row["qr"]) == DeviceQr(
        join_eui=bytes.fromhex("70b3d57ed0000001"), dev_eui=bytes.fromhex("0004a30b001c0540"),
        profile_id=bytes.fromhex("aabb0001"), owner_token=RELEASED["owner_token"], serial="SN9",
    )  # fmt: skip
    assert row["name"] == "meter 9"
    token = tmp_path / "new-token"
    token.write_text(str(RELEASED["owner_token"]) + "\n")
    without = {**RELEASED, "owner_token": None}  # `--json --out FILE` prints the answer without the token
    source = tmp_path / "released.json"
    source.write_text(json.dumps(without, indent=2))
    second = CliRunner().invoke(labels_command, [str(source), "--out", str(tmp_path / "l2"), "--token-file", str(token)])
    assert second.exit_code == 0, second.output
    assert [r["qr"] for r in _csv(tmp_path / "l2")] == [row["qr"]]
    alone = CliRunner().invoke(labels_command, [str(source), "--out", str(tmp_path / "l3")])
    assert alone.exit_code == 0 and "has no owner_token, skipped" in alone.stderr


def test_progress_is_shown_on_stderr(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, [json.dumps(d) for d in GOOD])
    assert "printing labels: 2 entries in" in result.stderr


def test_worker_processes_write_the_same_files(tmp_path: Path) -> None:
    labels = [
        read_label(json.dumps({**GOOD[index % 2], "dev_eui": f"0004A30B001C06{index:02X}"}), b"\0" * 4, True)
        for index in range(2 * CHUNK + 3)
    ]
    assert all(labels) and workers(len(labels)) == 1
    written = {}
    for processes in (1, 2):
        out = tmp_path / str(processes)
        out.mkdir()
        assert sum(write_labels([label for label in labels if label], out, "both", processes)) == len(labels)
        written[processes] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(written[1]) == 2 * len(labels) and written[1] == written[2]
