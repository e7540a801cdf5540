"""The operator's pages: network servers and roaming, accounts, console users and API keys."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from jsd.ownership import AccountKind
from jsd.ownership.model import SCOPES, InvalidRequest, NoSuchResource, OwnershipError
from jsd.ownership.parse import parse_net_id
from jsd.ui.site import Form, console, posted, principal, redirect, render, signed_in


def _admin_context(request: web.Request) -> Any:
    c, p = console(request), principal(request)
    if not p.is_operator:
        raise NoSuchResource("page not found")
    return c, p


@signed_in
async def network_servers(request: web.Request) -> web.StreamResponse:
    return await _ns_page(request)


async def _ns_page(
    request: web.Request, form: Form | None = None, status: int = 200, **extra: Any
) -> web.StreamResponse:
    c, p = _admin_context(request)
    servers = await c.service.networks.list_network_servers(p)
    roaming = await c.service.networks.list_roaming(p)
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
        view, token = await c.service.networks.add_network_server(p, fields)
    except OwnershipError as exc:
        return await _ns_page(request, form, form.refusal(exc, "net_id"))
    return render(request, "ns_added.html", ns=view, token=token, kek=kek_hex.upper() if kek_hex else None)


@signed_in
async def roaming(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        home = parse_net_id(form.get("home"), "home")
        visited = parse_net_id(form.get("visited"), "visited")
        if form.get("action") == "remove":
            await c.service.networks.remove_roaming(p, home, visited)
            return redirect(request, "/ui/admin/network-servers", "Roaming agreement removed.")
        await c.service.networks.add_roaming(p, home, visited)
    except OwnershipError as exc:
        return await _ns_page(request, form, form.refusal(exc, "home", ("conflict", "not-found")))
    return redirect(request, "/ui/admin/network-servers", "Roaming agreement added.")


@signed_in
async def accounts(request: web.Request) -> web.StreamResponse:
    return await _accounts_page(request)


async def _accounts_page(request: web.Request, form: Form | None = None, status: int = 200) -> web.StreamResponse:
    c, p = _admin_context(request)
    found = await c.service.accounts.list_accounts(p)
    users = await c.auth.list_users(p, None)
    return render(request, "accounts.html", status=status, accounts=found, users=users, form=form or Form(),
                  kinds=[k.value for k in AccountKind])  # fmt: skip


@signed_in
async def create_account(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    form = await posted(request)
    try:
        view, key = await c.service.accounts.create_account(p, form.get("id"), form.get("kind"), form.get("name") or None)
    except OwnershipError as exc:
        return await _accounts_page(request, form, form.refusal(exc, "id"))
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
    except NoSuchResource:
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
    view = await c.service.accounts.get_account(p, account_id)
    keys = await c.service.accounts.list_api_keys(p, account_id)
    return render(request, "keys.html", account=view, keys=keys, scopes=SCOPES, form=Form())


@signed_in
async def create_key(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    account_id = request.match_info["account"][:64]
    await posted(request)
    key = await c.service.accounts.create_api_key(p, account_id, None)
    return render(request, "key_created.html", account=account_id, key=key, headline="New API key")


@signed_in
async def revoke_key(request: web.Request) -> web.StreamResponse:
    c, p = _admin_context(request)
    account_id = request.match_info["account"][:64]
    form = await posted(request)
    try:
        await c.service.accounts.revoke_api_key(p, form.get("key_id"))
    except OwnershipError as exc:
        if exc.problem not in ("conflict", "not-found"):
            raise
        return redirect(request, f"/ui/admin/accounts/{account_id}/keys", exc.detail)
    return redirect(request, f"/ui/admin/accounts/{account_id}/keys", f"API key {form.get('key_id')} revoked.")
