"""The public REST API (/v1) and the dashboard: a FastAPI app with no data of its own, which
translates every request onto the Registry and Observer gRPC services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smoltbot.api.backends import Backends
from smoltbot.api.credential_check import CredentialCheck
from smoltbot.api.dashboard_views import configure_templates
from smoltbot.api.errors import error_body, install_error_handlers
from smoltbot.api.metrics import METRICS_CONTENT_TYPE, ApiMetrics, MeasureRequests
from smoltbot.api.routers import agents, alerts, cards, dashboard, health, integrity, sessions, traces, usage
from smoltbot.api.schemas import ErrorResponse
from smoltbot.core.identity import load_hash_secret
from smoltbot.core.request_ids import REQUEST_ID, clean_request_id
from smoltbot.core.settings import Settings
from smoltbot.core.signals import stop_signals
from smoltbot.core.tls import client_tls

__all__ = ["RunningApi", "create_app", "serve", "start_api"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: Deadline of one backend call; reads are small and indexed.
BACKEND_TIMEOUT = 10.0
_SHUTDOWN_GRACE = 5  # seconds; uvicorn takes whole ones
# Everything the dashboard loads comes from this origin; the header makes that a promise.
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

_DESCRIPTION = """\
Read what smoltbot saw: agents, their AAP decision traces, integrity scores, drift alerts,
sessions and alignment cards.

**Reads are public.** Every write needs the agent's own credential (`x-api-key` or
`Authorization: Bearer`), which is hashed and dropped: missing gives 401, another agent's 403.

**Lists** take `limit` (1..1000, default 50) and `cursor`, and return
`{"items": [...], "next_cursor": "..." | null}`.

**Errors** all have one body: `{"error": {"code", "status", "reason", "message", "field"}}`.
"""


class _RequestContext:
    """Gives every request an id (the caller's `x-request-id` when sane), echoes it back, and
    adds the security headers that keep the dashboard on its own origin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = clean_request_id(incoming) or uuid.uuid4().hex

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-security-policy", _CSP.encode()),
                    (b"referrer-policy", b"same-origin"),
                ]
                message["headers"] = headers
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            REQUEST_ID.reset(token)


class _BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, before they are read whole or parsed.

    A declared Content-Length over the limit is answered at once, without reading the body. A
    body without one (chunked) is counted as it arrives: the read that crosses the limit raises
    the 413 inside the app (FastAPI lets an HTTPException out of its body reading), so at most
    `limit` bytes plus one chunk are ever held. The connection is closed after a 413, so the rest
    of a body nobody reads is not waited for. (Starlette's own max_body_size answers some of
    these cases in plain text, off the one error shape.)
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return (f"the request body is larger than this API accepts ({self.limit} bytes, "
                "SMOLTBOT_API_MAX_REQUEST_BYTES); send a smaller one")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            response = JSONResponse(error_body(413, message=self._message(), reason="BODY_TOO_LARGE"),
                                    status_code=413, headers={"connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, detail=self._message(), headers={"connection": "close"})
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length before we see it
    return None


class _RelativeRedirects:
    """Makes every Location the app sends root-relative. Starlette builds the trailing-slash
    redirects (and `url_for`) from the request's Host header, which the client chooses: a
    forged Host would turn them into redirects to another site. The path is ours (under
    `root_path`, which routes never see), and the browser resolves it against the origin it used."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(name, self._relative(value) if name.lower() == b"location" else value)
                                      for name, value in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, send_relative)

    def _relative(self, location: bytes) -> bytes:
        parts = urlsplit(location.decode("latin-1"))
        if not parts.scheme and not parts.netloc:
            return location
        path = parts.path or "/"
        if self.root_path and path != self.root_path and not path.startswith(self.root_path + "/"):
            path = self.root_path + path
        # "//host" would still be another origin to a browser.
        path = "/" + path.lstrip("/")
        return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


class _RootPath:
    """Serves the app under `root_path` behind a reverse proxy, whether the proxy strips the
    prefix or forwards it: routes, static files and error handlers see the path without it;
    templates put it back with the `root` global, and `_RelativeRedirects` into redirects."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == self.root_path or path.startswith(self.root_path + "/"):
                path = path[len(self.root_path):] or "/"
            scope = dict(scope, path=path, raw_path=path.encode(), app_root_path=self.root_path)
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, registry_address: str | None = None,
               observer_address: str | None = None) -> FastAPI:
    """The app. Channels to the services are opened by its lifespan and closed after it."""
    registry_target = registry_address or settings.registry_address
    observer_target = observer_address or settings.observer_address
    tls = client_tls(settings, registry_target, observer_target)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.hash_secret = load_hash_secret(settings.home, settings.hash_secret)
        backends = Backends.open(registry_target, observer_target, tls, BACKEND_TIMEOUT)
        app.state.backends = backends
        try:
            yield
        finally:
            app.state.backends = None
            await backends.close(grace=1.0)

    app = FastAPI(
        title="smoltbot",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its assets from a CDN; /openapi.json is the reference.
        redoc_url=None,
        responses={"default": {"model": ErrorResponse, "description": "An error, in the one error shape."}},
    )
    app.state.settings = settings
    app.state.backends = None
    app.state.credential_check = CredentialCheck(settings.upstream_url, timeout=BACKEND_TIMEOUT,
                                                 connect_timeout=settings.upstream_connect_timeout)
    app.state.templates = Jinja2Templates(directory=_HERE / "templates")
    configure_templates(app.state.templates)
    app.state.templates.env.globals["root"] = settings.root_path  # prefix of the dashboard's links
    install_error_handlers(app)
    metrics = app.state.metrics = ApiMetrics()
    # Innermost, so it sees the route the router matched (its template is the label).
    app.add_middleware(MeasureRequests, metrics=metrics)
    app.add_middleware(_BodyLimit, limit=settings.api_max_request_bytes)
    app.add_middleware(_RelativeRedirects, root_path=settings.root_path)
    app.add_middleware(_RequestContext)
    if settings.root_path:
        app.add_middleware(_RootPath, root_path=settings.root_path)
    for module in (agents, traces, integrity, cards, usage, sessions, alerts, health, dashboard):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of the API's own metrics."""
        return Response(metrics.render(), headers={"content-type": METRICS_CONTENT_TYPE})

    return app


# --------------------------------------------------------------------------- running it

class _Server(uvicorn.Server):
    # `serve()` below owns SIGINT/SIGTERM; uvicorn must not install (and later re-raise) its own.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningApi:
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stops accepting; requests in flight get the grace period, then the channels close."""
        self.server.should_exit = True
        await self.task


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def start_api(settings: Settings, host: str = "127.0.0.1", port: int = 0, *,
                    registry_address: str | None = None, observer_address: str | None = None) -> RunningApi:
    """Runs the app under uvicorn on host:port (0: any free port) until `stop()`."""
    app = create_app(settings, registry_address=registry_address, observer_address=observer_address)
    sock = _bind(host, port)
    config = uvicorn.Config(app, log_config=None, lifespan="on", access_log=False,
                            timeout_graceful_shutdown=_SHUTDOWN_GRACE,
                            proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            await task
            raise RuntimeError("the API did not start; see the log above")
        await asyncio.sleep(0.01)
    return RunningApi(server, task, host, sock.getsockname()[1])


async def serve(settings: Settings) -> None:
    """Runs the API and dashboard on settings.api_host:api_port until SIGINT/SIGTERM."""
    running = await start_api(settings, settings.api_host, settings.api_port)
    logger.info("API listening on %s (dashboard %s/, reference %s/openapi.json)",
                running.base_url, running.base_url, running.base_url)
    try:
        async with stop_signals() as stop:
            stopped = asyncio.ensure_future(stop.wait())
            try:
                # Either a signal, or uvicorn ending on its own (it logs why).
                await asyncio.wait([stopped, running.task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
    finally:
        logger.info("API stopping")
        await running.stop()
        logger.info("API stopped")
