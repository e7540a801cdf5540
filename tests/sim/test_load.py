"""Load-mode statistics on synthetic latencies, and short bounded load runs on loopback servers."""

from __future__ import annotations

import importlib.util
import io
import math
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from jsd_sim.load import LatencyStats, LoadConfig, LoadReport, percentile, run_load, write_histogram_png
from jsd_sim.network_server import SimNetworkServer
from jsd_sim.scenarios import provision


def test_percentile_nearest_rank_on_1_to_100() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100


def test_percentile_small_and_empty_samples() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_latency_stats_from_seconds_is_order_free() -> None:
    seconds = [x / 1000 for x in range(1000, 0, -1)]
    random.Random(4).shuffle(seconds)
    s = LatencyStats.from_seconds(seconds)
    assert s.count == 1000
    assert (s.p50, s.p90, s.p99, s.max) == pytest.approx((500, 900, 990, 1000))
    assert s.mean == pytest.approx(500.5)


def test_latency_stats_with_a_tail() -> None:
    seconds = [0.002] * 989 + [0.050] * 10 + [1.0]
    s = LatencyStats.from_seconds(seconds)
    assert s.p50 == pytest.approx(2) and s.p90 == pytest.approx(2)
    assert s.p99 == pytest.approx(50) and s.max == pytest.approx(1000)


def test_report_text_and_json() -> None:
    report = LoadReport("closed", "http://x/", None, 4, 2.0, 110, 100, {"MICFailed": 10},
                        LatencyStats.from_seconds([0.001] * 100), [0.001] * 100)
    assert report.joins_per_s == 50
    j = report.to_json()
    assert j["joins_per_s"] == 50 and j["errors"] == {"MICFailed": 10} and j["latency_ms"]["p99"] == 1.0
    assert "50.0 joins/s" in report.to_text() and "MICFailed 10" in report.to_text()


def test_histogram_needs_matplotlib_or_says_so(tmp_path: Path) -> None:
    report = LoadReport("closed", "u", None, 1, 1.0, 3, 3, {}, LatencyStats.from_seconds([0.001] * 3), [0.001] * 3)
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(RuntimeError, match="matplotlib"):
            write_histogram_png(report, str(tmp_path / "h.png"))
    else:
        write_histogram_png(report, str(tmp_path / "h.png"))
        assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        LoadConfig(mode="burst")
    with pytest.raises(ValueError):
        LoadConfig(mode="open", rate=0)


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_load_against_fake_js_verifies_every_join(fake_js: Any, mode: str) -> None:
    scenario, nss = await provision(fake_js, versions=("1.0.3", "1.0.4", "1.1"), devices_per_version=8,
                                    with_visited=False)
    out = io.StringIO()
    try:
        report = await run_load(nss["home"], scenario.devices,
                                LoadConfig(mode=mode, rate=150, concurrency=4, duration=3.0, total=60),
                                progress=out, progress_interval=0.05)
    finally:
        for ns in nss.values():
            await ns.close()
    assert report.errors == {} and report.sent == report.ok == 60
    assert fake_js.requests == 60
    assert report.latency.count == 60 and report.latency.p50 <= report.latency.p99 <= report.latency.max
    assert "joins/s" in out.getvalue() and out.getvalue().endswith("\n")


def _http_ceiling() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "http_ceiling.py"
    spec = importlib.util.spec_from_file_location("http_ceiling", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_load_against_http_ceiling_without_verification(sim_device_factory: Any) -> None:
    runner = web.AppRunner(_http_ceiling().build_app("1.0.3"), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        async with SimNetworkServer(url, "000013", token="t") as ns:
            devices = [sim_device_factory("1.0.3") for _ in range(8)]
            report = await run_load(ns, devices, LoadConfig(mode="closed", concurrency=4, duration=2.0, total=40,
                                                            verify=False), progress=None)
            assert report.ok == 40 and report.errors == {}
            strict = await run_load(ns, devices, LoadConfig(mode="closed", concurrency=2, duration=2.0, total=4),
                                    progress=None)
            assert strict.ok == 0 and strict.errors == {"deviation:accept": 4}
    finally:
        await runner.cleanup()


async def test_open_loop_counts_arrivals_without_an_idle_device(sim_device_factory: Any) -> None:
    async def slow(request: web.Request) -> web.Response:
        import asyncio

        await asyncio.sleep(0.3)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with SimNetworkServer(f"http://127.0.0.1:{runner.addresses[0][1]}/", "000013") as ns:
            report = await run_load(ns, [sim_device_factory("1.0.2")], LoadConfig(mode="open", rate=50,
                                    duration=0.2), progress=None)
    finally:
        await runner.cleanup()
    assert report.ok == 0
    assert report.errors["transport"] == 1
    assert report.errors["sim:no-idle-device"] == report.sent - 1 >= 5
