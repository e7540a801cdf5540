"""docker/ and conf/chirpstack/ checked statically (Docker cannot run here): files parse, every referenced file
exists, and names, ports and secrets agree between the compose file, ChirpStack's config, the daemon's, the
bridge's and the appserver's."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from jsd.config import load_settings
from jsd_chirpstack.appserver import load_appserver
from jsd_nsadapter.bridge import BridgeConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CONF = ROOT / "conf" / "chirpstack"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DOCKER / source).resolve(), target))
    return mounts


def container_path(service: dict[str, Any], path: str) -> Path | None:
    """The host file behind a path inside the container (bind mounts, a file or below a directory)."""
    for source, target in bind_mounts(service):
        if path == target:
            return source
        if path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target.rstrip("/")) + 1 :]
    return None


def chirpstack_config(env: dict[str, str]) -> dict[str, Any]:
    """ChirpStack's own way: every *.toml of the directory concatenated, then $NAME replaced, then parsed."""
    text = "".join(path.read_text() for path in sorted((CONF / "chirpstack").glob("*.toml")))
    names = set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", text))
    assert names <= set(env), f"ChirpStack config uses unset variables {sorted(names - set(env))}"
    for name in sorted(env, key=len, reverse=True):
        text = text.replace(f"${name}", env[name])
    return tomllib.loads(text)


def placeholder_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with ${VAR:?…} from docker/.env replaced by test values."""
    values = {"JS_BEARER_TOKEN": "t" * 64, "NS_KEK_HEX": "00" * 16, "CHIRPSTACK_API_SECRET": "s" * 64}
    return {k: re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: values[m.group(1)], str(v))
            for k, v in environment(service).items()}


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert {"postgres", "redis", "mosquitto", "chirpstack", "join-server", "chirpstack-bridge"} <= set(
        services(compose)
    )
    for name, service in services(compose).items():
        for dependency in service.get("depends_on", []):
            assert dependency in services(compose), f"{name} depends on unknown {dependency}"


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name}: {source} does not exist"
            assert ROOT in source.parents, f"{name}: {source} is outside the repository"


def test_secrets_are_declared_and_made_by_the_init_script(compose: dict[str, Any], tmp_path: Path) -> None:
    declared = compose["secrets"]
    for name, service in services(compose).items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name}: secret {secret} is not declared"
    work = tmp_path / "docker"
    work.mkdir()
    (work / "init-secrets.sh").write_bytes((DOCKER / "init-secrets.sh").read_bytes())
    subprocess.run(["bash", str(work / "init-secrets.sh")], check=True, capture_output=True)
    for secret, spec in declared.items():
        assert (work / spec["file"]).exists(), f"init-secrets.sh does not create {spec['file']} ({secret})"
    env = dict(line.split("=", 1) for line in (work / ".env").read_text().splitlines())
    assert env["JS_BEARER_TOKEN"] == (work / "secrets" / "ns_token").read_text().strip()
    assert env["NS_KEK_HEX"] == (work / "secrets" / "ns_kek").read_text().strip() and len(env["NS_KEK_HEX"]) == 32
    assert (work / "secrets" / "ns_kek").stat().st_mode & 0o004  # readable by the containers' user
    assert not (work / "secrets").stat().st_mode & 0o077
    assert (DOCKER / ".gitignore").read_text().split() == [".env", "secrets/"]


def test_dockerfile_builds_a_non_root_image_with_the_state_volume(compose: dict[str, Any]) -> None:
    build = services(compose)["join-server"]["build"]
    context = (DOCKER / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.exists()
    assert (dockerfile.parent / (dockerfile.name + ".dockerignore")).exists()
    lines = [line.strip() for line in dockerfile.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for line in lines:
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (context / source).exists(), f"COPY source {source} is not in the build context"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "softhsm2" in dockerfile.read_text()
    env = dict(re.findall(r"(JSD_[A-Z_]+)=(\S+)", dockerfile.read_text()))
    volume = re.search(r'^VOLUME \["([^"]+)"\]', dockerfile.read_text(), re.M)
    assert volume is not None and volume.group(1) == env["JSD_GENERAL_STATE_DIR"]
    state_volume = [v for v in services(compose)["join-server"]["volumes"] if not v.startswith(".")]
    assert state_volume == [f"jsd-state:{env['JSD_GENERAL_STATE_DIR']}"]
    expose = re.search(r"^EXPOSE (\d+)", dockerfile.read_text(), re.M)
    assert expose is not None and expose.group(1) == env["JSD_SERVER_PORT"]
    for name in ("chirpstack-bridge", "appserver"):
        assert services(compose)[name]["image"] == "jsd:local" and services(compose)[name]["build"] == build


def test_the_daemon_config_loads_and_agrees_with_the_compose_file(compose: dict[str, Any]) -> None:
    service = services(compose)["join-server"]
    host_file = container_path(service, service["command"][1])
    assert host_file is not None and host_file.exists()
    settings = load_settings(host_file, environ=environment(service))  # unknown keys are errors
    port = settings.get("server", "port")
    assert settings.get("server", "host") == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in service["ports"]
    db = urlsplit(environment(service)["JSD_DATABASE_URL"])
    assert db.hostname in services(compose) and db.path == "/jsd"
    init = (CONF / "postgresql" / "initdb" / "002-jsd-database.sh").read_text()
    assert f"create database jsd owner {db.username}" in init and f"password '{db.password}'" in init


def test_chirpstack_config_agrees_with_the_stack(compose: dict[str, Any]) -> None:
    service = services(compose)["chirpstack"]
    assert service["command"] == "-c /etc/chirpstack"
    assert container_path(service, "/etc/chirpstack") == CONF / "chirpstack"
    config = chirpstack_config(placeholder_env(service))
    for region in config["network"]["enabled_regions"]:
        assert region in {r["id"] for r in config["regions"]}, f"region {region} has no [[regions]] entry"
    api_port = config["api"]["bind"].rsplit(":", 1)[1]
    assert f"{api_port}:{api_port}" in service["ports"]
    mqtt = urlsplit(config["integration"]["mqtt"]["server"])
    assert mqtt.hostname in services(compose) and mqtt.hostname == "mosquitto"
    assert f"listener {mqtt.port}" in (CONF / "mosquitto" / "mosquitto.conf").read_text()
    assert config["integration"]["mqtt"]["qos"] == 1
    assert urlsplit(config["postgresql"]["dsn"]).hostname == "postgres"
    assert urlsplit(config["redis"]["servers"][0]).hostname == "redis"
    js = config["join_server"]["servers"][0]
    assert set(js) == {"join_eui_prefix", "server", "async_timeout", "authorization_header"}
    js_url = urlsplit(js["server"])
    daemon = load_settings(CONF / "jsd.toml", environ={})
    assert js_url.hostname == "join-server" and js_url.port == daemon.get("server", "port")
    assert js_url.path in ("/", "/api/lbi")
    assert js["authorization_header"] == "Bearer " + "t" * 64
    assert config["keks"] == [{"label": f"ns-{config['network']['net_id']}", "kek": "00" * 16}]


def test_bridge_config_agrees_with_the_stack(compose: dict[str, Any], tmp_path: Path) -> None:
    service = services(compose)["chirpstack-bridge"]
    host_file = container_path(service, service["command"][-1])
    assert host_file is not None
    raw = host_file.read_text()
    for secret in service["secrets"]:
        raw = raw.replace(f"/run/secrets/{secret}", str(tmp_path / secret))
        (tmp_path / secret).write_text("x" * 20)
    assert "/run/secrets/" not in raw, "the bridge config names a secret the service does not mount"
    config = BridgeConfig.from_mapping(tomllib.loads(raw))
    daemon = load_settings(CONF / "jsd.toml", environ={})
    assert config.mqtt is not None and config.mqtt.host == daemon.get("mqtt", "host") == "mosquitto"
    assert config.mqtt.port == daemon.get("mqtt", "port") == 1883
    assert f"listener {config.mqtt.port}" in (CONF / "mosquitto" / "mosquitto.conf").read_text()
    assert config.topic_prefix == daemon.get("mqtt", "topic_prefix")
    link = config.links[0]
    jsd_url = urlsplit(link.jsd_url)
    assert jsd_url.hostname == "join-server" and jsd_url.port == daemon.get("server", "port")
    chirpstack = chirpstack_config(placeholder_env(services(compose)["chirpstack"]))
    assert link.net_id is not None and link.net_id.hex() == chirpstack["network"]["net_id"]
    host, port = link.adapter_options["server"].rsplit(":", 1)
    assert host == "chirpstack" and port == chirpstack["api"]["bind"].rsplit(":", 1)[1]


def test_appserver_config_agrees_with_the_stack(compose: dict[str, Any], tmp_path: Path) -> None:
    service = services(compose)["appserver"]
    host_file = container_path(service, service["command"][-1])
    assert host_file is not None
    raw = host_file.read_text()
    for secret in service["secrets"]:
        raw = raw.replace(f"/run/secrets/{secret}", str(tmp_path / secret))
        (tmp_path / secret).write_text("00112233445566778899aabbccddeeff")
    assert "/run/secrets/" not in raw
    (tmp_path / "appserver.toml").write_text(raw)
    server, options = load_appserver(tmp_path / "appserver.toml")
    assert options["mqtt"].host == "mosquitto"
    assert server.join_server is not None and urlsplit(server.join_server.url).hostname == "join-server"
    assert server.chirpstack is not None and server.chirpstack.server == "chirpstack:8080"


def dependencies(service: dict[str, Any]) -> dict[str, Any]:
    depends = service.get("depends_on", {})
    return {name: None for name in depends} if isinstance(depends, list) else dict(depends)


def test_services_start_when_what_they_need_is_healthy(compose: dict[str, Any]) -> None:
    """No service relies on restarts to outlast a dependency that is not ready yet."""
    needed = set()
    for name, service in services(compose).items():
        for dependency, spec in dependencies(service).items():
            assert isinstance(spec, dict) and spec.get("condition") == "service_healthy", (
                f"{name} depends on {dependency} without condition: service_healthy"
            )
            needed.add(dependency)
    assert {"postgres", "redis", "mosquitto", "join-server", "chirpstack"} <= needed
    for dependency in needed:
        check = services(compose)[dependency].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{dependency} has no healthcheck"
        for key in ("interval", "timeout"):
            assert re.fullmatch(r"\d+s", check[key]), f"{dependency}: healthcheck {key} {check.get(key)!r}"
        assert int(check["retries"]) >= 3


def test_the_healthchecks_ask_the_right_thing(compose: dict[str, Any]) -> None:
    every = services(compose)
    daemon = load_settings(CONF / "jsd.toml", environ=environment(every["join-server"]))
    js = every["join-server"]["healthcheck"]["test"]
    assert js[1:3] == ["python", "-c"]  # the image has Python, not curl
    probe = urlsplit(re.search(r"'(http://[^']+)'", js[3]).group(1))  # type: ignore[union-attr]
    assert (probe.hostname, probe.port, probe.path) == ("127.0.0.1", daemon.get("server", "port"), "/readyz")
    compile(js[3], "healthcheck", "exec")
    pg = every["postgres"]["healthcheck"]["test"]
    db = urlsplit(environment(every["join-server"])["JSD_DATABASE_URL"])
    # TCP, not the socket: during initdb (which creates the jsd database) the server listens on its socket only.
    assert pg[1] == "pg_isready" and pg[pg.index("-h") + 1] == "127.0.0.1"
    assert (pg[pg.index("-U") + 1], pg[pg.index("-d") + 1]) == (db.username, db.path.lstrip("/"))
    mqtt = every["mosquitto"]["healthcheck"]["test"]
    assert f"listener {mqtt[mqtt.index('-p') + 1]}" in (CONF / "mosquitto" / "mosquitto.conf").read_text()
    cs = every["chirpstack"]["healthcheck"]["test"]
    bind = chirpstack_config(placeholder_env(every["chirpstack"]))["api"]["bind"]
    assert urlsplit(cs[-1]).port == int(bind.rsplit(":", 1)[1])


def test_services_with_secret_files_wait_for_them(compose: dict[str, Any]) -> None:
    """init-secrets.sh leaves the API-key and token files empty: each file a service reads is one the bridge's
    and the appserver's wait covers (a key ending in _file, or an [astks] value)."""
    from jsd_nsadapter.settings import load_toml, secret_files

    for name in ("chirpstack-bridge", "appserver"):
        service = services(compose)[name]
        host_file = container_path(service, service["command"][-1])
        assert host_file is not None
        waited = {str(path) for _, path in secret_files(load_toml(host_file))}
        mounted = {f"/run/secrets/{secret}" for secret in service["secrets"]}
        assert waited == mounted, f"{name}: waits for {sorted(waited)}, mounts {sorted(mounted)}"
