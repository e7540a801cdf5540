"""The console's pages: sign-in, devices and claims (subscribers), uploads (makers), administration (operators).

Each handler reads its form, calls one ownership-service method as the signed-in principal, and renders the
answer; refusals become messages next to the fields and change nothing (the service is all or nothing).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from jsd.ownership import DEVICE_STATES, AccountKind
from jsd.ownership.model import (
    SCOPES,
    DeviceView,
    EventView,
    FieldError,
    InvalidRequest,
    NotFound,
    OwnershipError,
    RateLimited,
    wire_time,
)
from jsd.ownership.parse import parse_eui, parse_key, parse_net_id
from jsd.ui import labels
from jsd.ui.auth import ConsoleAuth, SignInFailed, session_hash
from jsd.ui.site import (
    PRE_COOKIE,
    SESSION_COOKIE,
    Form,
    address,
    check_csrf,
    console,
    principal,
    read_form,
    redirect,
    render,
    session_of,
    set_cookie,
    signed_in,
)
from jsd.ui.uploads import MAX_UPLOAD_BYTES, decrypt, start_upload

PAGE = 50
JOIN_TYPES = ("join.accepted", "join.rejected", "rejoin.accepted")
STREAM_POLL = 0.5
STREAM_HEARTBEAT = 15.0
JOB_COOKIE = "jsd_job"
STATE_LABELS = {
    "claimed": "Claimed",
    "unclaimed": "Not claimed",
    "no_net_id": "Claimed, no home network",
    "net_id_set": "Home network set",
}


def _minutes(seconds: int) -> str:
    """A wait in whole minutes, rounded up: "1 minute", "15 minutes"."""
    minutes = max(1, -(-seconds // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


async def posted(request: web.Request, max_file_bytes: int = 0) -> Form:
    form = await read_form(request, max_file_bytes)
    await check_csrf(request, form)
    return form


def _eui_from_path(request: web.Request) -> bytes:
    try:
        return parse_eui(request.match_info["dev_eui"])
    except InvalidRequest:
        raise NotFound(f"device {request.match_info['dev_eui'][:32]!r} not found") from None


def join_row(e: EventView) -> dict[str, Any]:
    """One line of a device's join history, for the page and for the live stream."""
    net_id = e.data.get("net_id")
    ok = e.type != "join.rejected"
    result = (
        "Accepted" if e.type == "join.accepted" else "Rejoin accepted" if ok else str(e.data.get("result", "Rejected"))
    )
    return {
        "seq": e.seq,
        "time": wire_time(e.time)[:19].replace("T", " "),
        "result": result,
        "ok": ok,
        "net_id": (net_id or "").upper() or "—",
    }


# -- sign-in ----------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    if session_of(request) is None:
        raise web.HTTPSeeOther("/ui/sign-in")
    p = principal(request)
    if p.kind is AccountKind.MANUFACTURER:
        raise web.HTTPSeeOther("/ui/uploads/new")
    raise web.HTTPSeeOther("/ui/devices")


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    if session_of(request) is not None:
        raise web.HTTPSeeOther("/ui/")
    return render(request, "sign_in.html", form=Form(), mode=request.query.get("with", "password"))


async def sign_in(request: web.Request) -> web.StreamResponse:
    c = console(request)
    form = await read_form(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(form.get("csrf").encode(), pre.encode()):
        raise web.HTTPForbidden(text="This form has expired or did not come from this site. Reload the page.")
    mode = "key" if form.get("api_key") else "password"
    try:
        if mode == "key":
            session_id, _ = await c.auth.sign_in_with_key(form.get("api_key"), address(request))
        else:
            if not form.get("username"):
                form.error("username", "Enter your user name.")
            if not form.values.get("password"):
                form.error("password", "Enter your password.")
            if form.errors:
                return render(request, "sign_in.html", status=400, form=form, mode=mode)
            session_id, _ = await c.auth.sign_in(
                form.get("username"), form.values.get("password", ""), address(request)
            )
    except RateLimited as exc:
        wait = exc.retry_after or 60
        form.error("_form", f"Too many failed sign-ins. Try again in {_minutes(wait)}.")
        limited = render(request, "sign_in.html", status=429, form=form, mode=mode)
        limited.headers["Retry-After"] = str(wait)
        return limited
    except SignInFailed as exc:
        form.error("_form", exc.detail[:1].upper() + exc.detail[1:] + ".")
        return render(request, "sign_in.html", status=401, form=form, mode=mode)
    response = redirect(request, "/ui/")
    set_cookie(request, response, SESSION_COOKIE, session_id, max_age=c.session_lifetime)
    response.del_cookie(PRE_COOKIE, path="/ui/")
    return response


@signed_in
async def sign_out(request: web.Request) -> web.StreamResponse:
    await posted(request)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    await console(request).auth.sign_out(session_id)
    response = redirect(request, "/ui/sign-in", "You are signed out.")
    response.del_cookie(SESSION_COOKIE, path="/ui/")
    return response


# -- devices ----------------------------------------------------------------------------------------


@signed_in
async def devices(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    search = request.query.get("q", "").strip()[:64]
    state = request.query.get("state", "") or None
    after = request.query.get("after", "")
    errors: dict[str, str] = {}
    after_eui = None
    if after:
        try:
            after_eui = parse_eui(after, "after")
        except InvalidRequest:
            after_eui = None
    if state not in (None, *DEVICE_STATES):
        errors["state"] = "Pick a state from the list."
        state = None
    found: list[DeviceView] = []
    try:
        found = await c.service.list_devices(p, PAGE + 1, after_eui, search=search or None, state=state)
    except InvalidRequest as exc:
        errors.update({e.field or "q": e.reason for e in exc.errors})
    more = len(found) > PAGE
    found = found[:PAGE]
    return render(
        request,
        "devices.html",
        devices=found,
        search=search,
        state=state or "",
        states=STATE_LABELS,
        errors=errors,
        next_after=found[-1].dev_eui.hex() if more and found else None,
        first_page=after_eui is None,
    )


@signed_in
async def device_page(request: web.Request) -> web.StreamResponse:
    return await _device_page(request, Form())


async def _device_page(request: web.Request, form: Form, status: int = 200, **extra: Any) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = _eui_from_path(request)
    device = await c.service.get_device(p, dev_eui)
    joins = await c.service.events(p, dev_eui=dev_eui, types=JOIN_TYPES, limit=20, newest_first=True)
    history = await c.service.audit(p, dev_eui=dev_eui, limit=50, newest_first=True)
    can_write = "devices:write" in p.scopes and p.kind is not AccountKind.MANUFACTURER and device.owner is not None
    choices = await c.service.network_server_choices(p) if can_write else []
    astks = await c.service.list_astks(p) if can_write and "astk" in p.scopes else []
    last_seq = max((e.seq for e in joins), default=0)
    if last_seq == 0:
        newest = await c.service.events(p, dev_eui=dev_eui, limit=1, newest_first=True)
        last_seq = newest[0].seq if newest else 0
    return render(
        request,
        "device.html",
        status=status,
        device=device,
        joins=[join_row(e) for e in joins],
        last_seq=last_seq,
        history=history,
        choices=choices,
        astks=astks,
        can_write=can_write,
        form=form,
        **extra,
    )


@signed_in
async def set_net_id(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = _eui_from_path(request)
    form = await posted(request)
    typed, picked = form.get("net_id_typed"), form.get("net_id")
    value = typed or picked
    try:
        net_id = None if form.get("clear") or not value else parse_net_id(value)
        if net_id is None and not form.get("clear"):
            form.error("net_id_typed", "Pick a network server or type a NetID (6 hex digits).")
            return await _device_page(request, form, 400)
        await c.service.set_net_id(p, dev_eui, net_id)
    except InvalidRequest as exc:
        form.take(exc, {"net_id": "net_id_typed"})
        return await _device_page(request, form, 400)
    message = "Home network cleared." if net_id is None else f"Home NetID set to {net_id.hex().upper()}."
    return redirect(request, f"/ui/devices/{dev_eui.hex()}", message)


@signed_in
async def set_astk(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = _eui_from_path(request)
    form = await posted(request)
    action = form.get("action", "pick")
    shown_key: str | None = None
    try:
        if action == "clear":
            await c.service.set_astk(p, dev_eui, None)
            return redirect(request, f"/ui/devices/{dev_eui.hex()}", "ASTK removed from the device.")
        if action == "pick":
            name = form.get("astk")
            if not name:
                form.error("astk", "Pick an ASTK.")
                return await _device_page(request, form, 400)
        else:
            name = form.get("new_name")
            given = form.get("new_key")
            key = None
            if action == "import":
                try:
                    key = parse_key(given, "new_key")
                except InvalidRequest as exc:
                    form.take(exc)
                    return await _device_page(request, form, 400)
            await c.service.create_astk(p, name, key)
            if key is None:
                shown_key = (await c.service.export_astk(p, name)).hex().upper()
        await c.service.set_astk(p, dev_eui, name)
    except InvalidRequest as exc:
        form.take(exc, {"name": "new_name", "astk": "astk"})
        return await _device_page(request, form, 400)
    except OwnershipError as exc:
        if exc.problem != "conflict":
            raise
        form.error("new_name" if action != "pick" else "astk", exc.detail[:1].upper() + exc.detail[1:] + ".")
        return await _device_page(request, form, 409)
    if shown_key is not None:
        return render(request, "astk_key.html", device_eui=dev_eui.hex(), name=name, key=shown_key)
    return redirect(request, f"/ui/devices/{dev_eui.hex()}", f"ASTK {name} set.")


@signed_in
async def release(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = _eui_from_path(request)
    form = await posted(request)
    if form.get("confirm") != "yes":
        form.error("confirm", "Tick the box to confirm you give this device up.")
        return await _device_page(request, form, 400)
    device, token = await c.service.release(p, dev_eui)
    text = labels.qr_text(device.join_eui, device.dev_eui, device.profile_id, token, device.serial)
    return render(request, "released.html", device=device, token=token, qr=text, svg=labels.label_svg(text))


@signed_in
async def join_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the device's joins as they are written (polled by seq, so any worker's joins show)."""
    c = console(request)
    p = principal(request)
    dev_eui = _eui_from_path(request)
    await c.service.get_device(p, dev_eui)  # 404 for devices the caller does not see
    try:
        after = int(request.headers.get("Last-Event-ID") or request.query.get("after", "0"))
    except ValueError:
        after = 0
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    quiet_since = time.monotonic()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            if await c.auth.session(session_id) is None:
                await response.write(b"event: end\ndata: signed out\n\n")
                break
            found = await c.service.events(p, after=after, dev_eui=dev_eui, limit=50)
            for e in found:
                after = e.seq
                if e.type in JOIN_TYPES:
                    payload = json.dumps(join_row(e))
                    await response.write(f"id: {e.seq}\nevent: join\ndata: {payload}\n\n".encode())
                    quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > STREAM_HEARTBEAT:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            await asyncio.sleep(STREAM_POLL)
    except ConnectionError:
        pass  # the page was closed
    return response


# -- claims -----------------------------------------------------------------------------------------


@signed_in
async def claim_page(request: web.Request) -> web.StreamResponse:
    return render(request, "claim.html", form=Form())


@signed_in
async def claim(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    form = await posted(request, labels.MAX_PHOTO_BYTES)
    how = form.get("how", "token")
    try:
        if how == "photo":
            upload = form.files.get("photo")
            if upload is None:
                form.error("photo", "Choose or take a photo of the device's label.")
                return render(request, "claim.html", status=400, form=form)
            texts = await asyncio.to_thread(labels.decode_photo, upload[1])
            if not texts:
                form.error("photo", "No QR code could be read in this photo. Take it closer, sharp and well lit.")
                return render(request, "claim.html", status=400, form=form)
            form.values["qr"] = texts[0]
            view = await c.service.claim_qr(p, texts[0])
        elif how == "qr":
            if not form.get("qr"):
                form.error("qr", "Paste the text of the label's QR code.")
                return render(request, "claim.html", status=400, form=form)
            view = await c.service.claim_qr(p, form.get("qr"))
        else:
            if not form.get("dev_eui"):
                form.error("dev_eui", "Enter the DevEUI printed on the label (16 hex digits).")
            if not form.get("owner_token"):
                form.error("owner_token", "Enter the owner token printed on the label.")
            if form.errors:
                return render(request, "claim.html", status=400, form=form)
            try:
                dev_eui = parse_eui(form.get("dev_eui").replace(" ", "").replace("-", "").replace(":", ""))
            except InvalidRequest as exc:
                form.take(exc)
                return render(request, "claim.html", status=400, form=form)
            view = await c.service.claim(p, dev_eui, form.get("owner_token").replace(" ", ""))
    except InvalidRequest as exc:
        form.take(exc, {"qr": "photo" if how == "photo" else "qr"})
        return render(request, "claim.html", status=400, form=form)
    except RateLimited as exc:
        wait = exc.retry_after or 60
        form.error(_claim_field(how), f"Too many failed claims. Try again in {_minutes(wait)}.")
        limited = render(request, "claim.html", status=429, form=form)
        limited.headers["Retry-After"] = str(wait)
        return limited
    except OwnershipError as exc:
        if exc.problem != "claim-failed":
            raise
        form.error(_claim_field(how), "This device cannot be claimed with this owner token: check both and try again.")
        return render(request, "claim.html", status=403, form=form)
    return redirect(request, f"/ui/devices/{view.dev_eui.hex()}", f"Device {view.dev_eui.hex().upper()} is yours now.")


def _claim_field(how: str) -> str:
    return {"photo": "photo", "qr": "qr"}.get(how, "owner_token")


# -- device maker: uploads --------------------------------------------------------------------------


@signed_in
async def upload_page(request: web.Request) -> web.StreamResponse:
    return render(request, "upload.html", form=Form())


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
        raise NotFound("upload not found")
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


@signed_in
async def upload_tokens(request: web.Request) -> web.StreamResponse:
    """The import answer (JSON Lines, the shape of the REST answer that ``jsd labels`` reads), once."""
    job = await _job(request)
    await posted(request)
    lines = await _answer(request, job, take=True)
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return web.Response(
        body=body.encode(),
        content_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="tokens-{job.id[:8]}.jsonl"'},
    )


@signed_in
async def upload_labels_zip(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    found = _labels(await _answer(request, job, take=False))
    data = await asyncio.to_thread(labels.labels_zip, [(item["dev_eui"], item["qr"]) for item in found])
    return web.Response(
        body=data,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="labels-{job.id[:8]}.zip"'},
    )


@signed_in
async def upload_sheet(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    found = _labels(await _answer(request, job, take=False))
    for item in found[:2000]:
        item["svg"] = labels.label_svg(item["qr"])
    return render(request, "sheet.html", labels=found[:2000], more=max(0, len(found) - 2000), job=job)


# -- operator ---------------------------------------------------------------------------------------


def _admin_context(request: web.Request) -> Any:
    c, p = console(request), principal(request)
    if not p.is_operator:
        raise NotFound("page not found")
    return c, p


@signed_in
async def network_servers(request: web.Request) -> web.StreamResponse:
    return await _ns_page(request)


async def _ns_page(
    request: web.Request, form: Form | None = None, status: int = 200, **extra: Any
) -> web.StreamResponse:
    c, p = _admin_context(request)
    servers = await c.service.list_network_servers(p)
    roaming = await c.service.list_roaming(p)
    return render(request, "network_servers.html", status=status, servers=servers, roaming=roaming,
                  form=form or Form(), **extra)  # fmt: skip


@signed_in
async def add_network_server(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    fields: dict[str, Any] = {
        "net_id": form.get("net_id"),
        "name": form.get("name") or None,
        "kek_label": form.get("kek_label") or f"ns-{form.get('net_id').lower()}",
        "generate_token": True,
    }
    kek_hex = None
    if form.get("kek"):
        fields["kek"] = form.get("kek")
    else:
        kek_hex = secrets.token_bytes(16).hex()
        fields["kek"] = kek_hex
    if form.get("answer_url"):
        fields["answer_url"] = form.get("answer_url")
    try:
        view, token = await c.service.add_network_server(p, fields)
    except InvalidRequest as exc:
        form.take(exc)
        return await _ns_page(request, form, 400)
    except OwnershipError as exc:
        if exc.problem != "conflict":
            raise
        form.error("net_id", exc.detail[:1].upper() + exc.detail[1:] + ".")
        return await _ns_page(request, form, 409)
    return render(request, "ns_added.html", ns=view, token=token, kek=kek_hex.upper() if kek_hex else None)


@signed_in
async def roaming(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        home = parse_net_id(form.get("home"), "home")
        visited = parse_net_id(form.get("visited"), "visited")
        if form.get("action") == "remove":
            await c.service.remove_roaming(p, home, visited)
            return redirect(request, "/ui/admin/network-servers", "Roaming agreement removed.")
        await c.service.add_roaming(p, home, visited)
    except InvalidRequest as exc:
        form.take(exc)
        return await _ns_page(request, form, 400)
    except OwnershipError as exc:
        if exc.problem not in ("conflict", "not-found"):
            raise
        form.error("home", exc.detail[:1].upper() + exc.detail[1:] + ".")
        return await _ns_page(request, form, 409)
    return redirect(request, "/ui/admin/network-servers", "Roaming agreement added.")


@signed_in
async def accounts(request: web.Request) -> web.StreamResponse:
    return await _accounts_page(request)


async def _accounts_page(request: web.Request, form: Form | None = None, status: int = 200) -> web.StreamResponse:
    c, p = _admin_context(request)
    found = await c.service.list_accounts(p)
    users = await c.auth.list_users(p, None)
    return render(request, "accounts.html", status=status, accounts=found, users=users, form=form or Form(),
                  kinds=[k.value for k in AccountKind])  # fmt: skip


@signed_in
async def create_account(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        view, key = await c.service.create_account(p, form.get("id"), form.get("kind"), form.get("name") or None)
    except InvalidRequest as exc:
        form.take(exc)
        return await _accounts_page(request, form, 400)
    except OwnershipError as exc:
        if exc.problem != "conflict":
            raise
        form.error("id", exc.detail[:1].upper() + exc.detail[1:] + ".")
        return await _accounts_page(request, form, 409)
    return render(request, "key_created.html", account=view.id, key=key, headline=f"Account {view.id} created")


@signed_in
async def create_user(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        await c.auth.create_user(p, form.get("account"), form.get("username").lower(), form.values.get("password", ""))
    except InvalidRequest as exc:
        form.take(exc)
        return await _accounts_page(request, form, 400)
    except NotFound:
        form.error("account", "No such account.")
        return await _accounts_page(request, form, 400)
    return redirect(request, "/ui/admin/accounts", f"User {form.get('username').lower()} created.")


@signed_in
async def delete_user(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        await c.auth.delete_user(p, form.get("username"))
    except InvalidRequest as exc:
        form.take(exc)
        return await _accounts_page(request, form, 400)
    return redirect(request, "/ui/admin/accounts", f"User {form.get('username')} deleted.")


@signed_in
async def account_keys(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    account_id = request.match_info["account"][:64]
    view = await c.service.get_account(p, account_id)
    keys = await c.service.list_api_keys(p, account_id)
    return render(request, "keys.html", account=view, keys=keys, scopes=SCOPES, form=Form())


@signed_in
async def create_key(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    account_id = request.match_info["account"][:64]
    await posted(request)
    key = await c.service.create_api_key(p, account_id, None)
    return render(request, "key_created.html", account=account_id, key=key, headline="New API key")


@signed_in
async def revoke_key(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    account_id = request.match_info["account"][:64]
    form = await posted(request)
    try:
        await c.service.revoke_api_key(p, form.get("key_id"))
    except OwnershipError as exc:
        if exc.problem not in ("conflict", "not-found"):
            raise
        return redirect(request, f"/ui/admin/accounts/{account_id}/keys", exc.detail)
    return redirect(request, f"/ui/admin/accounts/{account_id}/keys", f"API key {form.get('key_id')} revoked.")


async def logo(request: web.Request) -> web.StreamResponse:
    path = console(request).brand.logo_file
    if not path:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


async def branding_css(request: web.Request) -> web.StreamResponse:
    """The accent colour as a stylesheet (the CSP allows no inline styles)."""
    colour = console(request).brand.accent_color
    return web.Response(text=f":root {{ --accent: {colour}; }}\n", content_type="text/css",
                        headers={"Cache-Control": "max-age=300"})  # fmt: skip


def add_routes(ui: web.Application) -> None:
    r = ui.router
    r.add_get("/", index)
    r.add_get("/sign-in", sign_in_page)
    r.add_post("/sign-in", sign_in)
    r.add_post("/sign-out", sign_out)
    r.add_get("/devices", devices)
    r.add_get("/devices/{dev_eui}", device_page)
    r.add_post("/devices/{dev_eui}/net-id", set_net_id)
    r.add_post("/devices/{dev_eui}/astk", set_astk)
    r.add_post("/devices/{dev_eui}/release", release)
    r.add_get("/devices/{dev_eui}/joins/stream", join_stream)
    r.add_get("/claim", claim_page)
    r.add_post("/claim", claim)
    r.add_get("/uploads/new", upload_page)
    r.add_post("/uploads", upload)
    r.add_get("/uploads/{job_id}", upload_status)
    r.add_get("/uploads/{job_id}/progress", upload_progress)
    r.add_post("/uploads/{job_id}/tokens", upload_tokens)
    r.add_get("/uploads/{job_id}/labels.zip", upload_labels_zip)
    r.add_get("/uploads/{job_id}/sheet", upload_sheet)
    r.add_get("/admin/network-servers", network_servers)
    r.add_post("/admin/network-servers", add_network_server)
    r.add_post("/admin/roaming", roaming)
    r.add_get("/admin/accounts", accounts)
    r.add_post("/admin/accounts", create_account)
    r.add_post("/admin/users", create_user)
    r.add_post("/admin/users/delete", delete_user)
    r.add_get("/admin/accounts/{account}/keys", account_keys)
    r.add_post("/admin/accounts/{account}/keys", create_key)
    r.add_post("/admin/accounts/{account}/keys/revoke", revoke_key)
    r.add_get("/branding/logo", logo)
    r.add_get("/branding.css", branding_css)


__all__ = ["ConsoleAuth", "FieldError", "add_routes", "session_hash"]
