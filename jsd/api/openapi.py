"""The OpenAPI 3.1 document of /api/v1, built as data: docs/api.md in machine-readable form.

Schemas describe what the daemon sends (lowercase hex, RFC 3339 times) and what it accepts (any case, an
optional 0x). Every operation lists every problem it can answer, so a client generated from this document
(and schemathesis' conformance checks) can rely on it. tests/api/test_openapi.py keeps paths and routes equal.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsd.ownership.model import ACCOUNT_ID_RE, SCOPES

Schema = dict[str, Any]

MAC_VERSIONS = ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"]
ACCOUNT_KINDS = ["manufacturer", "subscriber", "operator"]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null (OpenAPI 3.1 is JSON Schema 2020-12: a type list, or anyOf for references)."""
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    required: dict[str, Schema],
    optional: dict[str, Schema] | None = None,
    *,
    closed: bool = True,
    description: str | None = None,
) -> Schema:
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})}, "required": sorted(required)}
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def _device(
    required: dict[str, Schema], optional: dict[str, Schema], *, generate: bool | None, se: bool | None
) -> Schema:
    """One DeviceImport variant: the shared members plus its own; `generate`/`se` pin those flags if not None."""
    shared: dict[str, Schema] = {
        "join_eui": ref("EUIIn"),
        "name": TEXT,
        "admin_info": {**TEXT, "maxLength": 4096},
        "hsm_group": HSM_GROUP,
        "profile_id": hex_in(8, "TR005 ProfileID (VendorID + VendorProfileID)"),
        "serial": {"type": "string", "pattern": "^[0-9A-Za-z]{1,32}$", "description": "printed on the TR005 label"},
    }
    if generate is not None:
        shared["generate_keys"] = {"const": generate}
    if se is not None:
        shared["secure_element"] = {"const": se}
    return obj(
        {"dev_eui": ref("EUIIn"), "mac_version": {"type": "string", "enum": MAC_VERSIONS}, **required},
        {**shared, **optional},
    )


def hex_out(digits: int, description: str) -> Schema:
    return {"type": "string", "pattern": f"^[0-9a-f]{{{digits}}}$", "description": description}


def hex_in(digits: int, description: str) -> Schema:
    return {"type": "string", "pattern": f"^(0[xX])?[0-9a-fA-F]{{{digits}}}$", "description": description}


TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339 UTC with milliseconds: 2026-11-27T10:00:00.000Z"}
TEXT: Schema = {
    "type": "string",
    "maxLength": 255,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
    "description": "printable text",
}
HSM_GROUP: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,48}$"}
ASTK_NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
OWNER_TOKEN: Schema = {
    "type": "string",
    "pattern": "^[0-9A-Fa-f]{1,64}$",
    "description": "32 hex digits (random token) or 20 (TKM info of a secure-element device); any case",
}
SCOPE_LIST: Schema = {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}}


# docs/api.md's table of problem types: slug -> (status, when).
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "unauthenticated": (401, "no, unknown or revoked API key"),
    "forbidden": (403, "the key lacks the scope or the account kind may not do this"),
    "not-found": (404, "no such resource visible to this account"),
    "invalid-request": (400, "malformed JSON or field; `errors: [{field, reason}]`"),
    "import-failed": (422, "bulk import refused; `errors: [{line, field, reason}]`, `error_count`"),
    "conflict": (409, "exists already / state does not allow it"),
    "claim-failed": (403, "unknown device, wrong, spent or already-used token, already claimed: one answer"),
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

SCHEMAS: dict[str, Schema] = {
    "EUI": hex_out(16, "EUI-64, 16 lowercase hex digits"),
    "NetID": hex_out(6, "NetID, 6 lowercase hex digits"),
    "Key": hex_out(32, "AES-128 key, 32 lowercase hex digits"),
    "EUIIn": hex_in(16, "EUI-64: 16 hex digits, any case, optional 0x"),
    "NetIDIn": hex_in(6, "NetID: 6 hex digits, any case, optional 0x"),
    "KeyIn": hex_in(32, "AES-128 key: 32 hex digits, any case, optional 0x"),
    "FieldError": obj(
        {"field": nullable({"type": "string"}), "reason": {"type": "string"}},
        {"line": {"type": "integer", "minimum": 1, "description": "bulk import only: the line of the row"}},
    ),
    "Problem": obj(
        {
            "type": {"type": "string", "enum": [f"urn:jsd:problem:{slug}" for slug in PROBLEM_TYPES]},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
        },
        {
            "errors": {"type": "array", "items": ref("FieldError")},
            "error_count": {"type": "integer", "minimum": 0},
        },
        description="RFC 7807 problem details; `type` is one of the stable urn:jsd:problem: URIs",
    ),
    "Me": obj(
        {
            "account": {"type": "string"},
            "kind": {"type": "string", "enum": ACCOUNT_KINDS},
            "key_id": nullable({"type": "string"}),
            "scopes": SCOPE_LIST,
        }
    ),
    "AccountIn": obj(
        {"id": {"type": "string", "pattern": f"^{ACCOUNT_ID_RE}$"}, "kind": {"type": "string", "enum": ACCOUNT_KINDS}},
        {"name": nullable(TEXT)},
    ),
    "Account": obj(
        {
            "id": {"type": "string"},
            "kind": {"type": "string", "enum": ACCOUNT_KINDS},
            "name": nullable({"type": "string"}),
            "created_at": TIME,
        }
    ),
    "AccountList": obj({"accounts": {"type": "array", "items": ref("Account")}}),
    "ApiKeyIn": obj({}, {"scopes": nullable(SCOPE_LIST)}),
    "NewApiKey": obj(
        {
            "key_id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
            "key": {"type": "string", "description": "jsd_<key_id>_<secret>; shown this once"},
            "scopes": SCOPE_LIST,
        }
    ),
    "AccountCreated": obj({"account": ref("Account"), "api_key": ref("NewApiKey")}),
    "ApiKey": obj(
        {
            "key_id": {"type": "string"},
            "account": {"type": "string"},
            "scopes": SCOPE_LIST,
            "created_at": TIME,
            "revoked_at": nullable(TIME),
        }
    ),
    "ApiKeyList": obj({"keys": {"type": "array", "items": ref("ApiKey")}}),
    "DeviceImport": {
        "oneOf": [ref("DeviceWithKeys"), ref("DeviceGeneratingKeys"), ref("SecureElementDevice")],
        "description": "One device to pre-commission: its keys (app_key, and nwk_key for 1.1), generate_keys, "
        "or a secure element's tkm_info",
    },
    "DeviceWithKeys": _device({"app_key": ref("KeyIn")}, {"nwk_key": ref("KeyIn")}, generate=False, se=False),
    "DeviceGeneratingKeys": _device({"generate_keys": {"const": True}}, {}, generate=None, se=False),
    "SecureElementDevice": _device(
        {
            "secure_element": {"const": True},
            "tkm_info": hex_in(20, "SE_INFO (4 x 4-bit: SE_MANUF_ID, SE_PROD_ID, LMK_ID, DERIVE_ALGO_ID), SE_ID"),
        },
        {},
        generate=False,
        se=None,
    ),
    "ImportedDevice": obj(
        {
            "dev_eui": ref("EUI"),
            "join_eui": ref("EUI"),
            "profile_id": hex_out(8, "TR005 ProfileID"),
            "name": nullable({"type": "string"}),
            "serial": nullable({"type": "string", "description": "printed in the TR005 label's S field"}),
            "status": {"type": "string", "enum": ["created", "unchanged"]},
        },
        {
            "line": {"type": "integer", "minimum": 1},
            "owner_token": {"type": "string", "description": "only when created; shown this once"},
            "app_key": ref("Key"),
            "nwk_key": ref("Key"),
        },
    ),
    "ImportProgress": obj(
        {"import_id": {"type": "string"}, "staged": {"type": "integer", "minimum": 0}},
        description="Rows of a running import checked and staged so far (their keys are in the HSM)",
    ),
    "ImportSummary": obj(
        {
            "summary": obj(
                {"created": {"type": "integer", "minimum": 0}, "unchanged": {"type": "integer", "minimum": 0}}
            )
        },
        description="The last line of an import answer",
    ),
    "Device": obj(
        {
            "dev_eui": ref("EUI"),
            "join_eui": ref("EUI"),
            "mac_version": {"type": "string", "enum": MAC_VERSIONS},
            "name": nullable({"type": "string"}),
            "admin_info": nullable({"type": "string"}),
            "secure_element": {"type": "boolean"},
            "profile_id": hex_out(8, "TR005 ProfileID"),
            "serial": nullable({"type": "string"}),
            "state": {"type": "string", "enum": ["unclaimed", "claimed"]},
            "manufacturer": nullable({"type": "string"}),
            "owner": nullable({"type": "string"}),
            "home_net_id": nullable(ref("NetID")),
            "astk": nullable({"type": "string"}),
            "keys_exported": {"type": "boolean"},
            "created_at": TIME,
            "claimed_at": nullable(TIME),
        },
        {
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "only in the answer of a change that took effect but may not work yet "
                "(set-netid: no network server with that NetID is registered)",
            }
        },
        description="manufacturer and owner are shown to the operator and to that account only (else null)",
    ),
    "DevicePage": obj({"devices": {"type": "array", "items": ref("Device")}, "next": nullable(ref("EUI"))}),
    "ClaimByToken": obj({"dev_eui": ref("EUIIn"), "owner_token": OWNER_TOKEN}),
    "ClaimByQr": obj(
        {
            "qr": {
                "type": "string",
                "maxLength": 512,
                "description": "TR005: LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>:O<token>…",
            }
        }
    ),
    "Claim": {"oneOf": [ref("ClaimByToken"), ref("ClaimByQr")]},
    "NetIdIn": obj({"net_id": nullable(ref("NetIDIn"))}, description="null clears the home NetID"),
    "AstkChoice": obj({"astk": nullable(ASTK_NAME)}, description="an ASTK name of the owner; null clears it"),
    "Released": obj(
        {"device": ref("Device"), "owner_token": {"type": "string", "description": "the new token, shown this once"}}
    ),
    "AstkIn": obj(
        {"name": ASTK_NAME},
        {"key": ref("KeyIn")},
        description="with key: imported; without: generated in the HSM (exportable once)",
    ),
    "Astk": obj(
        {
            "name": {"type": "string"},
            "kek_label": {
                "type": "string",
                "pattern": "^astk-",
                "description": "the KEKLabel of the AppSKey envelopes wrapped under this ASTK (LBI KeyEnvelope, "
                "ChirpStack joinServerContext.appSKey.kekLabel): the application server looks its ASTK up by it",
            },
            "origin": {"type": "string", "enum": ["generated", "imported"]},
            "exported": {"type": "boolean"},
            "created_at": TIME,
        }
    ),
    "AstkList": obj({"astks": {"type": "array", "items": ref("Astk")}}),
    "AstkExport": obj({"name": {"type": "string"}, "key": ref("Key")}),
    "NetworkServerIn": obj(
        {
            "net_id": ref("NetIDIn"),
            "kek_label": {
                "type": "string",
                "pattern": "^(?!jsd-|astk-|lmk-)[\\x20-\\x7e]{1,64}$",
                "description": "1-64 printable characters; the prefixes jsd-, astk- and lmk- are reserved",
            },
        },
        {
            "name": TEXT,
            "kek": ref("KeyIn"),
            "token": {"type": "string", "minLength": 16, "maxLength": 256},
            "generate_token": {"type": "boolean"},
            "cert_fingerprint": {
                "type": "string",
                "pattern": "^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){31}$",
                "description": "SHA-256 of the NS's client certificate (DER), hex, colons allowed",
            },
            "answer_url": {"type": "string", "pattern": "^https?://\\S{1,2000}$"},
            "async_mode": {"type": "boolean"},
        },
        description="kek is imported into the HSM under kek_label (absent: a KEK already there); a bearer token "
        "(token or generate_token) or a cert_fingerprint is required; async_mode needs answer_url",
    ),
    "NetworkServer": obj(
        {
            "net_id": ref("NetID"),
            "name": {"type": "string"},
            "kek_label": {"type": "string"},
            "has_token": {"type": "boolean"},
            "cert_fingerprint": nullable({"type": "string"}),
            "answer_url": nullable({"type": "string"}),
            "async_mode": {"type": "boolean"},
        }
    ),
    "NetworkServerCreated": obj(
        {"network_server": ref("NetworkServer")},
        {"token": {"type": "string", "description": "the generated bearer token, shown this once"}},
    ),
    "NetworkServerList": obj({"network_servers": {"type": "array", "items": ref("NetworkServer")}}),
    "RoamingAgreementIn": obj({"home_net_id": ref("NetIDIn"), "visited_net_id": ref("NetIDIn")}),
    "RoamingAgreement": obj({"home_net_id": ref("NetID"), "visited_net_id": ref("NetID")}),
    "RoamingAgreementList": obj({"roaming_agreements": {"type": "array", "items": ref("RoamingAgreement")}}),
    "AuditEntry": obj(
        {
            "id": {"type": "integer"},
            "at": TIME,
            "account": nullable({"type": "string"}),
            "key_id": nullable({"type": "string"}),
            "source": {"type": "string"},
            "action": {"type": "string"},
            "dev_eui": nullable(ref("EUI")),
            "details": {"type": "object"},
        }
    ),
    "AuditPage": obj({"entries": {"type": "array", "items": ref("AuditEntry")}, "next": nullable({"type": "integer"})}),
    "Event": obj(
        {
            "event_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "seq": {"type": "integer"},
            "type": {"type": "string"},
            "time": TIME,
            "account": {"type": "string"},
            "dev_eui": nullable(ref("EUI")),
            "data": {"type": "object"},
        }
    ),
    "EventPage": obj({"events": {"type": "array", "items": ref("Event")}, "next": nullable({"type": "integer"})}),
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


def _problem_response(slugs: tuple[str, ...]) -> Schema:
    """A problem answer whose `type` may only be one of `slugs`."""
    schema: Schema = {
        "allOf": [
            ref("Problem"),
            {"properties": {"type": {"enum": [f"urn:jsd:problem:{slug}" for slug in slugs]}}},
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


def _status(response: str) -> int:
    return PROBLEM_TYPES[PROBLEM_RESPONSES[response][0]][0]


RESPONSES: dict[str, Schema] = {name: _problem_response(slugs) for name, slugs in PROBLEM_RESPONSES.items()}

# Every authenticated operation can answer these.
COMMON = ("InvalidRequest", "Unauthenticated", "Forbidden", "Internal", "HsmUnavailable")


def _json_body(schema: str) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


def _ok(status: int, description: str, schema: str | None) -> dict[str, Schema]:
    if schema is None:
        return {str(status): {"description": description}}
    return {str(status): {"description": description, "content": {"application/json": {"schema": ref(schema)}}}}


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size")
AFTER_SEQ = _param(
    "after", "query", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, "the previous page's `next`"
)
PATH_DEV_EUI = _param("dev_eui", "path", ref("EUIIn"), "DevEUI")
IMPORT_ID_SCHEMA: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}
IMPORT_ID_HEADER = _param(
    "Import-Id", "header", IMPORT_ID_SCHEMA, "client-chosen id to follow the import with GET /devices/import/{id}"
)
PATH_ACCOUNT = _param("id", "path", {"type": "string", "pattern": f"^{ACCOUNT_ID_RE}$"}, "account id")
PATH_NET_ID = _param("net_id", "path", ref("NetIDIn"), "NetID")


def operation(
    op_id: str,
    summary: str,
    scope: str,
    ok: dict[str, Schema],
    problems: tuple[str, ...] = (),
    *,
    body: Schema | None = None,
    params: list[Schema] | None = None,
    size_limited: bool = True,
    tag: str,
) -> Schema:
    """One operation: its success answer plus every problem it may answer (COMMON + `problems`)."""
    responses: dict[str, Schema] = dict(ok)
    names = [*COMMON, *problems]
    if body is not None and size_limited:
        names.append("PayloadTooLarge")
    for name in names:  # a later name wins its status (ClaimFailed over Forbidden)
        responses[str(_status(name))] = {"$ref": f"#/components/responses/{name}"}
    out: Schema = {
        "operationId": op_id,
        "summary": summary,
        "description": f"Scope: {scope}.",
        "tags": [tag],
        "responses": dict(sorted(responses.items())),
    }
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = body
    return out


def _paths() -> dict[str, dict[str, Schema]]:
    """Every route of docs/api.md's table, in its order."""
    write = ("NotFound", "Conflict")
    return {
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
        },
        "/me": {
            "get": operation("me", "Who the API key belongs to", "any", _ok(200, "the caller", "Me"), tag="accounts")
        },
        "/accounts": {
            "post": operation(
                "create_account",
                "Create an account and its first API key",
                "admin",
                _ok(201, "created; the API key is shown this once", "AccountCreated"),
                ("Conflict",),
                body=_json_body("AccountIn"),
                tag="accounts",
            ),
            "get": operation(
                "list_accounts", "All accounts", "admin", _ok(200, "accounts", "AccountList"), tag="accounts"
            ),
        },
        "/accounts/{id}": {
            "get": operation(
                "get_account",
                "One account",
                "admin or self",
                _ok(200, "the account", "Account"),
                ("NotFound",),
                params=[PATH_ACCOUNT],
                tag="accounts",
            )
        },
        "/accounts/{id}/keys": {
            "post": operation(
                "create_api_key",
                "A new API key (at most the account kind's scopes)",
                "admin or self",
                _ok(201, "the key, shown this once", "NewApiKey"),
                ("NotFound",),
                body={"required": False, "content": {"application/json": {"schema": ref("ApiKeyIn")}}},
                params=[PATH_ACCOUNT],
                tag="accounts",
            ),
            "get": operation(
                "list_api_keys",
                "The account's API keys, without secrets",
                "admin or self",
                _ok(200, "keys", "ApiKeyList"),
                ("NotFound",),
                params=[PATH_ACCOUNT],
                tag="accounts",
            ),
        },
        "/keys/{key_id}": {
            "delete": operation(
                "revoke_api_key",
                "Revoke an API key",
                "admin or own key",
                _ok(204, "revoked", None),
                ("NotFound", "Conflict"),
                params=[_param("key_id", "path", {"type": "string", "pattern": "^[0-9a-f]{12}$"}, "key id")],
                tag="accounts",
            )
        },
        "/devices": {
            "post": operation(
                "add_device",
                "Pre-commission one device",
                "devices:write (manufacturer or operator)",
                _ok(201, "the device; owner token and generated keys shown this once", "ImportedDevice"),
                ("Conflict",),
                body=_json_body("DeviceImport"),
                tag="devices",
            ),
            "get": operation(
                "list_devices",
                "Devices visible to the caller, by DevEUI",
                "devices:read",
                _ok(200, "one page", "DevicePage"),
                params=[LIMIT, _param("after", "query", ref("EUIIn"), "the previous page's `next`")],
                tag="devices",
            ),
        },
        "/devices/import": {
            "post": operation(
                "import_devices",
                "Bulk pre-commissioning, streamed; all or nothing per file",
                "devices:write (manufacturer or operator)",
                {
                    "200": {
                        "description": "JSON Lines: one ImportedDevice per row, then one ImportSummary line",
                        "content": {
                            "application/x-ndjson": {
                                "schema": {"type": "string"},
                                "x-jsonl-items": {"oneOf": [ref("ImportedDevice"), ref("ImportSummary")]},
                            }
                        },
                    }
                },
                ("ImportFailed", "Conflict"),
                body={
                    "required": True,
                    "description": "CSV with a header line of DeviceImport names, or one DeviceImport per line",
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "application/jsonl": {"schema": {"type": "string"}},
                    },
                },
                params=[IMPORT_ID_HEADER],
                size_limited=False,
                tag="devices",
            )
        },
        "/devices/import/{import_id}": {
            "get": operation(
                "import_progress",
                "How many rows of a running import (sent with this Import-Id) are checked and staged",
                "devices:write (manufacturer or operator)",
                _ok(200, "rows staged so far", "ImportProgress"),
                ("NotFound",),
                params=[_param("import_id", "path", IMPORT_ID_SCHEMA, "the Import-Id of the running import")],
                tag="devices",
            )
        },
        "/devices/{dev_eui}": {
            "get": operation(
                "get_device",
                "One device",
                "devices:read",
                _ok(200, "the device", "Device"),
                ("NotFound",),
                params=[PATH_DEV_EUI],
                tag="devices",
            ),
            "delete": operation(
                "delete_device",
                "Remove a device",
                "devices:write (manufacturer: unclaimed only; operator)",
                _ok(204, "removed", None),
                write,
                params=[PATH_DEV_EUI],
                tag="devices",
            ),
        },
        "/devices/{dev_eui}/net-id": {
            "put": operation(
                "set_net_id",
                "Set or clear the home NetID",
                "devices:write (owner or operator)",
                _ok(200, "the device", "Device"),
                write,
                body=_json_body("NetIdIn"),
                params=[PATH_DEV_EUI],
                tag="devices",
            )
        },
        "/devices/{dev_eui}/astk": {
            "put": operation(
                "set_astk",
                "Set or clear the device's ASTK",
                "devices:write (owner or operator)",
                _ok(200, "the device", "Device"),
                write,
                body=_json_body("AstkChoice"),
                params=[PATH_DEV_EUI],
                tag="devices",
            )
        },
        "/devices/{dev_eui}/release": {
            "post": operation(
                "release",
                "Give the device up; a new owner token is issued",
                "devices:write (owner or operator)",
                _ok(200, "the device and its new owner token, shown this once", "Released"),
                write,
                params=[PATH_DEV_EUI],
                tag="devices",
            )
        },
        "/devices/{dev_eui}/owner-token": {
            "post": operation(
                "reissue_owner_token",
                "Replace a lost owner token of an unclaimed device; the old token is dead",
                "devices:write (manufacturer of the unclaimed device, or operator)",
                _ok(200, "the device and its new owner token, shown this once", "Released"),
                write,
                params=[PATH_DEV_EUI],
                tag="devices",
            )
        },
        "/devices/{dev_eui}/reset-nonces": {
            "post": operation(
                "reset_nonces",
                "Forget DevNonces after a device factory reset",
                "devices:write (owner or operator)",
                _ok(200, "the device", "Device"),
                write,
                params=[PATH_DEV_EUI],
                tag="devices",
            )
        },
        "/claims": {
            "post": operation(
                "claim",
                "Claim a device with DevEUI + owner token, or a TR005 QR string",
                "claim",
                _ok(200, "the claimed device", "Device"),
                ("ClaimFailed", "RateLimited"),
                body=_json_body("Claim"),
                tag="claims",
            )
        },
        "/astks": {
            "post": operation(
                "create_astk",
                "Generate (in the HSM) or import an application server transport key",
                "astk",
                _ok(201, "the ASTK (never its key)", "Astk"),
                ("Conflict",),
                body=_json_body("AstkIn"),
                tag="astks",
            ),
            "get": operation("list_astks", "The caller's ASTKs", "astk", _ok(200, "ASTKs", "AstkList"), tag="astks"),
        },
        "/astks/{name}/export": {
            "post": operation(
                "export_astk",
                "The key of a generated ASTK, exactly once",
                "astk",
                _ok(200, "the key", "AstkExport"),
                ("NotFound", "Conflict"),
                params=[_param("name", "path", {"type": "string", "minLength": 1, "maxLength": 128}, "ASTK name")],
                tag="astks",
            )
        },
        "/network-servers": {
            "post": operation(
                "add_network_server",
                "Register a network server (KEK imported into the HSM)",
                "admin",
                _ok(201, "the NS; a generated token is shown this once", "NetworkServerCreated"),
                ("Conflict",),
                body=_json_body("NetworkServerIn"),
                tag="network-servers",
            ),
            "get": operation(
                "list_network_servers",
                "All network servers",
                "admin",
                _ok(200, "network servers", "NetworkServerList"),
                tag="network-servers",
            ),
        },
        "/network-servers/{net_id}": {
            "get": operation(
                "get_network_server",
                "One network server",
                "admin",
                _ok(200, "the NS", "NetworkServer"),
                ("NotFound",),
                params=[PATH_NET_ID],
                tag="network-servers",
            ),
            "delete": operation(
                "remove_network_server",
                "Remove a network server",
                "admin",
                _ok(204, "removed", None),
                write,
                params=[PATH_NET_ID],
                tag="network-servers",
            ),
        },
        "/roaming-agreements": {
            "post": operation(
                "add_roaming",
                "Allow a visited network to ask for a device's home NetID",
                "admin",
                _ok(201, "the agreement", "RoamingAgreement"),
                write,
                body=_json_body("RoamingAgreementIn"),
                tag="roaming",
            ),
            "get": operation(
                "list_roaming",
                "All roaming agreements",
                "admin",
                _ok(200, "agreements", "RoamingAgreementList"),
                tag="roaming",
            ),
        },
        "/roaming-agreements/{home_net_id}/{visited_net_id}": {
            "delete": operation(
                "remove_roaming",
                "Remove a roaming agreement",
                "admin",
                _ok(204, "removed", None),
                ("NotFound",),
                params=[
                    _param("home_net_id", "path", ref("NetIDIn"), "home NetID"),
                    _param("visited_net_id", "path", ref("NetIDIn"), "visited NetID"),
                ],
                tag="roaming",
            )
        },
        "/audit": {
            "get": operation(
                "audit",
                "Audit entries visible to the caller, oldest first",
                "audit:read",
                _ok(200, "one page", "AuditPage"),
                params=[
                    _param("dev_eui", "query", ref("EUIIn"), "only this device"),
                    AFTER_SEQ,
                    LIMIT,
                ],
                tag="audit",
            )
        },
        "/events": {
            "get": operation(
                "events",
                "Events visible to the caller, by seq",
                "events:read",
                _ok(200, "one page", "EventPage"),
                params=[
                    AFTER_SEQ,
                    LIMIT,
                    _param("dev_eui", "query", ref("EUIIn"), "only this device"),
                    _param("type", "query", {"type": "string", "maxLength": 64}, "only this event type"),
                ],
                tag="events",
            )
        },
    }


@cache
def document() -> dict[str, Any]:
    """The whole document (built once per process; callers must not mutate it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jsd ownership API",
            "version": "1",
            "description": "Accounts, pre-commissioning, claims, NetID and ASTK of the jsd LoRaWAN Join Server. "
            "Errors are RFC 7807 problems (application/problem+json) whose `type` is one of:\n\n"
            + "\n".join(
                f"- `urn:jsd:problem:{slug}` ({status}): {when}" for slug, (status, when) in PROBLEM_TYPES.items()
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: jsd_<key_id>_<secret>",
                }
            },
        },
    }
