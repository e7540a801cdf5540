"""Simulated LoRaWAN end devices and a home network server that speaks Backend Interfaces 1.0.

An independent check of a Join Server: imports only the standard library, ``cryptography``, ``aiohttp``
and ``click``, never the daemon (``jsd``).
"""

from jsd_sim.device import AcceptError, DeviceSession, DevNonceExhausted, SessionKeys, SimDevice
from jsd_sim.load import LatencyStats, LoadConfig, LoadReport, run_load
from jsd_sim.network_server import (
    AppSKeyOutcome,
    HomeNSOutcome,
    JoinOutcome,
    JoinServerDeviation,
    KeyEnvelope,
    LbiAnswer,
    SimError,
    SimNetworkServer,
    TransportError,
)
from jsd_sim.scenarios import (
    NetworkServerSpec,
    Scenario,
    ScenarioError,
    ScenarioReport,
    Step,
    StepResult,
    load_devices_csv,
    load_scenario,
    provision,
    run_scenario,
    standard_steps,
)

__all__ = [
    "AcceptError",
    "AppSKeyOutcome",
    "DevNonceExhausted",
    "DeviceSession",
    "HomeNSOutcome",
    "JoinOutcome",
    "JoinServerDeviation",
    "KeyEnvelope",
    "LatencyStats",
    "LbiAnswer",
    "LoadConfig",
    "LoadReport",
    "NetworkServerSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "SessionKeys",
    "SimDevice",
    "SimError",
    "SimNetworkServer",
    "Step",
    "StepResult",
    "TransportError",
    "load_devices_csv",
    "load_scenario",
    "provision",
    "run_load",
    "run_scenario",
    "standard_steps",
]
