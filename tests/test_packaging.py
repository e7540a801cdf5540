"""Only real-named packages are installed: no generic top-level `cli` or `plugin` in site-packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_generic_names_do_not_import_from_elsewhere(tmp_path: Path) -> None:
    probe = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(n) for n in ('cli', 'plugin', 'tests', 'conf')))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_real_names_import(tmp_path: Path) -> None:
    probe = "import jsd, jsd_cli, jsd_sim, jsd_nsadapter, jsd_chirpstack; print(jsd.__version__)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_jsd_console_command_shows_help(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "jsd", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "hsm", "ns", "accounts", "devices", "claim", "astks", "events", "whoami", "login", "sim"):
        assert command in result.stdout
