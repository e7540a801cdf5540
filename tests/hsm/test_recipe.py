"""`JoinRecipe` validation: a wrong recipe is a programming error, caught before the token is touched."""

from __future__ import annotations

from typing import Any

import pytest

from jsd.hsm import Derive, JoinRecipe, session_store_kek_label, storage_kek_label

BLOB = bytes(24)


def recipe(**change: Any) -> JoinRecipe:
    """A valid 1.1 recipe, with fields replaced."""
    fields: dict[str, Any] = {
        "group": "default",
        "roots": {"nwk": BLOB, "app": BLOB},
        "derives": [
            Derive("js_int", "nwk", bytes(16), "mic"),
            Derive("js_enc", "nwk", bytes(16), "enc"),
            Derive("f_nwk", "nwk", bytes(16), "session"),
            Derive("app_s", "app", bytes(16), "session"),
        ],
        "request_mic": ("nwk", b"\x00" * 19, b"\x00" * 4),
        "accept_mic": ("js_int", b"\x20" * 13),
        "accept_body": bytes(12),
        "accept_encrypt": "nwk",
        "wraps": [("f_nwk", "ns"), ("app_s", "as")],
        "store": ["app_s"],
    }
    return JoinRecipe(**{**fields, **change})


def test_valid_recipe_and_root_usage() -> None:
    assert recipe().root_usage() == {"nwk": {"derive", "sign", "decrypt"}, "app": {"derive"}}
    assert recipe(accept_encrypt="js_enc", request_mic=None).root_usage()["nwk"] == {"derive"}
    assert recipe(accept_body=bytes(28)).accept_body == bytes(28)


def test_root_blob_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        recipe(roots={"nwk": "x"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"group": "a b"}, "invalid HSM group", id="group/space"),
        pytest.param({"group": ""}, "invalid HSM group", id="group/empty"),
        pytest.param({"roots": {}}, "at least one root", id="roots/none"),
        pytest.param(
            {"derives": [Derive("x", "ghost", bytes(16), "session")]},
            "unknown parent",
            id="derive/unknown-parent",
        ),
        pytest.param(
            {"derives": [Derive("a", "nwk", bytes(16), "session"), Derive("b", "a", bytes(16), "session")]},
            "not a root key",
            id="derive/derived-parent",
        ),
        pytest.param(
            {"derives": [Derive("nwk", "app", bytes(16), "session")]},
            "defined twice",
            id="derive/shadows-root",
        ),
        pytest.param({"request_mic": ("nwk", b"", b"\x00" * 3)}, "4 bytes", id="request-mic/length"),
        pytest.param(
            {"request_mic": ("f_nwk", b"", b"\x00" * 4)},
            "not a root or a 'mic'",
            id="request-mic/session-key",
        ),
        pytest.param({"request_mic": ("ghost", b"", b"\x00" * 4)}, "not a root or a 'mic'", id="request-mic/unknown"),
        pytest.param({"accept_mic": ("js_enc", b"")}, "not a root or a 'mic'", id="accept-mic/enc-key"),
        pytest.param({"accept_body": bytes(16)}, "12 or 28", id="accept-body/length"),
        pytest.param({"accept_encrypt": "js_int"}, "not a root or an 'enc'", id="accept-encrypt/mic-key"),
        pytest.param({"accept_encrypt": "ghost"}, "not a root or an 'enc'", id="accept-encrypt/unknown"),
        pytest.param({"wraps": [("nwk", "ns")]}, "not a derived 'session'", id="wraps/root-key"),
        pytest.param({"wraps": [("js_int", "ns")]}, "not a derived 'session'", id="wraps/mic-key"),
        pytest.param({"wraps": [("f_nwk", "")]}, "invalid KEK label", id="wraps/empty-label"),
        pytest.param({"wraps": [("f_nwk", storage_kek_label("default"))]}, "reserved", id="wraps/storage-label"),
        pytest.param({"wraps": [("f_nwk", session_store_kek_label("x"))]}, "reserved", id="wraps/session-store-label"),
        pytest.param({"wraps": [("f_nwk", "ns"), ("f_nwk", "ns")]}, "repeat", id="wraps/duplicate"),
        pytest.param({"store": ["app"]}, "not a derived 'session'", id="store/root-key"),
        pytest.param({"store": ["app_s", "app_s"]}, "repeat", id="store/duplicate"),
    ],
)
def test_invalid_recipe(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recipe(**change)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("x", "nwk", bytes(15), "session"), "16 bytes", id="block/short"),
        pytest.param(("x", "nwk", bytes(17), "session"), "16 bytes", id="block/long"),
        pytest.param(("x", "nwk", bytes(16), "root"), "usage", id="usage/unknown"),
        pytest.param(("", "nwk", bytes(16), "session"), "slot name", id="slot/empty"),
    ],
)
def test_invalid_derive(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Derive(*args)


def test_labels() -> None:
    assert storage_kek_label("default") == "jsd-storage-default"
    assert session_store_kek_label("eu-1") == "jsd-sessions-eu-1"
    with pytest.raises(ValueError):
        storage_kek_label("../x")
