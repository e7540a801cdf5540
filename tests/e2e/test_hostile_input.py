"""Hostile input against the real ``jsd serve``: every case gets its exact refusal, and nothing changes.

One daemon (embedded default: SQLite, SoftHSM2) runs for the module with one NS, one LoRaWAN 1.0.3 device that
has joined once, and an operator account. Each case sends one request over a plain HTTP connection and checks
the status, the LBI Result code or the problem type, a phrase of the description, that the answer came at once
(no hang), that the daemon still runs (no crash), and that the device's nonce row and the account, ASTK and
session tables are exactly as before.

Cases that the daemon must *accept* (peers' spellings: upper-case hex, ``0x``, an empty CFList, a charset
parameter) carry the device's already-used JoinRequest: they get ``JoinReqFailed``, which proves they were
parsed and checked, while the state still must not move. Every refused case carries a fresh JoinRequest
instead, so a refusal that regressed into acceptance would show up as a moved JoinNonce.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jsd_sim import SimDevice

from ..daemons import Serve

pytestmark = pytest.mark.timeout(600)

HOME, OTHER = "000013", "00002a"
JOIN_EUI = "70b3d57ed0000001"
DEV_EUI = secrets.token_bytes(8)
APP_KEY = secrets.token_bytes(16)
KEK = secrets.token_bytes(16)
TOKEN = secrets.token_urlsafe(24)
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
DEVICE = SimDevice(DEV_EUI, bytes.fromhex(JOIN_EUI), "1.0.3", APP_KEY)
USED = DEVICE.join_request()  # joined once in the fixture
FRESH = DEVICE.join_request()  # never accepted: a case that wrongly succeeded would consume it
JSON = {"Content-Type": "application/json"}


class Daemon(Serve):
    """``jsd serve`` in a state directory of its own, set up with the operator CLI."""

    def __init__(self, state: Path, *, server_workers: str = "2", log_format: str = "plain", **settings: str) -> None:
        environ = {f"JSD_{name.upper()}": value for name, value in settings.items()}
        super().__init__(state, workers=int(server_workers), log_format=log_format, env=environ)
        self.log = state.parent / f"daemon-{self.port}.log"

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:  # type: ignore[override]
        done = super().cli(*args, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def provision(self) -> str:
        """One operator account (local, the first), one device with its home NS (the operator's local shortcut),
        one NS (through the API, the daemon running for it); the operator's API key."""
        secrets_dir = self.state.parent
        (secrets_dir / "kek").write_text(KEK.hex())
        (secrets_dir / "token").write_text(TOKEN)
        made = json.loads(self.cli("accounts", "create", "admin", "--kind", "operator", "--json"))
        self.cli("devices", "add", DEV_EUI.hex(), "--join-eui", JOIN_EUI, "--mac-version", "1.0.3", "--keys-file", "-",
                 "--home-net-id", HOME, stdin=json.dumps({"AppKey": APP_KEY.hex()}))
        key = str(made["api_key"]["key"])
        self.start()
        try:
            self.cli("--api-key-file", "-", "ns", "add", HOME, "--kek-file", str(secrets_dir / "kek"),
                     "--token-file", str(secrets_dir / "token"), stdin=key)
        finally:
            self.stop()
        return key

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, group: bool = True) -> float:
        """SIGTERM to the process group (or, as ``docker stop`` does, to the supervisor alone); the seconds until
        the supervisor has exited (killed after 60 s)."""
        assert self.process is not None
        started = time.monotonic()
        if group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
        return time.monotonic() - started

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a hostile request could have changed: the nonce row and the tables requests write."""
        with sqlite3.connect(f"file:{self.state / 'jsd.sqlite3'}?mode=ro", uri=True) as db:
            nonces = db.execute("SELECT * FROM device_nonces WHERE dev_eui = ?", (DEV_EUI.hex(),)).fetchall()
            counts = tuple(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
                           for table in ("session_keys", "accounts", "api_keys", "astks", "devices"))
        assert nonces, "the device's nonce row is missing"
        return nonces[0], counts


@dataclass
class World:
    daemon: Daemon
    api_key: str
    warm_answer: dict[str, Any] = field(default_factory=dict)


def join_req(frame: bytes = FRESH, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 42,
        "MessageType": "JoinReq", "MACVersion": "1.0.3", "PHYPayload": frame.hex(), "DevEUI": DEV_EUI.hex(),
        "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


DROP = object()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    daemon = Daemon(root / "state", server_workers="1", server_body_timeout=str(BODY_TIMEOUT),
                    server_idle_timeout=str(IDLE_TIMEOUT), log_format="plain")  # fmt: skip
    api_key = daemon.provision()
    daemon.start()
    try:
        status, _, raw = daemon.send("POST", "/", json.dumps(join_req(USED)).encode(), {**JSON, **auth()})
        answer = json.loads(raw)
        assert (status, answer["Result"]["ResultCode"]) == (200, "Success"), answer
        yield World(daemon, api_key, answer)
    finally:
        if daemon.alive():
            daemon.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Case:
    """One request and its one right answer: an LBI Result code, or (for 4xx without a message) a problem."""

    id: str
    body: bytes | None
    status: int
    code: str | None = None  # LBI ResultCode, or the problem type's last part for /api/v1
    text: str = ""  # in Result.Description or the problem's detail
    headers: dict[str, str] = field(default_factory=lambda: {**JSON, **auth()})
    path: str = "/"
    method: str = "POST"
    api: bool = False


def lbi(case_id: str, body: Any, status: int, code: str, text: str = "", **kwargs: Any) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(case_id, raw, status, code, text, **kwargs)


def field_case(case_id: str, name: str, value: Any, code: str, text: str, frame: bytes = FRESH) -> Case:
    return lbi(f"field/{case_id}", join_req(frame, **{name: value}), 200, code, text)


M, JRF = "MalformedRequest", "JoinReqFailed"
VALID = json.dumps(join_req()).encode()
USED_BODY = json.dumps(join_req(USED)).encode()
HEADER_ONLY = {"ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1}


def with_member(raw_value: bytes, base: bytes = VALID) -> bytes:
    """A JoinReq (the fresh one unless told) with one more member, VSExtension, written as raw JSON text."""
    return base[:-1] + b',"VSExtension":' + raw_value + b"}"


SIZE_CASES = [
    lbi("size/empty", b"", 400, M, "not JSON"),
    lbi("size/one-brace", b"{", 400, M, "not JSON"),
    lbi("size/just-over-limit", b'{"a":"' + b"0" * 32763 + b'"}', 413, M, "larger than 32768"),
    lbi("size/one-megabyte", b"[" + b"0," * 500000 + b"0]", 413, M, "larger than 32768"),
    lbi("size/30k-message-type", join_req(MessageType="J" * 30000), 400, M, "is not served"),
    lbi("size/30k-sender-id", join_req(SenderID="0" * 30000), 200, M, "SenderID must be 3 bytes"),
    lbi("size/30k-phy-payload", join_req(PHYPayload="00" * 15000), 200, M, "PHYPayload"),
    lbi("size/30k-dev-eui", join_req(DevEUI="0" * 30000), 200, M, "DevEUI must be 8 bytes"),
    lbi("size/3000-members-accepted", with_member(b"{" + b",".join(b'"k%d":1' % i for i in range(3000)) + b"}",
                                                  USED_BODY), 200, JRF, "DevNonce"),
    lbi("size/30k-whitespace-accepted", b" " * 30000 + USED_BODY, 200, JRF, "DevNonce"),  # RFC 8259 §2
]

NESTING_CASES = [
    lbi("nesting/array-5000", b"[" * 5000 + b"]" * 5000, 400, M, "nested deeper than 32"),
    lbi("nesting/object-3000", b'{"a":' * 3000 + b"1" + b"}" * 3000, 400, M, "nested deeper than 32"),
    lbi("nesting/in-field-4000", with_member(b"[" * 4000 + b"]" * 4000), 400, M, "nested deeper than 32"),
    lbi("nesting/in-message-type", join_req(MessageType=[[[[["JoinReq"]]]]]), 400, M, "MessageType must be a string"),
    lbi("nesting/33-levels", with_member(b"[" * 32 + b"]" * 32), 400, M, "nested deeper than 32"),
    lbi("nesting/32-levels-accepted", json.dumps(join_req(USED, VSExtension=json.loads(b"[" * 31 + b"]" * 31))).encode(),
        200, JRF, "DevNonce"),
    lbi("nesting/unclosed-30000", b"[" * 30000, 400, M, "nested deeper than 32"),
    lbi("nesting/brackets-in-strings", join_req(MessageType="[" * 20000), 400, M, "is not served"),
    lbi("nesting/deep-objects-in-dev-eui", join_req(DevEUI={"a": {"b": {"c": {}}}}), 200, M, "DevEUI must be a hex"),
    lbi("nesting/mixed-5000", b'[{"a":' * 2500 + b"1" + b"}]" * 2500, 400, M, "nested deeper"),
]

ENCODING_CASES = [
    lbi("encoding/utf-16-bom", json.dumps(join_req()).encode("utf-16"), 400, M, "not UTF-8"),
    lbi("encoding/utf-16-le", json.dumps(join_req()).encode("utf-16-le"), 400, M, "not JSON"),
    lbi("encoding/utf-16-be", json.dumps(join_req()).encode("utf-16-be"), 400, M, "not JSON"),
    lbi("encoding/utf-32", json.dumps(join_req()).encode("utf-32"), 400, M, "not UTF-8"),
    lbi("encoding/utf-8-bom", b"\xef\xbb\xbf" + VALID, 400, M, "byte order mark"),
    lbi("encoding/latin-1-byte", VALID.replace(b'"JoinReq"', b'"Join\xe9Req"'), 400, M, "not UTF-8"),
    lbi("encoding/overlong-utf-8", VALID.replace(b'"JoinReq"', b'"Join\xc0\xafReq"'), 400, M, "not UTF-8"),
    lbi("encoding/cesu-surrogate-bytes", VALID.replace(b'"JoinReq"', b'"\xed\xa0\x80"'), 400, M, "not UTF-8"),
    lbi("encoding/lone-surrogate-message-type", VALID.replace(b'"JoinReq"', b'"\\ud800"'), 400, M, "surrogate"),
    lbi("encoding/lone-surrogate-sender-id", VALID.replace(b'"000013"', b'"\\udfff"'), 400, M, "surrogate"),
    lbi("encoding/non-ascii-message-type", join_req(MessageType="J\u00f6inReq"), 400, M, "is not served"),
    lbi("encoding/nul-in-message-type", join_req(MessageType="JoinReq\u0000"), 400, M, "is not served"),
    lbi("encoding/raw-nul-byte", VALID.replace(b'"JoinReq"', b'"Join\x00Req"'), 400, M, "not JSON"),
    lbi("encoding/escaped-message-type", json.dumps(join_req(USED)).encode().replace(b"JoinReq", b"\\u004aoinReq"),
        200, JRF, "DevNonce"),
    lbi("encoding/nan", VALID.replace(b'"RxDelay": 1', b'"RxDelay": NaN'), 400, M, "NaN"),
    lbi("encoding/infinity", VALID.replace(b'"RxDelay": 1', b'"RxDelay": Infinity'), 400, M, "Infinity"),
    lbi("encoding/huge-exponent", VALID.replace(b'"TransactionID": 42', b'"TransactionID": 1e400'), 400, M,
        "TransactionID must be"),
    lbi("encoding/5000-digit-number", VALID.replace(b'"TransactionID": 42', b'"TransactionID": ' + b"9" * 5000),
        400, M, "not JSON"),
    lbi("encoding/trailing-garbage", VALID + b"x", 400, M, "not JSON"),
    lbi("encoding/two-documents", VALID + VALID, 400, M, "not JSON"),
    lbi("encoding/single-quotes", VALID.replace(b'"', b"'"), 400, M, "not JSON"),
    lbi("encoding/trailing-comma", VALID[:-1] + b",}", 400, M, "not JSON"),
    lbi("encoding/comment", b"/* c */" + VALID, 400, M, "not JSON"),
    lbi("encoding/trailing-newline-accepted", json.dumps(join_req(USED)).encode() + b"\n", 200, JRF, "DevNonce"),
]

CONTENT_TYPE_CASES = [
    lbi("content-type/none", VALID, 415, M, "Content-Type must be application/json", headers=auth()),
    lbi("content-type/text-plain", VALID, 415, M, "'text/plain'", headers={"Content-Type": "text/plain", **auth()}),
    lbi("content-type/form", VALID, 415, M, "Content-Type",
        headers={"Content-Type": "application/x-www-form-urlencoded", **auth()}),
    lbi("content-type/multipart", VALID, 415, M, "Content-Type",
        headers={"Content-Type": "multipart/form-data; boundary=x", **auth()}),
    lbi("content-type/octet-stream", VALID, 415, M, "Content-Type",
        headers={"Content-Type": "application/octet-stream", **auth()}),
    lbi("content-type/text-json", VALID, 415, M, "Content-Type", headers={"Content-Type": "text/json", **auth()}),
    lbi("content-type/problem-json", VALID, 415, M, "Content-Type",
        headers={"Content-Type": "application/problem+json", **auth()}),
    lbi("content-type/jsonx", VALID, 415, M, "Content-Type", headers={"Content-Type": "application/jsonx", **auth()}),
    lbi("content-type/charset-utf-16", json.dumps(join_req()).encode("utf-16"), 415, M, "charset must be utf-8",
        headers={"Content-Type": "application/json; charset=utf-16", **auth()}),
    lbi("content-type/charset-latin-1", VALID, 415, M, "charset must be utf-8",
        headers={"Content-Type": "application/json; charset=iso-8859-1", **auth()}),
    lbi("content-type/charset-utf-8-accepted", USED_BODY, 200, JRF, "DevNonce",
        headers={"Content-Type": "application/json; charset=UTF-8", **auth()}),
    lbi("content-type/upper-case-accepted", USED_BODY, 200, JRF, "DevNonce",
        headers={"Content-Type": "APPLICATION/JSON", **auth()}),
]


def header_case(case_id: str, status: int, code: str, text: str, **changes: Any) -> Case:
    return lbi(f"header/{case_id}", join_req(**changes), status, code, text)


HEADER_CASES = [
    lbi("header/array-body", b"[]", 400, M, "JSON object"),
    lbi("header/string-body", b'"JoinReq"', 400, M, "JSON object"),
    lbi("header/number-body", b"42", 400, M, "JSON object"),
    lbi("header/null-body", b"null", 400, M, "JSON object"),
    lbi("header/true-body", b"true", 400, M, "JSON object"),
    header_case("no-message-type", 400, M, "MessageType is missing", MessageType=DROP),
    header_case("message-type-number", 400, M, "MessageType must be a string", MessageType=1),
    header_case("message-type-empty", 400, M, "MessageType is missing", MessageType=""),
    header_case("message-type-newline", 400, M, "is not served", MessageType="JoinReq\nINFO forged"),
    header_case("message-type-answer", 400, M, "is not served", MessageType="JoinAns"),
    header_case("message-type-pr-start", 400, M, "is not served", MessageType="PRStartReq"),
    header_case("message-type-case", 400, M, "is not served", MessageType="joinreq"),
    header_case("no-protocol-version", 400, M, "ProtocolVersion is missing", ProtocolVersion=DROP),
    header_case("protocol-version-number", 400, M, "ProtocolVersion must be a string", ProtocolVersion=1.0),
    header_case("protocol-version-2", 200, "InvalidProtocolVersion", "not served", ProtocolVersion="2.0"),
    header_case("no-transaction-id", 400, M, "TransactionID is missing", TransactionID=DROP),
    header_case("transaction-id-null", 400, M, "TransactionID is missing", TransactionID=None),
    header_case("transaction-id-negative", 400, M, "TransactionID must be", TransactionID=-1),
    header_case("transaction-id-2-32", 400, M, "TransactionID must be", TransactionID=2**32),
    header_case("transaction-id-string", 400, M, "TransactionID must be", TransactionID="1"),
    header_case("transaction-id-bool", 400, M, "TransactionID must be", TransactionID=True),
    header_case("transaction-id-float", 400, M, "TransactionID must be", TransactionID=1.5),
    header_case("no-sender-id", 400, M, "SenderID is missing", SenderID=DROP),
    header_case("sender-id-number", 400, M, "SenderID must be a string", SenderID=13),
    header_case("sender-id-newline", 200, M, "SenderID is not valid hex", SenderID="000013\n"),
    header_case("sender-id-spaces", 200, M, "SenderID is not valid hex", SenderID="00 00 13"),
    header_case("sender-id-tab", 200, M, "SenderID is not valid hex", SenderID="0000\t13"),
    header_case("sender-id-odd-length", 200, M, "SenderID is not valid hex", SenderID="0000013"),
    header_case("sender-id-4-bytes", 200, M, "SenderID must be 3 bytes", SenderID="00001300"),
    header_case("sender-id-other-net", 200, "UnknownSender", "not the NetID", SenderID=OTHER),
    header_case("no-receiver-id", 400, M, "ReceiverID is missing", ReceiverID=DROP),
    header_case("receiver-id-newline", 200, M, "ReceiverID must be a JoinEUI", ReceiverID=JOIN_EUI + "\n"),
    header_case("receiver-id-spaces", 200, M, "ReceiverID must be a JoinEUI", ReceiverID="70b3d57e d0000001"),
    lbi("header/receiver-id-upper-case-accepted", join_req(USED, ReceiverID=JOIN_EUI.upper()), 200, JRF, "DevNonce"),
    header_case("sender-token-number", 400, M, "SenderToken", SenderToken=5),
    lbi("header/duplicate-message-type", VALID[:-1] + b',"MessageType":"HomeNSReq"}', 400, M,
        "'MessageType' appears more than once"),
    lbi("header/duplicate-transaction-id", VALID[:-1] + b',"TransactionID":7}', 400, M,
        "'TransactionID' appears more than once"),
    lbi("header/duplicate-dev-eui", VALID[:-1] + b',"DevEUI":"0000000000000000"}', 400, M,
        "'DevEUI' appears more than once"),
    lbi("header/duplicate-nested", with_member(b'{"a":1,"a":2}'), 400, M, "'a' appears more than once"),
]

AUTH_CASES = [
    lbi("auth/none", VALID, 200, "UnknownSender", "no credential", headers=JSON),
    lbi("auth/wrong-token", VALID, 200, "UnknownSender", "unknown credential", headers={**JSON, **auth("nope")}),
    lbi("auth/empty-bearer", VALID, 200, "UnknownSender", "no credential",
        headers={**JSON, "Authorization": "Bearer "}),
    lbi("auth/basic", VALID, 200, "UnknownSender", "no credential",
        headers={**JSON, "Authorization": "Basic YTpi"}),
    lbi("auth/4k-token", VALID, 200, "UnknownSender", "unknown credential",
        headers={**JSON, **auth("x" * 4000)}),
    lbi("auth/token-with-suffix", VALID, 200, "UnknownSender", "unknown credential",
        headers={**JSON, **auth(TOKEN + "%0a")}),
]

FIELD_CASES = [
    field_case("dev-eui-spaces", "DevEUI", "01 02 03 04 05 06 07 08", M, "DevEUI is not valid hex"),
    field_case("dev-eui-tab", "DevEUI", DEV_EUI.hex()[:8] + "\t" + DEV_EUI.hex()[8:], M, "DevEUI is not valid hex"),
    field_case("dev-eui-newline", "DevEUI", DEV_EUI.hex() + "\n", M, "DevEUI is not valid hex"),
    field_case("dev-eui-leading-space", "DevEUI", " " + DEV_EUI.hex(), M, "DevEUI is not valid hex"),
    field_case("dev-eui-number", "DevEUI", 1, M, "DevEUI must be a hex string"),
    field_case("dev-eui-null", "DevEUI", None, M, "DevEUI is missing"),
    field_case("dev-eui-array", "DevEUI", [DEV_EUI.hex()], M, "DevEUI must be a hex string"),
    field_case("dev-eui-7-bytes", "DevEUI", DEV_EUI.hex()[:14], M, "DevEUI must be 8 bytes"),
    field_case("dev-eui-non-hex", "DevEUI", "zz" + DEV_EUI.hex()[2:], M, "DevEUI is not valid hex"),
    field_case("dev-eui-arabic-digit", "DevEUI", "\u0660" + DEV_EUI.hex()[1:], M, "DevEUI is not valid hex"),
    field_case("dev-eui-upper-0x-accepted", "DevEUI", "0x" + DEV_EUI.hex().upper(), JRF, "DevNonce", USED),
    field_case("dev-addr-spaces", "DevAddr", "00 00 13 00", M, "DevAddr is not valid hex"),
    field_case("dev-addr-5-bytes", "DevAddr", "26011bda00", M, "DevAddr must be 4 bytes"),
    field_case("dev-addr-empty", "DevAddr", "", M, "DevAddr must be 4 bytes"),
    field_case("dl-settings-space", "DLSettings", "0 0", M, "DLSettings is not valid hex"),
    field_case("dl-settings-number", "DLSettings", 0, M, "DLSettings must be a hex string"),
    field_case("rx-delay-string", "RxDelay", "1", M, "RxDelay must be an integer"),
    field_case("rx-delay-16", "RxDelay", 16, M, "RxDelay must be between 0 and 15"),
    field_case("rx-delay-negative", "RxDelay", -1, M, "RxDelay must be between 0 and 15"),
    field_case("rx-delay-float", "RxDelay", 1.0, M, "RxDelay must be an integer"),
    field_case("rx-delay-bool", "RxDelay", True, M, "RxDelay must be an integer"),
    field_case("cf-list-15-bytes", "CFList", "00" * 15, M, "CFList must be 16 bytes"),
    field_case("cf-list-space", "CFList", "00" * 15 + " 00", M, "CFList is not valid hex"),
    field_case("cf-list-empty-accepted", "CFList", "", JRF, "DevNonce", USED),
    field_case("phy-payload-odd", "PHYPayload", FRESH.hex()[:-1], M, "PHYPayload is not valid hex"),
    field_case("phy-payload-newline", "PHYPayload", FRESH.hex()[:10] + "\n" + FRESH.hex()[10:], M,
               "PHYPayload is not valid hex"),
    field_case("phy-payload-empty", "PHYPayload", "", M, "PHYPayload"),
    field_case("phy-payload-upper-accepted", "PHYPayload", USED.hex().upper(), JRF, "DevNonce", USED),
    field_case("mac-version-1-0-0-0", "MACVersion", "1.0.0.0", M, "MACVersion '1.0.0.0'"),
    field_case("mac-version-newline", "MACVersion", "1.0.3\n", M, "MACVersion"),
    field_case("mac-version-number", "MACVersion", 1.1, M, "MACVersion must be a string"),
    field_case("mac-version-space", "MACVersion", " 1.0.3", M, "MACVersion"),
    field_case("mac-version-2", "MACVersion", "2.0", M, "MACVersion '2.0'"),
]

HOME_NS = {**HEADER_ONLY, "MessageType": "HomeNSReq", "DevEUI": DEV_EUI.hex()}
APP_S_KEY = {**HEADER_ONLY, "SenderID": "as.example", "MessageType": "AppSKeyReq", "DevEUI": DEV_EUI.hex(),
             "SessionKeyID": "ab" * 16}
OTHER_MESSAGE_CASES = [
    lbi("home-ns/dev-eui-space", {**HOME_NS, "DevEUI": "01 02 03 04 05 06 07 08"}, 200, M, "DevEUI is not valid hex"),
    lbi("home-ns/dev-eui-missing", {k: v for k, v in HOME_NS.items() if k != "DevEUI"}, 200, M, "DevEUI is missing"),
    lbi("home-ns/upper-case-accepted", {**HOME_NS, "DevEUI": DEV_EUI.hex().upper()}, 200, "Success", ""),
    lbi("home-ns/sender-id-newline", {**HOME_NS, "SenderID": HOME + "\n"}, 200, M, "SenderID is not valid hex"),
    lbi("app-s-key/session-key-id-space", {**APP_S_KEY, "SessionKeyID": "ab " * 16}, 200, M,
        "SessionKeyID is not valid hex"),
    lbi("app-s-key/session-key-id-too-long", {**APP_S_KEY, "SessionKeyID": "ab" * 100}, 200, M, "too long"),
    lbi("app-s-key/session-key-id-number", {**APP_S_KEY, "SessionKeyID": 5}, 200, M, "SessionKeyID is missing"),
    lbi("app-s-key/unknown-session", APP_S_KEY, 200, "UnknownDevEUI", "no session"),
    lbi("path/api-lbi-deep-nesting", b"[" * 5000 + b"]" * 5000, 400, M, "nested deeper", path="/api/lbi"),
    lbi("path/api-lbi-utf-16", json.dumps(join_req()).encode("utf-16"), 400, M, "not UTF-8", path="/api/lbi"),
]


def api(case_id: str, method: str, path: str, body: bytes, status: int, problem: str, text: str = "",
        content_type: str = "application/json") -> Case:
    return Case(f"api/{case_id}", body, status, problem, text, headers={"Content-Type": content_type},
                path="/api/v1" + path, method=method, api=True)


API_CASES = [
    api("accounts-array-5000", "POST", "/accounts", b"[" * 5000 + b"]" * 5000, 400, "invalid-request", "nested"),
    api("accounts-object-3000", "POST", "/accounts", b'{"a":' * 3000 + b"1" + b"}" * 3000, 400, "invalid-request",
        "nested"),
    api("accounts-nested-in-field", "POST", "/accounts", b'{"id":"x","kind":"subscriber","name":' + b"[" * 4000
        + b"]" * 4000 + b"}", 400, "invalid-request", "nested"),
    api("claims-nested", "POST", "/claims", b'{"qr":' + b"[" * 3000 + b"]" * 3000 + b"}", 400, "invalid-request",
        "nested"),
    api("net-id-nested", "PUT", f"/devices/{DEV_EUI.hex()}/net-id", b'{"net_id":' + b"{\"a\":" * 3000 + b"1"
        + b"}" * 3000 + b"}", 400, "invalid-request", "nested"),
    api("accounts-duplicate-id", "POST", "/accounts", b'{"id":"a1","kind":"subscriber","id":"a2"}', 400,
        "invalid-request", "appears more than once"),
    api("accounts-utf-16", "POST", "/accounts", json.dumps({"id": "u16", "kind": "subscriber"}).encode("utf-16"),
        400, "invalid-request", "not UTF-8"),
    api("accounts-bom", "POST", "/accounts", b'\xef\xbb\xbf{"id":"bom","kind":"subscriber"}', 400,
        "invalid-request", "byte order mark"),
    api("accounts-nan", "POST", "/accounts", b'{"id":"nan","kind":"subscriber","name":NaN}', 400, "invalid-request",
        "NaN"),
    api("accounts-lone-surrogate", "POST", "/accounts", b'{"id":"sur","kind":"subscriber","name":"\\ud800"}', 400,
        "invalid-request", "surrogate"),
    api("accounts-too-large", "POST", "/accounts", b'{"id":"big","kind":"subscriber","name":"' + b"x" * 40000
        + b'"}', 413, "payload-too-large", "larger than"),
    api("astks-deep", "POST", "/astks", b'{"name":' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "invalid-request",
        "nested"),
]

CASES: list[Case] = [
    *SIZE_CASES, *NESTING_CASES, *ENCODING_CASES, *CONTENT_TYPE_CASES, *HEADER_CASES, *AUTH_CASES, *FIELD_CASES,
    *OTHER_MESSAGE_CASES, *API_CASES,
]
assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_its_exact_refusal_and_changes_nothing(world: World, case: Case) -> None:
    daemon = world.daemon
    before = daemon.snapshot()
    headers = dict(case.headers)
    if case.api:
        headers["Authorization"] = f"Bearer {world.api_key}"
    started = time.monotonic()
    status, content_type, raw = daemon.send(case.method, case.path, case.body, headers)
    assert time.monotonic() - started < 10, "the answer took too long"
    assert daemon.alive(), daemon.log.read_text()[-3000:]
    assert status == case.status, raw[:500]
    answer = json.loads(raw)
    if case.api:
        assert content_type.startswith("application/problem+json"), raw[:500]
        assert answer["type"] == f"urn:jsd:problem:{case.code}", answer
        assert case.text in answer["detail"] + json.dumps(answer.get("errors", [])), answer
    else:
        assert content_type.startswith("application/json"), raw[:500]
        assert answer["Result"]["ResultCode"] == case.code, answer
        assert case.text in answer["Result"].get("Description", ""), answer
        if status == 200:
            assert answer["MessageType"].endswith("Ans") and answer["TransactionID"] in (1, 42), answer
    assert daemon.snapshot() == before


def test_refusals_echo_what_can_be_echoed(world: World) -> None:
    body = json.dumps(join_req(TransactionID=DROP)).encode()
    status, _, raw = world.daemon.send("POST", "/", body, {**JSON, **auth()})
    answer = json.loads(raw)
    assert status == 400 and answer["Result"]["ResultCode"] == M
    assert (answer["MessageType"], answer["SenderID"], answer["ReceiverID"]) == ("JoinAns", JOIN_EUI, HOME)
    assert "TransactionID" not in answer
    _, _, raw = world.daemon.send("POST", "/", json.dumps(join_req(MessageType="PRStartReq", TransactionID=9)).encode(),
                                  {**JSON, **auth()})
    assert json.loads(raw)["TransactionID"] == 9


def test_an_incomplete_body_is_cut_off_at_the_body_timeout(world: World) -> None:
    """Headers with a Content-Length, then half the body and silence: 408 after body_timeout, not a hang."""
    before = world.daemon.snapshot()
    with socket.create_connection(("127.0.0.1", world.daemon.port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                     + TOKEN.encode() + b"\r\nContent-Length: " + str(len(VALID)).encode() + b"\r\n\r\n"
                     + VALID[: len(VALID) // 2])
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        waited = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b'"ResultCode":"MalformedRequest"' in received and b"Connection: close" in received
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 5
    assert world.daemon.alive() and world.daemon.snapshot() == before


def test_a_dripping_client_is_cut_off_too(world: World) -> None:
    """One byte every 0.3 s keeps the connection busy but does not extend the deadline of the whole body."""
    with socket.create_connection(("127.0.0.1", world.daemon.port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(VALID)).encode() + b"\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(0.3)
        received = b""
        for byte in VALID[:40]:
            try:
                sock.sendall(bytes([byte]))
                received += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if received:
                break
        sock.settimeout(BODY_TIMEOUT + 10)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
        waited = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert waited < BODY_TIMEOUT + 5


@pytest.mark.parametrize("first", [b"", b"POST / HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "dripping headers"])
def test_a_connection_without_a_whole_request_head_is_closed_at_the_idle_timeout(world: World, first: bytes) -> None:
    """Slowloris: a connection that sends nothing, or a header line every 0.3 s and never the blank line, is
    closed `server.idle_timeout` after it opened, however busy it keeps itself; nothing is answered or written."""
    before = world.daemon.snapshot()
    with socket.create_connection(("127.0.0.1", world.daemon.port), timeout=IDLE_TIMEOUT + 10) as sock:
        started = time.monotonic()
        sock.sendall(first)
        sock.settimeout(0.3)
        received, closed = b"", False
        while not closed and time.monotonic() - started < IDLE_TIMEOUT + 8:
            try:
                if first:
                    sock.sendall(b"X-Drip: 1\r\n")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            received += chunk
            closed = not chunk
        waited = time.monotonic() - started
    assert closed and received == b"", received[:200]
    assert IDLE_TIMEOUT * 0.9 <= waited < IDLE_TIMEOUT + 3, f"closed after {waited:.1f} s"
    assert world.daemon.alive() and world.daemon.snapshot() == before


def test_a_keep_alive_connection_serves_requests_until_it_idles_past_the_timeout(world: World) -> None:
    """The idle timeout counts from the last answer: requests spaced under it share one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", world.daemon.port, timeout=IDLE_TIMEOUT + 10)
    try:
        sockets = []
        for _ in range(3):
            connection.request("GET", "/api/v1/openapi.json")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            sockets.append(connection.sock)
            time.sleep(IDLE_TIMEOUT * 0.6)  # 3 x 0.6: longer than the timeout in all, never idle that long
        assert sockets[0] is not None and sockets.count(sockets[0]) == 3  # one connection served all three
        time.sleep(IDLE_TIMEOUT * 0.6)  # now idle past it
        assert sockets[0].recv(1) == b""  # the server closed it
    finally:
        connection.close()


def _stalled(port: int, head: bytes, partial: bytes) -> tuple[bytes, float]:
    """Send request headers and part of a body, then nothing; what comes back until the server closes, and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 15) as sock:
        sock.sendall(head + partial)
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - started


def test_an_api_body_that_stops_gets_a_408_problem(world: World) -> None:
    body = b'{"id":"slow","kind":"subscriber"}'
    head = (b"POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + world.api_key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    before = world.daemon.snapshot()
    received, waited = _stalled(world.daemon.port, head, body[:10])
    assert received.startswith(b"HTTP/1.1 408"), received[:300]
    assert b"urn:jsd:problem:request-timeout" in received and b"Connection: close" in received
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 5
    assert world.daemon.snapshot() == before


def test_an_import_that_stops_between_chunks_gets_a_408_problem(world: World) -> None:
    """The import body may be long; the deadline is on silence between chunks. Nothing is imported."""
    maker = json.loads(world.daemon.send(
        "POST", "/api/v1/accounts", b'{"id":"maker","kind":"manufacturer"}',
        {**JSON, "Authorization": f"Bearer {world.api_key}"},
    )[2])["api_key"]["key"]
    rows = "dev_eui,join_eui,mac_version,generate_keys\n" + "".join(
        f"{secrets.token_hex(8)},{JOIN_EUI},1.0.3,true\n" for _ in range(3)
    )
    head = (b"POST /api/v1/devices/import HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nAuthorization: Bearer "
            + maker.encode() + b"\r\nContent-Length: 100000\r\n\r\n")
    before = world.daemon.snapshot()
    received, waited = _stalled(world.daemon.port, head, rows.encode())
    assert received.startswith(b"HTTP/1.1 408"), received[:300]
    assert b"urn:jsd:problem:request-timeout" in received
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 5
    assert world.daemon.snapshot() == before


def test_log_lines_stay_lines_and_stay_short(world: World) -> None:
    """A MessageType with a newline or 30 KB cannot forge or bloat log lines (plain format)."""
    forged = "JoinReq\n2030-01-01 00:00:00,000 INFO    jsd.lbi: lbi JoinReq result=Success"
    for message_type in (forged, "M" * 30000):
        world.daemon.send("POST", "/", json.dumps(join_req(MessageType=message_type)).encode(), {**JSON, **auth()})
    time.sleep(0.5)
    lines = world.daemon.log.read_text(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith("2030-01-01")]
    assert max(len(line) for line in lines) < 2000
    assert any("JoinReq\\n2030-01-01" in line for line in lines)


def test_the_daemon_still_answers_correctly_afterwards(world: World) -> None:
    """After every hostile case (sent again here, so the order of tests does not matter): a clean join works and
    takes exactly the next JoinNonce; the log has no traceback."""
    daemon = world.daemon
    for case in CASES:
        headers = dict(case.headers) | ({"Authorization": f"Bearer {world.api_key}"} if case.api else {})
        daemon.send(case.method, case.path, case.body, headers)
    assert daemon.alive()
    (nonce_row, _) = daemon.snapshot()
    frame = DEVICE.join_request()
    status, _, raw = daemon.send("POST", "/", json.dumps(join_req(frame, TransactionID=77)).encode(),
                                 {**JSON, **auth()})
    answer = json.loads(raw)
    assert (status, answer["Result"]["ResultCode"], answer["TransactionID"]) == (200, "Success", 77), answer
    accepted = DEVICE.accept(bytes.fromhex(answer["PHYPayload"]))
    (after_row, _) = daemon.snapshot()
    columns = _nonce_columns(daemon)
    assert dict(zip(columns, after_row, strict=True))["join_nonce"] == accepted.join_nonce
    assert accepted.join_nonce == dict(zip(columns, nonce_row, strict=True))["join_nonce"] + 1
    log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log and not re.search(r"\bERROR\b", log), log[-3000:]


def _nonce_columns(daemon: Daemon) -> list[str]:
    with sqlite3.connect(f"file:{daemon.state / 'jsd.sqlite3'}?mode=ro", uri=True) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(device_nonces)")]


@pytest.mark.parametrize(("body_timeout", "shutdown_timeout"), [(2.0, 30.0), (30.0, 2.0)])
def test_sigterm_is_not_held_up_by_a_client_that_never_finishes_its_body(
    tmp_path: Path, body_timeout: float, shutdown_timeout: float
) -> None:
    """Two workers, six clients each holding an incomplete body, then SIGTERM to the supervisor (which passes it
    on to the workers): the daemon exits by itself within the smaller of body_timeout and shutdown_timeout, plus
    the fixed cost of stopping a process."""
    daemon = Daemon(tmp_path / "state", server_workers="2", server_body_timeout=str(body_timeout),
                    server_shutdown_timeout=str(shutdown_timeout))
    daemon.start()  # every worker listens, so has installed its signal handlers (aiohttp does that first)
    clients = []
    try:
        for _ in range(6):  # SO_REUSEPORT spreads them: each worker holds some
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=60)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                         b"\r\n" + VALID[:100])
            clients.append(sock)
        time.sleep(0.5)  # the handlers are waiting for the rest of the bodies
        assert daemon.process is not None
        process = daemon.process
        took = daemon.terminate(group=False)
    finally:
        for sock in clients:
            sock.close()
        if daemon.alive():
            daemon.stop()
    assert process.returncode == 0, daemon.log.read_text()[-3000:]
    assert took < min(body_timeout, shutdown_timeout) + 6.0, f"stop took {took:.1f} s"
