"""The event types: one declaration per type, from which the JSON schemas and the tables of docs/events.md come.

The ownership service and the join path write events as plain dicts; this module is what they are held to.
Each type's `data` is a model of jsd/wire/events.py: `event_schema` is its JSON Schema and `check` validates
an event's JSON with the same model, so the tests can insist that every event that reaches the broker is
the documented one. ``python -m
jsd.events.schema`` prints docs/events.md's generated block; a test keeps that document in step with it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, create_model

from jsd.wire import Invalid, type_schema, validate
from jsd.wire import events as ev

__all__ = ["EVENT_TYPES", "EventType", "Field", "check", "event_schema", "doc_block"]


@dataclass(frozen=True)
class Field:
    """One member of an event's `data`, with its schema and what it means."""

    name: str
    schema: Mapping[str, Any]
    about: str


@dataclass(frozen=True)
class EventType:
    """An event type: its name (also the last topic level), whose account it goes to, and its data's model."""

    name: str
    account: str
    about: str
    data: type[BaseModel]

    @property
    def fields(self) -> tuple[Field, ...]:
        """The members of `data`, in order, each with its JSON Schema (from the model)."""
        schema = type_schema(self.data)
        return tuple(
            Field(name, {k: v for k, v in sub.items() if k != "description"}, sub.get("description", ""))
            for name, sub in schema.get("properties", {}).items()
        )


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("device.precommissioned", "manufacturer", "a device was imported (REST, bulk import or CLI)",
              ev.DevicePrecommissioned),
    EventType("device.keys_exported", "manufacturer", "generated root keys left the daemon (in the import answer)",
              ev.DeviceKeysExported),
    EventType("device.claimed", "new owner", "the device was claimed with its owner token", ev.DeviceClaimed),
    EventType("claim.failed", "claimant",
              "a claim of this DevEUI by the account failed (whether the device exists is not told)", ev.ClaimFailed),
    EventType("device.released", "former owner", "the owner gave the device up; a new owner token exists",
              ev.DeviceReleased),
    EventType("device.netid_set", "owner", "the home network changed", ev.DeviceNetIdSet),
    EventType("device.astk_set", "owner", "the application server transport key changed", ev.DeviceAstkSet),
    EventType("join.accepted", "owner", "a JoinReq was answered with a join-accept", ev.JoinAccepted),
    EventType("join.rejected", "owner", "a JoinReq or RejoinReq of a known device was refused", ev.JoinRejected),
    EventType("rejoin.accepted", "owner", "a RejoinReq (LoRaWAN 1.1) was answered with a join-accept",
              ev.RejoinAccepted),
    EventType("appskey.answered", "owner",
              "an AppSKeyReq was answered (the AppSKey went out wrapped under the ASTK)", ev.AppSKeyAnswered),
)  # fmt: skip

_BY_NAME = {t.name: t for t in EVENT_TYPES}


@cache
def _message_model(event_type: EventType) -> type[BaseModel]:
    """The whole message of one type: the envelope, `type` fixed to its name, and its `data`."""
    return create_model(
        f"Event_{event_type.name.replace('.', '_')}",
        __base__=ev.Envelope,
        type=(Literal[event_type.name], ...),  # type: ignore[arg-type]
        data=(event_type.data, ...),
    )


def event_schema(event_type: EventType) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event type's whole message, as published and as GET /events lists it."""
    envelope = type_schema(ev.Envelope)
    data = type_schema(event_type.data)
    data.pop("title", None)
    data.pop("description", None)
    properties = dict(envelope["properties"])
    properties = {
        "event_id": properties["event_id"],
        "seq": properties["seq"],
        "type": {"const": event_type.name},
        "time": properties["time"],
        "account": properties["account"],
        "dev_eui": properties["dev_eui"],
        "data": {"type": "object", "additionalProperties": False, "required": data.get("required", []),
                 "properties": data.get("properties", {})},
    }  # fmt: skip
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:jsd:event:{event_type.name}",
        "title": event_type.name,
        "type": "object",
        "additionalProperties": False,
        "required": ["event_id", "seq", "type", "time", "account", "dev_eui", "data"],
        "properties": properties,
    }


def check(event: Mapping[str, Any]) -> list[str]:
    """What is wrong with an event's JSON (empty when it is a documented event of a known type)."""
    event_type = _BY_NAME.get(str(event.get("type")))
    if event_type is None:
        return [f"type: unknown event type {event.get('type')!r}"]
    try:
        validate(_message_model(event_type), dict(event))
    except Invalid as exc:
        return [f"{field or '(event)'}: {reason}" for field, reason in exc.errors]
    return []


# -- docs/events.md's generated block -----------------------------------------------------------------------

BEGIN = "<!-- BEGIN events generated by `python -m jsd.events.schema`; edit jsd/events/schema.py instead -->"
END = "<!-- END events generated -->"


def _type_text(schema: Mapping[str, Any]) -> str:
    types = schema.get("type", [])
    names = [types] if isinstance(types, str) else list(types)
    if "enum" in schema:
        text = " \\| ".join(json.dumps(v) for v in schema["enum"])
    elif "pattern" in schema and schema["pattern"].startswith("^[0-9a-f]{"):
        text = f"{schema['pattern'][10:-2]} hex"
    elif names and names[0] == "array":
        text = "[" + _type_text(schema["items"]) + ", …]"
    else:
        text = names[0] if names else "any"
    return text + (" or null" if "null" in names else "")


def _compact(value: Any, indent: int = 0) -> str:
    """JSON with one line per property: short enough to read, exact enough to copy into a validator."""
    if not (isinstance(value, dict) and any(isinstance(v, dict) for v in value.values())):
        return json.dumps(value, ensure_ascii=False)
    pad = "  " * (indent + 1)
    lines: list[str] = []
    for key, item in value.items():
        text = f"{json.dumps(key)}: {_compact(item, indent + 1)}"
        if lines and "\n" not in text and "\n" not in lines[-1] and len(pad + lines[-1] + text) < 110:
            lines[-1] += ", " + text
        else:
            lines.append(text)
    return "{\n" + ",\n".join(pad + line for line in lines) + "\n" + "  " * indent + "}"


def doc_block() -> str:
    """docs/events.md's table of event types and their schemas, between the BEGIN/END markers."""
    lines = [
        BEGIN,
        "",
        "| type | published to the account of | when | `data` |",
        "|---|---|---|---|",
    ]
    for t in EVENT_TYPES:
        data = ", ".join(f"`{f.name}`: {_type_text(f.schema)} ({f.about})" for f in t.fields) or "`{}`"
        lines.append(f"| `{t.name}` | {t.account} | {t.about} | {data} |")
    lines += ["", "<details><summary>JSON Schema of each event type</summary>", ""]
    for t in EVENT_TYPES:
        lines += [f"`{t.name}`:", "", "```json", _compact(event_schema(t)), "```", ""]
    lines += ["</details>", "", END]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    sys.stdout.write(doc_block() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
