"""Prometheus metrics, counted by every worker process and served together at ``GET /metrics``.

The workers are separate processes sharing one port, so a scrape lands on any one of them. prometheus-client's
multiprocess mode makes each process write its values to memory-mapped files in one directory
(``PROMETHEUS_MULTIPROC_DIR``, set by ``jsd serve`` to ``<state_dir>/metrics`` and emptied at each start), and
the worker that answers a scrape adds up the files of all. The variable must be set before prometheus-client
is imported, which is why the supervisor sets it before starting any worker. Without it (tests, embedding
``build_app``) the values live in this process only.

An increment or an observation is a lock and a write to the mapped file, a few microseconds: the join path
counts each request once, and times its HSM call and its database commit.
"""

from __future__ import annotations

import os
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import REGISTRY
from prometheus_client.registry import Collector

__all__ = [
    "CLAIMS",
    "CONTENT_TYPE",
    "DB_COMMIT_SECONDS",
    "HSM_ERRORS",
    "HSM_SECONDS",
    "IMPORTED_DEVICES",
    "LBI_REQUESTS",
    "LBI_SECONDS",
    "MQTT_CONNECTED",
    "MULTIPROC_ENV",
    "lbi_request",
    "mac_version_label",
    "mark_process_dead",
    "mqtt_connected",
    "render",
]

disable_created_metrics()  # type: ignore[no-untyped-call]  # multiprocess mode has no *_created series; one process alone should not differ

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a join takes ~1 ms of CPU, a commit waits for an fsync (SQLite) or a WAL flush (PostgreSQL).
_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MAC_VERSIONS: Final = frozenset({"1.0", "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1"})

LBI_REQUESTS = Counter(
    "jsd_lbi_requests",
    "LBI requests answered, by message type, ResultCode and the MACVersion the NS sent",
    ["message_type", "result", "mac_version"],
)
LBI_SECONDS = Histogram(
    "jsd_lbi_request_duration_seconds", "Time to answer one LBI request (whole request)", ["message_type"],
    buckets=_BUCKETS,
)
HSM_SECONDS = Histogram(
    "jsd_hsm_join_duration_seconds", "Time of the one HSM call of a join or rejoin (queue included)", buckets=_BUCKETS
)
DB_COMMIT_SECONDS = Histogram(
    "jsd_db_commit_duration_seconds", "Time to commit a join's nonce state (group commit included)", buckets=_BUCKETS
)
HSM_ERRORS = Counter("jsd_hsm_errors", "HSM failures other than a wrong MIC, by operation", ["operation"])
CLAIMS = Counter("jsd_claims", "Device claims by outcome (claimed, failed, rate_limited)", ["outcome"])
IMPORTED_DEVICES = Counter("jsd_imported_devices", "Devices created by bulk imports")
MQTT_CONNECTED = Gauge(
    "jsd_mqtt_connected", "1 while the event publisher is connected to the MQTT broker", multiprocess_mode="livemax"
)


_LBI_CHILDREN: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def lbi_request(message_type: str, result: str, mac_version: str, seconds: float) -> None:
    """Count one answered LBI request and its time. The labelled series are looked up once per label
    combination (all bounded: types, ResultCodes, `mac_version_label`), not on every request."""
    key = (message_type, result, mac_version)
    children = _LBI_CHILDREN.get(key)
    if children is None:
        children = _LBI_CHILDREN[key] = (LBI_REQUESTS.labels(*key), LBI_SECONDS.labels(message_type))
    children[0].inc()
    children[1].observe(seconds)


def mac_version_label(value: object) -> str:
    """The MACVersion an NS sent, as a label; anything unknown is 'other' (labels must stay few)."""
    return value if isinstance(value, str) and value in _MAC_VERSIONS else "other"


def mark_process_dead(pid: int) -> None:
    """A worker ended: its live-only gauges (MQTT connected) stop counting; its counters stay summed."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def mqtt_connected() -> bool:
    """Whether a live worker reports the broker connected (only the worker running the publisher sets it)."""
    if not os.environ.get(MULTIPROC_ENV):
        return bool(MQTT_CONNECTED._value.get())
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for family in registry.collect():
        if family.name == "jsd_mqtt_connected":
            return any(sample.value >= 1 for sample in family.samples)
    return False


def render(extra: Collector | None = None) -> bytes:
    """The text exposition of every process's metrics, plus `extra` (values read at scrape time)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Forward())
    if extra is not None:
        registry.register(extra)
    return generate_latest(registry)


class _Forward(Collector):
    """This process's own metrics, when there is no multiprocess directory."""

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()
