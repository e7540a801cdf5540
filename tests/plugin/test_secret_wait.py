"""The bridge and the appserver wait for secret files that exist but are still empty, instead of exiting.

docker/init-secrets.sh creates the API-key and token files empty; they are filled once the Join Server and
ChirpStack run. A service that exited on an empty file would crash-loop until then.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from jsd_nsadapter.settings import SettingsError, load_toml, read_secret, secret_files, wait_for_secret_files


def fill_later(path: Path, text: str, after: float) -> threading.Thread:
    def write() -> None:
        time.sleep(after)
        path.write_text(text)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_an_empty_file_is_waited_for_with_a_message_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, token = tmp_path / "bridge_api_key", tmp_path / "chirpstack_api_token"
    key.write_text("")
    token.write_text("already there\n")
    files = [("links[0].api_key_file", key), ("links[0].chirpstack.api_token_file", token)]
    writer = fill_later(key, "jsd_0123456789ab_secret\n", 1.0)
    with caplog.at_level(logging.INFO, logger="jsd_nsadapter.settings"):
        waited = wait_for_secret_files(files, interval=0.05, remind_every=0.3)
    writer.join()
    assert waited >= 1.0
    assert read_secret(key, "key") == "jsd_0123456789ab_secret"
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notes) >= 3, notes  # at once, then every remind_every seconds while it stays empty
    assert all(f"links[0].api_key_file = {key}" in note for note in notes)
    assert all(str(token) not in note for note in notes)
    assert "jsd_0123456789ab" not in caplog.text


def test_filled_and_missing_files_are_not_waited_for(tmp_path: Path) -> None:
    (tmp_path / "full").write_text("x")
    started = time.monotonic()
    wait_for_secret_files([("a", tmp_path / "full"), ("b", tmp_path / "missing")], interval=5, remind_every=5)
    assert time.monotonic() - started < 1


def test_secret_files_of_a_configuration(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[mqtt]\nserver = "mqtt://m"\npassword_file = "/s/mqtt"\n'
        '[astks]\nastk-0011223344556677 = "/s/astk"\n'
        '[[links]]\nname = "a"\napi_key_file = "/s/key"\n[links.chirpstack]\napi_token_file = "/s/token"\n'
    )
    assert sorted(secret_files(load_toml(tmp_path / "c.toml"))) == [
        ("astks.astk-0011223344556677", Path("/s/astk")),
        ("links[0].api_key_file", Path("/s/key")),
        ("links[0].chirpstack.api_token_file", Path("/s/token")),
        ("mqtt.password_file", Path("/s/mqtt")),
    ]
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        read_secret(tmp_path / "empty", "x")


async def test_the_appserver_process_waits_for_its_astk_and_then_runs(tmp_path: Path) -> None:
    astk = tmp_path / "astk"
    astk.write_text("")
    (tmp_path / "appserver.toml").write_text(
        '[mqtt]\nserver = "mqtt://127.0.0.1:1883"\nevent_prefix = "test-secret-wait/"\n'
        f'[astks]\nastk-0011223344556677 = "{astk}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsd", "chirpstack", "appserver", "--config", str(tmp_path / "appserver.toml"),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    assert process.stderr is not None
    lines: list[str] = []

    async def until(text: str) -> None:
        while not any(text in line for line in lines):
            line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
            assert line, f"the process ended: {process.returncode}\n{''.join(lines)}"
            lines.append(line)

    try:
        async with asyncio.timeout(60):
            await until("waiting for secret file(s) to be filled")
        assert f"astks.astk-0011223344556677 = {astk}" in lines[-1]
        await asyncio.sleep(1)
        assert process.returncode is None, "".join(lines)  # still waiting, not exited
        astk.write_text("00112233445566778899aabbccddeeff\n")
        async with asyncio.timeout(60):
            await until("listening for ChirpStack events")
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
    assert "Traceback" not in "".join(lines)
