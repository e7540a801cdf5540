"""The LBI 1.0 HTTP endpoint: header first, then the sender, then the typed message, then the use case.

Answers go back with HTTP 200 whatever the Result (peers treat non-2xx as a transport error); 4xx only when no
answer message can be formed (not JSON, no or unknown MessageType, body too large), still with a JSON Result.
An NS registered for asynchronous answers gets an empty 202 at once and the answer POSTed to its own URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from jsd import metrics
from jsd.join import JoinAccepted, JoinRejected, JoinService, KeyEnvelope, Sender
from jsd.lbi import results
from jsd.lbi.codec import (
    PROTOCOL_VERSIONS,
    REQUEST_TYPES,
    DecodeError,
    Header,
    decode_header,
    decode_join_params,
    decode_session_key_id,
    required_hex,
)

log = logging.getLogger("jsd.lbi")

# Request ids: a random per-process prefix and a counter, unique across workers and cheap per request.
_REQUEST_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)

JOIN_SERVICE = web.AppKey("join_service", JoinService)
ANSWER_CLIENT = web.AppKey("answer_client", ClientSession)


class AnswerTasks:
    """Asynchronous answers still being delivered; awaited at shutdown."""

    def __init__(self) -> None:
        self.pending: set[asyncio.Task[None]] = set()


ANSWER_TASKS = web.AppKey("answer_tasks", AnswerTasks)
MAX_BODY = web.AppKey("max_body", int)


class UnknownSender(Exception):
    """No credential, an unknown one, or a SenderID that is not the credential's NetID."""


def _envelope(env: KeyEnvelope) -> dict[str, str]:
    return {"KEKLabel": env.kek_label, "AESKey": env.aes_key.hex()}


def _result(code: str, description: str | None = None) -> dict[str, str]:
    result = {"ResultCode": code}
    if description:
        result["Description"] = description
    return result


def _answer_header(header: Header, answer_type: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ProtocolVersion": header.protocol_version if header.protocol_version in PROTOCOL_VERSIONS else "1.0",
        "SenderID": header.receiver_id,
        "ReceiverID": header.sender_id,
        "TransactionID": header.transaction_id,
        "MessageType": answer_type,
    }
    if header.sender_token:
        answer["ReceiverToken"] = header.sender_token
    return answer


def _error_body(code: str, description: str) -> dict[str, Any]:
    return {"Result": _result(code, description)}


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")), content_type="application/json")


async def _authenticate(request: web.Request, service: JoinService) -> Sender:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        sender = await service.sender_for_token(auth[7:].strip())
        if sender is not None:
            return sender
        raise UnknownSender("unknown credential")
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if isinstance(ssl_object, ssl.SSLObject):
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            sender = await service.sender_for_certificate(hashlib.sha256(der).hexdigest())
            if sender is not None:
                return sender
            raise UnknownSender("unknown client certificate")
    raise UnknownSender("no credential (bearer token or TLS client certificate)")


def _check_sender_id(header: Header, sender: Sender) -> None:
    try:
        claimed = bytes.fromhex(header.sender_id.removeprefix("0x").removeprefix("0X"))
    except ValueError:
        claimed = b""
    if claimed != sender.net_id:
        raise UnknownSender(f"SenderID {header.sender_id[:16]} is not the NetID of this credential")


async def _join_answer(
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ctx: dict[str, Any]
) -> dict[str, Any]:
    params = decode_join_params(message, header)
    ctx["dev_eui"] = params.dev_eui.hex()
    call = service.join if header.message_type == "JoinReq" else service.rejoin
    accepted: JoinAccepted = await call(params, sender)
    answer: dict[str, Any] = {
        "Result": _result(results.SUCCESS),
        "PHYPayload": accepted.phy_payload.hex(),
        "Lifetime": accepted.lifetime,
    }
    for name, env in accepted.network_keys.items():
        answer[name] = _envelope(env)
    if accepted.app_s_key is not None:
        answer["AppSKey"] = _envelope(accepted.app_s_key)
    answer["SessionKeyID"] = accepted.session_key_id
    return answer


async def _home_ns_answer(
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ctx: dict[str, Any]
) -> dict[str, Any]:
    dev_eui = required_hex(message, "DevEUI", 8)
    ctx["dev_eui"] = dev_eui.hex()
    net_id = await service.home_net_id(dev_eui, sender)
    return {"Result": _result(results.SUCCESS), "HNetID": net_id.hex()}


async def _app_s_key_answer(
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ctx: dict[str, Any]
) -> dict[str, Any]:
    dev_eui = required_hex(message, "DevEUI", 8)
    ctx["dev_eui"] = dev_eui.hex()
    session_key_id = decode_session_key_id(message)
    env = await service.app_s_key(dev_eui, session_key_id, sender)
    return {
        "Result": _result(results.SUCCESS),
        "DevEUI": dev_eui.hex(),
        "AppSKey": _envelope(env),
        "SessionKeyID": session_key_id,
    }


Handler = Callable[[JoinService, Header, dict[str, Any], Sender, dict[str, Any]], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {
    "JoinReq": _join_answer,
    "RejoinReq": _join_answer,
    "HomeNSReq": _home_ns_answer,
    "AppSKeyReq": _app_s_key_answer,
}
SENDER_ID_IS_NET_ID = {"JoinReq", "RejoinReq", "HomeNSReq"}


async def _answer(
    request: web.Request, header: Header, message: dict[str, Any], ctx: dict[str, Any]
) -> tuple[dict[str, Any], Sender | None]:
    """The answer body for a decoded header, and the authenticated sender if any."""
    service = request.app[JOIN_SERVICE]
    answer_type = REQUEST_TYPES[header.message_type]
    body = _answer_header(header, answer_type)
    sender: Sender | None = None
    try:
        sender = await _authenticate(request, service)
        if header.message_type in SENDER_ID_IS_NET_ID:
            _check_sender_id(header, sender)
        ctx["net_id"] = sender.net_id.hex()
        if header.protocol_version not in PROTOCOL_VERSIONS:
            body["Result"] = _result(
                results.INVALID_PROTOCOL_VERSION, f"ProtocolVersion {header.protocol_version[:8]!r} is not served"
            )
            return body, sender
        body.update(await HANDLERS[header.message_type](service, header, message, sender, ctx))
    except UnknownSender as exc:
        body["Result"] = _result(results.UNKNOWN_SENDER, str(exc))
    except DecodeError as exc:
        body["Result"] = _result(results.malformed(header.protocol_version), str(exc))
    except JoinRejected as exc:
        code = results.result_code(exc, header.protocol_version)
        body["Result"] = _result(code, exc.description)
        if header.message_type in ("JoinReq", "RejoinReq") and "dev_eui" in ctx:
            await service.record_rejection(bytes.fromhex(ctx["dev_eui"]), sender, code, exc.description)
    return body, sender


async def lbi_endpoint(request: web.Request) -> web.Response:
    """POST handler for every LBI message type."""
    started = time.perf_counter()
    ctx: dict[str, Any] = {"request_id": f"{_REQUEST_PREFIX}-{next(_request_numbers):x}"}
    status, body, message_type, mac_version = 200, None, None, None
    try:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            status = 413
            body = _error_body(results.MALFORMED_REQUEST, f"body larger than {request.app[MAX_BODY]} bytes")
            return _json(status, body)
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            status, body = 400, _error_body(results.MALFORMED_REQUEST, "body is not JSON")
            return _json(status, body)
        try:
            header = decode_header(message)
        except DecodeError as exc:
            status, body = 400, _error_body(results.MALFORMED_REQUEST, str(exc))
            return _json(status, body)
        message_type = header.message_type
        mac_version = message.get("MACVersion") if isinstance(message, dict) else None
        if header.message_type not in REQUEST_TYPES:
            status = 400
            body = _error_body(results.MALFORMED_REQUEST, f"MessageType {header.message_type[:24]!r} is not served")
            return _json(status, body)
        body, sender = await _answer(request, header, message, ctx)
        if sender is not None and sender.async_mode and sender.answer_url:
            _send_later(request.app, sender.answer_url, body)
            status = 202
            return web.Response(status=202)
        return _json(200, body)
    finally:
        result = (body or {}).get("Result", {}).get("ResultCode", "-")
        latency = time.perf_counter() - started
        kind = message_type if message_type in REQUEST_TYPES else "other"
        metrics.LBI_REQUESTS.labels(kind, result, metrics.mac_version_label(mac_version)).inc()
        metrics.LBI_SECONDS.labels(kind).observe(latency)
        log.info(
            "lbi %s",
            message_type or "-",
            extra={
                "request_id": ctx["request_id"],
                "message_type": message_type,
                "dev_eui": ctx.get("dev_eui"),
                "net_id": ctx.get("net_id"),
                "result": result,
                "status": status,
                "latency_ms": round(latency * 1000, 3),
            },
        )


def _send_later(app: web.Application, url: str, body: dict[str, Any]) -> None:
    pending = app[ANSWER_TASKS].pending
    task = asyncio.get_running_loop().create_task(_post_answer(app[ANSWER_CLIENT], url, body))
    pending.add(task)
    task.add_done_callback(pending.discard)


async def _post_answer(client: ClientSession, url: str, body: dict[str, Any]) -> None:
    """Deliver an asynchronous answer; a failure is logged (the NS times out and may retry the join)."""
    try:
        async with client.post(url, json=body) as response:
            if response.status >= 300:
                log.warning("async answer to %s refused with HTTP %s", url, response.status)
    except Exception as exc:  # noqa: BLE001 - any delivery failure is only logged
        log.warning("async answer to %s failed: %s", url, type(exc).__name__)


def add_routes(app: web.Application, paths: tuple[str, ...] = ("/", "/api/lbi")) -> None:
    for path in paths:
        app.router.add_post(path, lbi_endpoint)


async def answer_client_ctx(app: web.Application, answer_timeout: float) -> Any:
    """Cleanup context: the HTTP client and the task set for asynchronous answers."""
    app[ANSWER_TASKS] = AnswerTasks()
    async with ClientSession(timeout=ClientTimeout(total=answer_timeout)) as client:
        app[ANSWER_CLIENT] = client
        yield
        pending = list(app[ANSWER_TASKS].pending)
        if pending:
            await asyncio.wait(pending, timeout=answer_timeout)
