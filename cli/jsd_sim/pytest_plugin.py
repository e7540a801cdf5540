"""pytest fixtures for end-to-end tests that drive a Join Server with simulated devices and networks.

Load with ``pytest_plugins = ["jsd_sim.pytest_plugin"]`` in a root conftest (or import the fixtures into a
conftest). Importing this module imports neither aiohttp nor the simulator: fixtures import what they use.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from jsd_sim.device import SimDevice
    from jsd_sim.network_server import SimNetworkServer
    from jsd_sim.scenarios import JoinServerUnderTest, ScenarioReport, Step

__all__ = ["sim_conformance", "sim_device_factory", "sim_ns_factory"]


@pytest.fixture
def sim_device_factory() -> Callable[..., SimDevice]:
    """Make a SimDevice with random EUIs and keys unless given: ``make("1.1", join_eui=b"...")``."""
    from jsd_sim.device import SimDevice, is_lorawan_11

    def make(
        mac_version: str = "1.0.3",
        *,
        dev_eui: bytes | None = None,
        join_eui: bytes | None = None,
        app_key: bytes | None = None,
        nwk_key: bytes | None = None,
        next_dev_nonce: int = 0,
    ) -> SimDevice:
        if nwk_key is None and is_lorawan_11(mac_version):
            nwk_key = secrets.token_bytes(16)
        return SimDevice(
            dev_eui or secrets.token_bytes(8), join_eui or secrets.token_bytes(8), mac_version,
            app_key or secrets.token_bytes(16), nwk_key, next_dev_nonce=next_dev_nonce,
        )

    return make


@pytest.fixture
async def sim_ns_factory() -> AsyncIterator[Callable[..., Awaitable[SimNetworkServer]]]:
    """Make started SimNetworkServers (same arguments as the class); all are closed after the test."""
    from jsd_sim.network_server import SimNetworkServer

    made: list[SimNetworkServer] = []

    async def make(js_url: str, net_id: bytes | str, **kwargs: Any) -> SimNetworkServer:
        ns = SimNetworkServer(js_url, net_id, **kwargs)
        made.append(ns)
        await ns.start()
        return ns

    yield make
    for ns in made:
        await ns.close()


@pytest.fixture
def sim_conformance() -> Callable[..., Awaitable[ScenarioReport]]:
    """Provision a Join Server under test and run steps on it: ``await sim_conformance(target, steps=...)``.

    Defaults to every scenario kind for every MAC version (``standard_steps``); the report's ``ok`` says
    whether the Join Server behaved, ``to_text()`` says where it did not.
    """
    from jsd_sim.device import MAC_VERSIONS
    from jsd_sim.scenarios import provision, run_scenario, standard_steps

    async def run(
        target: JoinServerUnderTest,
        *,
        steps: list[Step] | None = None,
        versions: tuple[str, ...] = MAC_VERSIONS,
        devices_per_version: int = 1,
        with_visited: bool = True,
        async_answers: bool = False,
    ) -> ScenarioReport:
        scenario, nss = await provision(
            target, versions=versions, devices_per_version=devices_per_version, with_visited=with_visited,
            async_answers=async_answers,
        )
        scenario.steps = steps if steps is not None else standard_steps(with_visited=with_visited)
        try:
            return await run_scenario(scenario, network_servers=nss)
        finally:
            for ns in nss.values():
                await ns.close()

    return run
