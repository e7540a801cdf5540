"""Signing in and out, the start page, and the operator's branding (logo, accent colour)."""

from __future__ import annotations

import hmac

from aiohttp import web

from jsd.ownership import AccountKind
from jsd.ownership.model import RateLimited
from jsd.ui.auth import SignInFailed
from jsd.ui.site import (
    PRE_COOKIE,
    SESSION_COOKIE,
    Form,
    address,
    console,
    in_minutes,
    posted,
    principal,
    read_form,
    redirect,
    render,
    sentence,
    session_of,
    set_cookie,
    signed_in,
)


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
        form.error("_form", f"Too many failed sign-ins. Try again in {in_minutes(wait)}.")
        limited = render(request, "sign_in.html", status=429, form=form, mode=mode)
        limited.headers["Retry-After"] = str(wait)
        return limited
    except SignInFailed as exc:
        form.error("_form", sentence(exc.detail))
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
