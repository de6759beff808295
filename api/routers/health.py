"""/health: the API answers, and whether the registry and observer serve."""

from __future__ import annotations

import asyncio
from typing import Annotated

import grpc
from fastapi import APIRouter, Depends
from grpc_health.v1 import health_pb2

from smoltbot.api.backends import Backends
from smoltbot.api.dependencies import get_backends
from smoltbot.api.errors import BackendError
from smoltbot.api.schemas import BackendState, Health
from smoltbot.core.grpc_client import health_check

__all__ = ["router"]

router = APIRouter(tags=["health"])

_PROBE_TIMEOUT = 1.0


async def _probe(channel: grpc.aio.Channel) -> BackendState:
    try:
        response = await health_check(channel)(
            health_pb2.HealthCheckRequest(service=""), timeout=_PROBE_TIMEOUT
        )
    except BackendError:  # the channel's interceptor (api/backends.py) turns every failure into one
        return "unavailable"
    return "serving" if response.status == health_pb2.HealthCheckResponse.SERVING else "not_serving"


@router.get("/health", response_model=Health, summary="Liveness of the API and its backends")
async def health(backends: Annotated[Backends, Depends(get_backends)]) -> Health:
    """200 whenever the API runs; `status` is "degraded" when a backend does not serve, so a
    dashboard can show it while the process supervisor keeps the API up."""
    registry, observer = await asyncio.gather(
        _probe(backends.registry_channel), _probe(backends.observer_channel)
    )
    ok = registry == observer == "serving"
    return Health(status="ok" if ok else "degraded", registry=registry, observer=observer)
