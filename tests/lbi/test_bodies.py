"""Strict JSON of request bodies: what json.loads lets through (deep nesting, UTF-16, duplicates) is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jsd.bodies import MAX_DEPTH, JsonRefused, loads

HEADER = {"ProtocolVersion": "1.0", "SenderID": "000013", "TransactionID": 7, "MessageType": "JoinReq"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "nested deeper"),
        (b'{"MessageType":"JoinReq","VSExtension":' + b"[" * 4000 + b"]" * 4000 + b"}", "nested deeper"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" * 100000, "nested deeper"),
        (json.dumps(HEADER).encode("utf-16"), "not UTF-8"),
        (json.dumps(HEADER).encode("utf-16-le"), "not JSON"),
        (json.dumps(HEADER).encode("utf-32"), "not UTF-8"),
        (b"\xef\xbb\xbf" + json.dumps(HEADER).encode(), "byte order mark"),
        (b'{"MessageType":"JoinReq","MessageType":"HomeNSReq"}', "'MessageType' appears more than once"),
        (b'{"a":{"b":1,"b":2}}', "'b' appears more than once"),
        (b'{"RxDelay":NaN}', "NaN is not a JSON number"),
        (b'{"RxDelay":-Infinity}', "-Infinity is not a JSON number"),
        (b'{"SenderID":"\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"SenderID":"\\udc00x"}', "unpaired UTF-16 surrogate"),
        (b'{"a":"\xff"}', "not UTF-8"),
        (b'{"a":1} {"b":2}', "not JSON"),
        (b"", "not JSON"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonRefused, match=reason):
        loads(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (json.dumps(HEADER).encode(), HEADER),
        (json.dumps(HEADER).encode() + b"\n", HEADER),  # The Things Stack's encoder ends with a newline
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, json.loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)),
        (b'{"a":"' + b"[" * 200 + b'"}', {"a": "[" * 200}),
        (b'{"a":"\\ud83d\\ude00","b":"\xc3\xa9"}', {"a": "\U0001f600", "b": "\u00e9"}),
        ('{"Name":"\u00e9t\u00e9"}'.encode(), {"Name": "\u00e9t\u00e9"}),
    ],
)
def test_accepted(raw: bytes, value: Any) -> None:
    assert loads(raw) == value
