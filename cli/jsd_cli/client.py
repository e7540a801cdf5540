"""HTTP client of the daemon's REST API (``/api/v1``, docs/api.md) for the remote CLI commands.

Problem answers (RFC 7807) become ``ApiProblem`` with the stable slug, so callers map them to exit codes
without parsing text; an unreachable daemon becomes ``ApiUnreachable``. The API key travels only in the
``Authorization`` header. aiohttp is imported on first use, so ``jsd --help`` does not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

PROBLEM_PREFIX = "urn:jsd:problem:"
API_PREFIX = "/api/v1"


@dataclass(eq=False)
class ApiProblem(Exception):
    """A refused call: ``problem`` is the slug of the problem type ("not-found", ...) or "http-<status>"."""

    status: int
    problem: str
    title: str
    detail: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int | None = None
    retry_after: str | None = None
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title


class ApiUnreachable(Exception):
    """The daemon could not be reached or broke the connection."""


async def problem_of(response: aiohttp.ClientResponse) -> ApiProblem:
    """The problem an error answer carries; a non-problem body (a proxy's page) is kept as a short detail."""
    text = await response.text(errors="replace")
    retry_after = response.headers.get("Retry-After")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        kind = body["type"]
        errors = body.get("errors")
        count = body.get("error_count")
        return ApiProblem(
            status=response.status,
            problem=kind.removeprefix(PROBLEM_PREFIX),
            title=str(body.get("title") or response.reason or "error"),
            detail=str(body.get("detail") or ""),
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
            error_count=count if isinstance(count, int) else None,
            retry_after=retry_after,
            body=body,
        )
    return ApiProblem(
        status=response.status,
        problem=f"http-{response.status}",
        title=f"HTTP {response.status} {response.reason or ''}".strip(),
        detail=" ".join(text.split())[:200],
        retry_after=retry_after,
    )


class ApiClient:
    """One aiohttp session against one daemon; use as ``async with ApiClient(url, key) as api``."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float | None = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        import aiohttp

        headers = {"Accept": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._timeout)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    async def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """One JSON request; the decoded answer, or None for 204. Raises ApiProblem / ApiUnreachable."""
        import aiohttp

        async with self._request(method, path, json=body, params=params) as response:
            if response.status == 204:
                return None
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise ApiUnreachable(f"{method} {path}: the answer is not JSON") from None
            except aiohttp.ClientError as exc:
                raise ApiUnreachable(f"{method} {path}: {exc}") from None

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, body: AsyncIterable[bytes], content_type: str, import_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Send ``body`` as a chunked upload; yields the answer's lines as they arrive (answer not buffered).

        ``import_id`` goes in the Import-Id header, so the progress of a device import can be asked meanwhile.
        """
        import aiohttp

        async def lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
            try:
                async for line in response.content:
                    yield line
            except aiohttp.ClientError as exc:
                raise ApiUnreachable(f"the answer broke off: {exc}") from None

        headers = {"Content-Type": content_type} | ({"Import-Id": import_id} if import_id else {})
        async with self._request(method, path, data=body, headers=headers) as response:
            yield lines(response)

    @asynccontextmanager
    async def _request(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        import aiohttp

        assert self._session is not None, "use ApiClient as an async context manager"
        try:
            async with self._session.request(method, self.url(path), **kwargs) as response:
                if response.status >= 400:
                    raise await problem_of(response)
                yield response
        except aiohttp.ClientConnectorError as exc:
            raise ApiUnreachable(f"cannot connect to {self.base_url}: {exc.os_error.strerror or exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnreachable(f"{method} {self.url(path)}: {type(exc).__name__} {exc}".rstrip()) from None
