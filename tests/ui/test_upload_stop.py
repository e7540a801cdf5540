"""A daemon stopped while a console upload runs: the upload is stopped, rolled back and recorded as such before
the database closes (it used to be cancelled and left behind, its job "running" for ever)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from jsd.health import ENGINE
from jsd.registry.console import ConsoleStore
from jsd.registry.engine import create_engine
from jsd.registry.tables import devices
from jsd.ui.site import CONSOLE
from jsd.ui.uploads import STOPPED, start_upload

from ..daemons import daemon_settings, start_app, stop_app
from .conftest import LOCAL
from .test_console import device_lines


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_stop_during_an_upload_waits_for_it_and_records_that_nothing_was_stored(
    hsm_state: Path, database: Any, tmp_path: Path
) -> None:
    app, runner, _ = await start_app(daemon_settings(hsm_state, database.url, tmp_path / "state"))
    try:
        console = app[CONSOLE]
        data = "".join(json.dumps(line) + "\n" for line in device_lines(30000)).encode()
        job_id, _, task = await start_upload(console.store, console.service, LOCAL, "0" * 64, "d.jsonl", data)
        console.tasks.add(task)
        done_at_close: list[bool] = []
        event.listen(app[ENGINE].sync_engine, "engine_disposed", lambda _: done_at_close.append(task.done()))
        for _ in range(400):  # until the import is under way: its first progress write
            job = await console.store.job(job_id)
            if job is not None and job.done > 0:
                break
            await asyncio.sleep(0.025)
        assert job is not None and job.state == "running" and 0 < job.done < 30000, job
    finally:
        await stop_app(runner)
    assert done_at_close == [True]  # waited for, not left to run on after the database was closed

    engine = create_engine(database.url)
    try:
        stopped = await ConsoleStore(engine).job(job_id)
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(devices))).scalar_one()
    finally:
        await engine.dispose()
    assert stopped is not None and stopped.state == "failed" and stopped.summary == {"detail": STOPPED}
    assert stored == 0
