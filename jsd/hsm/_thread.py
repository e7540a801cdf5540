"""The one thread per process that may call PKCS#11.

`cryptoki` initialises the module with ``C_Initialize(NULL)``, which switches SoftHSM2's internal locks off,
and ctypes releases the GIL inside every C call: two threads in PKCS#11 at once crash (docs/pkcs11.md §3).
So every call goes to a single thread, which also keeps the event loop free while the token works. The thread
is per process (not per `Hsm`), because the module's state is per process.

The hand-off is a `SimpleQueue` read by that thread; an asynchronous caller's result comes back on its own
event loop through ``call_soon_threadsafe`` as soon as its call returns (never held back behind the calls
queued after it, which with a network HSM would add their round trips to its latency; uvloop already folds
wake-ups that arrive together into one). A `ThreadPoolExecutor` with ``run_in_executor`` did the same with a
work item, a `concurrent.futures.Future` and its chaining to the loop's future per call: 33 against 20 µs of
CPU per call and answer one at a time, 15 against 2.4 µs with 32 in flight (docs/benchmarks.md, "Step 2,
session 4").
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["assert_hsm_thread", "call", "call_blocking", "on_hsm_thread"]

T = TypeVar("T")

# A queued call: (function, arguments, the loop's future or None, the blocking caller's future or None).
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None", "concurrent.futures.Future[Any] | None"]


class _Worker:
    """The thread and its queue; a ``None`` in the queue stops it once the calls before it are done."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: SimpleQueue[_Job | None] = SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="jsd-hsm", daemon=True)
        self.thread.start()
        self.ident = self.thread.ident

    def _serve(self) -> None:
        get = self.queue.get
        while True:
            job = get()
            if job is None:
                return
            fn, args, future, blocking = job
            if blocking is not None:
                if blocking.set_running_or_notify_cancel():
                    try:
                        blocking.set_result(fn(*args))
                    except BaseException as exc:  # handed to the caller, as an executor would
                        blocking.set_exception(exc)
            elif future is not None and not future.cancelled():  # a call cancelled before it started is dropped
                try:
                    result, error = fn(*args), None
                except BaseException as exc:
                    result, error = None, exc
                try:
                    future.get_loop().call_soon_threadsafe(_settle, future, result, error)
                except RuntimeError:
                    pass  # the loop is closed: nobody is waiting any more

    def stop(self) -> None:
        """Let the calls already queued finish, then end the thread (at interpreter exit)."""
        if self.pid == os.getpid() and self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the caller's loop: resolve the future if its caller still waits for it."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


_lock = threading.Lock()
_worker: _Worker | None = None


def _get_worker() -> _Worker:
    global _worker
    worker = _worker
    if worker is not None and worker.pid == os.getpid():
        return worker
    with _lock:
        if _worker is None or _worker.pid != os.getpid():
            # A forked child inherits the object but not the thread: start a fresh one.
            _worker = _Worker()
            atexit.register(_worker.stop)
        return _worker


def on_hsm_thread() -> bool:
    """True inside the PKCS#11 thread of this process."""
    worker = _worker
    return worker is not None and threading.get_ident() == worker.ident and worker.pid == os.getpid()


def assert_hsm_thread() -> None:
    """Guard at the top of every function that talks to the module: a mistake fails loudly, not in SoftHSM."""
    if not on_hsm_thread():
        raise RuntimeError("PKCS#11 called outside the jsd-hsm thread")


def call(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run `fn(*args)` in the PKCS#11 thread without blocking the event loop; await the answer."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    _get_worker().queue.put((fn, args, future, None))
    return future


def call_blocking(fn: Callable[..., T], *args: object) -> T:
    """Synchronous variant for CLI bootstrap code; runs inline when already in the PKCS#11 thread."""
    if on_hsm_thread():
        return fn(*args)
    blocking: concurrent.futures.Future[T] = concurrent.futures.Future()
    _get_worker().queue.put((fn, args, None, blocking))
    return blocking.result()
