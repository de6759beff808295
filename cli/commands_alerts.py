"""`smoltbot alerts`: webhooks for your agent's events. `add URL --event ...` subscribes (and
shows the signing secret, once), `list` and `remove ID` manage them, `deliveries` shows what was
sent and what failed. Subscribing, listing and removing take the agent's credential from the
environment, as every owner action does (docs/alerts.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from smoltbot.cli.agent_context import AgentContext, agent_context, agent_error, require_credential
from smoltbot.cli.api_contract import read, read_item
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Cell, Output, local_time, shorten, styled

__all__ = ["app"]

app = typer.Typer(
    help="Webhooks for your agent's events: add, list, remove, deliveries.", no_args_is_help=True
)

EVENTS = ("violation", "missed_escalation", "drift", "failure_rate", "record_set_aside")
_SUBSCRIPTIONS = "AlertSubscriptionList"
_DELIVERIES = "AlertDeliveryList"


def _error(error: ApiError, context: AgentContext) -> CliError:
    if error.status == 400:
        return CliError(f"the API refused the subscription: {error}")
    if error.status == 404 and error.reason == "SUBSCRIPTION_NOT_FOUND":
        return CliError(
            f"your agent {context.agent_id} has no such subscription; `smoltbot alerts list` lists them"
        )
    if error.status == 422:
        return CliError(f"the API refused the request: {error}")
    return agent_error(error, context)


@app.command("add")
@handles_errors
def add_command(
    url: Annotated[str, typer.Argument(help="Where to POST events: an http:// or https:// URL.")],
    event: Annotated[
        list[str],
        typer.Option("--event", "-e", help=f"An event to send ({', '.join(EVENTS)}); repeat for several."),
    ],
    min_severity: Annotated[
        str, typer.Option(help="Violations below this are not sent: low, medium, high, critical.")
    ] = "low",
    failure_rate: Annotated[
        float | None,
        typer.Option(
            help="failure_rate: the share of failed calls in a window that raises an alert (default 0.5)."
        ),
    ] = None,
    slack: Annotated[bool, typer.Option("--slack", help='Send Slack\'s {"text": ...} body.')] = False,
    api: ApiOption = None,
    json_mode: JsonOption = False,
) -> None:
    """Subscribe a URL to your agent's events (needs the agent's credential)."""
    out = Output(json_mode)
    unknown = [name for name in event if name not in EVENTS]
    if unknown:
        raise CliError(f"unknown event {unknown[0]!r}: use {', '.join(EVENTS)}")
    credential = require_credential("subscribing to alerts")
    body: dict[str, object] = {
        "url": url,
        "events": list(dict.fromkeys(event)),
        "min_severity": min_severity,
        "format": "slack" if slack else "json",
    }
    if failure_rate is not None:
        body["failure_rate_threshold"] = failure_rate
    with agent_context(api) as context:
        try:
            created = context.api.call(
                "create_alert", agent_id=context.agent_id, json=body, credential=credential
            )
        except ApiError as error:
            raise _error(error, context) from None
    if json_mode:
        out.json(created)
        return
    name = "CreatedAlertSubscription"
    out.line(
        f"Subscribed {read(created, name, 'destination')} to {', '.join(read(created, name, 'events'))} "
        f"as {read(created, name, 'subscription_id')}."
    )
    out.line(f"Signing secret (shown this once, keep it): {read(created, name, 'secret')}")
    out.note(
        'Each delivery carries smoltbot-signature: t=<unix>,v1=<HMAC-SHA256 of "<t>.<body>"> and '
        "smoltbot-idempotency-key (docs/alerts.md)."
    )


@app.command("list")
@handles_errors
def list_command(api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Your agent's subscriptions, with their URLs (needs the agent's credential)."""
    out = Output(json_mode)
    credential = require_credential("listing alert subscriptions")
    with agent_context(api) as context:
        try:
            listed = context.api.call(
                "alerts", agent_id=context.agent_id, params={"limit": 100}, credential=credential
            )
        except ApiError as error:
            raise _error(error, context) from None
    items = read(listed, _SUBSCRIPTIONS, "items", [])
    if json_mode:
        out.json(items)
        return
    if not items:
        out.note("No alert subscriptions: `smoltbot alerts add URL --event violation` adds one.")
        return
    rows: list[list[Cell]] = []
    for item in items:

        def field(path: str, item: object = item) -> object:
            return read_item(item, _SUBSCRIPTIONS, "items", path)

        events = list(field("events") or [])  # type: ignore[call-overload]
        detail = f"min {field('min_severity')}" if "violation" in events else ""
        if "failure_rate" in events:
            detail = f"{detail}, rate >= {field('failure_rate_threshold')}".lstrip(", ")
        rows.append(
            [
                str(field("subscription_id")),
                str(field("url")),
                ", ".join(events),
                detail,
                str(field("format")),
                local_time(str(field("created_at") or "")),
            ]
        )
    out.table(
        ("subscription", "url", "events", "thresholds", "format", "created"),
        rows,
        title=f"Alert subscriptions of agent {context.agent_id}",
    )


@app.command("remove")
@handles_errors
def remove_command(
    subscription_id: Annotated[str, typer.Argument(help="The id (see `smoltbot alerts list`).")],
    api: ApiOption = None,
    json_mode: JsonOption = False,
) -> None:
    """Remove a subscription; deliveries not yet made are dropped (needs the agent's credential)."""
    out = Output(json_mode)
    credential = require_credential("removing an alert subscription")
    with agent_context(api) as context:
        try:
            removed = context.api.call(
                "delete_alert",
                agent_id=context.agent_id,
                subscription_id=subscription_id,
                credential=credential,
            )
        except ApiError as error:
            raise _error(error, context) from None
    if json_mode:
        out.json(removed)
        return
    out.line(f"Removed {read(removed, 'AlertSubscriptionRemoved', 'subscription_id')}.")


_STATE_STYLES = {"delivered": "green", "failed": "bold red", "pending": "yellow", "sending": "yellow"}


@app.command("deliveries")
@handles_errors
def deliveries_command(
    subscription: Annotated[str | None, typer.Option(help="Only this subscription's deliveries.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    api: ApiOption = None,
    json_mode: JsonOption = False,
) -> None:
    """What was sent to your webhooks, newest first: delivered, waiting for a retry, or failed."""
    out = Output(json_mode)
    with agent_context(api) as context:
        try:
            listed = context.api.call(
                "alert_deliveries",
                agent_id=context.agent_id,
                params={"limit": limit, "subscription_id": subscription},
            )
        except ApiError as error:
            raise _error(error, context) from None
    items = read(listed, _DELIVERIES, "items", [])
    if json_mode:
        out.json(items)
        return
    if not items:
        out.note("No deliveries yet.")
        return
    rows: list[list[Cell]] = []
    for item in items:

        def field(path: str, item: object = item) -> object:
            return read_item(item, _DELIVERIES, "items", path)

        state = str(field("state"))
        outcome = str(field("last_error") or (f"HTTP {field('last_status')}" if field("last_status") else ""))
        rows.append(
            [
                local_time(str(field("created_at") or "")),
                str(field("event")),
                styled(state, _STATE_STYLES.get(state, "")),
                str(field("attempts")),
                outcome,
                shorten(str(field("summary")), 60),
                str(field("delivery_id")),
            ]
        )
    out.table(
        ("queued", "event", "state", "attempts", "last result", "summary", "delivery"),
        rows,
        title=f"Webhook deliveries of agent {context.agent_id}",
    )
