"""FastAPI dependencies as `Annotated` aliases: the gRPC backends, the caller's credential hash,
and validated path/query parameters. Tests swap the backends with `dependency_overrides`."""

from __future__ import annotations

import contextvars
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import timestamp_pb2

from smoltbot.api.credential_check import CredentialCheck
from smoltbot.api.errors import BackendError
from smoltbot.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from smoltbot.core.identity import agent_hash, credential_from_headers
from smoltbot.v1 import observer_service_pb2_grpc, registry_service_pb2_grpc

__all__ = [
    "AGENT_ID_PATTERN",
    "REQUEST_ID",
    "SESSION_ID_PATTERN",
    "TRACE_ID_PATTERN",
    "AgentIdPath",
    "Backend",
    "CallerHash",
    "CredentialChecker",
    "Cursor",
    "IdentityHash",
    "Limit",
    "Observer",
    "Registry",
    "require_owner",
    "to_timestamp",
]

logger = logging.getLogger(__name__)

AGENT_ID_PATTERN = r"^smolt-[0-9a-f]{8,64}$"
#: Trace ids are derived from exchange ids; session ids may be named by clients.
TRACE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
TOOL_USE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$"

#: The id of the request being served; sent along to the gRPC services as metadata.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("smoltbot_api_request_id", default="")


class Backend:
    """One gRPC service as the API uses it: stub calls get a deadline and the request id, and
    fail as `BackendError` naming the service, so an outage reads "the registry is unavailable".

    `await registry.GetAgent(request)` calls the stub's method of that name.
    """

    def __init__(self, name: str, address: str, channel: grpc.aio.Channel, stub: Any, timeout: float) -> None:
        self.name = name
        self.address = address
        self.channel = channel
        self.stub = stub
        self.timeout = timeout

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return functools.partial(self._call, method)

    async def _call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        metadata = (("x-request-id", REQUEST_ID.get()),) if REQUEST_ID.get() else None
        try:
            return await getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise BackendError(self.name, self.address, error.code(), error.details() or "", error) from None
        except grpc.aio.UsageError as error:  # the channel was closed under us (shutdown)
            raise BackendError(self.name, self.address, grpc.StatusCode.UNAVAILABLE, str(error)) from None


@dataclass
class Backends:
    registry: Backend
    observer: Backend

    @classmethod
    def open(cls, registry_channel: grpc.aio.Channel, registry_address: str,
             observer_channel: grpc.aio.Channel, observer_address: str, timeout: float) -> Backends:
        return cls(
            registry=Backend("registry", registry_address, registry_channel,
                             registry_service_pb2_grpc.RegistryServiceStub(registry_channel), timeout),
            observer=Backend("observer", observer_address, observer_channel,
                             observer_service_pb2_grpc.ObserverServiceStub(observer_channel), timeout),
        )


def get_backends(request: Request) -> Backends:
    backends: Backends | None = getattr(request.app.state, "backends", None)
    if backends is None:  # the lifespan did not run (or has ended)
        raise BackendError("registry", "", grpc.StatusCode.UNAVAILABLE, "API not started")
    return backends


def get_registry(backends: Annotated[Backends, Depends(get_backends)]) -> Backend:
    return backends.registry


def get_observer(backends: Annotated[Backends, Depends(get_backends)]) -> Backend:
    return backends.observer


Registry = Annotated[Backend, Depends(get_registry)]
Observer = Annotated[Backend, Depends(get_observer)]

# Declared for the OpenAPI document (security schemes); the credential itself is read with
# core.identity's one rule, so the API and the gateway agree on what a credential is.
_api_key_scheme = APIKeyHeader(name="x-api-key", auto_error=False,
                               description="The agent's credential (the API key it calls Anthropic with).")
_bearer_scheme = HTTPBearer(auto_error=False, description="The agent's credential as a Bearer token.")


def _hash_of_request(request: Request) -> str:
    credential = credential_from_headers(request.headers)
    if credential is None:
        raise Unauthenticated(
            "this call needs the agent's credential in x-api-key or Authorization: Bearer",
            reason="CREDENTIAL_MISSING",
        )
    secret: bytes = request.app.state.hash_secret
    return agent_hash(credential, secret)


def get_caller_hash(
    request: Request,
    _api_key: Annotated[str | None, Depends(_api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> str:
    """The agent hash of the caller's credential, as proof of ownership for a write. The
    credential is dropped here."""
    return _hash_of_request(request)


def get_identity_hash(
    request: Request,
    _api_key: Annotated[str | None, Header(alias="x-api-key", description="The agent's credential.")] = None,
    _authorization: Annotated[str | None, Header(alias="authorization",
                                                 description="`Bearer <the agent's credential>`.")] = None,
) -> str:
    """The agent hash of a credential that names an agent rather than proves access: any
    credential is some agent's, so there is no "wrong" one (hence no security scheme)."""
    return _hash_of_request(request)


CallerHash = Annotated[str, Depends(get_caller_hash)]
IdentityHash = Annotated[str, Depends(get_identity_hash)]


def get_credential_check(request: Request) -> CredentialCheck:
    check: CredentialCheck = request.app.state.credential_check
    return check


CredentialChecker = Annotated[CredentialCheck, Depends(get_credential_check)]




def require_owner(agent_id: str, caller_hash: str) -> None:
    """Rejects a credential that cannot be this agent's before any backend call.

    Agent ids are "smolt-" + the leading hex digits of the agent hash (more on a collision),
    so a hash that does not start with them belongs to another agent. One that does is
    checked for real by the registry.
    """
    if not caller_hash.startswith(agent_id.removeprefix("smolt-")):
        raise PermissionDenied(f"the credential is not {agent_id}'s", reason="NOT_OWNER")


def to_timestamp(value: datetime, field: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(value.astimezone(UTC))
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "must be between 0001-01-01 and 9999-12-31 UTC") from None
    return stamp


AgentIdPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="An agent id: `smolt-` + hex digits.",
                                  examples=["smolt-0a1b2c3d"])]
TraceIdPath = Annotated[str, Path(pattern=TRACE_ID_PATTERN, max_length=200, description="A trace id.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1..1000.")]
Cursor = Annotated[str | None, Query(max_length=2048, pattern=r"^[!-~]*$",
                                     description="`next_cursor` of the previous page.")]
