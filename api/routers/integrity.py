"""/v1/integrity and drift: how well an agent's traces match its card, and sustained drift."""

from __future__ import annotations

from fastapi import APIRouter

from smoltbot.api.convert import drift_alert_out, integrity_out
from smoltbot.api.dependencies import AgentIdPath, Cursor, Limit, Observer
from smoltbot.api.errors import READ_ERRORS
from smoltbot.api.schemas import DriftAlertList, Integrity
from smoltbot.v1 import observer_service_pb2

__all__ = ["router"]

router = APIRouter(tags=["integrity"], responses=READ_ERRORS)


@router.get("/v1/integrity/{agent_id}", response_model=Integrity, summary="Integrity score and coverage")
async def get_integrity(agent_id: AgentIdPath, observer: Observer) -> Integrity:
    """The score (verified / total) over the recent window and all time, with coverage: how many
    traces carried readable reasoning, how many the model analyzer read, how many record a
    failure. A score over traces without reasoning only checks actions against the card."""
    response = await observer.GetIntegrity(observer_service_pb2.GetIntegrityRequest(agent_id=agent_id))
    return integrity_out(response.integrity)


@router.get("/v1/agents/{agent_id}/drift", response_model=DriftAlertList, response_model_exclude_unset=True,
            summary="Drift alerts, newest first")
async def list_drift_alerts(agent_id: AgentIdPath, observer: Observer, limit: Limit = 50,
                            cursor: Cursor = None) -> DriftAlertList:
    response = await observer.ListDriftAlerts(observer_service_pb2.ListDriftAlertsRequest(
        agent_id=agent_id, page_size=limit, page_token=cursor or ""))
    return DriftAlertList(items=[drift_alert_out(alert) for alert in response.alerts],
                          next_cursor=response.next_page_token or None)
