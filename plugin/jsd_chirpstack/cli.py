"""``jsd chirpstack``: the bridge daemon, the ChirpStack configuration for our Join Server, the application side.

Loaded by ``jsd`` at start-up for every command, so this module imports only click; grpc, chirpstack_api and
the bridge are imported inside the command bodies. Keys and tokens are read from files or standard input,
never from the command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def _read_input(path: str, what: str) -> str:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    value = text.strip()
    if not value:
        raise click.BadParameter(f"{what} is empty", param_hint=what)
    return value


@click.group()
def chirpstack() -> None:
    """ChirpStack v4.12 or later: registry sync (bridge), configuration, application-side decryption.

    v4.12.0 is the first release with everything used here: the Join Server's authorization_header, and the
    device list's order_by and tags (docs/chirpstack.md has the table).
    """


@chirpstack.command("config")
@click.option("--join-eui-prefix", required=True, help="JoinEUIs served, e.g. 70b3d57ed0000000/56.")
@click.option("--server", required=True, help="URL ChirpStack POSTs JoinReqs to, e.g. http://join-server:8090/api/lbi.")
@click.option("--kek-label", required=True, help="Label of the NS's KEK in the Join Server (jsd ns … kek_label).")
@click.option("--kek-file", required=True, help="File holding the NS KEK as 32 hex digits ('-' = stdin).")
@click.option("--token-file", help="File holding the NS's bearer token ('-' = stdin).")
@click.option("--ca-cert", help="CA file for an https:// Join Server (path as ChirpStack sees it).")
@click.option("--tls-cert", help="Client certificate for mTLS instead of a token (path as ChirpStack sees it).")
@click.option("--tls-key", help="Its private key, PKCS#8 PEM (path as ChirpStack sees it).")
@click.option("--async-timeout", default="0s", show_default=True, help="0s = synchronous answers.")
@click.option("--net-id", help="ChirpStack's [network] net_id, to remind what it must be.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (mode 0600).")
def config_command(
    join_eui_prefix: str,
    server: str,
    kek_label: str,
    kek_file: str,
    token_file: str | None,
    ca_cert: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    async_timeout: str,
    net_id: str | None,
    output: str | None,
) -> None:
    """Print the ChirpStack configuration ([[join_server.servers]] and [[keks]]) to use this Join Server."""
    from jsd_chirpstack.nsconfig import JoinServerEntry, render

    if kek_file == "-" and token_file == "-":
        raise click.UsageError("only one of --kek-file and --token-file can be standard input")
    try:
        kek = bytes.fromhex(_read_input(kek_file, "--kek-file"))
    except ValueError:
        raise click.BadParameter("the KEK file must hold hex", param_hint="--kek-file") from None
    entry = JoinServerEntry(
        join_eui_prefix=join_eui_prefix,
        server=server,
        kek_label=kek_label,
        kek=kek,
        token=_read_input(token_file, "--token-file") if token_file else None,
        ca_cert=ca_cert,
        tls_cert=tls_cert,
        tls_key=tls_key,
        async_timeout=async_timeout,
        net_id=net_id,
    )
    try:
        text = render(entry)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    click.echo(f"wrote {output} (it holds the KEK: keep it readable by ChirpStack only)", err=True)


@chirpstack.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Bridge configuration (see conf/chirpstack/bridge.toml).")
@click.option("--once", is_flag=True, help="One reconciliation pass of every link, then exit.")
def run_command(config_path: str, once: bool) -> None:
    """Keep ChirpStack's devices in step with the Join Server's claims (MQTT events + periodic passes).

    A secret file that exists but is empty (as docker/init-secrets.sh leaves them) is waited for, with a
    message every 30 s naming it; a missing file is an error at once.
    """
    import asyncio
    import logging

    from jsd_nsadapter.bridge import Bridge, BridgeConfig
    from jsd_nsadapter.settings import SettingsError, load_toml, secret_files, wait_for_secret_files

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        wait_for_secret_files(list(secret_files(load_toml(config_path))))
        config = BridgeConfig.load(config_path)
    except (SettingsError, LookupError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    async def main() -> None:
        bridge = await Bridge.start(config)
        try:
            if once:
                failures = await bridge.reconcile_all()
                if failures:
                    raise click.ClickException(f"{failures} link(s) could not be reconciled")
            else:
                await bridge.run()
        finally:
            await bridge.aclose()

    asyncio.run(main())


@chirpstack.command("appserver")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Application-side configuration (see conf/chirpstack/appserver.toml).")
def appserver_command(config_path: str) -> None:
    """Decrypt end-to-end uplinks from ChirpStack's MQTT integration and republish them in clear.

    [astks] is keyed by KEK label (`jsd astks create` prints the line, `jsd astks list` shows the label). Empty
    secret files are waited for, like `jsd chirpstack run` does.
    """
    import asyncio
    import logging

    from jsd_chirpstack.appserver import load_appserver
    from jsd_nsadapter.settings import SettingsError, load_toml, secret_files, wait_for_secret_files

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        wait_for_secret_files(list(secret_files(load_toml(config_path))))
        server, run_options = load_appserver(config_path)
    except (SettingsError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    async def main() -> None:
        try:
            await server.run(**run_options)
        finally:
            if server.chirpstack is not None:
                await server.chirpstack.aclose()

    asyncio.run(main())
