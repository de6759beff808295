"""A small process pool that runs `pipeline.compute_many` beside the event loop.

Python runs one thread at a time, so on a machine with two cores this is what lets the
Observer use the second one: the event loop keeps intake, gRPC and the database busy while a
worker process reads and analyses exchanges.

Forkserver start: never fork a process that has gRPC and database threads. The workers end
with the Observer: each asks the kernel for SIGKILL when its parent (the forkserver, which
exits when the Observer's end of its pipe closes) dies, and checks at start that this chain
is still alive. Without that, a SIGKILLed Observer left them blocked for ever on a queue they
hold both ends of.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from smoltbot.observer.pipeline import Job, JobResult, compute_many

__all__ = ["CpuPool", "default_workers"]

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker processes for a machine: one core stays with the event loop."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


_PR_SET_PDEATHSIG = 1


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _end_with_observer(observer_pid: int) -> None:
    """Worker initializer: this process gets SIGKILL when its parent dies, and ends now if the
    Observer is already gone (it may have died before the request reached the kernel)."""
    libc_name = ctypes.util.find_library("c") if sys.platform == "linux" else None
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    parent = os.getppid()
    # Forkserver start: our parent is the forkserver, whose parent is the Observer.
    if parent != observer_pid and _parent_of(parent) != observer_pid:
        os._exit(0)


class CpuPool:
    """Worker processes for `compute_many`. Started on first use; `close()` waits for them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        #: Batches handed to the workers and not yet back.
        self.running = 0
        #: Batches the workers computed (for tests and benchmarks).
        self.batches = 0

    @property
    def idle(self) -> bool:
        return self.running == 0

    def warm(self) -> None:
        """Starts the workers now (a pool spawns them on its first job) without waiting for
        them: an exchange computed in the main process meanwhile does not delay the pool that
        the next burst needs."""
        if self._pool is None and not self._closed:
            self._executor().submit(os.getpid).add_done_callback(lambda done: done.exception())

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["smoltbot.observer.pipeline"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                             initializer=_end_with_observer, initargs=(os.getpid(),))
        return self._pool

    async def run(self, jobs: list[Job]) -> list[JobResult]:
        self.running += 1
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor(), compute_many, jobs)
        finally:
            self.running -= 1
        self.batches += 1
        return results

    async def close(self, grace: float = 10.0) -> None:
        """Stops the workers: queued jobs are cancelled, running ones get `grace` seconds, then
        any worker still there is killed (a stop must never hang on a stuck worker: its exchange
        is still leased and is taken up again by the next claim)."""
        self._closed = True
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        # ProcessPoolExecutor keeps its worker processes in a private dict; a copy taken before
        # shutdown is what we can wait on and kill.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(process.join, remaining)
            if process.is_alive():
                logger.warning("observer worker %s did not stop within %.0f s: killed", process.pid, grace)
                process.kill()
                await asyncio.to_thread(process.join, 1.0)
