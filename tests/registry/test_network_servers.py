"""Contract: network servers, found by NetID, bearer-token hash or client-certificate fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from jsd.registry import NetworkServer, NetworkServerExists, NotFound, Registry


def network_server(net_id: str = "000013", **changes: Any) -> NetworkServer:
    fields: dict[str, Any] = {
        "net_id": bytes.fromhex(net_id),
        "name": f"ns-{net_id}",
        "kek_label": f"kek-{net_id}",
        "token_hash": hashlib.sha256(f"token-{net_id}".encode()).hexdigest(),
        "cert_fingerprint": hashlib.sha256(f"cert-{net_id}".encode()).hexdigest(),
        "answer_url": f"https://ns-{net_id}.example/lbi",
        "async_mode": True,
    }
    fields.update(changes)
    return NetworkServer(**fields)


async def test_add_then_find_by_net_id_token_and_certificate(registry: Registry) -> None:
    ns = network_server()
    await registry.add_network_server(ns)

    assert await registry.get_network_server(ns.net_id) == ns
    assert await registry.network_server_by_token_hash(ns.token_hash or "") == ns
    assert await registry.network_server_by_cert(ns.cert_fingerprint or "") == ns


async def test_credentials_and_answer_url_are_optional(registry: Registry) -> None:
    ns = network_server(token_hash=None, cert_fingerprint=None, answer_url=None, async_mode=False)
    other = network_server("000014", token_hash=None, cert_fingerprint=None)
    await registry.add_network_server(ns)
    await registry.add_network_server(other)

    assert await registry.get_network_server(ns.net_id) == ns


async def test_unknown_lookups_are_none(registry: Registry) -> None:
    await registry.add_network_server(network_server())

    assert await registry.get_network_server(bytes.fromhex("ffffff")) is None
    assert await registry.network_server_by_token_hash("0" * 64) is None
    assert await registry.network_server_by_cert("0" * 64) is None


ORIGINAL = network_server()


@pytest.mark.parametrize(
    "clash",
    [
        network_server("000013", name="impostor", token_hash=None, cert_fingerprint=None),
        network_server("000099", token_hash=ORIGINAL.token_hash, cert_fingerprint=None),
        network_server("000099", token_hash=None, cert_fingerprint=ORIGINAL.cert_fingerprint),
    ],
    ids=["net-id", "token", "certificate"],
)
async def test_a_clash_raises_network_server_exists(registry: Registry, clash: NetworkServer) -> None:
    await registry.add_network_server(ORIGINAL)

    with pytest.raises(NetworkServerExists):
        await registry.add_network_server(clash)

    assert await registry.list_network_servers() == [ORIGINAL]


async def test_hashes_must_be_sha256_hex(registry: Registry) -> None:
    with pytest.raises(ValueError):
        await registry.add_network_server(network_server(token_hash="not-a-digest"))
    with pytest.raises(ValueError):
        await registry.add_network_server(network_server(cert_fingerprint="ab" * 20))


async def test_list_and_remove(registry: Registry) -> None:
    for net_id in ("000014", "000013"):
        await registry.add_network_server(network_server(net_id))

    listed = await registry.list_network_servers()
    await registry.remove_network_server(bytes.fromhex("000013"))

    assert [ns.net_id.hex() for ns in listed] == ["000013", "000014"]
    assert [ns.net_id.hex() for ns in await registry.list_network_servers()] == ["000014"]
    with pytest.raises(NotFound):
        await registry.remove_network_server(bytes.fromhex("000013"))
