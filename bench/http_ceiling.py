"""The HTTP ceiling: a minimal aiohttp server that answers every LBI POST with a JoinAns of real size.

It parses the request JSON and echoes the header as a Join Server would, then sends a canned JoinAns
body as large as the daemon's (PHYPayload, KeyEnvelopes, SessionKeyID), without any crypto or storage.
Load it with ``jsd sim load --no-verify``: the ratio of the daemon's joins/s to this server's shows what the
Join Server's own work costs on top of HTTP and JSON on the same machine.

    python bench/http_ceiling.py --port 8099 [--mac-version 1.0.3|1.1]
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from aiohttp import web

__all__ = ["answer_fields", "build_app", "main"]


def _envelope(label: str) -> dict[str, str]:
    return {"KEKLabel": label, "AESKey": secrets.token_hex(24)}


def answer_fields(mac_version: str = "1.0.3") -> dict[str, Any]:
    """The JoinAns fields after the header, sized as the daemon sends them (wrapped keys: 24 bytes)."""
    ns_label = f"ns-000013-{secrets.token_hex(3)}"
    fields: dict[str, Any] = {
        "Result": {"ResultCode": "Success"},
        "PHYPayload": "20" + secrets.token_hex(16),
        "Lifetime": 0,
    }
    if mac_version.startswith("1.1"):
        for name in ("FNwkSIntKey", "SNwkSIntKey", "NwkSEncKey"):
            fields[name] = _envelope(ns_label)
    else:
        fields["NwkSKey"] = _envelope(ns_label)
    fields["AppSKey"] = _envelope(f"astk-{secrets.token_hex(4)}")
    fields["SessionKeyID"] = secrets.token_hex(16)
    return fields


def build_app(mac_version: str = "1.0.3") -> web.Application:
    """An application whose only route answers any POST with the canned JoinAns."""
    fields = answer_fields(mac_version)

    async def handle(request: web.Request) -> web.Response:
        msg = json.loads(await request.read())
        answer = {
            "ProtocolVersion": msg.get("ProtocolVersion", "1.0"),
            "SenderID": msg.get("ReceiverID"),
            "ReceiverID": msg.get("SenderID"),
            "TransactionID": msg.get("TransactionID"),
            "MessageType": "JoinAns",
            **fields,
        }
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    app = web.Application(client_max_size=32 * 1024)
    app.router.add_post("/{tail:.*}", handle)
    return app


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--mac-version", default="1.0.3", help="1.0.x: one NwkSKey; 1.1: three network keys")
    args = parser.parse_args()
    size = len(json.dumps({"ProtocolVersion": "1.0", "SenderID": "0000000000000001", "ReceiverID": "000013",
                           "TransactionID": 3407751389, "MessageType": "JoinAns",
                           **answer_fields(args.mac_version)}))
    print(f"http ceiling: JoinAns body {size} bytes on http://{args.host}:{args.port}/", flush=True)
    web.run_app(build_app(args.mac_version), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
