"""How `smoltbot serve gateway` runs: one gateway process, or several sharing one port.

With `gateway_processes` = 1 the command runs the gateway itself. With N > 1 it becomes a small
supervisor: it starts N gateway processes (`smoltbot serve gateway --pool-member`), each of which
binds the same host:port with SO_REUSEPORT, so the kernel spreads incoming connections over
them (a connection stays with the process that accepted it). The supervisor restarts a process
that dies; on SIGINT/SIGTERM it stops them all gracefully (each finishes its calls in flight and
flushes its spool). Each process owns a spool slot of its own (slots.py); a slot whose process
is gone is shipped by a sibling or by the restarted process, so nothing spooled is lost.

Why processes rather than threads: the relay is CPU-bound Python, so one event loop per core
is how the gateway scales (docs/benchmarks.md, "Gateway processes"). SO_REUSEPORT is Linux's.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from smoltbot.core.settings import Settings

__all__ = ["GatewayStartError", "run", "supervise"]

logger = logging.getLogger(__name__)

#: A process that dies this soon after starting, this many times in a row, is not restarted again:
#: something (a port taken, a bad setting) stops every start.
_EARLY_EXIT_SECONDS = 5.0
_EARLY_EXITS_TO_GIVE_UP = 5
#: The gateway's own shutdown grace (30 s for calls in flight) plus its spool flush.
_STOP_GRACE = 40.0
_PR_SET_PDEATHSIG = 1


class GatewayStartError(RuntimeError):
    """A setting this machine cannot honour (the message says which and what to do)."""


def run(settings: Settings, *, pool_member: bool = False) -> int:
    """Runs the gateway in the foreground until SIGINT/SIGTERM; returns the exit code."""
    if settings.gateway_processes > 1 and not pool_member:
        return supervise(settings)
    from .app import serve

    coroutine = serve(settings, reuse_port=pool_member)
    if settings.gateway_event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            coroutine.close()
            raise GatewayStartError("SMOLTBOT_GATEWAY_EVENT_LOOP=uvloop but uvloop is not installed: "
                               "pip install uvloop, or set it to asyncio") from None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    else:
        asyncio.run(coroutine)
    return 0


def _reserve(host: str, port: int) -> socket.socket:
    """A SO_REUSEPORT socket bound (not listening: it takes no connections) to host:port, held by
    the supervisor so that the port, if 0 was asked for, stays the pool's, and so that a port
    taken by something else is reported once, here, rather than by every process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((host, port))
    except OSError as error:
        reservation.close()
        raise OSError(error.errno, f"gateway port {host}:{port} is not free for SO_REUSEPORT "
                                   f"({error.strerror}); stop what uses it or pick another port") from None
    if port:
        # Another SO_REUSEPORT listener of this user (a gateway pool started twice) would let the
        # bind through and silently share the port: refuse when something already answers there.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex((host, port)) == 0:
                reservation.close()
                raise OSError(f"gateway port {host}:{port} is already in use (something answers there); "
                              "stop it or pick another port")
    return reservation


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, so a killed supervisor does
    not leave gateway processes serving the port on their own."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _Pool:
    def __init__(self, argv: list[str], env: dict[str, str], size: int) -> None:
        self.argv = argv
        self.env = env
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size
        self.started = [0.0] * size
        self.early_exits = [0] * size

    def start(self, index: int) -> None:
        self.processes[index] = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL,
            # Their own session: a terminal's Ctrl-C reaches them through the supervisor, once.
            start_new_session=True, preexec_fn=_die_with_parent,  # prctl only: safe before exec
        )
        self.started[index] = time.monotonic()

    def check(self) -> bool:
        """Restarts any process that died; False when one keeps dying at start."""
        for index, process in enumerate(self.processes):
            if process is None or process.poll() is None:
                continue
            lived = time.monotonic() - self.started[index]
            self.early_exits[index] = self.early_exits[index] + 1 if lived < _EARLY_EXIT_SECONDS else 0
            if self.early_exits[index] >= _EARLY_EXITS_TO_GIVE_UP:
                logger.error("gateway process %d exited at start %d times in a row (code %s); giving up",
                             process.pid, self.early_exits[index], process.returncode)
                return False
            logger.warning("gateway process %d exited (code %s); starting another (its spool is shipped "
                           "by the new one or a sibling)", process.pid, process.returncode)
            self.start(index)
        return True

    def stop(self, grace: float = _STOP_GRACE) -> None:
        running = [process for process in self.processes if process is not None and process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("gateway process %d did not stop within %ss; killing it", process.pid, grace)
                process.kill()
                process.wait()


def supervise(settings: Settings, argv: list[str] | None = None) -> int:
    """Runs `gateway_processes` gateway processes on one port until SIGINT/SIGTERM."""
    if sys.platform != "linux" or not hasattr(socket, "SO_REUSEPORT"):
        raise GatewayStartError("SMOLTBOT_GATEWAY_PROCESSES > 1 needs Linux (SO_REUSEPORT); set it to 1 here")
    reservation = _reserve(settings.gateway_host, settings.gateway_port)
    port = int(reservation.getsockname()[1])
    env = dict(os.environ, SMOLTBOT_GATEWAY_HOST=settings.gateway_host, SMOLTBOT_GATEWAY_PORT=str(port),
               SMOLTBOT_HOME=str(settings.home))
    pool = _Pool(argv or [sys.executable, "-m", "smoltbot.cli.main", "serve", "gateway", "--pool-member"],
                 env, settings.gateway_processes)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for index in range(settings.gateway_processes):
            pool.start(index)
        host = f"[{settings.gateway_host}]" if ":" in settings.gateway_host else settings.gateway_host
        logger.info("gateway: %d processes on http://%s:%d (pids %s)", settings.gateway_processes, host, port,
                    ", ".join(str(process.pid) for process in pool.processes if process is not None))
        while not stopping:
            if not pool.check():
                code = 1
                break
            time.sleep(0.2)
    finally:
        logger.info("gateway: stopping %d processes", settings.gateway_processes)
        pool.stop()
        reservation.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
