"""Settings: every one documented in conf/jsd.example.toml, environment beats file, bad values refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from jsd.config import SETTINGS, ConfigError, database_url, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "conf" / "jsd.example.toml"


def test_every_setting_is_in_the_example_with_its_default_and_a_comment() -> None:
    text = EXAMPLE.read_text()
    parsed = tomllib.loads(text)
    lines = text.splitlines()
    for setting in SETTINGS:
        assert parsed[setting.section][setting.name] == setting.default, setting.env
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{setting.name} ="))
        assert lines[index - 1].startswith("#"), f"{setting.section}.{setting.name} has no comment"


def test_example_has_no_unknown_settings() -> None:
    load_settings(EXAMPLE, environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    conf = tmp_path / "jsd.toml"
    conf.write_text('[server]\nport = 9000\n[join]\njoin_euis = ["0000000000000001"]\n')
    settings = load_settings(conf, environ={"JSD_SERVER_PORT": "9100", "JSD_LOG_FORMAT": "json"})
    assert settings.get("server", "port") == 9100
    assert settings.get("log", "format") == "json"
    assert settings.get("join", "join_euis") == ["0000000000000001"]
    listed = load_settings(conf, environ={"JSD_JOIN_JOIN_EUIS": "01,02"})
    assert listed.get("join", "join_euis") == ["01", "02"]


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        ("[server]\nport = 'x'\n", {}, "server.port"),
        ("[server]\nprot = 1\n", {}, "unknown setting server.prot"),
        ("", {"JSD_SERVER_WORKERS": "zero"}, "JSD_SERVER_WORKERS"),
        ("", {"JSD_SERVER_WORKERS": "0"}, "server.workers"),
        ("", {"JSD_LOG_FORMAT": "xml"}, "log.format"),
        ("[database]\ncommand_timeout = -1\n", {}, "database.command_timeout"),
        ("", {"JSD_DATABASE_COMMAND_TIMEOUT": "nan"}, "database.command_timeout"),
        ("[server\n", {}, "jsd.toml"),
    ],
)
def test_bad_configuration_is_refused_with_the_setting_named(
    tmp_path: Path, content: str, environ: dict[str, str], message: str
) -> None:
    conf = tmp_path / "jsd.toml"
    conf.write_text(content)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(conf, environ=environ)


def test_embedded_database_lives_in_the_state_dir(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"JSD_GENERAL_STATE_DIR": str(tmp_path)})
    assert database_url(settings) == f"sqlite+aiosqlite:///{tmp_path / 'jsd.sqlite3'}"
