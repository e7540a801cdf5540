"""Files and standard input that are not text get a CLI error naming them, never a Python traceback.

The real `jsd` program runs as a subprocess; each refusal happens before any daemon is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

JSD = str(Path(sys.executable).with_name("jsd"))
BINARY = bytes(range(128, 256)) * 8 + b"\n\xff\xfe\n"


def run(tmp_path: Path, *args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JSD_")}
    environ.update(HOME=str(tmp_path), JSD_URL="http://127.0.0.1:9", **env)  # nothing listens on the discard port
    done = subprocess.run([JSD, *args], input=stdin, capture_output=True, env=environ, cwd=tmp_path, timeout=60)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "photo.bin"
    path.write_bytes(BINARY)
    return path


def test_a_binary_api_key_file_is_named(tmp_path: Path, binary: Path) -> None:
    done = run(tmp_path, "whoami", JSD_API_KEY_FILE=str(binary))
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert f"the API key file {binary} is not text (UTF-8)" in done.stderr


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"], ids=["strict-stdin", "surrogate-escaped-stdin"])
def test_a_binary_qr_file_and_a_binary_token_on_stdin_are_refused(tmp_path: Path, binary: Path, locale: str) -> None:
    key = tmp_path / "farm.key"
    key.write_text("jsd_0123456789ab_" + "x" * 43 + "\n")
    qr = run(tmp_path, "claim", "--qr-file", str(binary), JSD_API_KEY_FILE=str(key))
    assert (qr.returncode, "Traceback" in qr.stderr) == (2, False), qr.stderr
    assert f"the QR string file {binary} is not text (UTF-8)" in qr.stderr
    token = run(tmp_path, "claim", "0004a30b001c0530", stdin=BINARY, JSD_API_KEY_FILE=str(key), LC_ALL=locale,
                PYTHONIOENCODING=f"utf-8:{'strict' if locale == 'C.UTF-8' else 'surrogateescape'}")
    assert (token.returncode, "Traceback" in token.stderr) == (2, False), token.stderr
    assert "the owner token is not text (UTF-8)" in token.stderr


def test_labels_of_a_binary_file_report_bad_lines(tmp_path: Path, binary: Path) -> None:
    done = run(tmp_path, "labels", str(binary), "--out", str(tmp_path / "labels"))
    assert "Traceback" not in done.stderr and done.returncode != 0, done.stderr
    assert "line 1: not JSON" in done.stderr and "bad input line(s) skipped" in done.stderr


def test_binary_keys_config_and_profile_files_get_a_message(tmp_path: Path, binary: Path) -> None:
    keys = run(tmp_path, "--local", "devices", "add", "0102030405060799", "--join-eui", "70b3d57ed0000001",
               "--mac-version", "1.0.3", "--keys-file", str(binary), JSD_GENERAL_STATE_DIR=str(tmp_path / "state"))  # fmt: skip
    assert (keys.returncode, "Traceback" in keys.stderr) == (2, False), keys.stderr
    assert "not text (UTF-8): byte 0 is 0x80" in keys.stderr
    config = run(tmp_path, "-c", str(binary), "serve")
    assert config.returncode != 0 and "Traceback" not in config.stderr, config.stderr
    assert f"config file {binary} is not text (UTF-8)" in config.stderr
    profile = tmp_path / ".config" / "jsd" / "profile.toml"
    profile.parent.mkdir(parents=True)
    profile.write_bytes(BINARY)
    whoami = run(tmp_path, "whoami")
    assert (whoami.returncode, "Traceback" in whoami.stderr) == (2, False), whoami.stderr
    assert f"cannot read the profile {profile}: it is not text (UTF-8)" in whoami.stderr
