"""The service credential: smoltbot's internal gRPC services answer only smoltbot's own services.

Every installation has one secret, 256 random bits: `SMOLTBOT_SERVICE_TOKEN` when it is set
(deployments over several machines give every service the same value, e.g. from one Kubernetes
secret), else the `service_token` file generated once into the data dir (0600 in a 0700 dir),
which every process of a one-machine install shares. Every client channel sends it as the
`smoltbot-service-credential` metadata on every call (`attach_credential`), and every server
refuses calls without it, or with another value, as UNAUTHENTICATED (`RequireServiceCredential`),
compared in constant time. Only `grpc.health.v1` is open, so that probes and `smoltbot up` can
tell whether a service is up; reflection is gated like the rest.

So another user of the machine, who can reach the loopback ports but cannot read the data dir,
can neither write traces (Ingest) nor change agents, sessions or cards in the Registry. Across
machines, TLS and mutual TLS (`smoltbot.core.tls`) still protect the link itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc

from smoltbot.core.data_dir import read_or_create_secret
from smoltbot.core.errors import Unauthenticated, grpc_status_for
from smoltbot.core.grpc_metadata import metadata_interceptors

__all__ = [
    "SERVICE_CREDENTIAL_FILE",
    "SERVICE_CREDENTIAL_METADATA",
    "RequireServiceCredential",
    "ServiceCredential",
    "ServiceCredentialError",
    "attach_credential",
    "attach_credential_sync",
]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
logger = logging.getLogger(__name__)

SERVICE_CREDENTIAL_METADATA = "smoltbot-service-credential"
SERVICE_CREDENTIAL_FILE = "service_token"
#: Methods anyone may call: liveness and readiness probes.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_MIN_CONFIGURED_LENGTH = 32
_REFUSAL_LOG_INTERVAL = 10.0
#: How long, and how many messages, a refused stream is read before its refusal is sent.
_DRAIN_SECONDS = 2.0
_DRAIN_MESSAGES = 64
_HINT = ("smoltbot's internal gRPC services answer only smoltbot's own services: give every service the "
         "same SMOLTBOT_SERVICE_TOKEN, or the same SMOLTBOT_HOME on one machine")


class ServiceCredentialError(OSError):
    """The configured service credential cannot be used (too short, not printable ASCII), or
    the data dir's credential file cannot be read or made. An OSError, so `smoltbot serve`
    reports it as a one-line start error."""


class ServiceCredential:
    """The installation's service credential, read (or generated) on first use, so that building
    a configuration does not touch the disk."""

    __slots__ = ("_home", "_value")

    def __init__(self, value: str = "", *, home: Path | None = None) -> None:
        if value:
            _check_configured(value)
        elif home is None:
            raise ValueError("a service credential needs a value or a data dir to keep one in")
        self._value = value.encode("ascii") if value else None
        self._home = None if value else home

    def __repr__(self) -> str:  # never print the secret
        source = f"file in {self._home}" if self._home is not None else "SMOLTBOT_SERVICE_TOKEN"
        return f"ServiceCredential(<hidden>, {source})"

    @property
    def value(self) -> bytes:
        if self._value is None:
            assert self._home is not None
            try:
                self._value = read_or_create_secret(self._home / SERVICE_CREDENTIAL_FILE).encode("ascii")
            except (OSError, UnicodeEncodeError) as error:
                raise ServiceCredentialError(
                    f"cannot read or create the service credential in {self._home}: {error}") from None
        return self._value

    def matches(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        if isinstance(presented, str):
            try:
                presented = presented.encode("ascii")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(presented, self.value)


def _check_configured(value: str) -> None:
    if len(value) < _MIN_CONFIGURED_LENGTH:
        raise ServiceCredentialError(
            f"SMOLTBOT_SERVICE_TOKEN must be at least {_MIN_CONFIGURED_LENGTH} characters "
            f"(got {len(value)}); make one with: python3 -c 'import secrets; print(secrets.token_hex(32))'")
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise ServiceCredentialError(
            "SMOLTBOT_SERVICE_TOKEN must be printable ASCII without surrounding spaces")


# --------------------------------------------------------------------------- server side


class RequireServiceCredential(grpc.aio.ServerInterceptor):
    """Refuses, as UNAUTHENTICATED, every call but health checks that does not carry the
    credential. The refusal keeps the method's shape (unary or streaming), so a streaming
    client gets a clean status rather than a broken stream."""

    def __init__(self, credential: ServiceCredential) -> None:
        self._credential = credential
        credential.value  # noqa: B018 - read (or create) it now: a server must not start without it
        self._refused = 0
        self._logged_at = 0.0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES) or self._credential.matches(_presented(handler_call_details)):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler
        self._note_refusal(method, _presented(handler_call_details) is not None)
        return _refusing(handler, _presented(handler_call_details) is not None)

    def _note_refusal(self, method: str, wrong: bool) -> None:
        # Throttled: a stranger hammering the port must not fill the disk with our log.
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _REFUSAL_LOG_INTERVAL:
            logger.warning("refused %d call(s) without a valid service credential (last: %s, %s)",
                           self._refused, method, "wrong credential" if wrong else "no credential")
            self._refused, self._logged_at = 0, now


def _presented(details: grpc.HandlerCallDetails) -> str | bytes | None:
    for key, value in details.invocation_metadata or ():
        if key == SERVICE_CREDENTIAL_METADATA:
            return value
    return None


def _refusing(handler: grpc.RpcMethodHandler[_Request, _Response],
              wrong: bool) -> grpc.RpcMethodHandler[Any, Any]:
    error = Unauthenticated(
        f"{'wrong' if wrong else 'missing'} service credential "
        f"({SERVICE_CREDENTIAL_METADATA} metadata): {_HINT}",
        reason="SERVICE_CREDENTIAL_INVALID" if wrong else "SERVICE_CREDENTIAL_MISSING",
    )
    status = grpc_status_for(error)

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort_with_status(status)

    async def refuse_stream(requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # Read what the client is sending (raw bytes, dropped) before refusing: a status that
        # lands while the client's grpc is writing a message is reported to it as INTERNAL
        # ("Failed execute_batch") instead of this refusal and its hint, one call in about 15.
        # Bounded, so a client that never stops sending is still refused.
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                received = 0
                async for _ in requests:
                    received += 1
                    if received >= _DRAIN_MESSAGES:
                        break
        except TimeoutError:
            pass
        await context.abort_with_status(status)

    # No deserializers: the refused request is never parsed.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


# --------------------------------------------------------------------------- client side


def attach_credential(credential: ServiceCredential) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio` channels that send the credential on every call."""
    value = credential.value.decode("ascii")
    return metadata_interceptors(SERVICE_CREDENTIAL_METADATA, lambda: value)


class _SyncCallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _AttachCredentialSync(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, credential: ServiceCredential) -> None:
        self._credential = credential

    def _details(self, details: Any) -> grpc.ClientCallDetails:
        pairs = [(key, value) for key, value in (details.metadata or ())
                 if key != SERVICE_CREDENTIAL_METADATA]
        pairs.append((SERVICE_CREDENTIAL_METADATA, self._credential.value.decode("ascii")))
        return _SyncCallDetails(  # type: ignore[return-value]
            details.method, details.timeout, pairs, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def attach_credential_sync(channel: grpc.Channel, credential: ServiceCredential) -> grpc.Channel:
    """A synchronous channel that sends the credential on every call."""
    return grpc.intercept_channel(channel, _AttachCredentialSync(credential))
