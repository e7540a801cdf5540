"""``jsd labels`` rate: QR labels (PNG + SVG + CSV index) per second for N devices of an import answer.

    python bench/labels.py [--labels 2000] [--format both] [--keep DIR]

Writes N lines shaped like ``jsd devices import``'s JSON Lines answer (random owner tokens, every other device
with a serial number, the closing summary line), runs ``jsd labels`` on it as a subprocess (as an operator
does; ``PYTHONPATH`` picks the code under test) and reports labels per wall-clock second and per CPU second of
the command and its worker processes (on a shared machine the second is the steadier figure), then checks
that every label was written. Results also go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def answer_lines(count: int) -> list[str]:
    """An import answer: one line per created device with its owner token, then the summary."""
    lines = []
    for index in range(count):
        entry = {
            "line": index + 1,
            "dev_eui": (0xBE02 << 48 | index).to_bytes(8, "big").hex(),
            "join_eui": "70b3d57e00000001",
            "profile_id": "00000000",
            "name": f"bench {index}",
            "status": "created",
            "owner_token": secrets.token_hex(16),
        }
        if index % 2:
            entry["serial"] = f"SN{index:08d}"
        lines.append(json.dumps(entry))
    lines.append(json.dumps({"summary": {"created": count, "unchanged": 0}}))
    return lines


def run(count: int, fmt: str, work: Path) -> dict[str, object]:
    source = work / "answer.jsonl"
    source.write_text("\n".join(answer_lines(count)) + "\n")
    out = work / "labels"
    command = [sys.executable, "-c", "from jsd_cli import main; main()", "labels", str(source), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*command, "--format", fmt, "--json"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    suffixes = {"png": [".png"], "svg": [".svg"], "both": [".png", ".svg"]}[fmt]
    written = sum(1 for p in out.iterdir() if p.suffix in suffixes)
    if written != count * len(suffixes):
        raise SystemExit(f"expected {count * len(suffixes)} label files, found {written}")
    return {
        "labels": count,
        "format": fmt,
        "seconds": round(wall, 2),
        "labels_per_s": round(count / wall, 1),
        "cpu_seconds": round(cpu, 2),
        "labels_per_cpu_s": round(count / cpu, 1),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=2000)
    parser.add_argument("--format", default="both", choices=["png", "svg", "both"])
    parser.add_argument("--keep", type=Path, help="Write the input and labels here instead of a temporary directory.")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.labels, args.format, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="jsd-labels-") as work:
            result = run(args.labels, args.format, Path(work))
    result |= {"machine": platform.machine(), "python": platform.python_version()}
    print(json.dumps(result, indent=2))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"labels-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
