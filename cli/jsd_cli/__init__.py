"""The ``jsd`` command: serve the daemon, prepare the HSM, manage NSs and devices locally, and drive a
(remote) daemon's REST API: accounts, device import, claims, NetID/ASTK, audit.

Commands import the daemon lazily so ``jsd --help`` stays fast. Secrets (PINs, keys, tokens, API keys) are
read from files, standard input or the environment, never from the command line, where other users could
read them in ``ps``.
"""

from __future__ import annotations

import click

from jsd_cli import accounts, astk, audit, claims, devices, local, ops, remote, users
from jsd_cli.labels import labels_command


@click.group()
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
    help="The daemon's API base URL [JSD_URL; default http://<server.host>:<server.port> of the configuration].",
)
@click.option(
    "--api-key-file",
    envvar="JSD_API_KEY_FILE",
    help="File with the API key ('-' = stdin) [JSD_API_KEY_FILE; else the key itself in JSD_API_KEY].",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, url: str | None, api_key_file: str | None) -> None:
    """LoRaWAN Join Server with a PKCS#11 HSM."""
    ctx.obj = remote.Context(config_path, url, api_key_file)


@main.command()
@click.option("--host", help="Listen address (server.host).")
@click.option("--port", type=int, help="Listen port (server.port).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (server.workers).")
@click.pass_obj
def serve(obj: local.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the Join Server (LBI 1.0 over HTTP); the embedded default is created on first start."""
    from jsd.serve import serve as run

    settings = obj.settings()
    changes = {"server__host": host, "server__port": port, "server__workers": workers}
    settings = settings.replace(**{k: v for k, v in changes.items() if v is not None})
    run(settings)


main.add_command(local.hsm)
main.add_command(local.ns)
main.add_command(local.device)
main.add_command(accounts.account)
main.add_command(devices.devices)
main.add_command(claims.claim)
main.add_command(astk.astk)
main.add_command(audit.audit)
main.add_command(labels_command, "labels")
main.add_command(ops.db)
main.add_command(ops.backup)
main.add_command(ops.restore)
main.add_command(ops.rotate)
main.add_command(users.users)


def _add_plugin_commands(group: click.Group) -> None:
    """Commands of installed plugins (entry-point group ``jsd.plugins``; each entry is a click command).

    A plugin's command module should stay light: heavy imports belong inside its command bodies.
    """
    from importlib.metadata import entry_points

    for entry in entry_points(group="jsd.plugins"):
        command = entry.load()
        if isinstance(command, click.Command):
            group.add_command(command, entry.name)


_add_plugin_commands(main)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Simulated devices and network server (see `jsd sim --help`)."""
    from jsd_cli.sim import sim as sim_group

    sim_group.main(args=ctx.args, prog_name="jsd sim", standalone_mode=True)
