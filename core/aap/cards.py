"""Alignment cards: normalising what users upload, and the default card.

A card is stored and served in the unified AAP shape (card_version
"unified/2026-04-26"), in JSON form: what `aap.AlignmentCard.from_dict` accepts and
what `google.protobuf.json_format.ParseDict(card, smoltbot.v1.card_pb2.AlignmentCard())`
accepts. Legacy AAP 0.x cards (`aap_version`, `autonomy_envelope`,
`audit_commitment`) are migrated by renaming, as the aap package's schema docstrings
describe; the legacy `audit_commitment.storage` block, which the unified shape
rejects, is kept under `extensions["aap_legacy"]["audit_storage"]` so nothing the
author wrote is lost.

The aap pydantic models ignore unknown keys; a typo like `forbiden_actions` would
then silently drop a restriction. We reject unknown keys at every level we know,
naming the field, and leave only `extensions` open.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pydantic
from aap import AlignmentCard

from smoltbot.core.aap import conditions
from smoltbot.core.errors import InvalidArgument

__all__ = [
    "CARD_VERSION",
    "MAX_ACTIONS",
    "MAX_CARD_BYTES",
    "MAX_CARD_CONDITION_TERMS",
    "MAX_ESCALATION_TRIGGERS",
    "STANDARD_VALUES",
    "default_card",
    "new_card_id",
    "normalize_card",
]

CARD_VERSION = "unified/2026-04-26"

# Limits. Every trace of the agent is checked against its card (each trigger evaluated, each
# action list searched), and the card travels with every job to the worker processes: a card
# must stay small enough that its checks cost little next to reading the exchange. Conditions
# have limits of their own (conditions.MAX_CONDITION_LENGTH, MAX_CONDITION_TERMS).
#: The card as stored (compact JSON, UTF-8).
MAX_CARD_BYTES = 64 * 1024
MAX_ESCALATION_TRIGGERS = 32
#: Comparisons, flags and list items of all the card's conditions together: every trace of the
#: agent evaluates each of them (conditions.MAX_CONDITION_TERMS bounds one condition).
MAX_CARD_CONDITION_TERMS = 128
#: Entries of bounded_actions, of forbidden_actions, and of values.declared.
MAX_ACTIONS = 256
_LIMIT_REASON = "LIMIT_EXCEEDED"

# SPEC 4.4 standard value identifiers; anything else needs a definition.
STANDARD_VALUES = (
    "principal_benefit",
    "transparency",
    "minimal_data",
    "harm_prevention",
    "honesty",
    "user_control",
    "privacy",
    "fairness",
)

_TOP_LEVEL = {
    "card_version",
    "card_id",
    "agent_id",
    "issued_at",
    "expires_at",
    "autonomy_mode",
    "integrity_mode",
    "principal",
    "values",
    "autonomy",
    "audit",
    "extensions",
}
_LEGACY_TOP_LEVEL = {
    "aap_version",
    "card_id",
    "agent_id",
    "issued_at",
    "expires_at",
    "principal",
    "values",
    "autonomy_envelope",
    "audit_commitment",
    "extensions",
    # Tolerated in legacy cards too: a half-migrated card may carry the master switches.
    "autonomy_mode",
    "integrity_mode",
}
_NESTED_KEYS: dict[str, set[str]] = {
    "principal": {"type", "identifier", "relationship", "escalation_contact"},
    "values": {"declared", "definitions", "conflicts_with", "hierarchy"},
    "autonomy": {"bounded_actions", "forbidden_actions", "escalation_triggers", "max_autonomous_value"},
    "audit": {"retention_days", "queryable", "trace_format", "query_endpoint", "tamper_evidence"},
}
_TRIGGER_KEYS = {"condition", "action", "reason"}
_DEFINITION_KEYS = {"name", "description", "priority"}
_MONEY_KEYS = {"amount", "currency"}
_LEGACY_NAMES = {"autonomy": "autonomy_envelope", "audit": "audit_commitment"}


def new_card_id() -> str:
    return f"ac-{uuid.uuid4().hex}"


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _path(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "card"


def _reject_unknown(obj: Any, allowed: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise InvalidArgument(where, "must be an object")
    for key in obj:
        if key not in allowed:
            field = f"{where}.{key}" if where else str(key)
            raise InvalidArgument(field, f"unknown field (known: {', '.join(sorted(allowed))})")


def _migrate_legacy(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Legacy AAP 0.x -> unified. Returns the card and {unified name: legacy name}."""
    _reject_unknown(data, _LEGACY_TOP_LEVEL, "")
    for unified, legacy in _LEGACY_NAMES.items():
        if unified in data:
            raise InvalidArgument(unified, f"a legacy card (with {legacy}) cannot also carry {unified}")
    out = {k: v for k, v in data.items() if k not in ("aap_version", "autonomy_envelope", "audit_commitment")}
    out["card_version"] = CARD_VERSION
    names: dict[str, str] = {}
    if "autonomy_envelope" in data:
        out["autonomy"] = data["autonomy_envelope"]
        names["autonomy"] = "autonomy_envelope"
    if "audit_commitment" in data:
        audit = data["audit_commitment"]
        names["audit"] = "audit_commitment"
        if isinstance(audit, dict) and "storage" in audit:
            audit = {k: v for k, v in audit.items() if k != "storage"}
            extensions = dict(out.get("extensions") or {})
            extensions.setdefault("aap_legacy", {})["audit_storage"] = data["audit_commitment"]["storage"]
            out["extensions"] = extensions
        out["audit"] = audit
    principal = out.get("principal")
    # Legacy principals could omit identifier; the unified shape needs one unless the
    # type is "unspecified". The escalation contact (an email/endpoint) is the only
    # honest stand-in the legacy card offers.
    if (
        isinstance(principal, dict)
        and principal.get("type") not in (None, "unspecified")
        and not principal.get("identifier")
        and principal.get("escalation_contact")
    ):
        out["principal"] = {**principal, "identifier": principal["escalation_contact"]}
    return out, names


def _check_count(value: Any, limit: int, field: str, what: str, constant: str) -> None:
    if isinstance(value, (list, dict)) and len(value) > limit:
        raise InvalidArgument(field, f"holds {len(value)} {what}; the limit is {limit} ({constant})",
                              reason=_LIMIT_REASON)


def _check_structure(card: dict[str, Any], names: dict[str, str]) -> None:
    def name(section: str) -> str:
        return names.get(section, section)

    values = card.get("values")
    if isinstance(values, dict):
        for key in ("declared", "definitions"):
            _check_count(values.get(key), MAX_ACTIONS, f"values.{key}", "entries", "MAX_ACTIONS")
    autonomy = card.get("autonomy")
    if isinstance(autonomy, dict):
        where = name("autonomy")
        for key in ("bounded_actions", "forbidden_actions"):
            _check_count(autonomy.get(key), MAX_ACTIONS, f"{where}.{key}", "actions", "MAX_ACTIONS")
        _check_count(autonomy.get("escalation_triggers"), MAX_ESCALATION_TRIGGERS,
                     f"{where}.escalation_triggers", "triggers", "MAX_ESCALATION_TRIGGERS")

    for section, allowed in _NESTED_KEYS.items():
        if section in card:
            _reject_unknown(card[section], allowed, name(section))
    values = card.get("values")
    if isinstance(values, dict) and isinstance(values.get("definitions"), dict):
        for key, definition in values["definitions"].items():
            _reject_unknown(definition, _DEFINITION_KEYS, f"values.definitions.{key}")
    autonomy = card.get("autonomy")
    if isinstance(autonomy, dict):
        where = name("autonomy")
        money = autonomy.get("max_autonomous_value")
        if money is not None:
            _reject_unknown(money, _MONEY_KEYS, f"{where}.max_autonomous_value")
        triggers = autonomy.get("escalation_triggers")
        if triggers is not None and not isinstance(triggers, list):
            raise InvalidArgument(f"{where}.escalation_triggers", "must be a list")
        terms = 0
        for i, trigger in enumerate(triggers or []):
            _reject_unknown(trigger, _TRIGGER_KEYS, f"{where}.escalation_triggers[{i}]")
            condition = trigger.get("condition")
            if isinstance(condition, str):
                try:
                    terms += conditions.parse(condition).terms
                except ValueError as exc:
                    limit = "(MAX_CONDITION_" in str(exc)
                    raise InvalidArgument(f"{where}.escalation_triggers[{i}].condition", str(exc),
                                          reason=_LIMIT_REASON if limit else None) from None
        if terms > MAX_CARD_CONDITION_TERMS:
            raise InvalidArgument(
                f"{where}.escalation_triggers",
                f"the conditions hold {terms} comparisons and list items in all; "
                f"the limit is {MAX_CARD_CONDITION_TERMS} (MAX_CARD_CONDITION_TERMS)", reason=_LIMIT_REASON)
    extensions = card.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise InvalidArgument("extensions", "must be an object")
    if isinstance(extensions, dict) and "evidence" in extensions:
        _check_evidence(extensions["evidence"])


def _check_evidence(section: Any) -> None:
    """`extensions.evidence` (core/evidence/exchange.py reads it): known keys, lists of names, a path."""
    # Imported here: the evidence package is a consumer of cards, not a dependency of their parsing.
    from smoltbot.core.evidence.exchange import EVIDENCE_CARD_KEYS

    if not isinstance(section, dict):
        raise InvalidArgument("extensions.evidence", "must be an object")
    _reject_unknown(section, set(EVIDENCE_CARD_KEYS), "extensions.evidence")
    for key in ("untrusted_tools", "trusted_tools", "forbid_untrusted_arguments"):
        names = section.get(key)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) and n for n in names)):
            raise InvalidArgument(f"extensions.evidence.{key}", "must be a list of tool or action names")
        _check_count(names, MAX_ACTIONS, f"extensions.evidence.{key}", "names", "MAX_ACTIONS")
    workspace = section.get("workspace")
    if workspace is not None and not (isinstance(workspace, str) and workspace.startswith("/")):
        raise InvalidArgument("extensions.evidence.workspace", "must be an absolute path")


def normalize_card(
    data: dict[str, Any],
    *,
    agent_id: str,
    card_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Validate a user's card (unified or legacy shape) and return it in unified JSON form.

    agent_id is forced to the given agent (a card naming another agent is rejected);
    a given card_id is forced too, else the card's own is kept, else `ac-<uuid4 hex>`;
    issued_at (now) fills in when missing. Every problem is an InvalidArgument naming the dotted field path.
    """
    if not isinstance(data, dict):
        raise InvalidArgument("card", "must be a JSON object")
    now = now or datetime.now(UTC)
    data = copy.deepcopy(data)
    names: dict[str, str] = {}
    legacy = any(k in data for k in ("aap_version", "autonomy_envelope", "audit_commitment"))
    if legacy:
        data, names = _migrate_legacy(data)
    else:
        _reject_unknown(data, _TOP_LEVEL, "")
        version = data.get("card_version", CARD_VERSION)
        if version != CARD_VERSION:
            raise InvalidArgument(
                "card_version", f"unsupported card version {version!r}; expected {CARD_VERSION!r}"
            )
        data["card_version"] = CARD_VERSION

    given_agent = data.get("agent_id")
    if given_agent not in (None, "") and given_agent != agent_id:
        raise InvalidArgument("agent_id", f"card is for agent {given_agent!r}, not {agent_id!r}")
    data["agent_id"] = agent_id
    if card_id:
        # The caller assigns ids (the registry gives every stored version its own).
        data["card_id"] = card_id
    elif not data.get("card_id"):
        data["card_id"] = new_card_id()
    elif not isinstance(data["card_id"], str):
        raise InvalidArgument("card_id", "must be a string")
    if data.get("issued_at") in (None, ""):
        data["issued_at"] = _iso(now)

    _check_structure(data, names)

    try:
        model = AlignmentCard.from_dict(data)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        loc = list(error.get("loc", ()))
        if loc and loc[0] in names:
            loc[0] = names[loc[0]]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InvalidArgument(_path(loc), message) from None

    if model.expires_at is not None and model.expires_at.tzinfo is None:
        raise InvalidArgument("expires_at", "must carry a UTC offset")
    if model.issued_at.tzinfo is None:
        raise InvalidArgument("issued_at", "must carry a UTC offset")
    if model.expires_at is not None and model.expires_at <= model.issued_at:
        raise InvalidArgument("expires_at", "must be after issued_at")

    card = model.to_dict()
    card["issued_at"] = _iso(model.issued_at)
    if model.expires_at is not None:
        card["expires_at"] = _iso(model.expires_at)
    size = len(json.dumps(card, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_CARD_BYTES:
        raise InvalidArgument("card", f"is {size} bytes as stored; the limit is {MAX_CARD_BYTES} bytes "
                              "(MAX_CARD_BYTES)", reason=_LIMIT_REASON)
    return card


def default_card(agent_id: str, *, card_id: str, issued_at: datetime, query_endpoint: str) -> dict[str, Any]:
    """The card an agent has until its owner uploads one.

    It restricts nothing (empty bounded_actions = not restricted, no forbidden
    actions, no escalation triggers) and declares the standard values an honest
    assistant holds, so its agents produce no violations on ordinary traffic.
    """
    return {
        "card_version": CARD_VERSION,
        "card_id": card_id,
        "agent_id": agent_id,
        "issued_at": _iso(issued_at),
        "autonomy_mode": "observe",
        "integrity_mode": "observe",
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {
            "declared": ["transparency", "honesty", "harm_prevention", "principal_benefit", "user_control"],
        },
        "autonomy": {"bounded_actions": [], "escalation_triggers": []},
        "audit": {
            "retention_days": 90,
            "queryable": True,
            "query_endpoint": query_endpoint,
            "trace_format": "ap-trace-v1",
            "tamper_evidence": "append_only",
        },
    }
