"""The console's pages, one module a page group, and the table of their routes.

``signin`` (start page, sign-in/out, branding), ``devices`` (a subscriber's devices), ``claims``, ``uploads``
(a device maker's files), ``admin`` (operators). Each handler reads its form, calls one ownership-service
method as the signed-in principal, and renders the answer; refusals become messages next to the fields and
change nothing (the service is all or nothing).
"""

from __future__ import annotations

from aiohttp import web

from jsd.ui.pages import admin, claims, devices, signin, uploads


def add_routes(ui: web.Application) -> None:
    """Every page of the console on the ``/ui`` sub-application."""
    r = ui.router
    r.add_get("/", signin.index)
    r.add_get("/sign-in", signin.sign_in_page)
    r.add_post("/sign-in", signin.sign_in)
    r.add_post("/sign-out", signin.sign_out)
    r.add_get("/devices", devices.devices)
    r.add_get("/devices/{dev_eui}", devices.device_page)
    r.add_post("/devices/{dev_eui}/net-id", devices.set_net_id)
    r.add_post("/devices/{dev_eui}/astk", devices.set_astk)
    r.add_post("/devices/{dev_eui}/release", devices.release)
    r.add_get("/devices/{dev_eui}/joins/stream", devices.join_stream)
    r.add_get("/claim", claims.claim_page)
    r.add_post("/claim", claims.claim)
    r.add_get("/uploads/new", uploads.upload_page)
    r.add_post("/uploads", uploads.upload)
    r.add_get("/uploads/{job_id}", uploads.upload_status)
    r.add_get("/uploads/{job_id}/progress", uploads.upload_progress)
    r.add_post("/uploads/{job_id}/tokens", uploads.upload_tokens)
    r.add_get("/uploads/{job_id}/labels.zip", uploads.upload_labels_zip)
    r.add_get("/uploads/{job_id}/sheet", uploads.upload_sheet)
    r.add_get("/admin/network-servers", admin.network_servers)
    r.add_post("/admin/network-servers", admin.add_network_server)
    r.add_post("/admin/roaming", admin.roaming)
    r.add_get("/admin/accounts", admin.accounts)
    r.add_post("/admin/accounts", admin.create_account)
    r.add_post("/admin/users", admin.create_user)
    r.add_post("/admin/users/delete", admin.delete_user)
    r.add_get("/admin/accounts/{account}/keys", admin.account_keys)
    r.add_post("/admin/accounts/{account}/keys", admin.create_key)
    r.add_post("/admin/accounts/{account}/keys/revoke", admin.revoke_key)
    r.add_get("/branding/logo", signin.logo)
    r.add_get("/branding.css", signin.branding_css)


__all__ = ["add_routes"]
