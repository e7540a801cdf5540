"""A device maker's uploads: the file, the job's progress, and the owner tokens, labels and label sheet it made."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from datetime import datetime
from typing import Any

from aiohttp import web

from jsd.ownership import AccountKind
from jsd.ownership.model import NoSuchResource
from jsd.ui import labels
from jsd.ui.site import console, form_page, posted, principal, redirect, render, session_of, set_cookie, signed_in
from jsd.ui.uploads import MAX_UPLOAD_BYTES, decrypt, start_upload

JOB_COOKIE = "jsd_job"


upload_page = form_page("upload.html")


@signed_in
async def upload(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    form = await posted(request, MAX_UPLOAD_BYTES)
    file = form.files.get("file")
    if file is None:
        form.error("file", "Choose a CSV or JSON Lines file of devices.")
        return render(request, "upload.html", status=400, form=form)
    if p.kind not in (AccountKind.MANUFACTURER, AccountKind.OPERATOR):
        form.error("file", "Only device makers and operators upload devices.")
        return render(request, "upload.html", status=403, form=form)
    session = session_of(request)
    assert session is not None
    job_id, key, task = await start_upload(c.store, c.service, p, session.id_hash, file[0], file[1])
    c.tasks.add(task)
    task.add_done_callback(c.tasks.discard)
    response = redirect(request, f"/ui/uploads/{job_id}")
    set_cookie(request, response, f"{JOB_COOKIE}_{job_id}", base64.urlsafe_b64encode(key).decode(),
               path=f"/ui/uploads/{job_id}", max_age=24 * 3600)  # fmt: skip
    return response


async def _job(request: web.Request) -> Any:
    c = console(request)
    session = session_of(request)
    job = await c.store.job(request.match_info["job_id"][:32])
    if job is None or session is None or job.account != session.account:
        raise NoSuchResource("upload not found")
    return job


def _progress(job: Any) -> dict[str, Any]:
    elapsed = max(0.001, (datetime.now(job.started_at.tzinfo) - job.started_at).total_seconds())
    end = job.finished_at
    if end is not None:
        elapsed = max(0.001, (end - job.started_at).total_seconds())
    rate = job.done / elapsed
    left = (job.total - job.done) / rate if rate > 0 and job.state == "running" else None
    return {
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "percent": 100 if job.state != "running" else (int(100 * job.done / job.total) if job.total else 0),
        "rate": round(rate, 1),
        "seconds_left": None if left is None else round(left),
    }


@signed_in
async def upload_status(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    key_cookie = request.cookies.get(f"{JOB_COOKIE}_{job.id}")
    return render(request, "upload_status.html", job=job, progress=_progress(job), have_key=bool(key_cookie))


@signed_in
async def upload_progress(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    return web.json_response(_progress(job), headers={"Cache-Control": "no-store"})


async def _answer(request: web.Request, job: Any, take: bool) -> list[dict[str, Any]]:
    c = console(request)
    raw_key = request.cookies.get(f"{JOB_COOKIE}_{job.id}", "")
    try:
        key = base64.urlsafe_b64decode(raw_key.encode())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        raise web.HTTPGone(text="The result of this upload can only be read from the browser that uploaded it.")
    if take:
        sealed = await c.store.take_result(job.id)
    else:
        sealed = await c.store.peek_result(job.id)
    if sealed is None:
        raise web.HTTPGone(text="The tokens of this upload were downloaded already and are deleted.")
    try:
        plain = decrypt(key, sealed, job.id)
    except Exception:  # noqa: BLE001 - a wrong key or a damaged record: the same answer
        raise web.HTTPGone(
            text="The result of this upload can only be read from the browser that uploaded it."
        ) from None
    return [json.loads(line) for line in plain.decode().splitlines() if line.strip()]


def _labels(lines: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for entry in lines:
        token = entry.get("owner_token")
        if not token:
            continue
        text = labels.qr_text(
            bytes.fromhex(entry["join_eui"]), bytes.fromhex(entry["dev_eui"]), bytes.fromhex(entry["profile_id"]),
            token, None,
        )  # fmt: skip
        out.append({"dev_eui": entry["dev_eui"].upper(), "name": entry.get("name") or "", "qr": text})
    return out


def _attachment(body: bytes, content_type: str, filename: str) -> web.Response:
    return web.Response(body=body, content_type=content_type,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip


async def _job_labels(request: web.Request) -> tuple[Any, list[dict[str, str]]]:
    """The job and the labels of its devices (the result stays stored: labels can be fetched again)."""
    job = await _job(request)
    return job, _labels(await _answer(request, job, take=False))


@signed_in
async def upload_tokens(request: web.Request) -> web.StreamResponse:
    """The import answer (JSON Lines, the shape of the REST answer that ``jsd labels`` reads), once."""
    job = await _job(request)
    await posted(request)
    lines = await _answer(request, job, take=True)
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return _attachment(body.encode(), "application/x-ndjson", f"tokens-{job.id[:8]}.jsonl")


@signed_in
async def upload_labels_zip(request: web.Request) -> web.StreamResponse:
    job, found = await _job_labels(request)
    data = await asyncio.to_thread(labels.labels_zip, [(item["dev_eui"], item["qr"]) for item in found])
    return _attachment(data, "application/zip", f"labels-{job.id[:8]}.zip")


@signed_in
async def upload_sheet(request: web.Request) -> web.StreamResponse:
    job, found = await _job_labels(request)
    for item in found[:2000]:
        item["svg"] = labels.label_svg(item["qr"])
    return render(request, "sheet.html", labels=found[:2000], more=max(0, len(found) - 2000), job=job)
