"""A subscriber's devices: the list, one device's page (home network, ASTK, release) and its live joins."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from jsd.ownership import DEVICE_STATES, AccountKind
from jsd.ownership.model import DeviceView, EventView, InvalidRequest, OwnershipError, wire_time
from jsd.ownership.parse import parse_eui, parse_key, parse_net_id
from jsd.ui import labels
from jsd.ui.site import SESSION_COOKIE, Form, console, eui_from_path, posted, principal, redirect, render, signed_in

PAGE = 50
JOIN_TYPES = ("join.accepted", "join.rejected", "rejoin.accepted")
STREAM_POLL = 0.5
STREAM_HEARTBEAT = 15.0
STATE_LABELS = {
    "claimed": "Claimed",
    "unclaimed": "Not claimed",
    "no_net_id": "Claimed, no home network",
    "net_id_set": "Home network set",
}


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
        found = await c.service.devices.list_devices(p, PAGE + 1, after_eui, search=search or None, state=state)
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
    dev_eui = eui_from_path(request)
    device = await c.service.devices.get_device(p, dev_eui)
    joins = await c.service.journal.events(p, dev_eui=dev_eui, types=JOIN_TYPES, limit=20, newest_first=True)
    history = await c.service.journal.audit(p, dev_eui=dev_eui, limit=50, newest_first=True)
    can_write = "devices:write" in p.scopes and p.kind is not AccountKind.MANUFACTURER and device.owner is not None
    choices = await c.service.networks.network_server_choices(p) if can_write else []
    astks = await c.service.astks.list_astks(p) if can_write and "astk" in p.scopes else []
    last_seq = max((e.seq for e in joins), default=0)
    if last_seq == 0:
        newest = await c.service.journal.events(p, dev_eui=dev_eui, limit=1, newest_first=True)
        last_seq = newest[0].seq if newest else 0
    return render(request, "device.html", status=status, device=device, joins=[join_row(e) for e in joins],
                  last_seq=last_seq, history=history, choices=choices, astks=astks, can_write=can_write, form=form,
                  **extra)  # fmt: skip


@signed_in
async def set_net_id(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = eui_from_path(request)
    form = await posted(request)
    typed, picked = form.get("net_id_typed"), form.get("net_id")
    value = typed or picked
    try:
        net_id = None if form.get("clear") or not value else parse_net_id(value)
        if net_id is None and not form.get("clear"):
            form.error("net_id_typed", "Pick a network server or type a NetID (6 hex digits).")
            return await _device_page(request, form, 400)
        await c.service.devices.set_net_id(p, dev_eui, net_id)
    except InvalidRequest as exc:
        form.take(exc, {"net_id": "net_id_typed"})
        return await _device_page(request, form, 400)
    message = "Home network cleared." if net_id is None else f"Home NetID set to {net_id.hex().upper()}."
    return redirect(request, f"/ui/devices/{dev_eui.hex()}", message)


@signed_in
async def set_astk(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = eui_from_path(request)
    form = await posted(request)
    action = form.get("action", "pick")
    shown_key: str | None = None
    try:
        if action == "clear":
            await c.service.devices.set_astk(p, dev_eui, None)
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
            await c.service.astks.create_astk(p, name, key)
            if key is None:
                shown_key = (await c.service.astks.export_astk(p, name)).hex().upper()
        await c.service.devices.set_astk(p, dev_eui, name)
    except InvalidRequest as exc:
        form.take(exc, {"name": "new_name", "astk": "astk"})
        return await _device_page(request, form, 400)
    except OwnershipError as exc:
        return await _device_page(request, form, form.refusal(exc, "new_name" if action != "pick" else "astk"))
    if shown_key is not None:
        return render(request, "astk_key.html", device_eui=dev_eui.hex(), name=name, key=shown_key)
    return redirect(request, f"/ui/devices/{dev_eui.hex()}", f"ASTK {name} set.")


@signed_in
async def release(request: web.Request) -> web.StreamResponse:
    c, p = console(request), principal(request)
    dev_eui = eui_from_path(request)
    form = await posted(request)
    if form.get("confirm") != "yes":
        form.error("confirm", "Tick the box to confirm you give this device up.")
        return await _device_page(request, form, 400)
    device, token = await c.service.claims.release(p, dev_eui)
    text = labels.qr_text(device.join_eui, device.dev_eui, device.profile_id, token, device.serial)
    return render(request, "released.html", device=device, token=token, qr=text, svg=labels.label_svg(text))


@signed_in
async def join_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the device's joins as they are written (polled by seq, so any worker's joins show)."""
    c = console(request)
    p = principal(request)
    dev_eui = eui_from_path(request)
    await c.service.devices.get_device(p, dev_eui)  # 404 for devices the caller does not see
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
            found = await c.service.journal.events(p, after=after, dev_eui=dev_eui, limit=50)
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
