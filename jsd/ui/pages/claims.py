"""Claiming a device with its owner token, the text of its label's QR code, or a photo of the label."""

from __future__ import annotations

import asyncio

from aiohttp import web

from jsd.ownership.model import InvalidRequest, OwnershipError, RateLimited
from jsd.ownership.parse import parse_eui
from jsd.ui import labels
from jsd.ui.site import console, form_page, in_minutes, posted, principal, redirect, render, signed_in

claim_page = form_page("claim.html")


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
            view = await c.service.claims.claim_qr(p, texts[0])
        elif how == "qr":
            if not form.get("qr"):
                form.error("qr", "Paste the text of the label's QR code.")
                return render(request, "claim.html", status=400, form=form)
            view = await c.service.claims.claim_qr(p, form.get("qr"))
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
            view = await c.service.claims.claim(p, dev_eui, form.get("owner_token").replace(" ", ""))
    except InvalidRequest as exc:
        form.take(exc, {"qr": "photo" if how == "photo" else "qr"})
        return render(request, "claim.html", status=400, form=form)
    except RateLimited as exc:
        wait = exc.retry_after or 60
        form.error(_claim_field(how), f"Too many failed claims. Try again in {in_minutes(wait)}.")
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
