"""``jsd sim join | scenario | load`` against the fake Join Server (served from a thread: the CLI runs asyncio.run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jsd_cli.sim import sim
from jsd_sim.device import SimDevice
from jsd_sim.scenarios import EXAMPLE_TOML, ScenarioError, load_scenario

HOME = "000013"


@pytest.fixture
def provisioned(threaded_fake_js: Any, tmp_path: Path) -> dict[str, Any]:
    """Register a home NS and one device per version; write the CSV, token and KEK files the CLI reads."""
    js = threaded_fake_js.js
    kek, token = bytes(range(16)), "tok-home"
    label = threaded_fake_js.call(js.add_network_server(HOME, kek, token))
    threaded_fake_js.call(js.add_network_server("000042", bytes(16), "tok-visited"))
    rows = ["dev_eui,join_eui,mac_version,app_key,nwk_key,owner"]
    astk_args = []
    for i, version in enumerate(["1.0.2", "1.0.3", "1.0.4", "1.1"]):
        dev = SimDevice(bytes([0x70, 0xB3, 0, 0, 0, 0, 0, i]), bytes.fromhex("70b3d57ed0000000"), version,
                        bytes([i + 1] * 16), bytes([i + 0x40] * 16) if version == "1.1" else None)
        astk = bytes([0xA0 + i] * 16)
        astk_label = threaded_fake_js.call(js.add_device(
            dev.dev_eui.hex(), dev.join_eui.hex(), version, dev.app_key, dev.nwk_key, HOME, astk))
        (tmp_path / f"astk{i}").write_text(astk.hex())
        astk_args += ["--astk", f"{astk_label}={tmp_path / f'astk{i}'}"]
        rows.append(f"{dev.dev_eui.hex()},{dev.join_eui.hex()},{version},{dev.app_key.hex()},"
                    f"{dev.nwk_key.hex() if dev.nwk_key else ''},acme")
    (tmp_path / "devices.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "kek").write_text(kek.hex())
    common = ["--js-url", js.url, "--net-id", HOME, "--token-file", str(tmp_path / "token"),
              "--kek-label", label, "--kek-file", str(tmp_path / "kek"), "--csv", str(tmp_path / "devices.csv"),
              *astk_args]
    return {"common": common, "dir": tmp_path, "url": js.url, "kek_label": label}


def test_join_command(provisioned: dict[str, Any]) -> None:
    state = provisioned["dir"] / "state.json"
    result = CliRunner().invoke(sim, ["join", *provisioned["common"], "--json", "--state", str(state)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["result"] for r in rows] == ["Success"] * 4
    assert all(r["keys"] == "agree" and r["app_s_key"] == "checked" for r in rows)
    saved = json.loads(state.read_text())
    assert saved["70b3000000000002"]["next_dev_nonce"] == 1
    again = CliRunner().invoke(sim, ["join", *provisioned["common"], "--state", str(state)])
    assert again.exit_code == 0, again.output


def test_join_command_fails_on_a_rejected_join(provisioned: dict[str, Any]) -> None:
    (provisioned["dir"] / "token").write_text("not-the-token")
    result = CliRunner().invoke(sim, ["join", *provisioned["common"], "--limit", "1"])
    assert result.exit_code == 1
    assert "UnknownSender" in result.output


def _scenario_file(provisioned: dict[str, Any], steps: str) -> Path:
    d: Path = provisioned["dir"]
    text = f"""
name = "cli"
js_url = "{provisioned['url']}"
devices_csv = "devices.csv"
[network_servers.home]
net_id = "{HOME}"
token = "tok-home"
kek_label = "{provisioned['kek_label']}"
kek = "{bytes(range(16)).hex()}"
[network_servers.visited]
net_id = "000042"
token = "tok-visited"
{steps}
"""
    (d / "s.toml").write_text(text)
    return d / "s.toml"


def test_scenario_command_passes_and_fails(provisioned: dict[str, Any]) -> None:
    good = _scenario_file(provisioned, """
[[steps]]
kind = "join"
[[steps]]
kind = "replay"
[[steps]]
kind = "wrong_key"
[[steps]]
kind = "wrong_net_id"
ns = "visited"
[[steps]]
kind = "rejoin"
type = 1
[[steps]]
kind = "home_ns"
ns = "visited"
[[steps]]
kind = "app_s_key"
""")
    result = CliRunner().invoke(sim, ["scenario", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True
    bad = _scenario_file(provisioned, '[[steps]]\nkind = "join"\nexpect = "MICFailed"\n')
    result = CliRunner().invoke(sim, ["scenario", str(bad)])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_scenario_file_errors_are_usage_errors(provisioned: dict[str, Any]) -> None:
    bad = _scenario_file(provisioned, '[[steps]]\nkind = "jion"\n')
    result = CliRunner().invoke(sim, ["scenario", str(bad)])
    assert result.exit_code == 2 and "kind must be one of" in result.output


def test_load_command(provisioned: dict[str, Any]) -> None:
    out = provisioned["dir"] / "report.json"
    result = CliRunner().invoke(sim, ["load", *provisioned["common"], "--mode", "closed", "--concurrency", "2",
                                      "--total", "20", "--duration", "5", "--json-out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["ok"] == 20 and report["errors"] == {}
    assert "joins/s" in result.output


def test_example_scenario_parses(tmp_path: Path) -> None:
    (tmp_path / "devices.csv").write_text(
        "dev_eui,join_eui,mac_version,app_key,nwk_key\n0102030405060708,0000000000000001,1.0.3,"
        + "00" * 16 + ",\n")
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE_TOML)
    env = {"JSD_SIM_TOKEN_HOME": "t", "JSD_SIM_KEK_HOME": "11" * 16, "JSD_SIM_TOKEN_VISITED": "v"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        sc = load_scenario(path)
    assert len(sc.steps) == 13 and sc.network_servers["home"].kek == bytes([0x11] * 16)
    assert len(sc.devices) == 1


def test_devices_from_csv_and_toml_are_read_alike(tmp_path: Path) -> None:
    """A CSV row and a [[devices]] table give the same device, and a bad one is named by where it stands."""
    key, nwk = "00" * 16, "11" * 16
    (tmp_path / "devices.csv").write_text(
        f"dev_eui,join_eui,mac_version,app_key,nwk_key\n0x0102030405060708,0000000000000001,1.1,{key},{nwk}\n"
    )
    head = 'js_url = "http://127.0.0.1:1/lbi"\n[network_servers.home]\nnet_id = "000013"\n[[steps]]\nkind = "join"\n'
    table = (
        f'[[devices]]\ndev_eui = "0102030405060708"\njoin_eui = "0000000000000001"\nmac_version = "1.1"\n'
        f'app_key = "{key}"\nnwk_key = "{nwk}"\n'
    )
    (tmp_path / "a.toml").write_text('devices_csv = "devices.csv"\n' + head)
    (tmp_path / "b.toml").write_text(head + table)
    (a,), (b,) = load_scenario(tmp_path / "a.toml").devices, load_scenario(tmp_path / "b.toml").devices
    assert (
        (a.dev_eui, a.join_eui, a.mac_version, a.app_key, a.nwk_key)
        == (b.dev_eui, b.join_eui, b.mac_version, b.app_key, b.nwk_key)
        == (bytes(range(1, 9)), bytes(7) + b"\1", "1.1", bytes(16), bytes([0x11] * 16))
    )
    (tmp_path / "c.toml").write_text(head + table.replace('"0102030405060708"', '"01020304050607zz"'))
    with pytest.raises(ScenarioError, match=r"c\.toml: devices\[0\]: dev_eui: not hex"):
        load_scenario(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text(head + table.replace(f'app_key = "{key}"\n', ""))
    with pytest.raises(ScenarioError, match=r"devices\[0\]: app_key is missing"):
        load_scenario(tmp_path / "d.toml")
    (tmp_path / "devices.csv").write_text(
        f"dev_eui,join_eui,mac_version,app_key\n0102030405060708,0000000000000001,1.0.9,{key}\n"
    )
    with pytest.raises(ScenarioError, match=r"devices\.csv:2: .*1\.0\.9"):
        load_scenario(tmp_path / "a.toml")
