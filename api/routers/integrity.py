"""/v1/integrity and drift: how well an agent's traces match its card, and sustained drift."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from smoltbot.api.convert import drift_alert_out, integrity_response_out
from smoltbot.api.dependencies import AgentIdPath, CallerHash, Cursor, Limit, Observer, require_owner
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS
from smoltbot.api.schemas import DriftAlert, DriftAlertList, Integrity
from smoltbot.v1 import observer_service_pb2

__all__ = ["router"]

router = APIRouter(tags=["integrity"], responses=READ_ERRORS)

AlertIdPath = Annotated[str, Path(pattern=r"^da-[0-9a-f]{1,45}$", description="A drift alert id (da-...).",
                                    examples=["da-3f9c2a71"])]


@router.get("/v1/integrity/{agent_id}", response_model=Integrity, summary="Integrity score and coverage")
async def get_integrity(agent_id: AgentIdPath, observer: Observer) -> Integrity:
    """The score (verified / total) over the recent window and all time, with coverage: how many
    traces carried readable reasoning, how many the model analyzer read, how many record a
    failure. A score over traces without reasoning only checks actions against the card."""
    response = await observer.GetIntegrity(observer_service_pb2.GetIntegrityRequest(agent_id=agent_id))
    return integrity_response_out(response)


@router.get("/v1/agents/{agent_id}/drift", response_model=DriftAlertList, response_model_exclude_unset=True,
            summary="Drift alerts, newest first")
async def list_drift_alerts(agent_id: AgentIdPath, observer: Observer, limit: Limit = 50,
                            cursor: Cursor = None) -> DriftAlertList:
    response = await observer.ListDriftAlerts(observer_service_pb2.ListDriftAlertsRequest(
        agent_id=agent_id, page_size=limit, page_token=cursor or ""))
    return DriftAlertList(items=[drift_alert_out(alert) for alert in response.alerts],
                          next_cursor=response.next_page_token or None)


@router.post("/v1/agents/{agent_id}/drift/{alert_id}/acknowledge", response_model=DriftAlert,
             response_model_exclude_unset=True, responses=WRITE_ERRORS,
             summary="Acknowledge a drift alert (the agent's owner, with its credential)")
async def acknowledge_drift_alert(agent_id: AgentIdPath, alert_id: AlertIdPath, observer: Observer,
                                  caller_hash: CallerHash) -> DriftAlert:
    """Says the owner has seen the alert. It stays open: it closes by itself once the agent's
    behaviour is back in line with the reference it drifted from."""
    require_owner(agent_id, caller_hash)
    response = await observer.AcknowledgeDriftAlert(observer_service_pb2.AcknowledgeDriftAlertRequest(
        agent_id=agent_id, agent_hash=caller_hash, alert_id=alert_id))
    return drift_alert_out(response.alert)
