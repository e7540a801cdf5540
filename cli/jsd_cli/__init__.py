"""The ``jsd`` command: serve the daemon, prepare the HSM, and manage accounts, network servers, devices,
claims and ASTKs through a daemon's REST API; on the daemon's machine, the few things no daemon or key can do
yet (the HSM, the first operator account, console users, the database) work on its database and HSM directly
(jsd_cli.bootstrap, the one local module).

One tree of plural nouns (``accounts``, ``devices``, ``astks``, ``ns``) and a few verbs (``claim``, ``login``,
``whoami``). Commands import the daemon lazily so ``jsd --help`` stays fast. Secrets (PINs, keys, tokens,
API keys) are read from files, standard input or the environment, never from the command line, where other
users could read them in ``ps``. Every failure is one ``error: ...`` line (more for refused rows) on stderr
with an exit code per kind of problem (jsd_cli.output).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from jsd_cli import output, remote

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

# Each command's module is imported only when that command runs (or `--help` lists them all), so a command
# pays for no other's imports: `jsd serve`'s supervisor process stays at about 17 MB instead of 30.
COMMANDS: dict[str, str] = {
    "login": "jsd_cli.session:login",
    "whoami": "jsd_cli.session:whoami",
    "hsm": "jsd_cli.hsm:hsm",
    "ns": "jsd_cli.ns:ns",
    "accounts": "jsd_cli.accounts:accounts",
    "devices": "jsd_cli.devices:devices",
    "claim": "jsd_cli.claims:claim",
    "astks": "jsd_cli.astk:astks",
    "labels": "jsd_cli.labels:labels_command",
    "audit": "jsd_cli.audit:audit",
    "events": "jsd_cli.events:events",
    "db": "jsd_cli.ops:db",
    "backup": "jsd_cli.ops:backup",
    "restore": "jsd_cli.ops:restore",
    "rotate": "jsd_cli.ops:rotate",
    "users": "jsd_cli.users:users",
}
DEPRECATED: dict[str, str] = {"account": "accounts", "device": "devices", "astk": "astks"}


def run_standalone(group: click.Group, argv: list[str], prog_name: str, **extra: Any) -> NoReturn:
    """Run ``group`` as a program: click's own errors printed in the CLI's one format (``error: ...``), and as
    a problem JSON on stdout under ``--json``; exits with the command's code."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    output.JSON_MODE = "--json" in words
    try:
        code = click.Group.main(group, argv, prog_name, standalone_mode=False, **extra)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        output.fail_cli(exc.format_message(), "invalid-request", exc.exit_code)
        click.echo(f"  see '{where} --help'", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        sys.exit(output.fail_cli(exc.format_message(), code=exc.exit_code).exit_code)
    except click.Abort:
        sys.exit(output.fail_cli("aborted", code=1).exit_code)
    except UnicodeDecodeError as exc:  # a file or standard input that is binary, wherever a command reads it
        message = f"an input file or standard input is not text (UTF-8): byte {exc.start} is 0x{exc.object[exc.start]:02x}"
        sys.exit(output.fail_cli(message, "invalid-request", 2).exit_code)
    sys.exit(code if isinstance(code, int) else 0)


class JsdGroup(click.Group):
    """The root group, run by ``run_standalone`` when it is the program; loads its commands on demand.

    Besides the commands defined in this module: ``COMMANDS``, the hidden old names in ``DEPRECATED``, and the
    commands of installed plugins (entry-point group ``jsd.plugins``, each entry a click command).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS, *DEPRECATED, *_plugin_entries()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        command: click.Command | None = None
        if cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
        elif cmd_name in DEPRECATED:
            current = self.get_command(ctx, DEPRECATED[cmd_name])
            command = _deprecated(current, cmd_name) if isinstance(current, click.Group) else None
        elif (entry := _plugin_entries().get(cmd_name)) is not None:
            loaded = entry.load()
            command = loaded if isinstance(loaded, click.Command) else None
        if command is not None:
            self.commands[cmd_name] = command
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        run_standalone(self, argv, prog_name or "jsd", complete_var=complete_var, **extra)


@click.group(cls=JsdGroup)
@click.version_option(package_name="jsd", message="jsd %(version)s")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    envvar="JSD_CONFIG",
    help="TOML configuration file (JSD_* environment variables override it).",
)
@click.option(
    "--url",
    envvar="JSD_URL",
    help="The daemon's API base URL [JSD_URL; else the profile's; else http://<server.host>:<server.port>].",
)
@click.option(
    "--api-key-file",
    envvar="JSD_API_KEY_FILE",
    help="File with the API key ('-' = stdin) [JSD_API_KEY_FILE; else the key itself in JSD_API_KEY; "
    "else the profile's].",
)
@click.option(
    "--local",
    "force_local",
    is_flag=True,
    help="For `accounts create` and `devices add --home-net-id`: work on this machine's database and HSM "
    "(as the daemon's operator), not through the API. Also their mode when no API key is at hand.",
)
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, url: str | None, api_key_file: str | None, force_local: bool
) -> None:
    """LoRaWAN Join Server with a PKCS#11 HSM.

    The commands call a daemon's REST API with an API key (--api-key-file, JSD_API_KEY_FILE, JSD_API_KEY or
    the profile `jsd login` writes). `serve`, `hsm`, `users`, `db`, `backup`, `restore`, `rotate`, and
    without a key (or with --local) `accounts create` and `devices add --home-net-id` work on the local
    database and HSM instead.
    """
    ctx.obj = remote.Context(config_path, url, api_key_file, force_local)


@main.command()
@click.option("--host", help="Listen address (server.host).")
@click.option("--port", type=int, help="Listen port (server.port).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (server.workers).")
@click.pass_obj
def serve(obj: remote.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the Join Server (LBI 1.0 over HTTP and the REST API); the embedded default is created on first start."""
    from jsd.serve import serve as run

    obj.serving = True
    settings = obj.settings()
    changes = {"server__host": host, "server__port": port, "server__workers": workers}
    settings = settings.replace(**{k: v for k, v in changes.items() if v is not None})
    run(settings)


def _deprecated(group: click.Group, old: str) -> click.Group:
    """A hidden old name of a group that still works and says what replaced it."""

    def warn() -> None:
        output.warn(f"`jsd {old}` is deprecated: use `jsd {group.name}`")

    return click.Group(old, commands=group.commands, callback=warn, hidden=True, help=f"Use `jsd {group.name}`.")


@functools.cache
def _plugin_entries() -> dict[str, EntryPoint]:
    """Installed plugins' commands by name, not yet loaded (a plugin's module is imported when it runs)."""
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group="jsd.plugins")}


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Simulated devices and network server (see `jsd sim --help`)."""
    from jsd_cli.sim import sim as sim_group

    run_standalone(sim_group, list(ctx.args), "jsd sim")
