"""GET /metrics counts what the ownership workflow does: devices imported, claims by outcome."""

from __future__ import annotations

from typing import Any

JOIN_EUI = "70b3d57ed0000001"


async def _metrics(api: Any) -> dict[str, float]:
    async with api.session.get(api.server.url + "metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_imports_and_claims_are_counted(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    alice = await api.account("alice", "subscriber")
    before = await _metrics(api)
    euis = [eui(), eui(), eui()]
    jsonl = "".join(
        f'{{"dev_eui": "{e}", "join_eui": "{JOIN_EUI}", "mac_version": "1.0.2", "generate_keys": true}}\n' for e in euis
    )
    imported = await api.ok("POST", "/devices/import", acme, data=jsonl, headers={"Content-Type": "application/x-ndjson"})
    tokens = {line["dev_eui"]: line["owner_token"] for line in imported[:-1]}
    await api.ok("POST", "/claims", alice, {"dev_eui": euis[0], "owner_token": tokens[euis[0]]})
    refused = await api.call("POST", "/claims", alice, {"dev_eui": euis[1], "owner_token": tokens[euis[2]]})
    assert refused.status == 403
    after = await _metrics(api)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("jsd_imported_devices_total") == 3
    assert delta('jsd_claims_total{outcome="claimed"}') == 1
    assert delta('jsd_claims_total{outcome="failed"}') == 1
    assert after["jsd_outbox_events"] >= 0
