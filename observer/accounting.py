"""What one exchange cost and where it sits in its session: its tokens (from the provider's own
usage in the reassembled response, `core.usage`), which rung of the session ladder named its
session and which sub-agent made it (`core.sessions`), and whether it starts a user turn.

`facts_of` is a plain function of the decoded Exchange, run with the rest of the CPU-heavy part
(`observer.pipeline`), so it reads the request body the same bounded way: only `metadata`,
`model` and the last element of `messages` (or `input` / `contents`) are ever built; the history
before it is skipped over without being parsed into objects.

The cost is priced in the processor (`ExchangeFacts.priced`), from the price table loaded once at
start; `observer.queue` stores one row per exchange (table `exchange_usage`), so the tokens of an
exchange with several traces are counted once, and numbers the conversation's user turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from smoltbot.core.pricing import PriceTable
from smoltbot.core.sessions import SubAgent, TurnStart, name_session, starts_user_turn, sub_agent
from smoltbot.core.usage import (
    API_ANTHROPIC_MESSAGES,
    API_GEMINI,
    API_OPENAI_CHAT,
    API_OPENAI_RESPONSES,
    TokenUsage,
    usage_from_response,
)
from smoltbot.v1 import exchange_pb2

__all__ = ["ExchangeFacts", "api_of", "facts_of", "is_other_model_call", "last_item_request"]

#: Conversation fields whose last element decides whether a request starts a user turn.
_CONVERSATION_FIELDS = (b"messages", b"input", b"contents")


@dataclass(frozen=True, slots=True)
class ExchangeFacts:
    """Usage, cost and session position of one exchange (one row of `exchange_usage`)."""

    api: str
    model: str
    usage: TokenUsage
    session_rung: str
    sub_agent: SubAgent
    turn: TurnStart
    #: Exact USD as text (Decimal, never a float); None: unknown, with `cost_reason`.
    cost_usd: str | None = None
    cost_reason: str = "not priced yet"
    #: The checked date of the price entry used ("" when none).
    price_checked: str = ""

    def priced(self, prices: PriceTable) -> ExchangeFacts:
        """These facts with their cost from `prices` (unknown when the model or a part is not
        priced, or when the provider reported no usage)."""
        if not self.usage.reported:
            return replace(self, cost_usd=None, cost_reason="the provider reported no usage")
        if not self.model:
            return replace(self, cost_usd=None, cost_reason="the response names no model")
        cost = prices.cost(self.usage, self.model)
        checked = cost.price.checked.isoformat() if cost.price is not None else ""
        if cost.usd is None:
            return replace(self, cost_usd=None, cost_reason=cost.reason[:256], price_checked=checked)
        return replace(self, cost_usd=_decimal_text(cost.usd), cost_reason="", price_checked=checked)


def api_of(provider: str, path: str) -> str:
    """The provider API of a model call, from the exchange's provider and upstream path."""
    path = path.split("?", 1)[0]
    if provider == "gemini" or ":generateContent" in path or ":streamGenerateContent" in path:
        return API_GEMINI
    if path.endswith("/chat/completions"):
        return API_OPENAI_CHAT
    if path.endswith("/responses"):
        return API_OPENAI_RESPONSES
    return API_ANTHROPIC_MESSAGES


def is_other_model_call(exchange: exchange_pb2.Exchange) -> bool:
    """An OpenAI (Chat Completions, Responses) or Gemini (generateContent) model call. Such calls
    are recorded as API activity (the observer reads Anthropic decisions only), but their tokens
    and cost are recorded all the same."""
    if exchange.request.method.upper() != "POST" or exchange.provider not in ("openai", "gemini"):
        return False
    path = exchange.request.path
    return (path.endswith(("/chat/completions", "/responses"))
            or path.endswith((":generateContent", ":streamGenerateContent")))


def facts_of(exchange: exchange_pb2.Exchange, model: str = "") -> ExchangeFacts:
    """The exchange's usage (None parts when the provider reported none) and session facts.
    `model` is the model extraction read (response, else request)."""
    api = api_of(exchange.provider, exchange.request.path)
    response = _json(exchange.response.body)
    usage = usage_from_response(api, response)
    headers = [(header.name, header.value) for header in exchange.request.headers]
    request = _json(last_item_request(exchange.request.body))
    return ExchangeFacts(
        api=api,
        model=model or _model_of(response) or _model_of(request),
        usage=usage,
        # The chain rung: the gateway looked the previous response up; what it named is the hint.
        session_rung=str(name_session(headers, request, chained=lambda _: exchange.session_hint).rung),
        sub_agent=sub_agent(headers),
        turn=_turn(api, request),
    )


def last_item_request(body: bytes) -> bytes:
    """The request as JSON with `metadata`, `model` and the conversation fields cut down to their
    last element, with that element's index kept in `_last_index` (what `starts_user_turn`
    reports as the position). Skips the history without building it (see the module docstring)."""
    from smoltbot.observer.pipeline import scan_object

    fields = scan_object(body, (b"metadata", b"model", b"previous_response_id", *_CONVERSATION_FIELDS))
    out: dict[bytes, bytes] = {}
    for name, raw in fields.items():
        if name in _CONVERSATION_FIELDS and raw[:1] == b"[":
            last, index = _last_element(raw)
            out[name] = b"[" + last + b"]" if last else b"[]"
            out[b"_last_index_" + name] = str(index).encode()
        else:
            out[name] = raw
    return b"{" + b",".join(b'"' + key + b'":' + value for key, value in out.items()) + b"}"


def _last_element(array: bytes) -> tuple[bytes, int]:
    from smoltbot.observer.pipeline import array_elements

    last = b""
    index = -1
    for index, element in enumerate(array_elements(array)):  # noqa: B007 - the last one is kept
        last = element
    return last, index


def _turn(api: str, request: Any) -> TurnStart:
    if not isinstance(request, dict):
        return TurnStart(None)
    start = starts_user_turn(api, request)
    if start.starts_turn is None:
        return start
    field = "contents" if api == API_GEMINI else "input" if api == API_OPENAI_RESPONSES else "messages"
    index = request.get(f"_last_index_{field}")
    position = index if type(index) is int and index >= 0 else start.position
    return TurnStart(start.starts_turn, position)


def _model_of(data: Any) -> str:
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else ""


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _decimal_text(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text

