"""What the remote commands share: where the daemon is, the API key, running one API conversation, secrets.

The API key comes from ``--api-key-file`` / ``JSD_API_KEY_FILE`` or ``JSD_API_KEY``, never from the command
line (``ps`` shows argv to every user). Secrets the API hands out once (API keys, owner tokens, ASTKs) are
printed once or written to a new file with mode 0600; an existing file is never overwritten, because it may
hold the only copy of an earlier secret. The configuration (``-c``, ``JSD_*``) is loaded here too, on
first need: for ``jsd serve``, the local commands (jsd_cli.bootstrap) and the daemon's default URL.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click

from jsd_cli import output
from jsd_cli.client import ApiClient, ApiProblem, ApiUnreachable

if TYPE_CHECKING:
    from jsd.config import Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8090"


PROFILE_HELP = "JSD_PROFILE, else $XDG_CONFIG_HOME/jsd/profile.toml (~/.config/jsd/profile.toml)"


def profile_path() -> Path:
    """Where ``jsd login`` keeps the daemon's URL and the API key file: JSD_PROFILE, else the XDG config dir."""
    if os.environ.get("JSD_PROFILE"):
        return Path(os.environ["JSD_PROFILE"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jsd" / "profile.toml"


def load_profile() -> dict[str, str]:
    """The profile's ``url`` and ``api_key_file`` (absent file = empty profile; a broken one is an error)."""
    import tomllib

    path = profile_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"cannot read the profile {path}: {exc}") from None
    except UnicodeDecodeError:
        raise click.UsageError(f"cannot read the profile {path}: it is not text (UTF-8)") from None
    return {k: str(v) for k, v in data.items() if k in ("url", "api_key_file") and isinstance(v, str)}


class Context:
    """One invocation: the configuration, loaded lazily, plus the daemon's URL and API key.

    Precedence, highest first: the options, the environment (JSD_URL, JSD_API_KEY_FILE, JSD_API_KEY), the
    profile written by ``jsd login``, the configuration (URL only).
    """

    def __init__(
        self, config_path: str | None, url: str | None, api_key_file: str | None, force_local: bool = False
    ) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self.serving = False
        self._given_url = url
        self._given_key_file = api_key_file
        self._profile: dict[str, str] | None = None
        self._api_key: str | None = None
        self.force_local = force_local

    def settings(self) -> Settings:
        """The configuration; logging is set up with it (quiet for commands: their stderr is for messages)."""
        import logging

        from jsd.config import ConfigError, load_settings
        from jsd.logs import setup_logging

        if self._settings is None:
            try:
                self._settings = load_settings(Path(self.config_path) if self.config_path else None)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            level = str(self._settings.get("log", "level"))
            if self.serving or level.lower() == "debug":
                setup_logging(self._settings.get("log", "format"), level)
            else:  # log lines only on trouble, and the first start
                setup_logging(self._settings.get("log", "format"), "warning")
                logging.getLogger("jsd.serve").setLevel(logging.INFO)  # "created SoftHSM2 token ..." once
        return self._settings

    def _from_profile(self, name: str) -> str | None:
        """A profile value, read on first need (``jsd serve`` and ``hsm`` never read the profile)."""
        if self._profile is None:
            self._profile = load_profile()
        return self._profile.get(name)

    @property
    def _url(self) -> str | None:
        return self._given_url or self._from_profile("url")

    @property
    def _api_key_file(self) -> str | None:
        if self._given_key_file is not None or os.environ.get("JSD_API_KEY"):
            return self._given_key_file
        return self._from_profile("api_key_file")

    @property
    def remote(self) -> bool:
        """Whether the commands with a local mode (``accounts create``, ``devices add``) go to the API: an API
        key is at hand and ``--local`` was not given. Every other account command always goes to the API."""
        if self.force_local:
            return False
        return self._api_key_file is not None or bool(os.environ.get("JSD_API_KEY"))

    def api_key(self) -> str | None:
        if self._api_key is None:
            if self._api_key_file is not None:
                self._api_key = read_secret(self._api_key_file, "API key")
            else:
                self._api_key = os.environ.get("JSD_API_KEY", "").strip() or None
        return self._api_key

    def base_url(self) -> str:
        """``--url`` / ``JSD_URL``, else the server address of the configuration (the daemon on this host)."""
        if self._url:
            return self._url.rstrip("/")
        from jsd.config import ConfigError, load_settings

        try:
            settings = load_settings(Path(self.config_path) if self.config_path else None)
        except ConfigError:
            return DEFAULT_URL
        host = str(settings.get("server", "host"))
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{settings.get('server', 'port')}"

    def run(self, body: Callable[[ApiClient], Awaitable[T]], timeout: float | None = 120.0) -> T:
        """Run one conversation with the daemon; problems and connection errors end the command readably."""
        if self.force_local:
            raise click.UsageError(
                "--local: this command goes through the daemon's API; local mode is for the HSM, the first "
                "operator account, the operator's shortcut device, console users and the database operations"
            )
        key = self.api_key()
        if key is None:
            raise output.fail_cli(
                "no API key: give --api-key-file (JSD_API_KEY_FILE) or JSD_API_KEY, or run `jsd login`",
                "unauthenticated",
            )

        import asyncio  # here, not at the top: `jsd serve`'s supervisor imports this module and no event loop

        async def conversation() -> T:
            async with ApiClient(self.base_url(), key, timeout) as api:
                return await body(api)

        try:
            return asyncio.run(conversation())
        except ApiProblem as problem:
            raise output.fail(problem) from None
        except ApiUnreachable as exc:
            raise output.fail_cli(str(exc), "unreachable") from None


pass_context = click.make_pass_decorator(Context)


def segment(value: str) -> str:
    """A path segment from user input: quoted, so a stray '/' cannot reach another endpoint."""
    return quote(value.strip(), safe="")


def read_secret(source: str | None, what: str) -> str:
    """A secret from a file, '-' (standard input), or a hidden prompt when no source was given."""
    try:
        if source is None and not sys.stdin.isatty():
            text = sys.stdin.read()  # piped or redirected: read it, as '-' would (no prompt, no echo warning)
        elif source is None:
            text = str(click.prompt(what, hide_input=True))
        elif source == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise click.UsageError(f"cannot read the {what} file: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise click.UsageError(f"the {what} file {source} is not text (UTF-8)") from None
        text.encode("utf-8")  # standard input may carry undecodable bytes as surrogate escapes
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise click.UsageError(f"the {what} is not text (UTF-8)") from None
    text = text.strip()
    if not text:
        raise click.UsageError(f"the {what} is empty")
    return text


def check_new_file(path: str | None) -> None:
    """Refuse before calling the API, so a one-time secret is not lost to an unwritable --out."""
    if path is None or path == "-":
        return
    if Path(path).exists():
        raise click.UsageError(f"{path} exists and may hold earlier secrets: choose another --out")
    if not Path(path).parent.resolve().is_dir():
        raise click.UsageError(f"the directory of {path} does not exist")


@contextmanager
def secret_file(path: str) -> Iterator[IO[bytes]]:
    """A new file only the user can read ('-' = standard output)."""
    if path == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def emit_secret(out: str | None, text: str, what: str, note_to_stderr: bool = False) -> None:
    """Print a one-time secret, or write it to ``out`` and say where it went (on stderr under --json)."""
    if out is None:
        click.echo(f"{what} (shown once): {text}")
        return
    with secret_file(out) as handle:
        handle.write(text.encode() + b"\n")
    if out != "-":
        click.echo(f"{what} written to {out} (mode 0600)", err=note_to_stderr)


def show_list(obj: Context, path: str, items: str, columns: tuple[tuple[str, str], ...], as_json: bool) -> None:
    """GET a list: the API's JSON under --json, else its ``items`` as a table."""
    answer = obj.run(lambda api: api.call("GET", path))
    if as_json:
        output.print_json(answer)
    else:
        click.echo(output.table(answer[items], columns))


def log_options(noun: str, cursor: str) -> Callable[[F], F]:
    """``--limit``, ``--after``, ``--follow`` and ``--interval`` of a log command (``jsd audit``, ``jsd events``)."""
    options = (
        click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
                     help=f"{noun.capitalize()} per request."),
        click.option("--after", type=int, help=f"Only {noun} after this {cursor} (the 'next' of an earlier answer)."),
        click.option("--follow", "-f", is_flag=True, help=f"Keep polling for new {noun} until interrupted."),
        click.option("--interval", type=click.FloatRange(0.1), default=2.0, show_default=True,
                     help="Seconds between polls."),
    )  # fmt: skip

    def wrap(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


def show_log(
    obj: Context,
    path: str,
    items: str,
    cursor: str,
    columns: tuple[tuple[str, str], ...],
    filters: dict[str, str | None],
    as_json: bool,
    *,
    limit: int,
    after: int | None,
    follow: bool,
    interval: float,
) -> None:
    """One page of an append-only log (``/events``, ``/audit``), or with `follow` every new item as it comes.

    Following polls after the highest `cursor` seen and prints one JSON object per line with `as_json`
    (JSON Lines), else table rows under one header. ``filters`` are query parameters, left out when None.
    """

    def params(position: int | None) -> dict[str, str]:
        given = {"limit": str(limit)} | {k: v for k, v in filters.items() if v}
        return given | ({"after": str(position)} if position is not None else {})
    if not follow:
        answer = obj.run(lambda api: api.call("GET", path, params=params(after)))
        if as_json:
            output.print_json(answer)
            return
        click.echo(output.table(answer[items], columns))
        if answer.get("next") is not None:
            click.echo(f"more: --after {answer['next']}", err=True)
        return

    async def poll(api: ApiClient) -> None:
        import asyncio

        position, header = after, not as_json
        while True:
            page = await api.call("GET", path, params=params(position))
            for item in page[items]:
                if as_json:
                    click.echo(json.dumps(item, separators=(",", ":")))
                else:
                    lines = output.table([item], columns).splitlines()
                    click.echo("\n".join(lines if header else lines[1:]))
                    header = False
                position = max(position or 0, int(item[cursor]))
            if page.get("next") is None:
                await asyncio.sleep(interval)

    try:
        obj.run(poll)
    except KeyboardInterrupt:
        pass
