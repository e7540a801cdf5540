"""GET /metrics after real joins on a two-worker daemon, and /healthz, /readyz (no credentials, no secrets)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text

from jsd.registry import create_engine
from jsd.registry.ops import schema_head


def _lbi(values: dict[str, float], result: str, version: str) -> float:
    return values.get(
        f'jsd_lbi_requests_total{{mac_version="{version}",message_type="JoinReq",result="{result}"}}', 0.0
    )


def test_metrics_count_joins_of_every_worker(daemon: Any, tmp_path: Path) -> None:
    net = daemon.add_ns(tmp_path)
    astk = secrets.token_bytes(16)
    dev_10 = daemon.add_device(tmp_path, "1.0.4", astk, "astk-m")
    dev_11 = daemon.add_device(tmp_path, "1.1", astk, "astk-m")
    daemon.start()

    status, body = daemon.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = daemon.get("/readyz")
    ready = json.loads(body)
    assert status == 200, ready
    assert ready["checks"]["database"]["ok"] and ready["checks"]["hsm"]["ok"]
    assert ready["checks"]["schema"] == {"ok": True, "expected": schema_head(), "revision": schema_head()}
    assert ready["checks"]["mqtt"] == {"state": "not configured", "fatal": False}

    status, before_text = daemon.get("/metrics")
    assert status == 200
    before = daemon.scrape(before_text)
    assert _lbi(before, "Success", "1.0.4") == 0

    for _ in range(6):
        for device in (dev_10, dev_11):
            answer = daemon.post(daemon.join_body(device), net.token)
            assert answer["Result"]["ResultCode"] == "Success", answer
            device.accept(bytes.fromhex(answer["PHYPayload"]))
    bad = bytearray(dev_10.join_request())
    bad[-1] ^= 0xFF
    assert daemon.post(daemon.join_body(dev_10, bytes(bad)), net.token)["Result"]["ResultCode"] == "MICFailed"

    # Each scrape is answered by whichever worker accept()s it, and every one must show all the joins.
    for _ in range(6):
        status, text_ = daemon.get("/metrics")
        assert status == 200
        after = daemon.scrape(text_)
        assert _lbi(after, "Success", "1.0.4") == 6
        assert _lbi(after, "Success", "1.1") == 6
        assert _lbi(after, "MICFailed", "1.0.4") == 1
        assert after['jsd_lbi_request_duration_seconds_count{message_type="JoinReq"}'] == 13
        assert after["jsd_db_commit_duration_seconds_count"] == 12
        assert after["jsd_hsm_join_duration_seconds_count"] == 13  # the bad MIC is found inside the HSM call
        assert after["jsd_outbox_events"] >= 0 and after["jsd_outbox_oldest_age_seconds"] >= 0
        assert net.token not in text_ and net.kek.hex() not in text_ and astk.hex() not in text_
    counted_by = {path.name.split("_")[-1] for path in (daemon.state / "metrics").glob("counter_*.db")}
    assert len(counted_by) >= 2, f"joins counted by {counted_by}: expected both workers"

    daemon.stop()  # a new start counts from zero: the values of the last run are removed first
    daemon.start()
    status, text_ = daemon.get("/metrics")
    assert status == 200 and _lbi(daemon.scrape(text_), "Success", "1.0.4") == 0


async def test_readyz_fails_when_the_schema_is_not_current(jsd_server: Any) -> None:
    url = jsd_server.url.rstrip("/")
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}/readyz") as response:
            assert response.status == 200, await response.text()
        engine = create_engine(jsd_server.database.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
            async with client.get(f"{url}/readyz") as response:
                body = await response.json()
                assert response.status == 503
                assert body["status"] == "unready"
                assert body["checks"]["schema"] == {"ok": False, "expected": schema_head(), "revision": "older"}
                assert body["checks"]["database"]["ok"] and body["checks"]["hsm"]["ok"]
            async with client.get(f"{url}/healthz") as response:
                assert response.status == 200  # alive, only not ready
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": schema_head()})
            await engine.dispose()
        async with client.get(f"{url}/readyz") as response:
            assert response.status == 200
