"""A device edited, or deleted and imported again, while a join of it is in its HSM call: the join's commit
finds the version moved and the join starts again on what the registry holds now (real SQLite and SoftHSM2).

The edit is made to land inside the HSM call by running it when the real HSM returns, so the interleaving
is deterministic rather than a race the test may or may not win.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from jsd.hsm import Hsm
from jsd.join import JoinAccepted, JoinPolicy, JoinService, Reason, Refusal
from jsd.registry import NewDevice

from .conftest import HOME, JOIN_EUI, VISITED, JoinWorld, params, refusal_name


class _EditInHsmCall:
    """The real HSM; `edit` runs once, when the first join computation returns and before it is committed."""

    def __init__(self, hsm: Hsm, edit: Callable[[], Awaitable[object]]) -> None:
        self._hsm = hsm
        self._edit: Callable[[], Awaitable[object]] | None = edit
        self.joins = 0

    async def run_join(self, recipe: Any) -> Any:
        output = await self._hsm.run_join(recipe)
        self.joins += 1
        if self._edit is not None:
            edit, self._edit = self._edit, None
            await edit()
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hsm, name)


def service_with(world: JoinWorld, edit: Callable[[], Awaitable[object]]) -> tuple[JoinService, _EditInHsmCall]:
    hsm = _EditInHsmCall(world.hsm, edit)
    return JoinService(world.registry, cast(Hsm, hsm), JoinPolicy(), world.journal, world.roaming), hsm


async def test_an_astk_changed_during_the_join_wraps_the_answer(world: JoinWorld) -> None:
    dev = await world.device("1.0.3")
    label = f"astk-{uuid.uuid4().hex[:8]}"
    world.keks[label] = secrets.token_bytes(16)
    await world.hsm.import_kek(label, world.keks[label])
    service, hsm = service_with(world, lambda: world.registry.set_astk_label(dev.sim.dev_eui, label))

    outcome = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)

    assert isinstance(outcome, JoinAccepted), outcome
    session = dev.sim.accept(outcome.phy_payload)
    assert hsm.joins == 2 and outcome.join_nonce == session.join_nonce == 1
    assert outcome.app_s_key is not None and outcome.app_s_key.kek_label == label
    assert world.unwrap(outcome.app_s_key) == session.keys.app_s_key


async def test_a_home_network_moved_during_the_join_refuses_it(world: JoinWorld) -> None:
    dev = await world.device("1.0.3")
    before = await world.nonces(dev)
    service, _ = service_with(world, lambda: world.registry.set_home_net_id(dev.sim.dev_eui, VISITED))

    outcome = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)

    assert isinstance(outcome, Refusal) and outcome.reason is Reason.NOT_HOME_NETWORK, outcome
    assert (await world.nonces(dev)).join_nonce == before.join_nonce


async def test_a_device_imported_again_during_the_join_gets_no_accept_from_its_old_keys(world: JoinWorld) -> None:
    dev = await world.device("1.0.3")
    old = await world.registry.get_device(dev.sim.dev_eui)
    assert old is not None

    async def delete_and_reimport() -> None:
        await world.registry.remove_device(dev.sim.dev_eui)
        new_key = await world.hsm.import_root_key("default", secrets.token_bytes(16))
        await world.registry.add_device(NewDevice(dev.sim.dev_eui, JOIN_EUI, "1.0.3", "default", new_key,
                                                  home_net_id=HOME, astk_label=old.astk_label))  # fmt: skip

    service, hsm = service_with(world, delete_and_reimport)
    outcome = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)

    # The retry reads the new device: the request was signed with the old key, so its MIC fails.
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.WRONG_MIC, outcome
    new = await world.registry.get_device(dev.sim.dev_eui)
    assert new is not None and new.nonces.join_nonce == 0 and new.nonces.version > old.nonces.version
    assert hsm.joins == 1  # only the old keys' computation completed
