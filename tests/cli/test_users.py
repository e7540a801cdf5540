"""`jsd users`: console users made on the daemon's machine sign in to the running daemon's console."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from jsd.app import CONSOLE_STORE, OWNERSHIP
from jsd.ownership import SCOPES, AccountKind, Principal

OPERATOR = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")
PASSWORD = "a long enough password"


def _jsd(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jsd", *args], input=stdin, env=env, capture_output=True, text=True)


async def _sign_in(url: str, username: str, password: str) -> int:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(url + "ui/sign-in") as page:
            text = await page.text()
        csrf = text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "username": username, "password": password}
        async with client.post(url + "ui/sign-in", data=form, allow_redirects=False) as answer:
            return answer.status


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_users_create_list_delete(jsd_server: Any, local_env: dict[str, str]) -> None:
    await jsd_server.app[OWNERSHIP].accounts.create_account(OPERATOR, "field-co", "subscriber", None)

    made = await asyncio.to_thread(_jsd, local_env, "users", "create", "field-co", "fiona", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout + made.stderr
    stored = await jsd_server.app[CONSOLE_STORE].user_by_name("fiona")
    assert stored is not None and stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    assert await _sign_in(jsd_server.url, "fiona", PASSWORD) == 303
    assert await _sign_in(jsd_server.url, "fiona", "not the password") == 401

    short = await asyncio.to_thread(_jsd, local_env, "users", "create", "field-co", "frank", stdin="short\n")
    assert short.returncode != 0 and "password" in short.stderr
    nobody = await asyncio.to_thread(_jsd, local_env, "users", "create", "no-such", "nina", stdin=PASSWORD + "\n")
    assert nobody.returncode != 0 and "not found" in nobody.stderr
    taken = await asyncio.to_thread(_jsd, local_env, "users", "create", "field-co", "fiona", stdin=PASSWORD + "\n")
    assert taken.returncode != 0 and "taken" in taken.stderr

    listed = await asyncio.to_thread(_jsd, local_env, "users", "list", "--json")
    assert '"username": "fiona"' in listed.stdout and "frank" not in listed.stdout
    gone = await asyncio.to_thread(_jsd, local_env, "users", "delete", "fiona")
    assert gone.returncode == 0, gone.stderr
    assert await _sign_in(jsd_server.url, "fiona", PASSWORD) == 401
