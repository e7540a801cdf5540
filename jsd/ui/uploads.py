"""Device-maker uploads: a CSV / JSON Lines file imported in the background with progress in the database.

The import itself is the ownership service's (all or nothing, refused rows with line numbers). Progress and
the outcome go to the database so any worker answers the progress page. The answer lines (owner tokens,
generated keys) are kept only encrypted (AES-GCM) under a key that lives in the uploader's cookie, and the
ciphertext is deleted when the tokens file is downloaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jsd.api import render as rest_render
from jsd.ownership import Ownership, Principal
from jsd.ownership.imports import RawRow, csv_rows, jsonl_rows
from jsd.ownership.model import ImportedDevice, OwnershipError
from jsd.registry.console import ConsoleStore

__all__ = ["decrypt", "encrypt", "run_upload", "start_upload"]

log = logging.getLogger("jsd.ui")
PROGRESS_EVERY = 0.3  # seconds between two progress writes
STOPPED = "The daemon stopped during this import. A file is stored whole or not at all: the device list shows which."
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def encrypt(key: bytes, plain: bytes, job_id: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plain, job_id.encode())


def decrypt(key: bytes, sealed: bytes, job_id: str) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], job_id.encode())


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


async def _chunks(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


async def start_upload(
    store: ConsoleStore, service: Ownership, p: Principal, session_hash: str, filename: str, data: bytes
) -> tuple[str, bytes, asyncio.Task[None]]:
    """Record the job and start it; returns the job id, the result key (for the cookie) and the task."""
    job_id = secrets.token_hex(16)
    key = AESGCM.generate_key(bit_length=128)
    lines = _lines(data)
    is_csv = filename.lower().endswith(".csv") or (bool(lines) and not lines[0].lstrip().startswith(b"{"))
    total = max(0, sum(1 for line in lines if line.strip()) - (1 if is_csv else 0))
    await store.create_job(job_id, p.account, session_hash, total)
    task = asyncio.create_task(run_upload(store, service, p, job_id, key, lines, is_csv))
    return job_id, key, task


async def run_upload(
    store: ConsoleStore,
    service: Ownership,
    p: Principal,
    job_id: str,
    key: bytes,
    lines: list[bytes],
    is_csv: bool,
) -> None:
    done = 0
    last = time.monotonic()

    async def counted(rows: AsyncIterator[RawRow]) -> AsyncIterator[RawRow]:
        nonlocal done, last
        async for row in rows:
            yield row
            done += 1
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                await store.job_progress(job_id, done)

    reader = csv_rows if is_csv else jsonl_rows
    started = time.monotonic()
    try:
        imported: list[ImportedDevice] = await service.devices.import_devices(p, counted(reader(_chunks(lines))))
    except asyncio.CancelledError:
        # The daemon is stopping. The import's one transaction was rolled back, unless it had committed just
        # before: the job says so, instead of staying "running" for ever.
        await store.finish_job(job_id, "failed", {"detail": STOPPED}, None)
        raise
    except OwnershipError as exc:
        summary = {
            "detail": exc.detail,
            "error_count": exc.error_count,
            "errors": [e.as_dict() for e in exc.errors],
            "seconds": round(time.monotonic() - started, 1),
        }
        await store.finish_job(job_id, "refused", summary, None)
        return
    except Exception as exc:  # noqa: BLE001 - the job must end visibly; the message may quote data
        log.error("console upload failed: %s", type(exc).__name__)
        await store.finish_job(job_id, "failed", {"detail": "an internal error stopped the import"}, None)
        return
    # Committed: the owner tokens exist only in `imported` now, so a stop does not cut the job's record short.
    finishing = asyncio.ensure_future(_finish(store, job_id, key, done, started, imported))
    try:
        await asyncio.shield(finishing)
    except asyncio.CancelledError:
        await finishing
        raise


async def _finish(
    store: ConsoleStore, job_id: str, key: bytes, done: int, started: float, imported: list[ImportedDevice]
) -> None:
    created = sum(1 for item in imported if item.created)
    answer = "".join(json.dumps(rest_render.imported_device(item), separators=(",", ":")) + "\n" for item in imported)
    answer += json.dumps({"summary": {"created": created, "unchanged": len(imported) - created}}) + "\n"
    summary = {
        "created": created,
        "unchanged": len(imported) - created,
        "seconds": round(time.monotonic() - started, 1),
    }
    sealed = encrypt(key, answer.encode(), job_id) if created else None
    await store.job_progress(job_id, done)
    await store.finish_job(job_id, "done", summary, sealed)
