"""``jsd chirpstack config``: valid TOML with exactly ChirpStack's keys, secrets from files or stdin, traps named."""

from __future__ import annotations

import secrets
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from jsd_cli import main


@pytest.fixture
def kek_file(tmp_path: Path) -> Path:
    path = tmp_path / "ns.kek"
    path.write_text("00112233445566778899AABBCCDDEEFF\n")
    return path


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["chirpstack", "config", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_token_entry(kek_file: Path) -> None:
    token = secrets.token_urlsafe(32)
    code, out, _ = run("--join-eui-prefix", "70B3D57ED0000000/56", "--server", "http://join-server:8090/api/lbi",
                       "--kek-label", "ns-000013", "--kek-file", str(kek_file), "--token-file", "-",
                       "--net-id", "000013", stdin=token + "\n")
    assert code == 0, out
    config = tomllib.loads(out)
    assert config == {
        "join_server": {"servers": [{
            "join_eui_prefix": "70b3d57ed0000000/56",
            "server": "http://join-server:8090/api/lbi",
            "async_timeout": "0s",
            "authorization_header": f"Bearer {token}",
        }]},
        "keks": [{"label": "ns-000013", "kek": "00112233445566778899aabbccddeeff"}],
    }
    for trap in ("async_interface", "restart", "Keys (OTAA)", "net_id must be \"000013\"", "v4.12 or later", "dollar sign"):
        assert trap in out, trap
    assert out.endswith("\n")


def test_mtls_entry_written_to_a_private_file(kek_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "join_server.toml"
    code, out, err = run("--join-eui-prefix", "0000000000000000/0", "--server", "https://js.example:8443/",
                         "--kek-label", "ns-000013", "--kek-file", str(kek_file), "--ca-cert", "/etc/chirpstack/ca.pem",
                         "--tls-cert", "/etc/chirpstack/ns.pem", "--tls-key", "/etc/chirpstack/ns.key",
                         "--async-timeout", "2s", "-o", str(output))
    assert code == 0, out + err
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    server = tomllib.loads(output.read_text())["join_server"]["servers"][0]
    assert server["tls_cert"] == "/etc/chirpstack/ns.pem" and server["tls_key"] == "/etc/chirpstack/ns.key"
    assert server["ca_cert"] == "/etc/chirpstack/ca.pem" and server["async_timeout"] == "2s"
    assert "authorization_header" not in server


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--join-eui-prefix", "70b3d57ed0000000/65"], "join_eui_prefix"),
        (["--server", "join-server:8090"], "http://"),
        (["--tls-cert", "/a.pem"], "tls_cert and tls_key"),
        (["--token-file", None], "bearer token or its TLS"),
        (["--async-timeout", "1 second"], "async_timeout"),
    ],
)
def test_refusals(kek_file: Path, tmp_path: Path, args: list[str | None], message: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc")
    base = {"--join-eui-prefix": "70b3d57ed0000000/56", "--server": "http://js/", "--kek-label": "ns-1",
            "--kek-file": str(kek_file), "--token-file": str(token_file)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [item for key, value in base.items() if value is not None for item in (key, value)]
    code, out, err = run(*argv)
    assert code != 0 and message in out + err


def test_the_kek_cannot_be_given_on_the_command_line(kek_file: Path) -> None:
    code, out, err = run("--join-eui-prefix", "70b3d57ed0000000/56", "--server", "http://js/", "--kek-label", "l",
                         "--kek", "00112233445566778899aabbccddeeff")
    assert code != 0 and "No such option" in out + err
