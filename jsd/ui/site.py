"""The console's plumbing: templates, the session and CSRF middleware, forms, cookies and security headers.

Every state-changing request must come from our own pages: the browser's Sec-Fetch-Site / Origin headers
must say same-origin, and the form must carry the session's synchronizer token. Pages are never cached
(they show accounts' data, sometimes a secret shown once).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from jsd.bodies import BODY_TIMEOUT, answer_and_close
from jsd.ownership import Ownership, Principal
from jsd.ownership.model import FieldError, InvalidRequest, NoSuchResource, OwnershipError
from jsd.ownership.parse import parse_eui
from jsd.registry.console import ConsoleStore, SessionRecord
from jsd.ui.auth import ConsoleAuth

__all__ = ["Brand", "Console", "Form", "console_middleware", "render", "signed_in"]

SESSION_COOKIE = "jsd_session"
PRE_COOKIE = "jsd_pre"  # double-submit token of the sign-in form (no session yet)
FLASH_COOKIE = "jsd_flash"
MAX_FORM_BYTES = 64 * 1024
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Brand:
    """What the operator sets in ``[console]``: product name, logo file, accent colour."""

    product_name: str = "jsd console"
    accent_color: str = "#0b63ce"
    logo_file: str = ""


@dataclass
class Console:
    """Everything the console's handlers use, kept on the application."""

    service: Ownership
    auth: ConsoleAuth
    store: ConsoleStore
    brand: Brand
    secure_cookies: bool
    templates: jinja2.Environment
    session_lifetime: int
    tasks: set[Any] = field(default_factory=set)


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("jsd_session", SessionRecord)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def console(request: web.Request) -> Console:
    return request.config_dict[CONSOLE]


def address(request: web.Request) -> str:
    return request.remote or "unknown"


def session_of(request: web.Request) -> SessionRecord | None:
    return request.get(SESSION)


def principal(request: web.Request) -> Principal:
    session = session_of(request)
    if session is None:
        raise web.HTTPFound("/ui/sign-in")
    return ConsoleAuth.principal(session, address(request))


@dataclass
class Form:
    """Fields of a submitted form (text), uploaded files (bytes), and the errors shown next to fields."""

    values: MultiDict[str] = field(default_factory=MultiDict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default).strip()

    def error(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, reason)

    def take(self, exc: OwnershipError, fields: Mapping[str, str] | None = None, default: str = "_form") -> None:
        """Put a refusal's field errors next to the form's fields (`fields` maps service names to form names)."""
        mapping = fields or {}
        if not exc.errors:
            self.error(default, exc.detail)
        for e in exc.errors:
            self.error(mapping.get(e.field or "", e.field or default) if e.field else default, _reason(e))

    def refusal(self, exc: OwnershipError, name: str, problems: tuple[str, ...] = ("conflict",)) -> int:
        """Show a refusal and return the page's status: an invalid request's field errors (400), or a refusal of
        one of `problems` next to field `name` as a sentence (409); any other kind is raised."""
        if isinstance(exc, InvalidRequest):
            self.take(exc)
            return 400
        if exc.problem not in problems:
            raise exc
        self.error(name, sentence(exc.detail))
        return 409


def _reason(e: FieldError) -> str:
    return e.reason[:1].upper() + e.reason[1:] + ("" if e.reason.endswith(".") else ".")


def sentence(detail: str) -> str:
    """A refusal's detail as a sentence under a field: capital first letter, full stop."""
    return detail[:1].upper() + detail[1:] + "."


async def read_form(request: web.Request, max_file_bytes: int = 0) -> Form:
    """The form of a POST: URL-encoded, or multipart with files up to `max_file_bytes` each.

    A body that stalls for ``server.body_timeout`` (whole URL-encoded form, or between two multipart reads)
    gets 408 rather than holding the handler; a malformed one gets 400 rather than reaching aiohttp as a 500.
    """
    idle = request.config_dict[BODY_TIMEOUT]
    try:
        if request.content_type == "multipart/form-data":
            return await _read_multipart(request, max_file_bytes, idle)
        form = Form()
        async with asyncio.timeout(idle):
            posted = await request.post()
        for key, value in posted.items():
            if isinstance(value, str):
                form.values.add(key, value)
        return form
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="The form did not arrive in time. Try again.") from None
    except (ValueError, LookupError, HttpProcessingError):
        raise web.HTTPBadRequest(text="The form could not be read. Reload the page and try again.") from None


async def _read_multipart(request: web.Request, max_file_bytes: int, idle: float) -> Form:
    form = Form()
    async with asyncio.timeout(idle):
        reader = await request.multipart()
    while True:
        async with asyncio.timeout(idle):
            part = await reader.next()
        if part is None:
            return form
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        limit = max_file_bytes if part.filename is not None else MAX_FORM_BYTES
        data = bytearray()
        while True:
            async with asyncio.timeout(idle):
                chunk = await part.read_chunk(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        if part.filename is not None:
            if data:
                form.files[part.name] = (part.filename, bytes(data))
        else:
            form.values.add(part.name, bytes(data).decode("utf-8"))  # RFC 7578: no transfer encodings


def _same_origin(request: web.Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == request.host
    if origin == "null":
        return False
    referer = request.headers.get("Referer")
    if site is None and referer is not None:
        return urlsplit(referer).netloc == request.host
    return True


async def check_csrf(request: web.Request, form: Form) -> None:
    """The synchronizer token of the session (or the sign-in form's double-submit cookie) must match."""
    session = session_of(request)
    expected = session.csrf if session is not None else request.cookies.get(PRE_COOKIE, "")
    given = form.get("csrf")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise web.HTTPForbidden(
            text="This form has expired or did not come from this site. Reload the page and try again."
        )


async def posted(request: web.Request, max_file_bytes: int = 0) -> Form:
    """The form of a state-changing POST, after the CSRF check."""
    form = await read_form(request, max_file_bytes)
    await check_csrf(request, form)
    return form


def in_minutes(seconds: int) -> str:
    """A wait in whole minutes, rounded up: "1 minute", "15 minutes"."""
    minutes = max(1, -(-seconds // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def eui_from_path(request: web.Request) -> bytes:
    """The DevEUI of a ``/devices/{dev_eui}`` URL; a malformed one is a device not found."""
    try:
        return parse_eui(request.match_info["dev_eui"])
    except InvalidRequest:
        raise NoSuchResource(f"device {request.match_info['dev_eui'][:32]!r} not found") from None


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the session, refuse cross-site writes, render refusals as pages, and set security headers."""
    c = console(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await c.auth.session(session_id) if session_id else None
    if session is not None:
        request[SESSION] = session
    try:
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            raise web.HTTPForbidden(text="Cross-site requests are refused.")
        response = await handler(request)
    except NoSuchResource as exc:
        response = render(request, "error.html", status=404, title="Not found", detail=exc.detail)
    except OwnershipError as exc:
        response = render(request, "error.html", status=exc.status, title=exc.title, detail=exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status == 405:
            raise
        response = render(request, "error.html", status=exc.status, title=exc.reason, detail=exc.text or exc.reason)
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.status == 408:
            return await answer_and_close(request, response)  # the rest of the body may never come
    return response


def signed_in(handler: Handler) -> Handler:
    """Pages for signed-in people: others are sent to sign in; POSTs must carry the session's CSRF token."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if session_of(request) is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/ui/sign-in")
            raise web.HTTPForbidden(text="Your session has ended. Sign in again.")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def form_page(template: str) -> Handler:
    """A signed-in page that shows its form empty (the POST handler renders it again with errors)."""

    @signed_in
    async def page(request: web.Request) -> web.StreamResponse:
        return render(request, template, form=Form())

    return page


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, **kw: Any) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict" if name != SESSION_COOKIE else "Lax",
        secure=console(request).secure_cookies or request.secure,
        path=kw.pop("path", "/ui/"),
        **kw,
    )


def flash(request: web.Request, response: web.StreamResponse, message: str) -> None:
    set_cookie(request, response, FLASH_COOKIE, message.replace(";", ",")[:300].encode().hex(), max_age=60)


def redirect(request: web.Request, location: str, message: str | None = None) -> web.StreamResponse:
    response = web.Response(status=303, headers={"Location": location})
    if message:
        flash(request, response, message)
    return response


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    c = console(request)
    session = session_of(request)
    p = ConsoleAuth.principal(session, address(request)) if session else None
    message = None
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        try:
            message = bytes.fromhex(raw).decode()
        except ValueError:
            message = None
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
    html = c.templates.get_template(template).render(
        brand=c.brand,
        session=session,
        me=p,
        csrf=session.csrf if session else pre,
        path=request.path,
        flash=message,
        **context,
    )
    response = web.Response(status=status, text=html, content_type="text/html")
    if message is not None:
        response.del_cookie(FLASH_COOKIE, path="/ui/")
    if session is None and request.cookies.get(PRE_COOKIE) != pre:
        set_cookie(request, response, PRE_COOKIE, pre)
    return response
