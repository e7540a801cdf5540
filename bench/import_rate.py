"""Bulk pre-commissioning rate: ``jsd devices import`` of N devices into the real daemon, streamed.

    python bench/import_rate.py [--devices 100000] [--format jsonl|csv] [--workers 2] [--state DIR]
    python bench/import_rate.py --url http://host:8090 --api-key-file manufacturer.key   # a running daemon

One run:
1. writes N devices to a JSON Lines or CSV file, row by row (half LoRaWAN 1.0.3 with an AppKey, half 1.1
   with AppKey + NwkKey, all imported into the HSM; ``--generate`` lets the HSM generate them instead);
2. starts ``jsd serve`` on a fresh state directory (SQLite, SoftHSM2, as ``scripts/serve.sh`` does) and makes a
   manufacturer account in local mode (``jsd accounts create``), unless ``--url`` names a running daemon;
3. runs ``jsd devices import`` as a subprocess (the CLI an operator uses: chunked upload, progress bar, the
   answer streamed to a 0600 file) and times it;
4. samples the resident memory of the whole daemon (supervisor + workers) and reports the CLI's own peak RSS:
   both stay flat when nothing holds the whole file; and the daemon's CPU time per device (user + system, all
   its processes), steadier than the wall time on a shared machine; ``--profile FILE`` records a py-spy
   flame graph of the daemon's processes meanwhile;
5. checks the answer (N lines + summary, N owner tokens). Results also go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import join_load  # noqa: E402
from join_load import RssSampler, daemon_env, free_port, start_daemon, stop_daemon  # noqa: E402

JOIN_EUI = "70b3d57e00000001"
COLUMNS = ("dev_eui", "join_eui", "mac_version", "name", "app_key", "nwk_key", "generate_keys")


def rows(count: int, generate: bool) -> Any:
    """The bench devices, one dict at a time (keys from the OS CSPRNG: nothing is kept)."""
    for index in range(count):
        version = "1.0.3" if index % 2 == 0 else "1.1"
        row: dict[str, Any] = {
            "dev_eui": (0xBE01 << 48 | index).to_bytes(8, "big").hex(),
            "join_eui": JOIN_EUI,
            "mac_version": version,
            "name": f"bench {index}",
        }
        if generate:
            row["generate_keys"] = True
        else:
            row["app_key"] = secrets.token_hex(16)
            if version == "1.1":
                row["nwk_key"] = secrets.token_hex(16)
        yield row


def write_devices(path: Path, count: int, fmt: str, generate: bool) -> None:
    """Stream the rows to disk; the file is never held in memory here either."""
    with path.open("w", newline="") as out:
        if fmt == "csv":
            out.write(",".join(COLUMNS) + "\n")
            for row in rows(count, generate):
                out.write(",".join(str(row.get(c, "")).lower() for c in COLUMNS) + "\n")
        else:
            for row in rows(count, generate):
                out.write(json.dumps(row, separators=(",", ":")) + "\n")


def local_manufacturer(env: dict[str, str]) -> str:
    """A manufacturer account made in local mode (no daemon API key exists yet on a fresh state)."""
    made = subprocess.run(
        [sys.executable, "-m", "jsd", "accounts", "create", "bench", "--kind", "manufacturer", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        sys.exit("jsd accounts create failed:\n" + made.stderr)
    return str(json.loads(made.stdout)["api_key"]["key"])


def run_import(url: str, key_env: dict[str, str], source: Path, answer: Path) -> tuple[float, float, float, str]:
    """(seconds, CLI peak RSS MB, CLI CPU seconds, stdout) of ``jsd devices import``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSD_")} | key_env | {"JSD_URL": url}
    logs = answer.with_suffix(".cli")
    started = time.perf_counter()
    with logs.open("w+") as out, open(os.devnull) as null:
        # The progress bar goes to stderr; the CLI's own peak RSS comes from wait4 on exactly this child.
        child = subprocess.Popen(
            [sys.executable, "-m", "jsd", "devices", "import", str(source), "--out", str(answer), "--json"],
            env=env,
            stdin=null,
            stdout=out,
            stderr=sys.stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        stdout = out.read()
    logs.unlink()
    if child.returncode != 0:
        sys.exit(f"jsd devices import exited {child.returncode}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stdout


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the daemon and its workers until SIGINT (``pip install py-spy``): SVG or collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    kind = "flamegraph" if out.suffix == ".svg" else "raw"
    return subprocess.Popen(
        [spy, "record", "--subprocesses", "--pid", str(pid), "--rate", "50", "--format", kind, "--output", str(out),
         "--nonblocking"],
        stdout=subprocess.DEVNULL,
    )


def check_answer(answer: Path, count: int) -> dict[str, int]:
    lines = tokens = 0
    summary: dict[str, int] = {}
    with answer.open() as handle:
        for line in handle:
            entry = json.loads(line)
            if "summary" in entry:
                summary = entry["summary"]
                continue
            lines += 1
            tokens += entry.get("owner_token") is not None
    if lines != count or tokens != summary.get("created"):
        sys.exit(f"answer {answer}: {lines} device lines, {tokens} tokens, summary {summary}; expected {count}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--generate", action="store_true", help="let the HSM generate the root keys")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--state", type=Path, help="state directory of the daemon started here (default: a new one)")
    parser.add_argument("--url", help="import into this running daemon instead of starting one")
    parser.add_argument("--api-key-file", help="with --url: a manufacturer's API key")
    parser.add_argument("--database-url", default="", help="registry database of the daemon started here "
                        "(e.g. postgresql+asyncpg://user@host/db, a database of its own); default: SQLite")
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of the daemon to this file (.svg: a flame graph; else collapsed stacks)")
    args = parser.parse_args()
    if args.url and not args.api_key_file:
        parser.error("--url needs --api-key-file (a manufacturer's key)")
    join_load.DATABASE_URL = args.database_url

    work = Path(tempfile.mkdtemp(prefix="jsd-import-bench-"))
    source = work / f"devices.{args.format}"
    started = time.perf_counter()
    write_devices(source, args.devices, args.format, args.generate)
    print(
        f"wrote {args.devices} devices to {source} ({source.stat().st_size / 1e6:.1f} MB) in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    answer = work / "answer.jsonl"

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "devices": args.devices,
        "format": args.format,
        "keys": "generated" if args.generate else "imported",
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "database": "postgresql" if args.database_url else "sqlite",
    }
    if args.url:
        seconds, cli_rss, cli_cpu, stdout = run_import(args.url, {"JSD_API_KEY_FILE": args.api_key_file}, source, answer)
        daemon_rss = None
    else:
        state = args.state or work / "state"
        state.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = daemon_env(state, port, args.workers)
        key = local_manufacturer(env)
        process = start_daemon(state, port, args.workers, work / "daemon.log")
        sampler = RssSampler(process.pid)
        sampler.start()
        profiler = None if args.profile is None else start_profiler(process.pid, args.profile)
        try:
            idle_rss = sampler.rss_kb() / 1024
            cpu_before = sampler.cpu_seconds()
            seconds, cli_rss, cli_cpu, stdout = run_import(f"http://127.0.0.1:{port}", {"JSD_API_KEY": key}, source, answer)
            daemon_cpu = sampler.cpu_seconds() - cpu_before
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
                profiler.wait(60)
            sampler.stop.set()
            sampler.join()
            stop_daemon(process)
        daemon_rss = sampler.peak_kb / 1024
        results |= {
            "workers": args.workers,
            "daemon_idle_rss_mb": round(idle_rss),
            "daemon_peak_rss_mb": round(daemon_rss),
            "daemon_cpu_s": round(daemon_cpu, 1),
            "daemon_cpu_ms_per_device": round(1000 * daemon_cpu / args.devices, 3),
        }
    summary = check_answer(answer, args.devices)
    results |= {
        "seconds": round(seconds, 1),
        "devices_per_s": round(args.devices / seconds),
        "summary": summary,
        "cli_peak_rss_mb": round(cli_rss),
        "cli_cpu_ms_per_device": round(1000 * cli_cpu / args.devices, 3),
        "cli_output": json.loads(stdout),
    }
    print(
        f"imported {args.devices} devices ({args.format}, keys {results['keys']}) in {seconds:.1f} s: "
        f"{args.devices / seconds:.0f} devices/s; daemon peak RSS "
        f"{'-' if daemon_rss is None else f'{daemon_rss:.0f} MB'}, CLI peak RSS {cli_rss:.0f} MB; daemon CPU "
        f"{results.get('daemon_cpu_ms_per_device', '-')} ms per device, CLI CPU {results['cli_cpu_ms_per_device']} ms"
    )
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"import_rate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    answer.unlink()  # root keys and owner tokens of throw-away devices: leave no secrets lying around
    source.unlink()
    if args.state is None and not args.url:
        shutil.rmtree(work)  # the throw-away daemon's database and token


if __name__ == "__main__":
    main()
