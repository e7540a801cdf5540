"""A subscriber sets up the application server from what the CLI shows, and an end-to-end uplink decrypts.

Every step a person would type is ``python -m jsd …`` in its own process against the real daemon: the first
operator (local mode), the manufacturer's import, the subscriber's claim, ``jsd astks create`` and
``jsd chirpstack appserver``. The application server's ``[astks]`` line is the one ``jsd astks create``
printed, copied verbatim; nothing else about the ASTK is known to the test. The join goes through ``jsd_sim``'s
network server (and once through ``jsd sim join``), the ``up`` event is ChirpStack's protobuf JSON on the real
Mosquitto, and the device side of FRMPayload encryption is AES-CTR from ``cryptography``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from chirpstack_api.common import common_pb2
from chirpstack_api.integration import integration_pb2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from google.protobuf import json_format

from jsd_sim.pytest_plugin import sim_device_factory, sim_ns_factory

__all__ = ["sim_device_factory", "sim_ns_factory"]

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"
APPLICATION = "5f1c2d0e-aaaa-4bbb-8ccc-000000000001"


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Jsd:
    """``python -m jsd`` as a separate process: remote with an API key, or local on the daemon's database."""

    url: str
    local_env: dict[str, str]
    cwd: Path

    def env(self, key: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JSD_")}
        env["JSD_URL"] = self.url
        if key is not None:
            env["JSD_API_KEY"] = key
        return env

    async def __call__(self, *args: str, key: str | None = None, local: bool = False) -> Run:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jsd", *args, cwd=self.cwd, env=self.local_env if local else self.env(key),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, key: str | None = None, local: bool = False) -> str:
        run = await self(*args, key=key, local=local)
        assert run.code == 0, f"jsd {' '.join(args)}: exit {run.code}\n{run.out}\n{run.err}"
        return run.out


def device_encrypt(app_s_key: bytes, dev_addr: bytes, f_cnt: int, data: bytes) -> bytes:
    """The device's FRMPayload encryption (uplink), AES-CTR from block A_1."""
    a1 = b"\x01" + bytes(4) + b"\x00" + dev_addr[::-1] + f_cnt.to_bytes(4, "little") + b"\x00\x01"
    encryptor = Cipher(algorithms.AES(app_s_key), modes.CTR(a1)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


@pytest.mark.timeout(300)
async def test_the_application_server_is_set_up_from_what_the_cli_printed(
    jsd_server: Any, local_env: dict[str, str], sim_ns_factory: Any, sim_device_factory: Any, tmp_path: Path
) -> None:
    jsd = Jsd(jsd_server.url.rstrip("/"), local_env, tmp_path)

    admin = json.loads(await jsd.ok("accounts", "create", "admin", "--kind", "operator", "--json", local=True))
    admin_key = admin["api_key"]["key"]
    maker = json.loads(await jsd.ok("accounts", "create", "maker", "--kind", "manufacturer", "--json", key=admin_key))
    # As out of the compose stack's container (docs/docker.md): the key alone on stdout, redirected into a file.
    farm = await jsd("accounts", "create", "farm", "--kind", "subscriber", "--out", "-", local=True)
    assert farm.code == 0 and "account farm (subscriber) created" in farm.err, farm.err
    assert re.fullmatch(r"jsd_\S+\n", farm.out), farm.out
    maker_key, farm_key = maker["api_key"]["key"], farm.out.strip()

    kek, ns_token = secrets.token_bytes(16), secrets.token_urlsafe(24)
    (tmp_path / "ns.kek").write_text(kek.hex())
    (tmp_path / "ns.token").write_text(ns_token)
    ns_label = f"ns-{secrets.token_hex(4)}"
    await jsd.ok("ns", "add", HOME, "--kek-label", ns_label, "--kek-file", "ns.kek", "--token-file", "ns.token",
                 key=admin_key)

    devices = [sim_device_factory("1.0.3", join_eui=bytes.fromhex(JOIN_EUI)) for _ in range(2)]
    rows = ["dev_eui,join_eui,mac_version,name,app_key"]
    rows += [f"{d.dev_eui.hex()},{JOIN_EUI},1.0.3,meter,{d.app_key.hex()}" for d in devices]
    (tmp_path / "batch.csv").write_text("\n".join(rows) + "\n")
    await jsd.ok("devices", "import", "batch.csv", key=maker_key)
    answers = [json.loads(line) for line in (tmp_path / "batch.csv.tokens.jsonl").read_text().splitlines()[:-1]]

    # The subscriber: an ASTK by a name of their choosing, and what `create` prints for the application server.
    astk_name = "as-farm"
    printed = await jsd.ok("astks", "create", astk_name, "--out", "as-farm.hex", key=farm_key)
    match = re.search(r"^application server \(appserver\.toml \[astks\]\): (.+)$", printed, re.MULTILINE)
    assert match, printed
    astks_line = match.group(1)
    label = astks_line.split(" = ")[0]
    assert re.fullmatch(r"astk-[0-9a-f]{16}", label) and f"KEK label {label}" in printed
    # As into a secret file of the compose stack: the key alone on stdout, the label and the line on stderr.
    piped = await jsd("astks", "create", "as-spare", "--out", "-", key=farm_key)
    assert piped.code == 0 and re.fullmatch(r"[0-9a-f]{32}\n", piped.out), piped
    spare = re.search(r"application server \(appserver\.toml \[astks\]\): (astk-[0-9a-f]{16}) = ", piped.err)
    assert spare and spare.group(1) != label, piped.err
    listed = json.loads(await jsd.ok("astks", "list", "--json", key=farm_key))["astks"]
    assert sorted((a["name"], a["kek_label"]) for a in listed) == [(astk_name, label), ("as-spare", spare.group(1))]
    assert label in await jsd.ok("astks", "list", key=farm_key)
    for answer in answers:
        (tmp_path / "owner.token").write_text(answer["owner_token"])
        dev = answer["dev_eui"]
        await jsd.ok("claim", dev, "--token-file", "owner.token", key=farm_key)
        await jsd.ok("devices", "set-netid", dev, HOME, key=farm_key)
        await jsd.ok("devices", "set-astk", dev, astk_name, key=farm_key)

    # The simulator, given the ASTK under the label the CLI showed, checks the AppSKey itself.
    (tmp_path / "sim.csv").write_text(rows[0] + "\n" + rows[2] + "\n")
    simulated = await jsd.ok("sim", "join", "--js-url", jsd_server.url, "--net-id", HOME, "--token-file", "ns.token",
                             "--kek-label", ns_label, "--kek-file", "ns.kek", "--astk", f"{label}=as-farm.hex",
                             "--csv", "sim.csv", "--json")
    rows_out = [json.loads(line) for line in simulated.splitlines()]
    assert [(r["result"], r["app_s_key"]) for r in rows_out] == [("Success", "checked")], simulated

    device = devices[0]
    ns = await sim_ns_factory(jsd_server.url, HOME, token=ns_token, kek_label=ns_label, kek=kek)
    outcome = await ns.join(device)
    assert outcome.ok and outcome.device_session is not None and outcome.app_s_key_envelope is not None
    envelope, session = outcome.app_s_key_envelope, outcome.device_session
    assert envelope.kek_label == label

    prefix = f"test-{uuid.uuid4().hex[:12]}"
    (tmp_path / "appserver.toml").write_text(
        "[mqtt]\n"
        'server = "mqtt://127.0.0.1:1883"\n'
        f'event_prefix = "{prefix}/"\n'
        f'republish_prefix = "{prefix}/clear"\n'
        "\n[astks]\n"
        f"{astks_line}\n"
    )
    clear = b"soil moisture 31%"
    context = common_pb2.JoinServerContext(
        session_key_id=outcome.session_key_id or "",
        app_s_key=common_pb2.KeyEnvelope(kek_label=envelope.kek_label, aes_key=envelope.aes_key),
    )
    appserver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsd", "chirpstack", "appserver", "--config", "appserver.toml", cwd=tmp_path,
        env=jsd.env(None), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            await client.subscribe(f"{prefix}/clear/#", qos=1)
            topic = f"{prefix}/application/{APPLICATION}/device/{device.dev_eui.hex()}/event/up"

            async def send_until_answered() -> None:
                # The process subscribes when it is ready; an event sent before that is simply not seen.
                for f_cnt in range(1, 1000):
                    event = integration_pb2.UplinkEvent(
                        deduplication_id=str(uuid.uuid4()),
                        device_info=integration_pb2.DeviceInfo(application_id=APPLICATION,
                                                               dev_eui=device.dev_eui.hex()),
                        dev_addr=session.dev_addr.hex(), f_cnt=f_cnt, f_port=3,
                        data=device_encrypt(session.keys.app_s_key, session.dev_addr, f_cnt, clear),
                        join_server_context=context,
                    )
                    await client.publish(topic, json_format.MessageToJson(event), qos=1)
                    await asyncio.sleep(0.5)

            sender = asyncio.create_task(send_until_answered())
            try:
                async with asyncio.timeout(60):
                    async for message in client.messages:
                        received = json.loads(message.payload)  # type: ignore[arg-type]
                        break
            finally:
                sender.cancel()
    finally:
        appserver.terminate()
        _, err = await asyncio.wait_for(appserver.communicate(), 30)
    assert str(message.topic).endswith(f"/applications/{APPLICATION}/devices/{device.dev_eui.hex()}/up"), err
    assert base64.b64decode(received["data"]) == clear
    assert received["dev_eui"] == device.dev_eui.hex() and received["f_port"] == 3
