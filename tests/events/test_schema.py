"""The event schemas agree with the contract (docs/api.md), with docs/events.md, and with a real validator.

The block of docs/events.md is generated from jsd/events/schema.py; this test fails when either was edited alone
(regenerate with ``python -m jsd.events.schema``). The topic rules that keep replies on the asker's own
topics are checked here too.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from jsd.events.schema import BEGIN, END, EVENT_TYPES, EventType, check, doc_block, event_schema
from jsd.events.topics import Topics

ROOT = Path(__file__).resolve().parents[2]


def test_events_doc_block_is_the_generated_one() -> None:
    doc = (ROOT / "docs" / "events.md").read_text()
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1
    block = doc[doc.index(BEGIN) : doc.index(END) + len(END)]
    assert block == doc_block(), "docs/events.md's events block is stale: run `python -m jsd.events.schema`"
    assert BEGIN not in (ROOT / "README.md").read_text(), "the event reference lives in docs/events.md"


def _contract() -> dict[str, tuple[str, set[str]]]:
    """docs/api.md's event table: type -> (account column, names of the data members)."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("## Events") : text.index("## MQTT commands")]
    rows = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([a-z.]+_?[a-z_]*)` \| ([^|]+) \| `(.*)`[^|]*\|", line.strip())
        if match:
            members = re.sub(r"\[.*?\]", "", match.group(3))
            rows[match.group(1)] = (match.group(2).strip(), set(re.findall(r'"(\w+)"', members)))
    return rows


def test_event_types_are_those_of_the_contract() -> None:
    contract = _contract()
    assert len(contract) == 11
    ours = {t.name: (t.account, {f.name for f in t.fields}) for t in EVENT_TYPES}
    assert ours == contract


def _example(event_type: EventType) -> dict[str, Any]:
    """A smallest valid event of the type, built from its schema."""

    def sample(schema: dict[str, Any]) -> Any:
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema["type"] if isinstance(schema["type"], str) else schema["type"][0]
        if kind == "string":
            digits = re.search(r"\{(\d+)\}", schema.get("pattern", ""))
            return "0" * int(digits.group(1)) if digits else "x"
        if kind == "integer":
            return schema.get("minimum", 0)
        if kind == "boolean":
            return True
        return [sample(schema["items"])]

    return {
        "event_id": "0" * 32, "seq": 1, "type": event_type.name, "time": "2026-11-27T10:00:00.500Z",
        "account": "_unowned", "dev_eui": "0004a30b001c0530",
        "data": {f.name: sample(dict(f.schema)) for f in event_type.fields},
    }  # fmt: skip


def _broken(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for name, change in (
        ("extra member", lambda e: e.update(key="00" * 16)),
        ("extra data member", lambda e: e["data"].update(app_key="00" * 16)),
        ("uppercase EUI", lambda e: e.update(dev_eui=e["dev_eui"].upper() + "A")),
        ("seq zero", lambda e: e.update(seq=0)),
        ("no time", lambda e: e.pop("time")),
        ("bad account", lambda e: e.update(account="Acme")),
        ("offset time", lambda e: e.update(time="2026-11-27T10:00:00+01:00")),
        ("time without milliseconds", lambda e: e.update(time="2026-11-27T10:00:00Z")),
    ):
        broken = copy.deepcopy(event)
        change(broken)
        cases.append((name, broken))
    for member in event["data"]:
        broken = copy.deepcopy(event)
        del broken["data"][member]
        cases.append((f"no data.{member}", broken))
    return cases


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.name)
def test_check_accepts_the_documented_form_and_refuses_others(event_type: EventType) -> None:
    example = _example(event_type)
    assert check(example) == []
    for name, broken in _broken(example):
        assert check(broken) != [], name
    assert check({**example, "type": "device.exploded"}) == ["type: unknown event type 'device.exploded'"]


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.name)
def test_the_published_schemas_agree_with_a_real_json_schema_validator(event_type: EventType) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.Draft202012Validator(event_schema(event_type))
    example = _example(event_type)
    assert validator.is_valid(example)
    for name, broken in _broken(example):
        assert validator.is_valid(broken) is (check(broken) == []), name


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("jsd/v1/accounts/acme/replies", True),
        ("jsd/v1/accounts/acme/replies/app-1/x", True),
        ("jsd/v1/accounts/acme/replies/", False),
        ("jsd/v1/accounts/acme/repliesx", False),
        ("jsd/v1/accounts/acme/replies/+", False),
        ("jsd/v1/accounts/acme/replies/#", False),
        ("jsd/v1/accounts/acme/replies//x", False),
        ("jsd/v1/accounts/bob/replies", False),
        ("jsd/v1/accounts/acme/devices/0004a30b001c0530/events/device.claimed", False),
        ("jsd/v1/accounts/acme/commands", False),
        ("jsd/v1/accounts/acme/replies/" + "x" * 1100, False),
    ],
)
def test_replies_stay_on_the_accounts_own_replies_topics(topic: str, allowed: bool) -> None:
    assert Topics("jsd/v1").reply_allowed("acme", topic) is allowed


def test_topic_layout() -> None:
    topics = Topics("site/jsd/v1")
    assert topics.event("acme", "0004A30B001C0530", "device.claimed") == (
        "site/jsd/v1/accounts/acme/devices/0004a30b001c0530/events/device.claimed"
    )
    assert topics.all_commands == "site/jsd/v1/accounts/+/commands"
    assert topics.command_account("site/jsd/v1/accounts/acme/commands") == "acme"
    assert topics.command_account("site/jsd/v1/accounts/acme/replies") is None
    assert topics.status == "site/jsd/v1/status"
