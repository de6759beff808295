"""What kind of record an exchange makes. One home for the rule, used by intake (which stores
the kind beside the queue row) and by the processor (for rows stored before kinds existed).

* ``decision``: a model call, ``POST /v1/messages``. Its traces are the agent's decisions:
  verified against the card, scored in integrity, fed to the drift detector.
* ``activity``: any other API call (``/v1/messages/count_tokens``, ``/v1/models``, batches,
  files, unknown paths, any GET). Recorded and listed as API activity, counted as such, never a
  decision and never counted in integrity or drift.
* ``auth_rejected``: the upstream answered 401/403: the credential was not accepted, so no
  agent is resolved or created and nothing public is written; the exchange is only counted.
* ``minimal``: the gateway could not capture or ship the full exchange (``capture_failure``);
  it becomes one failure trace that says what failed.
"""

from __future__ import annotations

from typing import Final

from smoltbot.v1 import exchange_pb2

__all__ = ["ACTIVITY", "AUTH_REJECTED", "DECISION", "MINIMAL", "TRACE_KINDS", "exchange_kind",
           "is_model_call"]

DECISION: Final = "decision"
ACTIVITY: Final = "activity"
AUTH_REJECTED: Final = "auth_rejected"
MINIMAL: Final = "minimal"
#: The kinds a stored trace can have.
TRACE_KINDS: Final = (DECISION, ACTIVITY)

_MODEL_CALL_PATH = "/v1/messages"
_CREDENTIAL_REFUSED = (401, 403)


#: Providers whose model calls the observer reads decisions from ("" : records made before the
#: gateway named the provider, which were all Anthropic's).
_DECISION_PROVIDERS = ("", "anthropic")


def is_model_call(method: str, path: str, provider: str = "") -> bool:
    """Whether a request is a model call (a decision of the agent): ``POST /v1/messages``
    exactly, to Anthropic. The gateway hands the path without its query and without the provider
    prefix, so ``/openai/v1/messages`` arrives as ``/v1/messages`` too: the provider tells them
    apart (OpenAI and Gemini calls are API activity until the observer reads their wire formats)."""
    return provider in _DECISION_PROVIDERS and method.upper() == "POST" and path == _MODEL_CALL_PATH


def exchange_kind(exchange: exchange_pb2.Exchange) -> str:
    """The record kind of a captured exchange (see the module docstring)."""
    if exchange.response.status in _CREDENTIAL_REFUSED:
        return AUTH_REJECTED
    if exchange.capture_failure:
        return MINIMAL
    if is_model_call(exchange.request.method, exchange.request.path, exchange.provider):
        return DECISION
    return ACTIVITY
