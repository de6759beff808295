"""`smoltbot serve <service>` (one service, for deployment) and `smoltbot up` (the whole stack).

`up` runs each service as its own `smoltbot serve` child process, the way a deployment
does, so one crashing service cannot take the others' state with it, and the gateway gets
a core of its own. It waits until every service answers its health check, prints where
things are, and on Ctrl-C/SIGTERM stops them in dependency order: the gateway first (it
flushes its spool to the observer), then the API, the observer and the registry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from smoltbot.core.data_dir import make_private
from smoltbot.core.request_ids import LOG_FORMAT, RequestIdLogFilter
from smoltbot.core.settings import Settings, load_settings
from smoltbot.core.tls import TlsConfig

__all__ = ["Service", "register"]

logger = logging.getLogger(__name__)


class Service(enum.StrEnum):
    registry = "registry"
    observer = "observer"
    gateway = "gateway"
    api = "api"


def configure_logging(level: str) -> None:
    """The process's one log handler (stderr), with the request id of each line's request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise _fail(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def _settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:  # names the variable
        raise _fail(f"invalid configuration: {error}") from None


def _check_port_free(host: str, port: int, what: str) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise _fail(
                f"{what} port {host}:{port} is already in use; stop what uses it or pick another port"
            ) from None


def _private_home(settings: Settings) -> None:
    """The data dir is the user's alone (0700, files 0600; see core/data_dir.py), before any
    service writes to it."""
    try:
        make_private(settings.home)
    except OSError as error:
        raise _fail(f"cannot make the data dir {settings.home} private: {error.strerror or error}") from None


def _run_service(service: Service, settings: Settings, *, pool_member: bool = False) -> None:
    configure_logging(settings.log_level)
    _private_home(settings)
    code = 0
    try:
        if service is Service.gateway:
            # One process, or a supervisor of several on one port (gateway_processes).
            from smoltbot.gateway.processes import GatewayStartError, run

            try:
                code = run(settings, pool_member=pool_member)
            except GatewayStartError as error:
                raise _fail(f"gateway: {error}") from None
        else:
            asyncio.run(_service_runner(service)(settings))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        raise _fail(f"{service.value}: {error}") from None
    if code:
        raise typer.Exit(code=code)


def _service_runner(service: Service) -> Callable[[Settings], Coroutine[object, object, None]]:
    # Imported lazily: `smoltbot status` should not pay for importing every service.
    if service is Service.registry:
        from smoltbot.registry.server import serve
    elif service is Service.observer:
        from smoltbot.observer.server import serve
    else:
        from smoltbot.api.app import serve
    return serve


def serve_command(
    service: Annotated[Service, typer.Argument(help="Which service to run.")],
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to listen on (registry/observer). Default: SMOLTBOT_<SERVICE>_ADDRESS."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (gateway/api).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (gateway/api).")] = None,
    pool_member: Annotated[
        bool, typer.Option(hidden=True, help="One of gateway_processes (internal).")
    ] = False,
) -> None:
    """Run one service in the foreground (for deployment)."""
    overrides: dict[str, object] = {}
    if listen is not None:
        if service not in (Service.registry, Service.observer):
            raise _fail("--listen is for registry and observer; use --host/--port for gateway and api")
        _split_listen(listen)
        overrides[f"{service.value}_address"] = listen
    if host is not None or port is not None:
        if service not in (Service.gateway, Service.api):
            raise _fail("--host/--port are for gateway and api; use --listen for registry and observer")
        if host is not None:
            overrides[f"{service.value}_host"] = host
        if port is not None:
            overrides[f"{service.value}_port"] = port
    settings = _settings_or_exit(**overrides)
    _run_service(service, settings, pool_member=pool_member and service is Service.gateway)


# --------------------------------------------------------------------------- up


@dataclass
class _Child:
    service: Service
    process: subprocess.Popen[bytes]
    log_path: Path
    health: Callable[[], bool]
    started: float = field(default_factory=time.monotonic)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _grpc_serving(address: str, tls: TlsConfig | None = None) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2

    from smoltbot.core.grpc_client import health_check_sync, open_sync_channel

    with open_sync_channel(address, tls) as channel:
        try:
            reply = health_check_sync(channel)(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Stack:
    """The child processes of `smoltbot up`, started and stopped in dependency order."""

    START_ORDER = (Service.registry, Service.observer, Service.api, Service.gateway)
    STOP_ORDER = (Service.gateway, Service.api, Service.observer, Service.registry)

    def __init__(self, settings: Settings, env: dict[str, str], log_dir: Path) -> None:
        self.settings = settings
        self.env = env
        self.log_dir = log_dir
        self.children: dict[Service, _Child] = {}

    def start(self, service: Service, health: Callable[[], bool], timeout: float = 60.0) -> None:
        log_path = self.log_dir / f"{service.value}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "smoltbot.cli.main", "serve", service.value],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C reaches them through us, in order
        )
        log_file.close()
        child = _Child(service, process, log_path, health)
        self.children[service] = child
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise _fail(
                    f"{service.value} exited at start (code {process.returncode}):\n{_tail(log_path)}"
                )
            if health():
                return
            time.sleep(0.1)
        raise _fail(f"{service.value} did not become healthy within {timeout:.0f}s:\n{_tail(log_path)}")

    def dead_child(self) -> _Child | None:
        for child in self.children.values():
            if child.process.poll() is not None:
                return child
        return None

    def stop(self, grace: float = 20.0) -> None:
        for service in self.STOP_ORDER:
            child = self.children.get(service)
            if child is None or child.process.poll() is not None:
                continue
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %ss; killing it", service.value, grace)
                child.process.kill()
                child.process.wait()


def up_command(
    gateway_port: Annotated[
        int | None, typer.Option(envvar="SMOLTBOT_GATEWAY_PORT", help="Gateway port (0: any free port).")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option(envvar="SMOLTBOT_API_PORT", help="API/dashboard port.")
    ] = None,
    upstream_url: Annotated[
        str | None, typer.Option(envvar="SMOLTBOT_UPSTREAM_URL", help="Where model calls are forwarded.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="SMOLTBOT_DATABASE_URL", help="Database (default: SQLite in home).")
    ] = None,
    home: Annotated[Path | None, typer.Option(envvar="SMOLTBOT_HOME", help="Data directory.")] = None,
) -> None:
    """Run the whole system locally: registry, observer, gateway and API on loopback."""
    settings = _settings_or_exit(
        gateway_port=gateway_port, api_port=api_port, upstream_url=upstream_url,
        database_url=database_url, home=home,
    )
    host = "127.0.0.1"
    registry_host, registry_port = _split_listen(settings.registry_address)
    observer_host, observer_port = _split_listen(settings.observer_address)
    for what, bind_host, port in (
        ("gateway", settings.gateway_host, settings.gateway_port),
        ("API", settings.api_host, settings.api_port),
        ("registry", registry_host, registry_port),
        ("observer", observer_host, observer_port),
    ):
        _check_port_free(bind_host, port, what)
    ports = {
        "gateway": settings.gateway_port or _free_port(host),
        "api": settings.api_port or _free_port(host),
        "registry": registry_port or _free_port(host),
        "observer": observer_port or _free_port(host),
    }
    registry_address = f"{registry_host}:{ports['registry']}"
    observer_address = f"{observer_host}:{ports['observer']}"
    # The gRPC services' /metrics ports: on a free loopback port unless configured (0: off).
    metrics_ports = {
        name: getattr(settings, f"{name}_metrics_port")
        if f"{name}_metrics_port" in settings.model_fields_set else _free_port(settings.metrics_host)
        for name in ("registry", "observer")
    }
    _private_home(settings)
    log_dir = settings.home / "logs"
    log_dir.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({
        "SMOLTBOT_HOME": str(settings.home),
        "SMOLTBOT_REGISTRY_ADDRESS": registry_address,
        "SMOLTBOT_OBSERVER_ADDRESS": observer_address,
        "SMOLTBOT_GATEWAY_HOST": settings.gateway_host,
        "SMOLTBOT_GATEWAY_PORT": str(ports["gateway"]),
        "SMOLTBOT_API_HOST": settings.api_host,
        "SMOLTBOT_API_PORT": str(ports["api"]),
        "SMOLTBOT_UPSTREAM_URL": settings.upstream_url,
        "SMOLTBOT_METRICS_HOST": settings.metrics_host,
        "SMOLTBOT_REGISTRY_METRICS_PORT": str(metrics_ports["registry"]),
        "SMOLTBOT_OBSERVER_METRICS_PORT": str(metrics_ports["observer"]),
    })
    if settings.database_url:
        env["SMOLTBOT_DATABASE_URL"] = settings.database_url
    gateway_url = f"http://{settings.gateway_host}:{ports['gateway']}"
    api_url = f"http://{settings.api_host}:{ports['api']}"
    metrics_host = f"[{settings.metrics_host}]" if ":" in settings.metrics_host else settings.metrics_host
    # With several gateway processes each scrape reaches one of them (its pid is a label).
    gateway_metrics = "gateway" if settings.gateway_processes == 1 else \
        f"gateway: one of its {settings.gateway_processes} processes per scrape"
    metrics_urls = [f"{gateway_url}/metrics ({gateway_metrics})", f"{api_url}/metrics (api)"] + [
        f"http://{metrics_host}:{port}/metrics ({name})" if port else f"off ({name})"
        for name, port in metrics_ports.items()
    ]

    configure_logging(settings.log_level)
    # The readiness polls below are ours, not the user's business.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = _Stack(settings, env, log_dir)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    try:
        tls = TlsConfig.from_settings(settings)
    except OSError as error:
        raise _fail(str(error)) from None
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        health_checks = {
            Service.registry: lambda: _grpc_serving(registry_address, tls),
            Service.observer: lambda: _grpc_serving(observer_address, tls),
            Service.api: lambda: _http_ok(f"{api_url}/health"),
            Service.gateway: lambda: _http_ok(f"{gateway_url}/health"),
        }
        for service in _Stack.START_ORDER:
            if stopping:
                break
            stack.start(service, health_checks[service])
        if not stopping:
            typer.echo("smoltbot is up.")
            processes = f" ({settings.gateway_processes} processes)" if settings.gateway_processes > 1 else ""
            typer.echo(f"  gateway:   {gateway_url}/anthropic{processes}")
            typer.echo(f"  dashboard: {api_url}/")
            typer.echo(f"  api:       {api_url}/v1")
            typer.echo(f"  metrics:   {metrics_urls[0]}")
            for url in metrics_urls[1:]:
                typer.echo(f"             {url}")
            typer.echo(f"  data:      {settings.home} (logs in {log_dir})")
            typer.echo("Point your agent at it:")
            typer.echo(f"  export ANTHROPIC_BASE_URL={gateway_url}/anthropic")
            typer.echo("Press Ctrl-C to stop.", err=True)
            sys.stdout.flush()
        while not stopping:
            dead = stack.dead_child()
            if dead is not None:
                typer.echo(
                    f"error: {dead.service.value} stopped unexpectedly (code {dead.process.returncode}); "
                    f"stopping the stack. Last lines of {dead.log_path}:\n{_tail(dead.log_path)}",
                    err=True,
                )
                stack.stop()
                raise typer.Exit(code=1)
            time.sleep(0.2)
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("smoltbot stopped.", err=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("up")(up_command)
