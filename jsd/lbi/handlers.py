"""The LBI 1.0 HTTP endpoint: header first, then the sender, then the typed message, then the use case.

Answers go back with HTTP 200 whatever the Result (peers treat non-2xx as a transport error); 4xx only when no
answer message can be formed (not JSON, no usable header, unknown MessageType: 400; body too slow: 408; too
large: 413; not ``application/json``: 415), still with a JSON Result echoing what the header allowed.
An NS registered for asynchronous answers gets an empty 202 at once and the answer POSTed to its own URL,
retried within ``lbi.answer_timeout`` (`AnswerDelivery`).
When the database is out of reach, or anything unexpected fails, the answer is still an LBI message, with the
Result `Other` (TS002-1.0.0 Table 24) and a description; nothing was persisted for it, or (a connection lost
during a commit) at most a JoinNonce was burnt. The access log line records the status actually sent.
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
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from jsd import metrics
from jsd.bodies import BodyTimeout, JsonRefused, answer_and_close, loads, read_body
from jsd.join import JoinService, KeyEnvelope, Refusal, Sender
from jsd.lbi import results
from jsd.lbi.codec import (
    PROTOCOL_VERSIONS,
    REQUEST_TYPES,
    DecodeError,
    Header,
    decode_header,
    decode_hex,
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
UNAVAILABLE: web.AppKey[Callable[[BaseException], bool]] = web.AppKey("unavailable")
"""Tells an exception that means "the database is out of reach" from a bug (set by the composition root)."""


class UnknownSender(Exception):
    """No credential, an unknown one, or a SenderID that is not the credential's NetID."""


@dataclass(slots=True)
class RequestLog:
    """What the log lines of one request name, filled in as the request is read (never passed to a use case)."""

    request_id: str
    transaction_id: int | None = None
    dev_eui: str | None = None
    net_id: str | None = None

    def extra(self, **more: Any) -> dict[str, Any]:
        """The ids as a log record's `extra`, plus `more`."""
        return {
            "request_id": self.request_id,
            "transaction_id": self.transaction_id,
            "dev_eui": self.dev_eui,
            "net_id": self.net_id,
            **more,
        }


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


# Built once: ``json.dumps`` with any argument builds a new encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=_COMPACT.encode(body), content_type="application/json")


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
    """An NS's SenderID is its NetID (3 bytes of hex), and the one its credential was registered with."""
    claimed = decode_hex({"SenderID": header.sender_id}, "SenderID", 3)
    if claimed != sender.net_id:
        raise UnknownSender(f"SenderID {header.sender_id[:16]} is not the NetID of this credential")


async def _join_answer(
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ids: RequestLog
) -> dict[str, Any] | Refusal:
    params = decode_join_params(message, header)
    ids.dev_eui = params.dev_eui.hex()
    call = service.join if header.message_type == "JoinReq" else service.rejoin
    accepted = await call(params, sender, results.namer(header.protocol_version))
    if isinstance(accepted, Refusal):
        return accepted
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
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ids: RequestLog
) -> dict[str, Any] | Refusal:
    dev_eui = required_hex(message, "DevEUI", 8)
    ids.dev_eui = dev_eui.hex()
    net_id = await service.home_net_id(dev_eui, sender)
    if isinstance(net_id, Refusal):
        return net_id
    return {"Result": _result(results.SUCCESS), "HNetID": net_id.hex()}


async def _app_s_key_answer(
    service: JoinService, header: Header, message: dict[str, Any], sender: Sender, ids: RequestLog
) -> dict[str, Any] | Refusal:
    dev_eui = required_hex(message, "DevEUI", 8)
    ids.dev_eui = dev_eui.hex()
    session_key_id = decode_session_key_id(message)
    env = await service.app_s_key(dev_eui, session_key_id, sender)
    if isinstance(env, Refusal):
        return env
    return {
        "Result": _result(results.SUCCESS),
        "DevEUI": dev_eui.hex(),
        "AppSKey": _envelope(env),
        "SessionKeyID": session_key_id,
    }


Handler = Callable[[JoinService, Header, dict[str, Any], Sender, RequestLog], Awaitable[dict[str, Any] | Refusal]]
HANDLERS: dict[str, Handler] = {
    "JoinReq": _join_answer,
    "RejoinReq": _join_answer,
    "HomeNSReq": _home_ns_answer,
    "AppSKeyReq": _app_s_key_answer,
}
SENDER_ID_IS_NET_ID = {"JoinReq", "RejoinReq", "HomeNSReq"}


async def _answer(
    request: web.Request, header: Header, message: dict[str, Any], ids: RequestLog
) -> tuple[dict[str, Any], Sender | None]:
    """The answer body for a decoded header, and the authenticated sender if any."""
    body = _answer_header(header, REQUEST_TYPES[header.message_type])
    sender: list[Sender] = []
    try:
        await _fill_answer(request, header, message, ids, body, sender)
    except Exception as exc:  # noqa: BLE001 - the NS gets an LBI answer whatever failed, never an HTTP 500
        body["Result"] = _failure_result(request, header, exc, ids)
    return body, (sender[0] if sender else None)


def _failure_result(request: web.Request, header: Header, exc: Exception, ids: RequestLog) -> dict[str, str]:
    """`Other`, saying whether to try again (database out of reach) or that it is a bug (logged by type and
    place only: an exception's message may quote request data)."""
    extra = {"request_id": ids.request_id, "message_type": header.message_type, "dev_eui": ids.dev_eui}
    if request.app.get(UNAVAILABLE, _never)(exc):
        log.warning("lbi %s: database unavailable (%s)", header.message_type, type(exc).__name__, extra=extra)
        return _result(results.OTHER, "the Join Server's database is unavailable; try again")
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno}" if frame else "?"
    log.error("lbi %s: internal error %s at %s", header.message_type, type(exc).__name__, where, extra=extra)
    return _result(results.OTHER, f"internal error (request id {ids.request_id})")


def _never(_exc: BaseException) -> bool:
    return False


async def _fill_answer(
    request: web.Request,
    header: Header,
    message: dict[str, Any],
    ids: RequestLog,
    body: dict[str, Any],
    senders: list[Sender],
) -> None:
    """Put the Result (and the answer's fields) into `body`; the authenticated sender goes into `senders`."""
    service = request.app[JOIN_SERVICE]
    try:
        sender = await _authenticate(request, service)
        senders.append(sender)
        if header.message_type in SENDER_ID_IS_NET_ID:
            _check_sender_id(header, sender)
        ids.net_id = sender.net_id.hex()
        if header.protocol_version not in PROTOCOL_VERSIONS:
            body["Result"] = _result(
                results.INVALID_PROTOCOL_VERSION, f"ProtocolVersion {header.protocol_version[:8]!r} is not served"
            )
            return
        outcome = await HANDLERS[header.message_type](service, header, message, sender, ids)
    except UnknownSender as exc:
        body["Result"] = _result(results.UNKNOWN_SENDER, str(exc))
        return
    except DecodeError as exc:
        body["Result"] = _result(results.malformed(header.protocol_version), str(exc))
        return
    if not isinstance(outcome, Refusal):
        body.update(outcome)
        return
    code = results.result_code(outcome, header.protocol_version)
    body["Result"] = _result(code, outcome.description)
    if outcome.detail:
        log.warning("%s refused: %s", header.message_type, outcome.detail, extra=ids.extra(result=code))

def _content_type_refusal(request: web.Request) -> str | None:
    """Why the request's Content-Type is refused, or ``None``: LBI messages are JSON (TS002-1.0.0), in UTF-8.

    ChirpStack v4 (``backend`` crate) and The Things Stack (``pkg/interop``) both send exactly
    ``Content-Type: application/json``.
    """
    if request.content_type != "application/json":
        return f"Content-Type must be application/json, not {request.content_type[:48]!r}"
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        return f"charset must be utf-8, not {charset[:24]!r}"
    return None


def _partial_header(message: Any) -> dict[str, Any]:
    """What an unusable header still lets us echo: the ids and the answer type, each only if well-formed."""
    if not isinstance(message, dict):
        return {}
    echo: dict[str, Any] = {}
    protocol_version = message.get("ProtocolVersion")
    if protocol_version in PROTOCOL_VERSIONS:
        echo["ProtocolVersion"] = protocol_version
    receiver, sender = message.get("ReceiverID"), message.get("SenderID")
    if isinstance(receiver, str) and 0 < len(receiver) <= 64 and receiver.isprintable():
        echo["SenderID"] = receiver
    if isinstance(sender, str) and 0 < len(sender) <= 64 and sender.isprintable():
        echo["ReceiverID"] = sender
    transaction_id = message.get("TransactionID")
    if isinstance(transaction_id, int) and not isinstance(transaction_id, bool) and 0 <= transaction_id < 2**32:
        echo["TransactionID"] = transaction_id
    message_type = message.get("MessageType")
    if isinstance(message_type, str) and message_type in REQUEST_TYPES:
        echo["MessageType"] = REQUEST_TYPES[message_type]
    return echo


async def lbi_endpoint(request: web.Request) -> web.Response:
    """POST handler for every LBI message type."""
    started = time.perf_counter()
    ids = RequestLog(f"{_REQUEST_PREFIX}-{next(_request_numbers):x}")
    status: int | None = 200
    body: dict[str, Any] | None = None
    message_type: str | None = None
    mac_version: Any = None
    try:
        refusal = _content_type_refusal(request)
        if refusal is not None:
            status, body = 415, _error_body(results.MALFORMED_REQUEST, refusal)
            return _json(status, body)
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            status = 413
            body = _error_body(results.MALFORMED_REQUEST, f"body larger than {request.app[MAX_BODY]} bytes")
            return _json(status, body)
        except BodyTimeout:
            status = 408
            body = _error_body(results.MALFORMED_REQUEST, "the body did not arrive in time")
            return await answer_and_close(request, _json(status, body))
        try:
            message = loads(raw)
        except JsonRefused as exc:
            status, body = 400, _error_body(results.MALFORMED_REQUEST, str(exc))
            return _json(status, body)
        try:
            header = decode_header(message)
        except DecodeError as exc:
            status, body = 400, {**_partial_header(message), **_error_body(results.MALFORMED_REQUEST, str(exc))}
            return _json(status, body)
        message_type = header.message_type
        ids.transaction_id = header.transaction_id
        mac_version = message.get("MACVersion") if isinstance(message, dict) else None
        if header.message_type not in REQUEST_TYPES:
            status = 400
            body = {
                **_partial_header(message),
                **_error_body(results.MALFORMED_REQUEST, f"MessageType {header.message_type[:24]!r} is not served"),
            }
            return _json(status, body)
        body, sender = await _answer(request, header, message, ids)
        if sender is not None and sender.async_mode and sender.answer_url:
            _send_later(request.app, sender.answer_url, body, ids)
            status = 202
            return web.Response(status=202)
        return _json(200, body)
    except asyncio.CancelledError:
        status = None  # the client went away: nothing was sent
        raise
    except Exception:
        status = 500  # what aiohttp sends for an exception that reaches it
        raise
    finally:
        result = (body or {}).get("Result", {}).get("ResultCode", "-")
        latency = time.perf_counter() - started
        kind = message_type if message_type in REQUEST_TYPES else "other"
        metrics.lbi_request(kind, result, metrics.mac_version_label(mac_version), latency)
        log.info(
            "lbi %s",
            message_type or "-",
            extra=ids.extra(
                message_type=message_type, result=result, status=status, latency_ms=round(latency * 1000, 3)
            ),
        )


@dataclass(frozen=True)
class AnswerDelivery:
    """How hard an asynchronous answer is pushed: attempts with doubling pauses, all inside `budget` seconds.

    The NS waits for the answer only a few seconds (ChirpStack's ``async_timeout``; the join-accept must
    reach RX1/RX2 5-6 s after the uplink), so delivery stops at the budget rather than retrying later.
    """

    budget: float
    attempt_timeout: float
    first_pause: float = 0.1


ANSWER_DELIVERY = web.AppKey("answer_delivery", AnswerDelivery)
# The NS refused the answer itself: sending it again cannot help (408 and 429 are worth another try).
_FINAL_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}


def _send_later(app: web.Application, url: str, body: dict[str, Any], ids: RequestLog) -> None:
    pending = app[ANSWER_TASKS].pending
    extra = ids.extra(transaction_id=body.get("TransactionID"), message_type=body.get("MessageType"))
    task = asyncio.get_running_loop().create_task(
        _post_answer(app[ANSWER_CLIENT], app[ANSWER_DELIVERY], url, body, extra)
    )
    pending.add(task)
    task.add_done_callback(pending.discard)


async def _post_answer(
    client: ClientSession, delivery: AnswerDelivery, url: str, body: dict[str, Any], ids: dict[str, Any]
) -> None:
    """Deliver an asynchronous answer, retrying failures with doubling pauses until the budget is spent.

    Every failed attempt and the final outcome are logged with the TransactionID and DevEUI, so an operator
    can match them with the NS's own log.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delivery.budget
    pause = delivery.first_pause
    attempt = 0
    while True:
        attempt += 1
        final = False
        try:
            async with asyncio.timeout(max(0.0, min(delivery.attempt_timeout, deadline - loop.time()))):
                async with client.post(url, json=body) as response:
                    if response.status < 300:
                        if attempt > 1:
                            log.info("async answer delivered to %s at attempt %d", url, attempt, extra=ids)
                        return
                    why = f"HTTP {response.status}"
                    final = response.status in _FINAL_STATUSES
        except Exception as exc:  # noqa: BLE001 - any delivery failure is retried or logged
            why = type(exc).__name__
        left = deadline - loop.time()
        if final or left <= pause:
            log.error(
                "async answer to %s given up after %d attempt(s): %s", url, attempt, why, extra=ids
            )
            return
        log.warning("async answer to %s failed at attempt %d: %s; retrying", url, attempt, why, extra=ids)
        await asyncio.sleep(pause)
        pause *= 2


def add_routes(app: web.Application, paths: tuple[str, ...] = ("/", "/api/lbi")) -> None:
    for path in paths:
        app.router.add_post(path, lbi_endpoint)


async def answer_client_ctx(app: web.Application, delivery: AnswerDelivery) -> Any:
    """Cleanup context: the HTTP client and the task set for asynchronous answers.

    At shutdown, answers still being delivered get what is left of their budget, never more.
    """
    app[ANSWER_TASKS] = AnswerTasks()
    app[ANSWER_DELIVERY] = delivery
    async with ClientSession(timeout=ClientTimeout(total=delivery.budget)) as client:
        app[ANSWER_CLIENT] = client
        yield
        pending = list(app[ANSWER_TASKS].pending)
        if pending:
            await asyncio.wait(pending, timeout=delivery.budget)
