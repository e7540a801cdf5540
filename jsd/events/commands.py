"""MQTT commands: claim, set-netid, set-astk and release, each answered with one reply (docs/api.md).

A command is authorised exactly like a REST call: its API key is turned into a `Principal` by the ownership
service, and that principal's account must be the account of the command topic. The service then applies
the same scopes and visibility as for REST, so another account's device is "not found". Every message gets
one reply, also a malformed one; a successful reply is stored under (account, request_id) and sent again for
a repeat, so a retried command never fails because it already succeeded.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsd.events.topics import Topics
from jsd.ownership import (
    FieldError,
    Forbidden,
    InvalidRequest,
    Ownership,
    OwnershipError,
    Principal,
    Unauthenticated,
)
from jsd.ownership.parse import parse_eui, parse_net_id

__all__ = ["COMMANDS", "Command", "CommandHandler", "Reply", "problem_json"]

log = logging.getLogger("jsd.events")

COMMANDS = ("claim", "set-netid", "set-astk", "release")
MAX_PAYLOAD = 16384
_MEMBERS = {"request_id", "command", "api_key", "args", "reply_to"}
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


@dataclass(frozen=True)
class Command:
    """One message from a command topic; the MQTT 5 response topic and correlation data when sent."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Reply:
    """What to publish back (QoS 1), with the request's correlation data on MQTT 5."""

    topic: str
    body: Mapping[str, Any]
    correlation_data: bytes | None = None

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def problem_json(exc: OwnershipError) -> dict[str, Any]:
    """The RFC 7807 members REST sends, plus `retry_after` for rate limits (MQTT has no Retry-After header)."""
    body = exc.problem_members()
    if exc.problem == "rate-limited":
        body["retry_after"] = max(1, int(exc.retry_after or 1))
    return body


class _Internal(OwnershipError):
    """A bug while handling a command: the reply carries a reference for the log line, nothing else."""


class _TooLarge(OwnershipError):
    problem, status, title = "payload-too-large", 413, "Payload too large"


def _invalid(field: str | None, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])


def _members(args: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        errors = [FieldError(f"args.{name}"[:64], "unknown field") for name in unknown[:20]]
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown[:20])}", errors=errors)


def _required(args: Mapping[str, Any], name: str) -> Any:
    if name not in args:
        raise _invalid(f"args.{name}", "required")
    return args[name]


def _text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _invalid(field, f"a string of 1-{limit} characters")
    return value


class CommandHandler:
    """Turns one command message into one reply by calling the ownership service."""

    def __init__(self, service: Ownership, topics: Topics) -> None:
        self._service = service
        self._topics = topics

    async def handle(self, command: Command) -> Reply:
        account = self._topics.command_account(command.topic) or "_invalid"
        default = self._topics.replies(account)
        target = default
        if command.response_topic is not None:
            if not self._topics.reply_allowed(account, command.response_topic):
                reason = f"replies go to {default} or a topic below it"
                return self._error(default, None, _invalid("response_topic", reason), command)
            target = command.response_topic
        if len(command.payload) > MAX_PAYLOAD:
            return self._error(target, None, _TooLarge(f"a command is at most {MAX_PAYLOAD} bytes"), command)
        try:
            body = json.loads(command.payload.decode())
        except (UnicodeDecodeError, ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return self._error(target, None, _invalid(None, "a command is a JSON object (UTF-8)"), command)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            reason = "required: 1-64 printable ASCII characters without spaces"
            return self._error(target, None, _invalid("request_id", reason), command)
        reply_to = body.get("reply_to")
        if reply_to is not None and command.response_topic is None:
            if not isinstance(reply_to, str) or not self._topics.reply_allowed(account, reply_to):
                reason = f"replies go to {default} or a topic below it"
                return self._error(default, request_id, _invalid("reply_to", reason), command)
            target = reply_to
        try:
            result = await self._run(account, request_id, body)
        except OwnershipError as exc:
            return self._error(target, request_id, exc, command, body.get("command"))
        except Exception as exc:  # noqa: BLE001 - a bug must still be answered, and never stop the loop
            reference = secrets.token_hex(6)
            frame = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f"{Path(frame[0].filename).name}:{frame[0].lineno}" if frame else "?"
            log.error("mqtt command failed: %s at %s (reference %s)", type(exc).__name__, where, reference)
            return self._error(target, request_id, _Internal(f"reference {reference}"), command, body.get("command"))
        log.info("mqtt command %s of %s: ok", body.get("command"), account, extra={"status": 200})
        return Reply(target, result, command.correlation_data)

    def _error(
        self,
        topic: str,
        request_id: str | None,
        exc: OwnershipError,
        command: Command,
        name: object = None,
    ) -> Reply:
        log.info(
            "mqtt command %s on %s refused: %s",
            name if isinstance(name, str) and name in COMMANDS else "-",
            command.topic[:200],
            exc.problem,
            extra={"status": exc.status},
        )
        body = {"request_id": request_id, "ok": False, "problem": problem_json(exc)}
        return Reply(topic, body, command.correlation_data)

    async def _run(self, account: str, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check the command, authenticate its key against the topic's account, replay or execute it."""
        unknown = sorted(set(body) - _MEMBERS)
        if unknown:
            errors = [FieldError(name[:64], "unknown field") for name in unknown[:20]]
            raise InvalidRequest(f"unknown field(s): {', '.join(e.field or '' for e in errors)}", errors=errors)
        name = body.get("command")
        if name not in COMMANDS:
            raise _invalid("command", f"one of {', '.join(COMMANDS)}")
        api_key = body.get("api_key")
        if not isinstance(api_key, str) or not api_key:
            raise Unauthenticated("an API key is required (api_key)")
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise _invalid("args", "a JSON object")
        principal = await self._service.accounts.authenticate(api_key, "mqtt")
        if principal.account != account:
            raise Forbidden(f"this API key does not belong to account {account!r} of the command topic")
        stored = await self._service.journal.stored_reply(account, request_id)
        if stored is not None:
            return stored
        result, kept = await self._execute(principal, str(name), args)
        reply = {"request_id": request_id, "ok": True, "result": result}
        await self._service.journal.store_reply(account, request_id, {**reply, "result": kept})
        return reply

    async def _execute(self, p: Principal, name: str, args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The result to send, and the copy to keep for repeats (without a released device's new token)."""
        service = self._service
        if name == "claim":
            _members(args, ("dev_eui", "owner_token", "qr"))
            if "qr" in args:
                if "dev_eui" in args or "owner_token" in args:
                    raise _invalid("args.qr", "give either qr or dev_eui and owner_token, not both")
                view = await service.claims.claim_qr(p, _text(args["qr"], "args.qr", 512), retry=True)
            else:
                dev_eui = parse_eui(_required(args, "dev_eui"), "args.dev_eui")
                token = _text(_required(args, "owner_token"), "args.owner_token", 128)
                view = await service.claims.claim(p, dev_eui, token, retry=True)
        elif name == "set-netid":
            _members(args, ("dev_eui", "net_id"))
            dev_eui = parse_eui(_required(args, "dev_eui"), "args.dev_eui")
            value = _required(args, "net_id")
            view = await service.devices.set_net_id(p, dev_eui, None if value is None else parse_net_id(value, "args.net_id"))
        elif name == "set-astk":
            _members(args, ("dev_eui", "astk"))
            dev_eui = parse_eui(_required(args, "dev_eui"), "args.dev_eui")
            value = _required(args, "astk")
            view = await service.devices.set_astk(p, dev_eui, None if value is None else _text(value, "args.astk", 128))
        else:
            _members(args, ("dev_eui",))
            released, token = await service.claims.release(p, parse_eui(_required(args, "dev_eui"), "args.dev_eui"))
            device = released.as_dict()
            return {"device": device, "owner_token": token}, {"device": device, "owner_token": None}
        result = view.as_dict()
        return result, result
