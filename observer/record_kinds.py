"""What kind of record an exchange makes. One home for the rule, used by intake (which stores
the kind beside the queue row) and by the processor (for rows stored before kinds existed).

* ``decision``: a model call, one that a provider module of `observer.providers` reads:
  Anthropic ``POST /v1/messages``, OpenAI ``POST /v1/chat/completions`` and ``POST /v1/responses``,
  Gemini ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``. Its
  traces are the agent's decisions: verified against the card, scored in integrity, fed to the
  drift detector.
* ``activity``: any other API call (``/v1/messages/count_tokens``, models, embeddings, files,
  moderations, batches, ``:countTokens``, unknown paths, any GET). Recorded and listed as API
  activity, counted as such, never a decision and never counted in integrity or drift.
* ``auth_rejected``: the upstream answered 401/403: the credential was not accepted, so no
  agent is resolved or created and nothing public is written; the exchange is only counted.
* ``minimal``: the gateway could not capture or ship the full exchange (``capture_failure``);
  it becomes one failure trace that says what failed.
"""

from __future__ import annotations

from typing import Final

from smoltbot.observer.providers import wire_format
from smoltbot.v1 import exchange_pb2

__all__ = ["ACTIVITY", "AUTH_REJECTED", "DECISION", "MINIMAL", "TRACE_KINDS", "exchange_kind",
           "is_model_call"]

DECISION: Final = "decision"
ACTIVITY: Final = "activity"
AUTH_REJECTED: Final = "auth_rejected"
MINIMAL: Final = "minimal"
#: The kinds a stored trace can have.
TRACE_KINDS: Final = (DECISION, ACTIVITY)

_CREDENTIAL_REFUSED = (401, 403)


def is_model_call(method: str, path: str, provider: str = "") -> bool:
    """Whether a request is a model call (a decision of the agent): one the provider's wire
    format reads (`observer.providers.wire_format`). The gateway hands the path without its query
    and without the provider prefix, so ``/openai/v1/messages`` arrives as ``/v1/messages`` too:
    the provider tells them apart ("": records made before the gateway named it, all Anthropic's)."""
    return wire_format(provider, method, path) is not None


def exchange_kind(exchange: exchange_pb2.Exchange) -> str:
    """The record kind of a captured exchange (see the module docstring)."""
    if exchange.response.status in _CREDENTIAL_REFUSED:
        return AUTH_REJECTED
    if exchange.capture_failure:
        return MINIMAL
    if is_model_call(exchange.request.method, exchange.request.path, exchange.provider):
        return DECISION
    return ACTIVITY
