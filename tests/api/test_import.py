"""Bulk import over HTTP: streamed past the LBI body limit, all or nothing, every bad row with its line."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest

from jsd.ownership.imports import MAX_LINE_BYTES

JOIN_EUI = "70b3d57ed0000001"
HEADER = "dev_eui,join_eui,mac_version,app_key,nwk_key,generate_keys,name\n"
CSV = {"Content-Type": "text/csv"}


def row(dev_eui: str, version: str = "1.0.3", **cells: str) -> str:
    values = {
        "dev_eui": dev_eui,
        "join_eui": JOIN_EUI,
        "mac_version": version,
        "app_key": secrets.token_hex(16),
        "nwk_key": secrets.token_hex(16) if version == "1.1" else "",
        "generate_keys": "",
        "name": "",
    }
    values.update(cells)
    return ",".join(values[name] for name in HEADER.strip().split(",")) + "\n"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_body_far_over_max_body_bytes_imports_streamed(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    euis = [eui() for _ in range(600)]
    body = HEADER + "".join(row(e, name=f"device-{i:04d}-{'x' * 40}") for i, e in enumerate(euis))
    limit = api.server.settings.get("server", "max_body_bytes")
    assert len(body) > 2 * limit
    reply = await api.call("POST", "/devices/import", acme, data=body.encode(), headers=CSV)
    assert reply.status == 200, reply.body
    assert reply.body[-1] == {"summary": {"created": 600, "unchanged": 0}}
    assert [line["line"] for line in reply.body[:-1]] == list(range(2, 602))
    assert len({line["owner_token"] for line in reply.body[:-1]}) == 600
    listed = await api.ok("GET", "/devices?limit=1000", acme)
    assert sorted(d["dev_eui"] for d in listed["devices"]) == sorted(euis)
    too_big = await api.call("POST", "/devices", acme, data=b'{"name": "' + b"x" * limit + b'"}')
    assert (too_big.status, too_big.problem) == (413, "payload-too-large")


async def test_bad_rows_are_all_reported_and_nothing_is_written(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    existing = eui()
    await api.ok("POST", "/devices", acme, {"dev_eui": existing, "join_eui": JOIN_EUI, "mac_version": "1.0.2",
                                             "generate_keys": True})  # fmt: skip
    before = await api.snapshot(acme)
    good, twice = eui(), eui()
    body = (
        HEADER
        + row(good)  # line 2: fine
        + row("zz" * 8)  # 3: bad DevEUI
        + row(eui(), app_key="")  # 4: no key
        + row(eui(), "1.1", nwk_key="")  # 5: 1.1 without NwkKey
        + row(twice)  # 6: fine ...
        + row(twice)  # 7: ... but listed twice
        + row(existing)  # 8: exists with other content
        + "a,b\n"  # 9: wrong number of cells
        + row(eui(), "2.0")  # 10: no such version
        + row(eui(), join_eui="")  # 11: no JoinEUI and no default configured
        + "x" * (MAX_LINE_BYTES * 3) + "\n"  # 12: a line far too long
        + row(eui(), generate_keys="true")  # 13: generate + import
    )  # fmt: skip
    reply = await api.call("POST", "/devices/import", acme, data=body, headers=CSV)
    assert (reply.status, reply.problem) == (422, "import-failed")
    lines = [(e["line"], e["field"]) for e in reply.body["errors"]]
    assert lines == [
        (3, "dev_eui"), (4, "app_key"), (5, "nwk_key"), (7, "dev_eui"), (8, "dev_eui"), (9, None),
        (10, "mac_version"), (11, "join_eui"), (12, None), (13, "generate_keys"),
    ]  # fmt: skip
    assert reply.body["error_count"] == len(lines)
    assert all(isinstance(e["reason"], str) and e["reason"] for e in reply.body["errors"])
    assert await api.snapshot(acme) == before
    assert (await api.call("GET", f"/devices/{good}", acme)).problem == "not-found"
    fixed = HEADER + row(good)
    assert (await api.call("POST", "/devices/import", acme, data=fixed, headers=CSV)).status == 200


async def test_import_refusals(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    alice = await api.account("alice", "subscriber")
    body = HEADER + row(eui())
    before = await api.snapshot(acme, alice)
    for content_type in ("application/json", "text/plain", "multipart/form-data; boundary=x"):
        reply = await api.call("POST", "/devices/import", acme, data=body, headers={"Content-Type": content_type})
        assert (reply.status, reply.problem) == (400, "invalid-request")
        assert reply.body["errors"][0]["field"] == "Content-Type"
    forbidden = await api.call("POST", "/devices/import", alice, data=body, headers=CSV)
    assert (forbidden.status, forbidden.problem) == (403, "forbidden")
    anonymous = await api.call("POST", "/devices/import", None, data=body, headers=CSV)
    assert (anonymous.status, anonymous.problem) == (401, "unauthenticated")
    jsonl = await api.call(
        "POST", "/devices/import", acme, data=b'{"dev_eui": 5}\n[1]\nnot json\n\xff\n',
        headers={"Content-Type": "application/x-ndjson"},
    )  # fmt: skip
    assert jsonl.problem == "import-failed"
    assert sorted({e["line"] for e in jsonl.body["errors"]}) == [1, 2, 3, 4]
    assert await api.snapshot(acme, alice) == before
    empty = await api.call("POST", "/devices/import", acme, data=b"", headers=CSV)
    assert empty.status == 200 and empty.body == [{"summary": {"created": 0, "unchanged": 0}}]


async def test_a_well_formed_file_the_state_refuses_is_a_conflict_listing_its_rows(api: Any, eui: Any) -> None:
    """The answer POST /devices gives each of these devices alone (409), with the rows as a malformed file has."""
    acme, globex = await api.account("acme", "manufacturer"), await api.account("globex", "manufacturer")
    theirs = eui()
    await api.ok("POST", "/devices", globex, {"dev_eui": theirs, "join_eui": JOIN_EUI, "mac_version": "1.0.2",
                                               "generate_keys": True})  # fmt: skip
    before = await api.snapshot(acme, globex)
    body = HEADER + row(eui()) + row(theirs)
    reply = await api.call("POST", "/devices/import", acme, data=body, headers=CSV)
    assert (reply.status, reply.problem, reply.body["title"]) == (409, "conflict", "Conflict")
    assert reply.body["errors"] == [{"line": 3, "field": "dev_eui", "reason": f"device {theirs} exists already"}]
    assert reply.body["error_count"] == 1 and reply.body["detail"].endswith("; nothing was imported")
    no_lot_key = {"dev_eui": eui(), "join_eui": JOIN_EUI, "mac_version": "1.0.3", "secure_element": True,
                  "tkm_info": "0001" + "00" * 8}  # fmt: skip
    alone = await api.call("POST", "/devices", acme, no_lot_key)
    jsonl = await api.call("POST", "/devices/import", acme, data=json.dumps(no_lot_key) + "\n",
                           headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert (alone.status, jsonl.status, jsonl.problem) == (409, 409, "conflict")
    assert [e["field"] for e in alone.body["errors"]] == ["tkm_info"]  # the device alone names the field too
    assert [(e["line"], e["field"]) for e in jsonl.body["errors"]] == [(1, "tkm_info")]
    assert await api.snapshot(acme, globex) == before
    # The file's own mistakes stay 422, and a file with both is 422 listing both.
    twice = eui()
    listed_twice = await api.call("POST", "/devices/import", acme, data=HEADER + row(twice) + row(twice), headers=CSV)
    assert (listed_twice.status, listed_twice.problem) == (422, "import-failed")
    both = await api.call("POST", "/devices/import", acme, data=body + row("zz" * 8), headers=CSV)
    assert (both.status, [e["line"] for e in both.body["errors"]]) == (422, [3, 4])
    assert await api.snapshot(acme, globex) == before


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_jsonl_row_with_an_object_as_mac_version_is_a_bad_row(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    line = f'{{"dev_eui": "{eui()}", "join_eui": "{JOIN_EUI}", "mac_version": {{}}, "generate_keys": true}}\n'
    reply = await api.call("POST", "/devices/import", acme, data=line, headers={"Content-Type": "application/x-ndjson"})
    assert (reply.status, reply.problem) == (422, "import-failed")
    assert reply.body["errors"][0] == {"line": 1, "field": "mac_version", "reason": reply.body["errors"][0]["reason"]}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_typo_in_the_csv_header_is_one_error_with_the_expected_names(api: Any, eui: Any) -> None:
    acme = await api.account("acme", "manufacturer")
    body = HEADER.replace("app_key", "appkey") + "".join(row(eui()) for _ in range(1000))
    reply = await api.call("POST", "/devices/import", acme, data=body, headers=CSV)
    assert (reply.status, reply.problem) == (422, "import-failed")
    assert reply.body["error_count"] == 1 and reply.body["detail"] == "the CSV header is wrong; nothing was imported"
    (error,) = reply.body["errors"]
    assert error["line"] == 1 and "'appkey' (did you mean app_key?)" in error["reason"], error
    assert "dev_eui, join_eui, mac_version" in error["reason"]
    one_row = HEADER + row(eui(), "2.0", app_key="zz", join_eui="x")
    refused = await api.call("POST", "/devices/import", acme, data=one_row, headers=CSV)
    assert (
        refused.body["detail"] == "1 bad row(s), 3 problem(s); nothing was imported"
        and refused.body["error_count"] == 3
    )
    assert (await api.ok("GET", "/devices", acme))["devices"] == []


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_running_import_reports_its_staged_rows_by_import_id(api: Any, eui: Any) -> None:
    acme, globex = await api.account("acme", "manufacturer"), await api.account("globex", "manufacturer")
    import_id = secrets.token_hex(16)
    first, rest = [row(eui()) for _ in range(600)], [row(eui()) for _ in range(10)]
    half_done = asyncio.Event()

    async def body() -> Any:
        yield (HEADER + "".join(first)).encode()
        await half_done.wait()  # the upload stalls until a progress poll has seen the first chunk staged
        yield "".join(rest).encode()

    async def upload() -> Any:
        headers = {**CSV, "Import-Id": import_id}
        return await api.call("POST", "/devices/import", acme, data=body(), headers=headers)  # type: ignore[arg-type]

    running = asyncio.create_task(upload())
    seen: list[int] = []
    for _ in range(600):
        progress = await api.call("GET", f"/devices/import/{import_id}", acme)
        seen.append(progress.status)
        if progress.status == 200:
            break
        assert progress.problem == "not-found"  # nothing staged yet
        await asyncio.sleep(0.05)
    assert progress.body == {"import_id": import_id, "staged": 500}, seen  # the first chunk, not the rest yet
    assert (await api.call("GET", f"/devices/import/{import_id}", globex)).status == 404  # another account's id
    twice = await api.call(
        "POST", "/devices/import", acme, data=HEADER + row(eui()), headers={**CSV, "Import-Id": import_id}
    )
    assert (twice.status, twice.problem) == (409, "conflict")  # the running import's staged rows stay
    assert (await api.ok("GET", f"/devices/import/{import_id}", acme))["staged"] == 500
    half_done.set()
    reply = await running
    assert reply.body[-1] == {"summary": {"created": 610, "unchanged": 0}}
    assert (await api.call("GET", f"/devices/import/{import_id}", acme)).status == 404  # over: nothing staged
    bad = await api.call("GET", "/devices/import/short", acme)
    assert (bad.status, bad.problem) == (400, "invalid-request")
    alice = await api.account("alice", "subscriber")
    assert (await api.call("GET", f"/devices/import/{import_id}", alice)).status == 403


async def test_the_refusal_counts_bad_rows_and_their_problems_apart(api: Any, eui: Any) -> None:
    """One row with three missing fields is one bad row (the detail said "3 bad row(s)")."""
    acme = await api.account("acme", "manufacturer")
    body = f'{{"dev_eui": "{eui()}"}}\n[]\n'
    reply = await api.call(
        "POST", "/devices/import", acme, data=body.encode(), headers={"Content-Type": "application/x-ndjson"}
    )
    assert (reply.status, reply.problem) == (422, "import-failed")
    assert [e["line"] for e in reply.body["errors"]] == [1, 1, 1, 2]
    assert reply.body["detail"] == "2 bad row(s), 4 problem(s); nothing was imported"
