"""What validating a request with the wire models costs: microseconds per body, beside parsing its JSON.

    python bench/wire_models.py [--seconds 1.0]

For each request shape of /api/v1 it times `jsd.wire.validate` (pydantic v2, strict, closed models) on a
typical body already parsed from JSON, and `jsd.bodies.loads` (the strict JSON parser every body goes
through first) on the same body's text, as CPU time per call; then the event check of one join.accepted
event (tests only: the join path publishes plain dicts and never imports jsd.wire), and what importing
pydantic and the models adds to a process's start. Results and the verdict: docs/wire-models.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from jsd.bodies import loads
from jsd.events.schema import check
from jsd.wire import requests as wire
from jsd.wire import validate

KEY = "00112233445566778899aabbccddeeff"
BODIES: list[tuple[str, Any, dict[str, Any]]] = [
    ("POST /accounts", wire.AccountIn, {"id": "acme", "kind": "manufacturer", "name": "Acme Sensors"}),
    ("POST /devices", wire.DeviceImport, {"dev_eui": "0004a30b001c0530", "join_eui": "70b3d57ed0000001",
                                          "mac_version": "1.1", "app_key": KEY, "nwk_key": KEY, "name": "probe"}),
    ("POST /claims", wire.Claim, {"dev_eui": "0004a30b001c0530", "owner_token": KEY.upper()}),
    ("POST /network-servers", wire.NetworkServerIn, {"net_id": "000013", "kek_label": "ns-13", "kek": KEY,
                                                     "generate_token": True, "name": "NS 13"}),
    ("GET /events?…", wire.EventsQuery, {"limit": 100, "after": 1234, "dev_eui": "0004a30b001c0530"}),
]  # fmt: skip
EVENT = {
    "event_id": "0" * 32, "seq": 7, "type": "join.accepted", "time": "2026-11-27T10:00:00.500Z", "account": "alice",
    "dev_eui": "0004a30b001c0530", "data": {"net_id": "000013", "mac_version": "1.0.3", "dev_nonce": 5,
                                             "join_nonce": 9, "session_key_id": KEY},
}  # fmt: skip


def per_call_us(call: Callable[[], object], seconds: float) -> float:
    """CPU microseconds per call, from as many calls as fit in `seconds`."""
    for _ in range(200):
        call()
    count, start = 0, time.process_time()
    while (spent := time.process_time() - start) < seconds:
        for _ in range(500):
            call()
        count += 500
    return spent / count * 1e6


def import_ms(module: str, after: str = "sys") -> float:
    """Wall milliseconds a fresh interpreter spends importing `module` once `after` is loaded (best of three)."""
    code = f"import {after}, time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)]  # fmt: skip
    return min(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per measurement")
    args = parser.parse_args()
    print(f"{'request':<24} {'validate µs':>12} {'JSON parse µs':>14}")
    for name, model, body in BODIES:
        text = json.dumps(body).encode()
        validate_us = per_call_us(lambda m=model, b=body: validate(m, b), args.seconds)
        parse_us = per_call_us(lambda t=text: loads(t), args.seconds)
        print(f"{name:<24} {validate_us:>12.1f} {parse_us:>14.1f}")
    print(f"{'event check (tests)':<24} {per_call_us(lambda: check(EVENT), args.seconds):>12.1f}")
    models = import_ms("jsd.wire.requests, jsd.wire.responses, jsd.wire.events", after="jsd.ownership.model")
    print(f"import pydantic: {import_ms('pydantic'):.0f} ms; pydantic and the models: {models:.0f} ms")


if __name__ == "__main__":
    main()
