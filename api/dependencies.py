"""FastAPI dependencies as `Annotated` aliases: the gRPC backends (typed stubs, see
`smoltbot.api.backends`), the caller's credential hash, and validated path/query parameters.
They read what the app's lifespan put on `app.state`."""

from __future__ import annotations

import logging
from typing import Annotated

import grpc
from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from smoltbot.api.backends import Backends, ObserverStub, RegistryStub
from smoltbot.api.credential_check import CredentialCheck
from smoltbot.api.errors import BackendError
from smoltbot.core.errors import PermissionDenied, Unauthenticated
from smoltbot.core.identity import agent_hash, credential_from_headers
from smoltbot.core.ids import (
    AGENT_ID_PATTERN,
    MAX_SESSION_ID_LENGTH,
    MAX_TRACE_ID_LENGTH,
    SESSION_ID_PATTERN,
    TRACE_ID_PATTERN,
    agent_id_matches_hash,
)

__all__ = [
    "AgentIdPath",
    "CallerHash",
    "CredentialChecker",
    "Cursor",
    "IdentityHash",
    "Limit",
    "Observer",
    "Registry",
    "SessionIdPath",
    "TraceIdPath",
    "get_backends",
    "require_owner",
]

logger = logging.getLogger(__name__)



def get_backends(request: Request) -> Backends:
    backends: Backends | None = getattr(request.app.state, "backends", None)
    if backends is None:  # the lifespan did not run (or has ended)
        raise BackendError("registry", "", grpc.StatusCode.UNAVAILABLE, "API not started")
    return backends


def get_registry(backends: Annotated[Backends, Depends(get_backends)]) -> RegistryStub:
    return backends.registry


def get_observer(backends: Annotated[Backends, Depends(get_backends)]) -> ObserverStub:
    return backends.observer


Registry = Annotated[RegistryStub, Depends(get_registry)]
Observer = Annotated[ObserverStub, Depends(get_observer)]

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

    Agent ids are "smolt-" + the leading hex digits of the agent hash (more on a collision,
    `core.ids`), so a hash that does not start with them belongs to another agent. One that
    does is checked for real by the registry.
    """
    if not agent_id_matches_hash(agent_id, caller_hash):
        raise PermissionDenied(f"the credential is not {agent_id}'s", reason="NOT_OWNER")


AgentIdPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="An agent id: `smolt-` + hex digits.",
                                  examples=["smolt-0a1b2c3d"])]
TraceIdPath = Annotated[str, Path(pattern=TRACE_ID_PATTERN, max_length=MAX_TRACE_ID_LENGTH,
                                  description="A trace id.")]
SessionIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN, max_length=MAX_SESSION_ID_LENGTH,
                                    description="The session id, as the session ladder named it.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1..1000.")]
Cursor = Annotated[str | None, Query(max_length=2048, pattern=r"^[!-~]*$",
                                     description="`next_cursor` of the previous page.")]
