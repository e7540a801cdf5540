"""Threading, login sharing, closing, recovery and token bootstrap."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute

from jsd.hsm import (
    Derive,
    Hsm,
    HsmSettings,
    HsmUnavailable,
    JoinRecipe,
    Pin,
    _keys,
    _thread,
    _token,
    cryptoki,
    init_softhsm_token,
    storage_kek_label,
)

SO_PIN = Pin("so-pin-for-tests-0815")


def _recipe(blob: bytes) -> JoinRecipe:
    return JoinRecipe(
        group="default",
        roots={"app": blob},
        derives=[Derive("s", "app", bytes(16), "session")],
        request_mic=None,
        accept_mic=("app", b"\x20" + bytes(12)),
        accept_body=bytes(12),
        accept_encrypt="app",
        wraps=[],
        store=["s"],
    )


async def _visible_storage_keks(settings: HsmSettings) -> int:
    """Private objects a fresh, not-logged-in session can see: 0 once the token is logged out."""

    def job() -> int:
        token = pkcs11.lib(settings.module).get_token(token_label=settings.token_label)
        with token.open() as session:
            return len(list(session.get_objects({Attribute.LABEL: storage_kek_label("default")})))

    return await _thread.call(job)


async def test_pkcs11_runs_on_one_thread_off_the_event_loop(
    hsm_settings: HsmSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[threading.Thread] = []
    original = _token.assert_hsm_thread

    def record() -> None:
        seen.append(threading.current_thread())
        original()

    monkeypatch.setattr(_token, "assert_hsm_thread", record)
    loop_thread = threading.current_thread()

    async with await Hsm.open(hsm_settings) as hsm:
        blob = await hsm.import_root_key("default", secrets.token_bytes(16))
        await hsm.run_join(_recipe(blob))
        await hsm.generate_random(8)

    assert seen
    assert {thread.ident for thread in seen} == {seen[0].ident}
    assert seen[0] is not loop_thread and seen[0].name.startswith("jsd-hsm")


async def test_pkcs11_refuses_the_event_loop_thread(hsm_settings: HsmSettings) -> None:
    with pytest.raises(RuntimeError, match="jsd-hsm thread"):
        _token.acquire(hsm_settings)


async def test_open_close_open(hsm_settings: HsmSettings) -> None:
    first = await Hsm.open(hsm_settings)
    second = await Hsm.open(hsm_settings)
    blob = await first.import_root_key("default", secrets.token_bytes(16))

    await first.aclose()
    await first.aclose()
    await second.run_join(_recipe(blob))  # the shared login survives the first close
    await second.aclose()

    assert await _visible_storage_keks(hsm_settings) == 0  # the last close logged out
    async with await Hsm.open(hsm_settings) as third:
        await third.run_join(_recipe(blob))
        assert await _visible_storage_keks(hsm_settings) == 1


async def test_closed_handle_is_unavailable(hsm_settings: HsmSettings) -> None:
    hsm = await Hsm.open(hsm_settings)
    await hsm.aclose()

    with pytest.raises(HsmUnavailable, match="closed"):
        await hsm.generate_random(4)
    assert "closed" in repr(hsm)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"pin": Pin("not-the-pin")}, "rejected the user PIN", id="wrong-pin"),
        pytest.param({"token_label": "no-such-token"}, "no token labelled 'no-such-token'", id="unknown-token"),
        pytest.param({"module": "/nonexistent/libpkcs11.so"}, "cannot load", id="missing-module"),
    ],
)
async def test_open_failures_are_unavailable(hsm_settings: HsmSettings, change: dict[str, Any], message: str) -> None:
    settings = HsmSettings(**{**vars(hsm_settings), **change})

    with pytest.raises(HsmUnavailable, match=message):
        await Hsm.open(settings)


async def test_second_open_with_another_pin_is_refused(hsm: Hsm, hsm_settings: HsmSettings) -> None:
    with pytest.raises(HsmUnavailable, match="another PIN"):
        await Hsm.open(HsmSettings(hsm_settings.module, hsm_settings.token_label, Pin("not-the-pin")))


async def test_lost_session_is_recovered_once(
    hsm: Hsm, hsm_settings: HsmSettings, caplog: pytest.LogCaptureFixture
) -> None:
    blob = await hsm.import_root_key("default", secrets.token_bytes(16))
    await hsm.run_join(_recipe(blob))
    login = _token._logins[(hsm_settings.module, hsm_settings.token_label)]

    def pull_the_session() -> None:
        cryptoki.library(hsm_settings.module).close_session(login.live)

    await _thread.call(pull_the_session)

    with caplog.at_level(logging.WARNING, logger="jsd.hsm"):
        out = await hsm.run_join(_recipe(blob))

    assert len(out.stored["s"]) == 24
    assert "SessionHandleInvalid" in caplog.text


async def test_init_token_is_idempotent(hsm_settings: HsmSettings) -> None:
    def tokens() -> int:
        return len(list(pkcs11.lib(hsm_settings.module).get_tokens(token_label=hsm_settings.token_label)))

    init_softhsm_token(hsm_settings.module, hsm_settings.token_label, SO_PIN, hsm_settings.pin)

    assert await _thread.call(tokens) == 1


async def test_ensure_storage_kek(hsm: Hsm) -> None:
    group = f"g{secrets.token_hex(4)}"

    assert await hsm.ensure_storage_kek("default") is False
    assert await hsm.ensure_storage_kek(group) is True
    assert await hsm.ensure_storage_kek(group) is False
    assert len(await hsm.import_root_key(group, secrets.token_bytes(16))) == 24


async def test_session_lost_twice_is_unavailable(hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def always_lost(login: _token.Login, recipe: JoinRecipe) -> None:
        calls.append(1)
        raise pkcs11.exceptions.SessionHandleInvalid()

    monkeypatch.setattr(_keys, "run_join", always_lost)

    with pytest.raises(HsmUnavailable, match="join: the token is unusable"):
        await hsm.run_join(_recipe(bytes(24)))
    assert len(calls) == 2
    await hsm.generate_random(4)  # the recovered login still works


LOGIN_LOOP = """
import asyncio, os, sys, time
from jsd.hsm import Hsm, HsmSettings, Pin

async def main() -> None:
    settings = HsmSettings(sys.argv[1], sys.argv[2], Pin(os.environ["TEST_USER_PIN"]))
    cycles, deadline = 0, time.monotonic() + float(sys.argv[3])
    while time.monotonic() < deadline:
        async with await Hsm.open(settings) as hsm:
            await hsm.has_kek("any-label")
        cycles += 1
    print(cycles)

asyncio.run(main())
"""


def test_processes_logging_in_at_once(hsm_settings: HsmSettings) -> None:
    """SoftHSM2 rewrites its token file on every login; workers starting together must still all get in."""
    env = {**os.environ, "TEST_USER_PIN": hsm_settings.pin.reveal()}
    command = [sys.executable, "-c", LOGIN_LOOP, hsm_settings.module, hsm_settings.token_label, "1.5"]
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]

    outputs = [worker.communicate(timeout=60) for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0], [err for _out, err in outputs]
    assert all(int(out) > 0 for out, _err in outputs)
