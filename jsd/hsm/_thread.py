"""The one thread per process that may call PKCS#11.

`cryptoki` initialises the module with ``C_Initialize(NULL)``, which switches SoftHSM2's internal locks off,
and ctypes releases the GIL inside every C call: two threads in PKCS#11 at once crash (docs/pkcs11.md §3).
So every call goes through a single-worker executor, which also keeps the event loop free while the
token works. The executor is per process (not per `Hsm`), because the module's state is per process.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["assert_hsm_thread", "call", "call_blocking", "on_hsm_thread"]

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_owner_pid: int | None = None
_ident: int | None = None


def _remember_ident() -> None:
    global _ident
    _ident = threading.get_ident()


def _get_executor() -> ThreadPoolExecutor:
    global _executor, _owner_pid, _ident
    with _lock:
        if _executor is None or _owner_pid != os.getpid():
            # A forked child inherits the object but not the thread: start a fresh one.
            _ident = None
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsd-hsm", initializer=_remember_ident)
            _owner_pid = os.getpid()
        return _executor


def on_hsm_thread() -> bool:
    """True inside the PKCS#11 thread of this process."""
    return _ident is not None and threading.get_ident() == _ident and _owner_pid == os.getpid()


def assert_hsm_thread() -> None:
    """Guard at the top of every function that talks to the module: a mistake fails loudly, not in SoftHSM."""
    if not on_hsm_thread():
        raise RuntimeError("PKCS#11 called outside the jsd-hsm thread")


async def call(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` in the PKCS#11 thread without blocking the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_get_executor(), functools.partial(fn, *args))


def call_blocking(fn: Callable[..., T], *args: object) -> T:
    """Synchronous variant for CLI bootstrap code; runs inline when already in the PKCS#11 thread."""
    if on_hsm_thread():
        return fn(*args)
    return _get_executor().submit(fn, *args).result()
