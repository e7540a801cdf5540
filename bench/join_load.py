"""End-to-end join load: the real daemon (HTTP, SQLite registry of 100,000 devices, SoftHSM2) under wrk.

    python bench/join_load.py [--devices 100000] [--seconds 15] [--workers 2] [--state DIR]

One run:
1. provisions a registry (half LoRaWAN 1.0.2, half 1.1 devices; root keys imported into SoftHSM2 and stored
   as RFC 3394 blobs) — kept in ``--state`` so later runs can skip it;
2. builds the JoinReq bodies with the independent device code of ``jsd_sim`` (unique DevNonces);
3. starts ``jsd serve`` and drives it with wrk (C, so the load generator leaves the cores to the daemon):
   closed loop for the maximum rate, then paced at half the target rate (500/s for 1.0, 250/s for 1.1)
   for latency;
4. samples the resident memory of the whole daemon (supervisor + workers);
5. stops the daemon and measures the HSM crypto alone (``bench/hsm_crypto.py``) on the same cores,
   printing the ratio end-to-end ÷ crypto-only. Results also go to ``bench/results/``.
wrk comes from Debian (``apt-get install -y wrk``); the script installs it when run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

JOIN_EUI = bytes.fromhex("70b3d57e00000001")
HOME = "000013"
SEED = bytes(range(16))  # bench-only: device keys are AES(SEED, DevEUI | kind) so nothing must be stored
NONCE_STEP = 100  # counter DevNonces one run may use per device


def device_keys(dev_eui: bytes) -> tuple[bytes, bytes]:
    """(AppKey, NwkKey) of a bench device, reproducible from its DevEUI."""
    enc = Cipher(algorithms.AES(SEED), modes.ECB()).encryptor()
    out = enc.update(dev_eui + b"\x00" * 8 + dev_eui + b"\x01" * 8) + enc.finalize()
    return out[:16], out[16:]


def dev_eui_of(index: int) -> bytes:
    return bytes.fromhex("be00") + index.to_bytes(6, "big")


def version_of(index: int) -> str:
    return "1.0.2" if index % 2 == 0 else "1.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DATABASE_URL = ""  # set by --database-url; empty: the SQLite file in the state dir


def daemon_env(state: Path, port: int, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2"))}
    if DATABASE_URL:
        env["JSD_DATABASE_URL"] = DATABASE_URL
    env.update({
        "JSD_GENERAL_STATE_DIR": str(state),
        "JSD_SERVER_PORT": str(port),
        "JSD_SERVER_WORKERS": str(workers),
        "JSD_LOG_FORMAT": "json",
    })
    return env


def bench_secrets(state: Path) -> tuple[bytes, str]:
    """The NS KEK and bearer token of a state dir, made on first use so a kept registry stays usable."""
    secrets_file = state / "bench-secrets.json"
    if secrets_file.exists():
        stored = json.loads(secrets_file.read_text())
        return bytes.fromhex(stored["kek"]), stored["token"]
    kek, token = secrets.token_bytes(16), secrets.token_urlsafe(24)
    secrets_file.write_text(json.dumps({"kek": kek.hex(), "token": token}))
    return kek, token


def next_nonce_base(state: Path) -> int:
    """Counter DevNonces must grow across runs on a kept registry: the base is stored with it."""
    secrets_file = state / "bench-secrets.json"
    stored = json.loads(secrets_file.read_text())
    base = stored.get("nonce_base", 0)
    if base > 60_000:
        sys.exit(f"DevNonce counters of {state} are used up: start with a fresh --state")
    stored["nonce_base"] = base + NONCE_STEP
    secrets_file.write_text(json.dumps(stored))
    return int(base)


async def provision(state: Path, count: int, kek: bytes, token: str) -> None:
    """Registry of `count` devices and one NS, unless the state dir already has them."""
    import hashlib

    from jsd.app import hsm_settings
    from jsd.config import database_url, load_settings
    from jsd.hsm import Hsm
    from jsd.registry import NetworkServer, NewDevice, Registry, create_engine
    from jsd.serve import prepare

    settings = load_settings(None, environ=daemon_env(state, 0, 1))
    await prepare(settings)
    engine = create_engine(database_url(settings))
    registry = Registry(engine)
    hsm = await Hsm.open(hsm_settings(settings))
    try:
        if await registry.get_network_server(bytes.fromhex(HOME)) is None:
            await hsm.import_kek("ns-bench", kek)
            await hsm.import_kek("astk-bench", kek)
            await registry.add_network_server(NetworkServer(
                net_id=bytes.fromhex(HOME), name="bench", kek_label="ns-bench",
                token_hash=hashlib.sha256(token.encode()).hexdigest(), cert_fingerprint=None,
                answer_url=None, async_mode=False,
            ))
        have = await registry.count_devices()
        started = time.perf_counter()
        for first in range(have, count, 5000):
            indexes = range(first, min(first + 5000, count))
            euis = [dev_eui_of(index) for index in indexes]
            versions = [version_of(index) for index in indexes]
            keys = [device_keys(eui) for eui in euis]
            # one hop to the HSM thread per 5,000 devices, as the daemon's bulk import does
            app_blobs = await hsm.import_root_keys("default", [app for app, _ in keys])
            nwk_blobs = iter(await hsm.import_root_keys(
                "default", [nwk for (_, nwk), version in zip(keys, versions, strict=True) if version == "1.1"]))
            await registry.add_devices_bulk([
                NewDevice(
                    dev_eui=eui, join_eui=JOIN_EUI, mac_version=version, hsm_group="default",
                    app_key_blob=app_blob, nwk_key_blob=next(nwk_blobs) if version == "1.1" else None,
                    home_net_id=bytes.fromhex(HOME), astk_label="astk-bench", owner_account=None, name=None,
                )
                for eui, version, app_blob in zip(euis, versions, app_blobs, strict=True)
            ])  # fmt: skip
            print(f"  provisioned {indexes[-1] + 1}/{count} devices", file=sys.stderr)
        if count > have:
            print(f"  provisioned {count - have} devices in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    finally:
        await hsm.aclose()
        await engine.dispose()


def build_bodies(path: Path, version: str, count: int, devices: int, offset: int, nonce_base: int) -> None:
    """`count` JoinReq bodies for devices of `version`, spread over the registry, unique DevNonces."""
    from jsd_sim import SimDevice

    indexes = [i for i in range(devices) if version_of(i) == version]
    sims: dict[int, Any] = {}
    with path.open("w") as out:
        for n in range(count):
            index = indexes[(offset + n) % len(indexes)]
            sim = sims.get(index)
            if sim is None:
                dev_eui = dev_eui_of(index)
                app_key, nwk_key = device_keys(dev_eui)
                sim = sims[index] = SimDevice(
                    dev_eui, JOIN_EUI, version, app_key, nwk_key if version == "1.1" else None,
                    next_dev_nonce=nonce_base,
                )
            body = {
                "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI.hex(),
                "TransactionID": n, "MessageType": "JoinReq", "MACVersion": "1.1.0" if version == "1.1" else version,
                "PHYPayload": sim.join_request().hex(), "DevEUI": sim.dev_eui.hex(),
                "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
            }
            out.write(json.dumps(body, separators=(",", ":")) + "\n")


async def verify_sample(port: int, token: str, kek: bytes, version: str, devices: int, offset: int,
                        nonce_base: int, count: int = 64) -> int:
    """Joins of `count` devices checked end to end while the daemon is under test: the device opens the
    join-accept and checks its MIC, and the network and application server unwrap keys equal to the device's
    (``jsd_sim``'s independent code). Any deviation stops the bench."""
    from jsd_sim import SimDevice, SimNetworkServer

    indexes = [i for i in range(devices) if version_of(i) == version]
    async with SimNetworkServer(f"http://127.0.0.1:{port}/", HOME, token=token, kek_label="ns-bench", kek=kek,
                                astks={"astk-bench": kek}) as ns:
        for n in range(count):
            dev_eui = dev_eui_of(indexes[(offset + n * 97) % len(indexes)])
            app_key, nwk_key = device_keys(dev_eui)
            sim = SimDevice(dev_eui, JOIN_EUI, version, app_key, nwk_key if version == "1.1" else None,
                            next_dev_nonce=nonce_base)
            outcome = await ns.join(sim)
            if not outcome.ok or outcome.device_session is None or not outcome.app_s_key_checked:
                raise RuntimeError(f"join of {dev_eui.hex()} not verified: {outcome.result_code}")
    return count


class RssSampler(threading.Thread):
    """Peak resident memory of a process tree (the supervisor and its workers), sampled every 200 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop = pid, 0, threading.Event()

    def tree(self) -> list[int]:
        pids, children = [self.pid], {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        for pid in pids:
            pids.extend(children.get(pid, []))
        return pids

    def rss_kb(self) -> int:
        total = 0
        for pid in self.tree():
            try:
                match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            total += int(match.group(1)) if match else 0
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the whole tree (what a join costs, whatever else runs)."""
        ticks = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak_kb = max(self.peak_kb, self.rss_kb())


def run_wrk(port: int, bodies: Path, token: str, seconds: float, connections: int, delay_ms: float) -> dict[str, float]:
    env = dict(os.environ, JSD_BENCH_BODIES=str(bodies), JSD_BENCH_TOKEN=token, JSD_BENCH_THREADS="2",
               JSD_BENCH_DELAY_MS=str(delay_ms))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(HERE / "lbi.lua"),
         f"http://127.0.0.1:{port}/"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    values: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("JSD "):
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                values[key] = float(value)
    if "success" not in values:
        raise RuntimeError("wrk printed no result:\n" + out)
    seconds_run = values["duration_us"] / 1e6
    return {
        "joins_per_s": values["success"] / seconds_run,
        "joins": values["success"],
        "requests_per_s": values["requests"] / seconds_run,
        "non_success": values["other"] + values["errors"],
        "replayed_bodies": values["wrapped"],
        "p50_ms": values["p50"] / 1000, "p90_ms": values["p90"] / 1000, "p99_ms": values["p99"] / 1000,
        "max_ms": values["max"] / 1000,
    }


def start_daemon(state: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "jsd", "serve"], env=daemon_env(state, port, workers),
                                   stdout=handle, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(1.0)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("daemon exited:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.2)
    raise RuntimeError("daemon did not start")


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        return
    sys.exit("wrk is needed: sudo apt-get install -y wrk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--state", type=Path, help="keep the provisioned registry here between runs")
    parser.add_argument("--database-url", default="",
                        help="registry database (e.g. postgresql+asyncpg://user@host/db, a database of its own: the "
                             "bench provisions into it); default: SQLite in the state dir")
    parser.add_argument("--skip-hsm", action="store_true", help="skip the crypto-only measurement")
    parser.add_argument("--paced-10", type=float, default=500.0,
                        help="rate of the paced 1.0 run (default: half the 1,000/s target; 0 = half the max)")
    parser.add_argument("--paced-11", type=float, default=250.0,
                        help="rate of the paced 1.1 run (default: half the 500/s target; 0 = half the max)")
    args = parser.parse_args()
    args.paced_rate = {"1.0": args.paced_10, "1.1": args.paced_11}
    global DATABASE_URL
    DATABASE_URL = args.database_url
    ensure_wrk()

    state = args.state or Path(tempfile.mkdtemp(prefix="jsd-bench-"))
    state.mkdir(parents=True, exist_ok=True)
    kek, token = bench_secrets(state)
    print(f"provisioning {args.devices} devices in {state}", file=sys.stderr)
    asyncio.run(provision(state, args.devices, kek, token))

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "devices": args.devices, "seconds": args.seconds, "workers": args.workers,
        "database": "postgresql" if args.database_url.startswith("postgres") else "sqlite",
    }
    run_offset = secrets.randbelow(args.devices)

    port = free_port()
    log = state / "daemon.log"
    for version, label in (("1.0.2", "1.0"), ("1.1", "1.1")):
        bodies = state / f"bodies-{version}.jsonl"
        build_bodies(bodies, version, int(args.seconds * 3000), args.devices, run_offset, next_nonce_base(state))
        process = start_daemon(state, port, args.workers, log)
        sampler = RssSampler(process.pid)
        sampler.start()
        try:
            run_wrk(port, bodies, token, 2, 8, 0)  # warm-up: KEK copies, connection pools
            build_bodies(bodies, version, int(args.seconds * 3000), args.devices, run_offset + 7919,
                         next_nonce_base(state))
            cpu_before = sampler.cpu_seconds()
            peak = run_wrk(port, bodies, token, args.seconds, args.connections, 0)
            peak["cpu_ms_per_join"] = 1000 * (sampler.cpu_seconds() - cpu_before) / max(1.0, peak["joins"])
            peak["verified_accepts"] = asyncio.run(verify_sample(
                port, token, kek, version, args.devices, run_offset + 5 * 7919, next_nonce_base(state)))
            rate = args.paced_rate[label] or peak["joins_per_s"] / 2
            connections = 16
            # Each connection waits `delay`, then makes one round trip: calibrate the delay for the rate.
            build_bodies(bodies, version, int(args.seconds * 3000), args.devices, run_offset + 2 * 7919,
                         next_nonce_base(state))
            first_delay = 1000 * connections / rate
            probe = run_wrk(port, bodies, token, 3, connections, first_delay)
            round_trip = max(0.0, 1000 * connections / probe["requests_per_s"] - first_delay)
            build_bodies(bodies, version, int(args.seconds * 3000), args.devices, run_offset + 3 * 7919,
                         next_nonce_base(state))
            half = run_wrk(port, bodies, token, args.seconds, connections, max(0.0, first_delay - round_trip))
        finally:
            sampler.stop.set()
            sampler.join()
            stop_daemon(process)
        results[label] = {"max": peak, "half_rate": half, "peak_rss_mb": sampler.peak_kb / 1024}
        print(f"  {label}: {peak['joins_per_s']:.0f} joins/s max, p99 {half['p99_ms']:.1f} ms at "
              f"{half['joins_per_s']:.0f}/s, peak RSS {sampler.peak_kb / 1024:.0f} MB", file=sys.stderr)

    if not args.skip_hsm:
        from hsm_crypto import measure_with_cpu

        for label in ("1.0", "1.1"):
            rate, cpu = measure_with_cpu(label, args.seconds, args.workers)
            results[label]["hsm_only_joins_per_s"], results[label]["hsm_only_cpu_ms_per_join"] = rate, cpu

    print()
    print(f"{'':6} {'joins/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'at /s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'RSS MB':>7} {'HSM-only/s':>10} {'ratio':>6} {'CPU ms/join':>11} {'HSM-only':>8} {'CPU ratio':>9}")
    for label in ("1.0", "1.1"):
        r = results[label]
        hsm_only = r.get("hsm_only_joins_per_s")
        ratio = f"{r['max']['joins_per_s'] / hsm_only:.2f}" if hsm_only else "-"
        hsm_cpu = r.get("hsm_only_cpu_ms_per_join")
        cpu_ratio = f"{hsm_cpu / r['max']['cpu_ms_per_join']:.2f}" if hsm_cpu else "-"
        print(f"{label:6} {r['max']['joins_per_s']:9.0f} {r['max']['p50_ms']:7.1f} {r['max']['p99_ms']:7.1f} "
              f"{r['half_rate']['joins_per_s']:7.0f} {r['half_rate']['p50_ms']:7.1f} {r['half_rate']['p99_ms']:7.1f} "
              f"{r['peak_rss_mb']:7.0f} {hsm_only or 0:10.0f} {ratio:>6} {r['max']['cpu_ms_per_join']:11.2f} "
              f"{hsm_cpu or 0:8.2f} {cpu_ratio:>9}")
        if r["max"]["non_success"] or r["half_rate"]["non_success"]:
            print(f"       non-Success answers: {r['max']['non_success']:.0f} (max), "
                  f"{r['half_rate']['non_success']:.0f} (half rate)")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"join_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
