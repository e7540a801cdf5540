"""Operating the daemon on its own machine: ``jsd db``, ``jsd backup``, ``jsd restore``, ``jsd rotate``.

Like ``jsd serve`` these read the configuration (``-c``, ``JSD_*``) and work on the daemon's database and
HSM directly; docs/operations.md tells when to run each. A restore never lets the daemon hand out a
JoinNonce again that it may have handed out after the backup was taken: ``jsd db after-restore`` (run by
``jsd restore`` itself) moves every device's nonce state past a margin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jsd_cli import bootstrap
from jsd_cli.inputs import eui, read_secret_hex
from jsd_cli.remote import Context, pass_context

if TYPE_CHECKING:
    from jsd.config import Settings

JOIN_NONCE_MARGIN = 1 << 16
"""Default JoinNonce jump after a restore: more joins of one device than any between a backup and a loss."""
DEV_NONCE_MARGIN = 16
"""Default raise of a counter device's DevNonce bar after a restore (see docs/operations.md)."""
MANIFEST = "manifest.json"
BACKUP_FORMAT = 1


def _libpq(url: str) -> tuple[str, str | None]:
    """A SQLAlchemy PostgreSQL URL as a libpq URI for pg_dump/pg_restore, and its search_path schema."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    schema = parsed.query.get("search_path")
    plain = parsed.set(drivername="postgresql", query={})
    return plain.render_as_string(hide_password=False), schema if isinstance(schema, str) else None


def _daemon_answers(settings: Settings) -> bool:
    host = str(settings.get("server", "host"))
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    tls = bool(settings.get("server", "tls_cert"))
    context = None
    if tls:  # only "is anything of ours there?": the certificate does not matter for that
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = f"{'https' if tls else 'http'}://{host}:{settings.get('server', 'port')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1, context=context):
            return True
    except Exception:  # noqa: BLE001 - nothing answering the way the daemon does is all we need to know
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_copy(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    target.chmod(0o600)


# -- jsd db ----------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """The database: migrations and the step after a restore."""


@db.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Apply the schema migrations now (``jsd serve`` also does it at start); safe to run twice."""
    from jsd.registry import migrate
    from jsd.registry.ops import schema_head, schema_revision

    async def body() -> tuple[str | None, str | None]:
        engine = bootstrap.engine(obj.settings())
        try:
            before = await schema_revision(engine)
            await migrate(engine)
            return before, await schema_revision(engine)
        finally:
            await engine.dispose()

    before, after = bootstrap.run(body())
    if before == after:
        click.echo(f"schema already at {after} (the newest of this version: {schema_head()})")
    else:
        click.echo(f"schema upgraded from {before or 'empty'} to {after}")


def _margins(func: Any) -> Any:
    func = click.option(
        "--dev-nonce-margin", type=click.IntRange(0, 0xFFFF), default=DEV_NONCE_MARGIN, show_default=True,
        help="Raise the DevNonce bar of LoRaWAN 1.0.4/1.1 devices by this much.",
    )(func)  # fmt: skip
    return click.option(
        "--join-nonce-margin", type=click.IntRange(1, 0xFFFFFF), default=JOIN_NONCE_MARGIN, show_default=True,
        help="Raise every device's JoinNonce by this much (capped at 2^24-1).",
    )(func)  # fmt: skip


async def _after_restore(settings: Settings, join_margin: int, dev_margin: int) -> dict[str, Any]:
    from jsd.registry import migrate
    from jsd.registry.ops import after_restore

    engine = bootstrap.engine(settings)
    try:
        await migrate(engine)
        return (await after_restore(engine, join_margin, dev_margin)).__dict__
    finally:
        await engine.dispose()


def _report_margins(summary: dict[str, Any]) -> None:
    click.echo(
        f"nonce state of {summary['devices']} device(s) moved on: JoinNonce +{summary['join_nonce_margin']}, "
        f"DevNonce bar +{summary['dev_nonce_margin']} for {summary['counters_raised']} counter device(s)"
    )
    if summary["exhausted"]:
        click.echo(
            f"warning: {summary['exhausted']} device(s) reached the last JoinNonce (2^24-1): they need new root keys",
            err=True,
        )


@db.command("after-restore")
@_margins
@click.option("--force", is_flag=True, help="Run even though a daemon answers on the configured port.")
@pass_context
def db_after_restore(obj: Context, join_nonce_margin: int, dev_nonce_margin: int, force: bool) -> None:
    """Move every device's nonces past what it may have used since the backup (after restoring a database).

    ``jsd restore`` runs it itself; run it by hand after restoring a PostgreSQL dump with pg_restore. The
    daemon should be stopped: a join in flight is refused and retried by its device, never answered twice.
    """
    settings = obj.settings()
    if not force and _daemon_answers(settings):
        raise click.ClickException("a daemon answers on the configured port: stop it first (or --force)")
    _report_margins(bootstrap.run(_after_restore(settings, join_nonce_margin, dev_nonce_margin)))


# -- jsd backup / restore --------------------------------------------------------------------------


def _embedded_hsm(settings: Settings) -> bool:
    return not settings.get("hsm", "module")


@click.command("backup")
@click.option("--out", type=click.Path(file_okay=False), help="New directory for the backup [jsd-backup-<UTC time>].")
@pass_context
def backup(obj: Context, out: str | None) -> None:
    """A consistent copy of the database, and of the SoftHSM2 token of the embedded default, while running.

    SQLite: the online backup API (a snapshot of one moment, the daemon keeps writing). PostgreSQL: pg_dump
    (one transaction). A real HSM is backed up with its vendor's tools (docs/operations.md). The directory
    holds the token and its PINs: keep it as safe as the HSM.
    """
    from jsd.config import database_url

    settings = obj.settings()
    target = Path(out or f"jsd-backup-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    if target.exists():
        raise click.ClickException(f"{target} exists already: a backup never overwrites anything")
    target.mkdir(parents=True, mode=0o700)
    url = database_url(settings)
    path = bootstrap.sqlite_path(url)
    manifest: dict[str, Any] = {"format": BACKUP_FORMAT, "created_at": datetime.now(UTC).isoformat()}
    if path is not None:
        if not path.exists():
            raise click.ClickException(f"no database at {path}")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        copy = sqlite3.connect(target / "jsd.sqlite3")
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        (target / "jsd.sqlite3").chmod(0o600)
        manifest["database"] = {"kind": "sqlite", "file": "jsd.sqlite3"}
    else:
        uri, schema = _libpq(url)
        command = ["pg_dump", "--format=custom", "--no-owner", f"--file={target / 'jsd.pgdump'}"]
        command += [f"--schema={schema}"] if schema else []
        _tool(command + [f"--dbname={uri}"])
        manifest["database"] = {"kind": "postgresql", "file": "jsd.pgdump", "schema": schema}
    manifest |= _db_facts(settings)
    if _embedded_hsm(settings):
        state = settings.state_dir
        shutil.copytree(state / "tokens", target / "tokens")
        for name in ("hsm-pin", "hsm-so-pin"):
            if (state / name).exists():
                _private_copy(state / name, target / name)
        manifest["hsm"] = {"kind": "softhsm2-embedded", "token_dir": "tokens"}
    else:
        manifest["hsm"] = {"kind": "external", "module": settings.get("hsm", "module")}
    manifest["files"] = {
        str(p.relative_to(target)): _sha256(p) for p in sorted(target.rglob("*")) if p.is_file()
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    click.echo(
        f"backup written to {target}: {manifest['devices']} device(s), highest JoinNonce "
        f"{manifest['highest_join_nonce']}, schema {manifest['schema_revision']}"
    )
    if manifest["hsm"]["kind"] == "external":
        click.echo("the HSM is not in this backup: back up its keys with the vendor's tools", err=True)


def _db_facts(settings: Settings) -> dict[str, Any]:
    from jsd.registry.ops import nonce_summary, schema_revision

    async def body() -> dict[str, Any]:
        engine = bootstrap.engine(settings)
        try:
            count, highest = await nonce_summary(engine)
            return {"schema_revision": await schema_revision(engine), "devices": count, "highest_join_nonce": highest}
        finally:
            await engine.dispose()

    return bootstrap.run(body())


def _tool(command: list[str]) -> None:
    """Run pg_dump/pg_restore; the URL travels in argv only as given in the configuration (no password
    there: use ~/.pgpass or PGPASSWORD)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise click.ClickException(f"{command[0]} not found: install the PostgreSQL client tools") from None
    if done.returncode != 0:
        raise click.ClickException(f"{command[0]} failed: {done.stderr.strip()[:2000]}")


@click.command("restore")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@_margins
@click.option("--replace-hsm", is_flag=True, help="Also put back the backup's SoftHSM2 token over an existing one.")
@pass_context
def restore(
    obj: Context, directory: str, join_nonce_margin: int, dev_nonce_margin: int, replace_hsm: bool
) -> None:
    """Put a ``jsd backup`` back (daemon stopped), then move every device's nonces on (``jsd db after-restore``).

    The database is replaced (the one it replaces is kept beside it, renamed). The SoftHSM2 token is put
    back only where none is (a lost disk), or with --replace-hsm: a surviving token already holds every key
    of the backup, and keys imported since.
    """
    from jsd.config import database_url

    settings = obj.settings()
    source = Path(directory)
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        raise click.ClickException(f"{source} is not a jsd backup (no readable {MANIFEST})") from None
    if manifest.get("format") != BACKUP_FORMAT:
        raise click.ClickException(f"unknown backup format {manifest.get('format')!r}")
    from jsd.registry.ops import known_revisions

    if manifest.get("schema_revision") not in known_revisions():
        raise click.ClickException(
            f"the backup's schema {manifest.get('schema_revision')!r} is unknown to this version of jsd "
            "(made by a newer one?): restore it with the version that made it"
        )
    for name, digest in manifest.get("files", {}).items():
        if not (source / name).is_file() or _sha256(source / name) != digest:
            raise click.ClickException(f"{name} of the backup is missing or damaged (SHA-256 differs)")
    if _daemon_answers(settings):
        raise click.ClickException("a daemon answers on the configured port: stop it before restoring")
    url = database_url(settings)
    path = bootstrap.sqlite_path(url)
    stamp = f"before-restore-{int(time.time())}"
    kind = manifest["database"]["kind"]
    if (kind == "sqlite") != (path is not None):
        raise click.ClickException(f"the backup holds a {kind} database, the configuration names another kind")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                old.rename(f"{path}.{stamp}{suffix}")
        backup_db = sqlite3.connect(f"file:{source / manifest['database']['file']}?mode=ro", uri=True)
        live = sqlite3.connect(path)
        try:
            backup_db.backup(live)
        finally:
            live.close()
            backup_db.close()
        os.chmod(path, 0o600)
    else:
        uri, _schema = _libpq(url)
        _tool([
            "pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
            f"--dbname={uri}", str(source / manifest["database"]["file"]),
        ])  # fmt: skip
    hsm = manifest.get("hsm", {})
    if hsm.get("kind") == "softhsm2-embedded" and _embedded_hsm(settings):
        _restore_token(settings, source, stamp, replace_hsm)
    elif hsm.get("kind") == "external":
        click.echo("the HSM is not in this backup: its keys must already be in the configured token", err=True)
    click.echo(f"database restored from {source} (taken {manifest.get('created_at')})")
    _report_margins(bootstrap.run(_after_restore(settings, join_nonce_margin, dev_nonce_margin)))


def _restore_token(settings: Settings, source: Path, stamp: str, replace: bool) -> None:
    state = settings.state_dir
    tokens = state / "tokens"
    present = tokens.exists() and any(tokens.iterdir())
    if present and not replace:
        click.echo(f"SoftHSM2 token kept: {tokens} exists (--replace-hsm puts the backup's back)")
        return
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    if tokens.exists():
        tokens.rename(state / f"tokens.{stamp}")
    shutil.copytree(source / "tokens", tokens)
    for name in ("hsm-pin", "hsm-so-pin"):
        if (source / name).exists():
            if (state / name).exists():
                (state / name).rename(state / f"{name}.{stamp}")
            _private_copy(source / name, state / name)
    click.echo(f"SoftHSM2 token restored into {tokens}")


# -- jsd rotate ------------------------------------------------------------------------------------


@click.group()
def rotate() -> None:
    """Key rotation while the daemon runs: an NS's KEK, an account's ASTK."""


@rotate.command("ns-kek")
@click.argument("net_id")
@click.option("--label", required=True, help="Label of the new KEK (the NS finds it by this name).")
@click.option("--kek-file", help="Import the new KEK (16 bytes hex; '-' = stdin) under --label first.")
@click.option("--generate-kek", is_flag=True, help="Generate the new KEK in the HSM and print it once.")
@pass_context
def rotate_ns_kek(obj: Context, net_id: str, label: str, kek_file: str | None, generate_kek: bool) -> None:
    """Cut an NS over to a new KEK: answers name the KEK they are wrapped under (KEKLabel), so give the NS
    the new KEK first and keep the old one there until every worker has switched (10 s at most)."""
    from jsd.hsm.recipe import check_kek_label

    net = eui(net_id, "NetID", 3)
    try:
        check_kek_label(label)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--label") from None
    if kek_file and generate_kek:
        raise click.UsageError("use --kek-file or --generate-kek, not both")
    kek = read_secret_hex(kek_file, "KEK") if kek_file else None

    async def body() -> tuple[str, bytes | None]:
        from jsd.registry.ops import set_ns_kek

        async with bootstrap.opened(obj.settings(), hsm_needed=True) as (engine, hsm):
            assert hsm is not None
            new_kek = await hsm.generate_random(16) if generate_kek else kek
            if new_kek is not None:
                await hsm.import_kek(label, new_kek)
            elif not await hsm.has_kek(label):
                raise click.ClickException(f"KEK {label} is not in the HSM: give --kek-file or --generate-kek")
            previous = await set_ns_kek(engine, net.hex(), label)
            return previous, new_kek if generate_kek else None

    previous, shown = bootstrap.run(body())
    click.echo(f"network server {net.hex()}: answers wrapped under {label} from now on (was {previous})")
    if shown is not None:
        click.echo(f"KEK (shown once, put it in the NS's [[keks]] as {label}): {shown.hex()}")
    click.echo(f"keep {previous} at the NS until answers in flight are in (a few seconds), then drop it there")


@rotate.command("astk")
@click.argument("account")
@click.argument("old_name")
@click.argument("new_name")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Devices moved per transaction.")  # fmt: skip
@pass_context
def rotate_astk(obj: Context, account: str, old_name: str, new_name: str, batch: int) -> None:
    """Move ACCOUNT's devices from its ASTK OLD_NAME to NEW_NAME, in batches, while joins go on.

    Create NEW_NAME first (``jsd astks create``) and give it to the application server next to the old one:
    each answer names the ASTK its AppSKey is wrapped under. Interrupted, run it again: it carries on.
    """

    async def body() -> int:
        from jsd.registry.ops import switch_astk

        async with bootstrap.opened(obj.settings(), hsm_needed=False) as (engine, _):
            return await switch_astk(engine, account, old_name, new_name, batch)

    moved = bootstrap.run(body())
    click.echo(f"{moved} device(s) of {account} moved from ASTK {old_name} to {new_name}")
