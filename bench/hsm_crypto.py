"""Joins per second of `Hsm.run_join` alone (no HTTP, DB or JSON), over N spawned processes.

    python bench/hsm_crypto.py --seconds 5 --processes 2

Each run bootstraps a throw-away SoftHSM2 token in a temporary state directory (in a child process, so the
caller never loads SoftHSM2 itself), provisions 64 devices, then starts the workers. Every worker opens
its own `Hsm`, warms up (KEK session copies), waits at a barrier with the others, and keeps a few joins
in flight on its PKCS#11 thread for the measured window. `measure()` is reused by the end-to-end bench.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

VERSIONS = ("1.0", "1.1")
NS_LABEL = "bench-ns"
AS_LABEL = "bench-as"
_VARIANTS = 8  # DevNonces per device, so blocks and MICs differ from join to join


@dataclass(frozen=True)
class _Token:
    conf: str
    module: str
    label: str
    pin: str
    devices: list[dict[str, bytes]]  # root keys ("nwk"/"app") and their blobs ("nwk_blob"/"app_blob")


def _cmac4(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()[:4]


def _pad(*parts: bytes) -> bytes:
    data = b"".join(parts)
    return data + bytes(16 - len(data))


def _recipe(version: str, device: dict[str, bytes], dev_nonce: int) -> Any:
    from jsd.hsm import Derive, JoinRecipe

    join_eui, dev_eui = bytes(range(8)), device["dev_eui"]
    nonce = dev_nonce.to_bytes(2, "little")
    join_nonce = (dev_nonce + 1).to_bytes(3, "little")
    net_id = b"\x13\x00\x00"
    body = join_nonce + net_id + b"\x43\x2e\x01\x26" + b"\x80\x01"
    request = b"\x00" + join_eui + dev_eui + nonce
    if version == "1.0":
        return JoinRecipe(
            group="default",
            roots={"app": device["app_blob"]},
            derives=[
                Derive("nwk_s", "app", _pad(b"\x01", join_nonce, net_id, nonce), "session"),
                Derive("app_s", "app", _pad(b"\x02", join_nonce, net_id, nonce), "session"),
            ],
            request_mic=("app", request, _cmac4(device["app"], request)),
            accept_mic=("app", b"\x20" + body),
            accept_body=body,
            accept_encrypt="app",
            wraps=[("nwk_s", NS_LABEL), ("app_s", AS_LABEL)],
            store=["app_s"],
        )
    return JoinRecipe(
        group="default",
        roots={"nwk": device["nwk_blob"], "app": device["app_blob"]},
        derives=[
            Derive("js_int", "nwk", _pad(b"\x06", dev_eui), "mic"),
            Derive("f_nwk_s_int", "nwk", _pad(b"\x01", join_nonce, join_eui, nonce), "session"),
            Derive("s_nwk_s_int", "nwk", _pad(b"\x03", join_nonce, join_eui, nonce), "session"),
            Derive("nwk_s_enc", "nwk", _pad(b"\x04", join_nonce, join_eui, nonce), "session"),
            Derive("app_s", "app", _pad(b"\x02", join_nonce, join_eui, nonce), "session"),
        ],
        request_mic=("nwk", request, _cmac4(device["nwk"], request)),
        accept_mic=("js_int", b"\xff" + join_eui + nonce + b"\x20" + body),
        accept_body=body,
        accept_encrypt="nwk",
        wraps=[
            ("f_nwk_s_int", NS_LABEL),
            ("s_nwk_s_int", NS_LABEL),
            ("nwk_s_enc", NS_LABEL),
            ("app_s", AS_LABEL),
        ],
        store=["app_s"],
    )


def _provision(state_dir: str, devices: int) -> _Token:
    """Child process: make the token, the KEKs and `devices` root-key pairs."""
    from jsd.hsm import Hsm, Pin, bootstrap_softhsm

    async def run() -> _Token:
        pin = secrets.token_hex(12)
        settings = await bootstrap_softhsm(
            Path(state_dir), Pin(secrets.token_hex(12)), Pin(pin), label="bench", groups=("default",)
        )
        provisioned = []
        async with await Hsm.open(settings) as hsm:
            await hsm.import_kek(NS_LABEL, secrets.token_bytes(16))
            await hsm.import_kek(AS_LABEL, secrets.token_bytes(16))
            for _ in range(devices):
                nwk, app = secrets.token_bytes(16), secrets.token_bytes(16)
                provisioned.append(
                    {
                        "dev_eui": secrets.token_bytes(8),
                        "nwk": nwk,
                        "app": app,
                        "nwk_blob": await hsm.import_root_key("default", nwk),
                        "app_blob": await hsm.import_root_key("default", app),
                    }
                )
        return _Token(os.environ["SOFTHSM2_CONF"], settings.module, settings.token_label, pin, provisioned)

    return asyncio.run(run())


def _worker(token: _Token, version: str, seconds: float, in_flight: int, barrier: Barrier, results: Any) -> None:
    """Child process: joins per second over the common window."""
    os.environ["SOFTHSM2_CONF"] = token.conf
    from jsd.hsm import Hsm, HsmSettings, Pin

    recipes = [_recipe(version, device, nonce) for device in token.devices for nonce in range(_VARIANTS)]

    async def run() -> tuple[float, float]:
        async with await Hsm.open(HsmSettings(token.module, token.label, Pin(token.pin))) as hsm:
            for recipe in recipes[:4]:
                await hsm.run_join(recipe)
            barrier.wait()
            done = 0
            deadline = time.monotonic() + seconds

            async def loop(offset: int) -> None:
                nonlocal done
                index = offset
                while time.monotonic() < deadline:
                    await hsm.run_join(recipes[index % len(recipes)])
                    done += 1
                    index += in_flight

            started, cpu = time.monotonic(), time.process_time()
            await asyncio.gather(*(loop(offset) for offset in range(in_flight)))
            return done / (time.monotonic() - started), 1000 * (time.process_time() - cpu) / max(1, done)

    results.put(asyncio.run(run()))


def measure(version: str, seconds: float, processes: int, *, devices: int = 64, in_flight: int = 4) -> float:
    """Aggregate `run_join` rate (joins/s) of `processes` spawned workers on one fresh SoftHSM2 token."""
    return measure_with_cpu(version, seconds, processes, devices=devices, in_flight=in_flight)[0]


def measure_with_cpu(
    version: str, seconds: float, processes: int, *, devices: int = 64, in_flight: int = 4
) -> tuple[float, float]:
    """The aggregate rate and the CPU milliseconds per join (the workers' own CPU time, so other work on a
    shared machine changes the rate but hardly this)."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}")
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="jsd-bench-hsm-") as state_dir:
        with context.Pool(1) as pool:
            token = pool.apply(_provision, (state_dir, devices))
        barrier = context.Barrier(processes)
        results = context.Queue()
        workers = [
            context.Process(target=_worker, args=(token, version, seconds, in_flight, barrier, results))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        try:
            answers: list[tuple[float, float]] = [results.get(timeout=seconds + 120) for _ in workers]
        finally:
            for worker in workers:
                worker.join(timeout=30)
        rate = sum(r for r, _ in answers)
        return rate, sum(r * cpu for r, cpu in answers) / max(rate, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--processes", type=int, nargs="+", default=[2], help="worker process counts to try")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=VERSIONS)
    args = parser.parse_args()

    print(f"{'version':<8} {'processes':>9} {'joins/s':>9} {'per process':>12} {'CPU µs/join':>12}")
    for version in args.versions:
        for processes in args.processes:
            rate, cpu = measure_with_cpu(version, args.seconds, processes)
            print(f"{version:<8} {processes:>9} {rate:>9.0f} {rate / processes:>12.0f} {1000 * cpu:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
