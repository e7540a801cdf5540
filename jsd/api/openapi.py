"""The OpenAPI 3.1 document of /api/v1, derived from the wire models (jsd/wire) and a table of operations.

Schemas describe what the daemon sends (lowercase hex, RFC 3339 times) and what it accepts (any case, an
optional 0x): the same models validate the requests. Every operation lists every problem it can answer, and
the creating operations link to the ones that use what they made (stateful clients, schemathesis).
tests/api/test_openapi.py keeps paths and routes equal.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, NamedTuple

from pydantic import BaseModel

from jsd.wire import json_schema, requests, responses, type_schema

Schema = dict[str, Any]

# docs/api.md's table of problem types: slug -> (status, when).
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "unauthenticated": (401, "no, unknown or revoked API key"),
    "forbidden": (403, "the key lacks the scope or the account kind may not do this (also: scopes beyond the kind)"),
    "not-found": (404, "no such resource visible to this account (also one a body names, e.g. an ASTK)"),
    "invalid-request": (400, "the request breaks this document (JSON or a field); `errors: [{field, reason}]`"),
    "import-failed": (
        422,
        "bulk import refused: a malformed row or header; `errors: [{line, field, reason}]`, `error_count`",
    ),
    "conflict": (
        409,
        "exists already / state does not allow it (a KEK, lot master key or derivation not here); a bulk import "
        "whose rows are well formed but refused so: `errors: [{line, field, reason}]`, `error_count`",
    ),
    "claim-failed": (403, "unknown device, wrong, spent or used token, already claimed, unusable QR text: one answer"),
    "rate-limited": (
        429,
        "too many failed claims by this account (or, over REST, from this address); `Retry-After` header",
    ),
    "already-exported": (409, "a one-time export was already done, or the key was imported"),
    "payload-too-large": (413, "body over the limit"),
    "request-timeout": (408, "the body did not arrive within `server.body_timeout`; the connection is closed"),
    "method-not-allowed": (405, "the path does not serve this method; `Allow` header"),
    "hsm-unavailable": (503, "the HSM cannot be used now"),
    "database-unavailable": (503, "the database cannot be reached now; `Retry-After` header"),
    "internal": (500, "a bug; the detail carries only a request id"),
}

# Named problem responses: the problem types each may carry (one status per response).
PROBLEM_RESPONSES: dict[str, tuple[str, ...]] = {
    "InvalidRequest": ("invalid-request",),
    "Unauthenticated": ("unauthenticated",),
    "Forbidden": ("forbidden",),
    "ClaimFailed": ("forbidden", "claim-failed"),
    "NotFound": ("not-found",),
    "Conflict": ("conflict", "already-exported"),
    "PayloadTooLarge": ("payload-too-large",),
    "ImportFailed": ("import-failed",),
    "RateLimited": ("rate-limited",),
    "Internal": ("internal",),
    "HsmUnavailable": ("hsm-unavailable", "database-unavailable"),
}
# Every authenticated operation can answer these.
COMMON = ("InvalidRequest", "Unauthenticated", "Forbidden", "Internal", "HsmUnavailable")
WRITE = ("NotFound", "Conflict")


def _links(parameters: dict[str, str], *targets: str) -> dict[str, dict[str, str]]:
    """Links to operations that all take the same parameters from the creating operation's answer."""
    return dict.fromkeys(targets, parameters)


DEVICE_LINKS = _links(
    {"dev_eui": "$response.body#/dev_eui"},
    "get_device", "set_net_id", "set_astk", "reset_nonces", "release", "delete_device",
)  # fmt: skip


class Op(NamedTuple):
    """One operation of the table: what docs/api.md's route table says about it."""

    method: str
    path: str
    op_id: str
    summary: str
    scope: str
    tag: str
    status: int
    answer: str
    schema: type[BaseModel] | None
    problems: tuple[str, ...] = ()
    body: Any = None
    query: type[BaseModel] | None = None
    links: dict[str, dict[str, str]] | None = None


R = responses
Q = requests
OPERATIONS: tuple[Op, ...] = (
    Op("GET", "/me", "me", "Who the API key belongs to", "any", "accounts", 200, "the caller", R.Me),
    Op("POST", "/accounts", "create_account", "Create an account and its first API key", "admin", "accounts", 201,
       "created; the API key is shown this once", R.AccountCreated, ("Conflict",), Q.AccountIn,
       links=_links({"id": "$response.body#/account/id"}, "get_account", "list_api_keys")),
    Op("GET", "/accounts", "list_accounts", "All accounts", "admin", "accounts", 200, "accounts", R.AccountList),
    Op("GET", "/accounts/{id}", "get_account", "One account", "admin or self", "accounts", 200, "the account",
       R.Account, ("NotFound",)),
    Op("POST", "/accounts/{id}/keys", "create_api_key", "A new API key (at most the account kind's scopes)",
       "admin or self", "accounts", 201, "the key, shown this once", R.NewApiKey, ("NotFound",), Q.ApiKeyIn,
       links={"revoke_api_key": {"key_id": "$response.body#/key_id"}}),
    Op("GET", "/accounts/{id}/keys", "list_api_keys", "The account's API keys, without secrets", "admin or self",
       "accounts", 200, "keys", R.ApiKeyList, ("NotFound",)),
    Op("DELETE", "/keys/{key_id}", "revoke_api_key", "Revoke an API key", "admin or own key", "accounts", 204,
       "revoked", None, WRITE),
    Op("POST", "/devices", "add_device", "Pre-commission one device", "devices:write (manufacturer or operator)",
       "devices", 201, "the device; owner token and generated keys shown this once", R.ImportedDevice,
       ("Conflict",), Q.DeviceImport, links=DEVICE_LINKS),
    Op("GET", "/devices", "list_devices", "Devices visible to the caller, by DevEUI", "devices:read", "devices",
       200, "one page", R.DevicePage, query=Q.DevicesQuery),
    Op("POST", "/devices/import", "import_devices", "Bulk pre-commissioning, streamed; all or nothing per file",
       "devices:write (manufacturer or operator)", "devices", 200,
       "JSON Lines: one ImportedDevice per row, then one ImportSummary line", None, ("ImportFailed", "Conflict"),
       "import"),  # no link to import_progress: its answer exists only while the import runs
    Op("GET", "/devices/import/{import_id}", "import_progress",
       "How many rows of a running import (sent with this Import-Id) are checked and staged",
       "devices:write (manufacturer or operator)", "devices", 200, "rows staged so far", R.ImportProgress,
       ("NotFound",)),
    Op("GET", "/devices/{dev_eui}", "get_device", "One device", "devices:read", "devices", 200, "the device",
       R.Device, ("NotFound",)),
    Op("GET", "/devices/{dev_eui}/nonces", "get_device_nonces", "The device's nonce state (JoinNonce, DevNonces)",
       "admin", "devices", 200, "the nonce state", R.Nonces, ("NotFound",)),
    Op("DELETE", "/devices/{dev_eui}", "delete_device", "Remove a device",
       "devices:write (manufacturer: unclaimed only; operator)", "devices", 204, "removed", None, WRITE),
    Op("PUT", "/devices/{dev_eui}/net-id", "set_net_id", "Set or clear the home NetID",
       "devices:write (owner or operator)", "devices", 200, "the device", R.Device, WRITE, Q.NetIdChoice),
    Op("PUT", "/devices/{dev_eui}/astk", "set_astk", "Set or clear the device's ASTK",
       "devices:write (owner or operator)", "devices", 200, "the device", R.Device, WRITE, Q.AstkChoice),
    Op("POST", "/devices/{dev_eui}/release", "release", "Give the device up; a new owner token is issued",
       "devices:write (owner or operator)", "devices", 200, "the device and its new owner token, shown this once",
       R.Released, WRITE, "empty"),
    Op("POST", "/devices/{dev_eui}/owner-token", "reissue_owner_token",
       "Replace a lost owner token of an unclaimed device; the old token is dead",
       "devices:write (manufacturer of the unclaimed device, or operator)", "devices", 200,
       "the device and its new owner token, shown this once", R.Released, WRITE, "empty"),
    Op("POST", "/devices/{dev_eui}/reset-nonces", "reset_nonces", "Forget DevNonces after a device factory reset",
       "devices:write (owner or operator)", "devices", 200, "the device", R.Device, WRITE, "empty"),
    Op("POST", "/claims", "claim", "Claim a device with DevEUI + owner token, or a TR005 QR string", "claim",
       "claims", 200, "the claimed device", R.Device, ("ClaimFailed", "RateLimited"), Q.Claim,
       links=DEVICE_LINKS),
    Op("POST", "/astks", "create_astk", "Generate (in the HSM) or import an application server transport key",
       "astk", "astks", 201, "the ASTK (never its key)", R.Astk, ("Conflict",), Q.AstkIn,
       links={"export_astk": {"name": "$response.body#/name"}}),
    Op("GET", "/astks", "list_astks", "The caller's ASTKs", "astk", "astks", 200, "ASTKs", R.AstkList),
    Op("POST", "/astks/{name}/export", "export_astk", "The key of a generated ASTK, exactly once", "astk",
       "astks", 200, "the key", R.AstkExport, WRITE, "empty"),
    Op("POST", "/network-servers", "add_network_server", "Register a network server (KEK imported into the HSM)",
       "admin", "network-servers", 201, "the NS; a generated token is shown this once", R.NetworkServerCreated,
       ("Conflict",), Q.NetworkServerIn,
       links=_links({"net_id": "$response.body#/network_server/net_id"}, "get_network_server",
                    "remove_network_server")),
    Op("GET", "/network-servers", "list_network_servers", "All network servers", "admin", "network-servers", 200,
       "network servers", R.NetworkServerList),
    Op("GET", "/network-servers/{net_id}", "get_network_server", "One network server", "admin",
       "network-servers", 200, "the NS", R.NetworkServer, ("NotFound",)),
    Op("DELETE", "/network-servers/{net_id}", "remove_network_server", "Remove a network server", "admin",
       "network-servers", 204, "removed", None, WRITE),
    Op("POST", "/roaming-agreements", "add_roaming", "Allow a visited network to ask for a device's home NetID",
       "admin", "roaming", 201, "the agreement", R.RoamingAgreement, WRITE, Q.RoamingAgreementIn,
       links={"remove_roaming": {"home_net_id": "$response.body#/home_net_id",
                                 "visited_net_id": "$response.body#/visited_net_id"}}),
    Op("GET", "/roaming-agreements", "list_roaming", "All roaming agreements", "admin", "roaming", 200,
       "agreements", R.RoamingAgreementList),
    Op("DELETE", "/roaming-agreements/{home_net_id}/{visited_net_id}", "remove_roaming",
       "Remove a roaming agreement", "admin", "roaming", 204, "removed", None, ("NotFound",)),
    Op("GET", "/audit", "audit", "Audit entries visible to the caller, oldest first", "audit:read", "audit", 200,
       "one page", R.AuditPage, query=Q.AuditQuery),
    Op("GET", "/events", "events", "Events visible to the caller, by seq", "events:read", "events", 200,
       "one page", R.EventPage, query=Q.EventsQuery),
)  # fmt: skip


def _problem_response(slugs: tuple[str, ...]) -> Schema:
    """A problem answer whose `type` may only be one of `slugs`."""
    schema: Schema = {
        "allOf": [
            ref("Problem"),
            {"properties": {"type": {"enum": [f"{R.PROBLEM_PREFIX}{slug}" for slug in slugs]}}},
        ]
    }
    out: Schema = {
        "description": "; ".join(f"{slug}: {PROBLEM_TYPES[slug][1]}" for slug in slugs),
        "content": {"application/problem+json": {"schema": schema}},
    }
    if "rate-limited" in slugs:
        out["headers"] = {
            "Retry-After": {
                "required": True,
                "description": "seconds to wait",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return out


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


RESPONSES: dict[str, Schema] = {name: _problem_response(slugs) for name, slugs in PROBLEM_RESPONSES.items()}
IMPORT_BODY: Schema = {
    "required": False,
    "description": "CSV with a header line of DeviceImport names, or one DeviceImport per line; "
    "no body imports nothing",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "application/jsonl": {"schema": {"type": "string"}},
    },
}
IMPORT_ANSWER: Schema = {
    "application/x-ndjson": {
        "schema": {"type": "string"},
        "x-jsonl-items": {"oneOf": [ref("ImportedDevice"), ref("ImportSummary")]},
    }
}


def _models() -> list[type[BaseModel]]:
    """Every model the document names: the answers, the bodies, the import lines, the problem."""
    named: set[type[BaseModel]] = {R.Problem, R.ImportedDevice, R.ImportSummary, Q.Empty}
    named |= {m for op in OPERATIONS for m in (op.schema, op.body) if isinstance(m, type) and issubclass(m, BaseModel)}
    return sorted(named, key=lambda m: m.__name__)


def _parameters(op: Op) -> list[Schema]:
    """Path parameters by their type in jsd.wire.requests, query parameters from the operation's model."""
    out = [_param(name, "path", type_schema(requests.PATH_TYPES[name]), True) for name in _path_names(op.path)]
    if op.query is not None:
        for name, schema in type_schema(op.query)["properties"].items():
            out.append(_param(name, "query", _not_null(schema), False))
    if op.op_id == "import_devices":
        out.append(_param("Import-Id", "header", type_schema(requests.IMPORT_ID_HEADER), False))
    return out


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _param(name: str, where: str, schema: Schema, required: bool) -> Schema:
    description = schema.pop("description", name)
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


def _not_null(schema: Schema) -> Schema:
    """An optional parameter's schema without pydantic's `| None` (absent is how a parameter is left out)."""
    variants = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    out = {**variants[0], **{k: v for k, v in schema.items() if k not in ("anyOf", "title", "type")}}
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        out["type"] = types[0] if len(types) == 1 else types
    return out


def _body(op: Op) -> Schema | None:
    if op.body is None:
        return None
    if op.body == "import":
        return IMPORT_BODY
    if op.body == "empty":
        return {"required": False, "content": {"application/json": {"schema": ref("Empty")}}}
    return {"required": op.body is not Q.ApiKeyIn, "content": {"application/json": {"schema": ref(op.body.__name__)}}}


def operation(op: Op) -> Schema:
    """One operation: its success answer plus every problem it may answer (COMMON + its own)."""
    ok: Schema = {"description": op.answer}
    if op.schema is not None:
        ok["content"] = {"application/json": {"schema": ref(op.schema.__name__)}}
    elif op.op_id == "import_devices":
        ok["content"] = IMPORT_ANSWER
    if op.links:
        ok["links"] = {target: {"operationId": target, "parameters": params} for target, params in op.links.items()}
    responses: dict[str, Schema] = {str(op.status): ok}
    names = [*COMMON, *op.problems]
    if op.body is not None and op.body != "import":
        names.append("PayloadTooLarge")
    for name in names:  # a later name wins its status (ClaimFailed over Forbidden)
        responses[str(PROBLEM_TYPES[PROBLEM_RESPONSES[name][0]][0])] = {"$ref": f"#/components/responses/{name}"}
    out: Schema = {
        "operationId": op.op_id,
        "summary": op.summary,
        "description": f"Scope: {op.scope}.",
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
    }
    if parameters := _parameters(op):
        out["parameters"] = parameters
    if (body := _body(op)) is not None:
        out["requestBody"] = body
    return out


def _paths() -> dict[str, dict[str, Schema]]:
    """Every route of docs/api.md's table, in its order; the document itself first."""
    paths: dict[str, dict[str, Schema]] = {
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        }
    }
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = operation(op)
    return paths


def _schemas(join_eui_required: bool) -> dict[str, Schema]:
    """The models' JSON Schemas; the Problem `type` is one of the URIs, a device names its JoinEUI if
    the daemon has no default to fill in."""
    _, schemas = json_schema(_models())
    schemas["Problem"]["properties"]["type"]["enum"] = [f"{R.PROBLEM_PREFIX}{slug}" for slug in PROBLEM_TYPES]
    if join_eui_required:
        for variant in Q.DEVICE_VARIANTS:
            schema = schemas[variant.__name__]
            schema["required"] = sorted({*schema["required"], "join_eui"})
            schema["properties"]["join_eui"] = _not_null(schema["properties"]["join_eui"])
    return schemas


@cache
def document(join_eui_required: bool = True) -> dict[str, Any]:
    """The whole document (built once per process and setting; callers must not mutate it).

    `join_eui_required`: no ``ownership.default_join_eui`` is configured, so every device names its JoinEUI.
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jsd ownership API",
            "version": "1",
            "description": "Accounts, pre-commissioning, claims, NetID and ASTK of the jsd LoRaWAN Join Server. "
            "Errors are RFC 7807 problems (application/problem+json) whose `type` is one of:\n\n"
            + "\n".join(
                f"- `{R.PROBLEM_PREFIX}{slug}` ({status}): {when}" for slug, (status, when) in PROBLEM_TYPES.items()
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(join_eui_required),
            "responses": copy.deepcopy(RESPONSES),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: jsd_<key_id>_<secret>"}
            },
        },
    }
