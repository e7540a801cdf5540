"""Settings: one declaration with help text, read from a TOML file, overridden by ``JSD_*`` variables.

Every setting lives in ``SETTINGS`` with its default and help; ``conf/jsd.example.toml`` documents each one
(a test keeps the two in step). The environment beats the file: ``JSD_<SECTION>_<NAME>``, for example
``JSD_DATABASE_URL`` or ``JSD_SERVER_PORT``. Secrets (the HSM PIN) never come from the command line: from
``JSD_HSM_PIN`` or from the file named by ``hsm.pin_file``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Setting:
    section: str
    name: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return f"JSD_{self.section.upper()}_{self.name.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("general", "state_dir", ".state",
            "Directory for the embedded default: SQLite file, SoftHSM2 token, generated PIN."),
    Setting("server", "host", "127.0.0.1", "Address the LBI HTTP endpoint listens on."),
    Setting("server", "port", 8090, "TCP port of the LBI HTTP endpoint."),
    Setting("server", "workers", 2,
            "Worker processes sharing the port (SO_REUSEPORT); each has its own PKCS#11 thread."),
    Setting("server", "max_body_bytes", 32768, "Largest accepted request body; larger gets HTTP 413."),
    Setting("server", "body_timeout", 5.0,
            "Seconds a client has to send a whole request body (an import or a console upload: between two chunks); "
            "slower gets HTTP 408 and the connection is closed."),
    Setting("server", "idle_timeout", 75.0,
            "Seconds a connection may go without a whole request line and headers (after it opens, or after its "
            "last answer) before it is closed: ends idle keep-alive connections and clients that drip headers."),
    Setting("server", "shutdown_timeout", 5.0,
            "Seconds a worker waits for requests in progress after SIGTERM before cutting them off."),
    Setting("server", "tls_cert", "", "PEM certificate for HTTPS; empty = plain HTTP (use a TLS proxy)."),
    Setting("server", "tls_key", "", "PEM private key for tls_cert."),
    Setting("server", "tls_client_ca", "",
            "PEM CA bundle; when set, NS client certificates are requested and mapped to NetIDs by fingerprint."),
    Setting("database", "url", "",
            "SQLAlchemy URL (sqlite+aiosqlite:///path or postgresql+asyncpg://...); empty = SQLite in state_dir."),
    Setting("database", "command_timeout", 15.0,
            "PostgreSQL: seconds the daemon waits for the server to answer one statement before it gives up on the "
            "call and drops the connection (a silent network partition then fails requests instead of stalling "
            "them); 0 = wait for ever. Migrations are not bounded by it."),
    Setting("hsm", "module", "", "PKCS#11 module path; empty = SoftHSM2 found on this machine."),
    Setting("hsm", "token_label", "jsd", "Label of the token holding the KEKs."),
    Setting("hsm", "pin_file", "",
            "File holding the user PIN (JSD_HSM_PIN wins); empty with the embedded default = state_dir/hsm-pin."),
    Setting("hsm", "reinitialize_every", 10000,
            "Finalise and re-initialise the PKCS#11 module after this many HSM operations of a worker (a batch "
            "counts each key), between two of them (0 = never): SoftHSM2 frees destroyed session objects only then (~1 KB per join)."),
    Setting("hsm", "softhsm_conf", "",
            "SOFTHSM2_CONF to use; empty with the embedded default = state_dir/softhsm2.conf."),
    Setting("join", "join_euis", [],
            "JoinEUIs served (16 hex each, or a prefix like '70b3d57ed0000000/40'); empty = any registered device."),
    Setting("join", "default_hsm_group", "default", "HSM group (storage KEK) of devices added without one."),
    Setting("join", "dev_nonce_history", 1024,
            "LoRaWAN 1.0.0-1.0.3: how many used DevNonces are remembered per device to refuse replays."),
    Setting("join", "lifetime", 0, "Session Lifetime sent in JoinAns, seconds; 0 = no limit."),
    Setting("join", "nonce_retries", 8, "Retries when concurrent joins of one device race for the JoinNonce."),
    Setting("lbi", "answer_timeout", 5.0,
            "Seconds to deliver an asynchronous answer to the NS, retries included (the NS waits no longer)."),
    Setting("lbi", "answer_attempt_timeout", 2.0,
            "Seconds one delivery attempt of an asynchronous answer may take before it is retried."),
    Setting("lbi", "home_ns_requires_agreement", True,
            "HomeNSReq only from the device's home NS or an NS with a roaming agreement with it "
            "(false = any registered NS may ask)."),
    Setting("ownership", "default_join_eui", "", "JoinEUI (16 hex) of imported devices that name none."),
    Setting("ownership", "claim_failures_per_account", 20,
            "Failed claims an account may make per window; then its claims wait (429) until the window ends."),
    Setting("ownership", "claim_failures_per_source", 200,
            "Failed REST claims from one source address per window (all its accounts); 0 = no such limit."),
    Setting("ownership", "claim_failures_per_device", 5,
            "Failed claims of one device per window after which each further wrong token uses up the "
            "claimant's whole allowance; the right token is still accepted."),
    Setting("ownership", "claim_window", 900, "Length of the failed-claim window, seconds."),
    Setting("ownership", "event_retention", 100000, "Published events kept for GET /api/v1/events (newest)."),
    Setting("ownership", "event_prune_interval", 60.0,
            "Seconds between two prunings of published events down to event_retention."),
    Setting("mqtt", "host", "",
            "MQTT broker host; empty = no broker: events stay queryable over GET /api/v1/events only."),
    Setting("mqtt", "port", 1883, "MQTT broker port (8883 is the usual one with TLS)."),
    Setting("mqtt", "protocol", "5", "MQTT protocol version: '5' or '3.1.1'."),
    Setting("mqtt", "username", "", "User name at the broker; empty = anonymous."),
    Setting("mqtt", "password_file", "", "File holding the broker password (first line); empty = none."),
    Setting("mqtt", "tls", False, "Connect with TLS (on by itself when tls_ca or tls_cert is set)."),
    Setting("mqtt", "tls_ca", "", "PEM CA bundle to verify the broker; empty with TLS = the system's CAs."),
    Setting("mqtt", "tls_cert", "", "PEM client certificate for the broker; empty = none."),
    Setting("mqtt", "tls_key", "", "PEM private key of tls_cert."),
    Setting("mqtt", "client_id", "",
            "MQTT client id; empty = 'jsd-', this machine's host name and a random suffix (unique per process)."),
    Setting("mqtt", "topic_prefix", "jsd/v1", "First levels of every topic the daemon uses."),
    Setting("mqtt", "keepalive", 30, "MQTT keepalive, seconds."),
    Setting("mqtt", "retry_min", 0.5, "First wait before reconnecting to a broker that is away, seconds."),
    Setting("mqtt", "retry_max", 30.0, "Longest wait between reconnection attempts (doubling from retry_min)."),
    Setting("mqtt", "poll_interval", 0.2, "Seconds between two looks at the outbox when it was empty."),
    Setting("mqtt", "failover_interval", 2.0,
            "Several instances on one database: seconds between a standby's attempts to take over publishing "
            "(and the publisher's checks that it still holds the lease)."),
    Setting("console", "enabled", True, "Serve the web console under /ui/ on the daemon's port."),
    Setting("console", "product_name", "jsd console", "Product name shown in the console's header and title."),
    Setting("console", "accent_color", "#0b63ce", "Accent colour of the console (#rrggbb)."),
    Setting("console", "logo_file", "", "PNG or SVG logo shown in the console's header; empty = none."),
    Setting("console", "session_lifetime", 28800, "Seconds a console sign-in lasts."),
    Setting("console", "secure_cookies", False,
            "Mark console cookies Secure (on by itself with server.tls_cert; set it behind a TLS proxy)."),
    Setting("console", "signin_failures_per_user", 5, "Failed console sign-ins per user name per window."),
    Setting("console", "signin_failures_per_address", 20, "Failed console sign-ins per source address per window."),
    Setting("console", "signin_window", 900, "Length of the sign-in failure window, seconds."),
    Setting("log", "format", "plain", "Log format: 'plain' or 'json' (one JSON object per line)."),
    Setting("log", "level", "info", "Log level: debug, info, warning, error."),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings, by section; read with ``settings.get("server", "port")``."""

    values: Mapping[tuple[str, str], Any] = field(default_factory=dict)

    def get(self, section: str, name: str) -> Any:
        return self.values[(section, name)]

    @property
    def state_dir(self) -> Path:
        return Path(self.get("general", "state_dir")).resolve()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``section__name=value`` changes (used by the CLI and tests)."""
        values = dict(self.values)
        for key, value in changes.items():
            section, _, name = key.partition("__")
            if (section, name) not in values:
                raise ConfigError(f"unknown setting {section}.{name}")
            values[(section, name)] = value
        return Settings(values)


def _cast(setting: Setting, raw: Any, origin: str) -> Any:
    default = setting.default
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            if isinstance(raw, list):
                return [str(item) for item in raw]
            return [item.strip() for item in str(raw).split(",") if item.strip()]
        return str(raw)
    except ValueError:
        raise ConfigError(
            f"{setting.section}.{setting.name} from {origin}: cannot use {raw!r} "
            f"(expected {type(default).__name__})"
        ) from None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults < TOML file < environment. Unknown keys in the file are an error, not ignored."""
    env = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not text (UTF-8)") from None
    known = {(s.section, s.name) for s in SETTINGS}
    for section, table in file_values.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table")
        for name in table:
            if (section, name) not in known:
                raise ConfigError(f"config file {path}: unknown setting {section}.{name}")
    values: dict[tuple[str, str], Any] = {}
    for setting in SETTINGS:
        value = setting.default
        if setting.name in file_values.get(setting.section, {}):
            value = _cast(setting, file_values[setting.section][setting.name], str(path))
        if setting.env in env:
            value = _cast(setting, env[setting.env], setting.env)
        values[(setting.section, setting.name)] = value
    settings = Settings(values)
    if settings.get("log", "format") not in ("plain", "json"):
        raise ConfigError("log.format must be 'plain' or 'json'")
    if settings.get("server", "workers") < 1:
        raise ConfigError("server.workers must be at least 1")
    for section, name in (("server", "body_timeout"), ("server", "idle_timeout"), ("server", "shutdown_timeout"),
                          ("lbi", "answer_timeout"), ("lbi", "answer_attempt_timeout")):
        if not settings.get(section, name) > 0:
            raise ConfigError(f"{section}.{name} must be a positive number of seconds")
    if not 0 <= settings.get("database", "command_timeout") < float("inf"):
        raise ConfigError("database.command_timeout must be 0 (none) or a positive number of seconds")
    _check_mqtt(settings)
    return settings


def _check_mqtt(settings: Settings) -> None:
    """Refuse an unusable [mqtt] section at start-up rather than at the first connection attempt."""
    if settings.get("mqtt", "protocol") not in ("5", "3.1.1"):
        raise ConfigError("mqtt.protocol must be '5' or '3.1.1'")
    prefix: str = settings.get("mqtt", "topic_prefix")
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(c in prefix for c in "+#\0"):
        raise ConfigError("mqtt.topic_prefix must be topic levels without wildcards or outer slashes, like 'jsd/v1'")
    if not 0 < settings.get("mqtt", "retry_min") <= settings.get("mqtt", "retry_max"):
        raise ConfigError("mqtt.retry_min must be positive and at most mqtt.retry_max")
    if settings.get("mqtt", "poll_interval") <= 0 or settings.get("ownership", "event_prune_interval") <= 0:
        raise ConfigError("mqtt.poll_interval and ownership.event_prune_interval must be positive")
    if settings.get("mqtt", "failover_interval") <= 0:
        raise ConfigError("mqtt.failover_interval must be positive")
    if not 0 < settings.get("mqtt", "port") < 65536:
        raise ConfigError("mqtt.port must be a TCP port")


def database_url(settings: Settings) -> str:
    """The configured URL, or the embedded SQLite file under the state dir."""
    url: str = settings.get("database", "url")
    if url:
        return url
    return f"sqlite+aiosqlite:///{settings.state_dir / 'jsd.sqlite3'}"
