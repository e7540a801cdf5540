"""The OpenAPI document and the routes are one list: every route is documented and every path is served."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jsd import ownership
from jsd.api import PREFIX
from jsd.api.handlers import ROUTES, Api
from jsd.api.openapi import PROBLEM_TYPES, document
from jsd.api.problems import HTTP_PROBLEMS

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), PREFIX + path) for path, ops in document()["paths"].items() for method in ops}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_every_route_is_documented_and_every_path_served(api: Any) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in api.server.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith(PREFIX + "/")
    }
    assert served == documented()
    reply = await api.call("GET", "/openapi.json")
    assert reply.body == json.loads(json.dumps(document()))


def test_operation_ids_are_the_handlers() -> None:
    ops = {
        (method.upper(), path): op["operationId"]
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }
    assert ops == {(method, path): name for method, path, name in ROUTES}
    assert all(callable(getattr(Api, name)) for name in ops.values())


def test_references_resolve_and_every_component_is_used() -> None:
    doc = document()
    components = doc["components"]
    used = set(refs(doc["paths"])) | set(refs(components))
    for ref in used:
        _, section, name = ref.removeprefix("#/").split("/")
        assert name in components[section], ref
    declared = {
        f"#/components/{section}/{name}" for section in ("schemas", "responses") for name in components[section]
    }
    assert declared <= used, declared - used


def test_every_problem_type_is_documented() -> None:
    enum = document()["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    slugs = {
        cls.problem
        for cls in vars(ownership).values()
        if isinstance(cls, type) and issubclass(cls, ownership.OwnershipError)
    }
    slugs |= {slug for slug, _ in HTTP_PROBLEMS.values()}
    assert {f"urn:jsd:problem:{slug}" for slug in slugs} <= set(enum)
    statuses = {slug: status for slug, (status, _) in PROBLEM_TYPES.items()}
    assert {slug: statuses[slug] for slug, _ in HTTP_PROBLEMS.values()} == {
        slug: status for status, (slug, _) in HTTP_PROBLEMS.items()
    }


def test_every_authenticated_operation_answers_the_common_problems() -> None:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            if op.get("security") == []:
                continue
            assert {"400", "401", "403", "500", "503"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
