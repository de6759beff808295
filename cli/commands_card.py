"""`smoltbot card show|validate|publish|edit`: the agent's alignment card.

`validate` works offline with the same validation the registry runs
(`smoltbot.core.aap.cards.normalize_card`). `publish` and `edit` validate locally first,
then PUT the card with the agent's credential from the environment, which proves ownership.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from smoltbot.cli import config_store
from smoltbot.cli.agent_context import AgentContext, agent_context, agent_error, require_credential
from smoltbot.cli.api_contract import read, read_item
from smoltbot.cli.editor import edit_text
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output, local_time, styled

__all__ = ["app", "validate_card"]

app = typer.Typer(
    name="card",
    help="The agent's alignment card (AAP): what it may do and the values it holds.",
    no_args_is_help=True,
)

_SCHEMA = "Card"
#: Used to validate a card offline when neither the config nor the card names an agent.
_PLACEHOLDER_AGENT = "smolt-00000000"
#: Fields the registry assigns to every new version; left out of what `edit` opens.
_ASSIGNED = ("card_id", "issued_at")
_DRAFT = "card.draft.json"

FileArgument = Annotated[str, typer.Argument(metavar="FILE", help="A card as JSON; - reads stdin.")]


def _load_json(file: str) -> Any:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{file}: no such file") from None
    except OSError as error:
        raise CliError(f"{file}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise CliError(f"{file}: not UTF-8 text; a card is a JSON file") from None
    return _parse(text, file)


def _parse(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"{source}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None


def validate_card(data: Any, *, agent_id: str | None, source: str) -> dict[str, Any]:
    """The card as the registry would store it, or a CliError naming the field to fix."""
    from smoltbot.core.aap.cards import normalize_card  # loads the AAP models: only when needed
    from smoltbot.core.errors import InvalidArgument

    if not isinstance(data, dict):
        raise CliError(f"{source}: a card must be a JSON object")
    card = dict(data)
    card.pop("card_id", None)  # the registry gives every version a fresh id
    owner = agent_id or (card.get("agent_id") if isinstance(card.get("agent_id"), str) else None)
    try:
        return normalize_card(card, agent_id=owner or _PLACEHOLDER_AGENT)
    except InvalidArgument as error:
        detail = error.message.removeprefix(f"{error.field}: ")
        raise CliError(f"{source}: invalid card: {error.field}: {detail}") from None


def _summary(card: dict[str, Any]) -> list[tuple[str, str]]:
    def field(path: str, default: Any = None) -> Any:
        return read(card, _SCHEMA, path, default)

    def listing(path: str, empty: str) -> str:
        items = field(path, []) or []
        return ", ".join(str(item) for item in items) if items else empty

    triggers = field("autonomy.escalation_triggers", []) or []
    trigger_text = "; ".join(
        f"{read_item(t, _SCHEMA, 'autonomy.escalation_triggers', 'condition')} -> "
        f"{read_item(t, _SCHEMA, 'autonomy.escalation_triggers', 'action')}" for t in triggers) or "none"
    principal = field("principal.type")
    retention = field("audit.retention_days")
    return [
        ("card", field("card_id") or "(assigned when published)"),
        ("agent", field("agent_id") or "-"),
        ("version", field("card_version") or "-"),
        ("issued", local_time(field("issued_at"))),
        ("expires", local_time(field("expires_at")) if field("expires_at") else "never"),
        ("modes", f"autonomy {field('autonomy_mode') or '-'}, integrity {field('integrity_mode') or '-'}"),
        ("principal", f"{principal} ({field('principal.relationship') or '-'})" if principal else "-"),
        ("values", listing("values.declared", "none")),
        ("bounded actions", listing("autonomy.bounded_actions", "any (not restricted)")),
        ("forbidden actions", listing("autonomy.forbidden_actions", "none")),
        ("escalation", trigger_text),
        ("audit", f"{retention} days" + (f", {field('audit.query_endpoint')}" if field("audit.query_endpoint")
                                         else "") if retention is not None else "-"),
    ]


def _get_card(context: AgentContext) -> dict[str, Any]:
    try:
        card: dict[str, Any] = context.api.call("card", agent_id=context.agent_id)
    except ApiError as error:
        raise agent_error(error, context) from None
    return card


def _publish(context: AgentContext, card: dict[str, Any], credential: str) -> dict[str, Any]:
    try:
        stored: dict[str, Any] = context.api.call("put_card", agent_id=context.agent_id, json=card,
                                                  credential=credential)
    except ApiError as error:
        raise agent_error(error, context) from None
    return stored


@app.command("show")
@handles_errors
def show_command(api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Show the agent's active card."""
    out = Output(json_mode)
    with agent_context(api) as context:
        card = _get_card(context)
    if json_mode:
        out.json(card)
        return
    out.fields(_summary(card), title=f"Active card of agent {context.agent_id}")


@app.command("validate")
@handles_errors
def validate_command(file: FileArgument, json_mode: Annotated[bool, typer.Option(
        "--json", help="Print the card as it would be stored.")] = False) -> None:
    """Check a card file offline, with the registry's own validation."""
    out = Output(json_mode)
    card = validate_card(_load_json(file), agent_id=config_store.load().agent_id, source=file)
    if json_mode:
        out.json(card)
        return
    out.line(styled(f"{file} is a valid alignment card.", "green"))
    out.fields(_summary(card))


@app.command("publish")
@handles_errors
def publish_command(file: FileArgument, api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Validate a card file and make it the agent's active card (needs the agent's credential)."""
    out = Output(json_mode)
    data = _load_json(file)
    with agent_context(api) as context:
        validate_card(data, agent_id=context.agent_id, source=file)
        credential = require_credential("publishing a card")
        stored = _publish(context, data, credential)
    if json_mode:
        out.json(stored)
        return
    out.line(styled(f"Published card {read(stored, _SCHEMA, 'card_id')}; it is now the active card of "
                    f"{context.agent_id}.", "green"))


def _save_draft(text: str) -> Path:
    path = config_store.smoltbot_home() / _DRAFT
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@app.command("edit")
@handles_errors
def edit_command(api: ApiOption = None) -> None:
    """Open the active card in $EDITOR and publish what you save (needs the agent's credential)."""
    out = Output()
    with agent_context(api) as context:
        credential = require_credential("editing the card")
        current = _get_card(context)
        original = json.dumps({k: v for k, v in current.items() if k not in _ASSIGNED}, indent=2) + "\n"
        text = original
        interactive = sys.stdin.isatty()
        while True:
            edited = edit_text(text)
            if edited is None or edited.strip() == original.strip():
                out.line("No changes; the card stays as it is.")
                return
            try:
                data = _parse(edited, "the edited card")
                validate_card(data, agent_id=context.agent_id, source="the edited card")
            except CliError as error:
                if interactive and typer.confirm(f"{error.message}\nEdit again?", default=True):
                    text = edited
                    continue
                draft = _save_draft(edited)
                raise CliError(f"{error.message}; your edit is kept in {draft}: fix it and run "
                               f"`smoltbot card publish {draft}`") from None
            stored = _publish(context, data, credential)
            break
    out.line(styled(f"Published card {read(stored, _SCHEMA, 'card_id')}; it is now the active card of "
                    f"{context.agent_id}.", "green"))
