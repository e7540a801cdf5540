"""The shipped service files: the systemd unit passes systemd-analyze, the dashboard queries metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from jsd import metrics
from jsd.health import _Outbox

ROOT = Path(__file__).resolve().parents[2]


def test_systemd_unit_is_valid_and_hardened(tmp_path: Path) -> None:
    unit = (ROOT / "conf" / "systemd" / "jsd.service").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert directives["ExecStart"].endswith("jsd -c /etc/jsd/jsd.toml serve")
    assert directives["ExecStartPre"].endswith("jsd -c /etc/jsd/jsd.toml db upgrade")
    for name, value in {
        "User": "jsd", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "StateDirectoryMode": "0700", "UMask": "0077", "CapabilityBoundingSet": "",
    }.items():  # fmt: skip
        assert directives.get(name) == value, name
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # the static checks above stand where systemd is not installed
        local = tmp_path / "jsd.service"
        local.write_text(unit.replace("/opt/jsd/venv/bin/jsd", str(Path(sys.executable).with_name("jsd"))))
        checked = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    dashboard = json.loads((ROOT / "conf" / "grafana" / "jsd-dashboard.json").read_text())
    text = metrics.render(_Outbox(0, None)).decode()
    exported = {name.removesuffix("_total") for name in re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE)}
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bjsd_\w+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
    assert {"jsd_lbi_requests", "jsd_hsm_errors", "jsd_outbox_events", "jsd_mqtt_connected"} <= queried
