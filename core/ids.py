"""The ids smoltbot mints and accepts: their shapes, limits and minting rules, in one place.

Every service validates ids with these functions (and the API's OpenAPI patterns are the
`*_PATTERN` strings here), so the Registry, the Observer, the API and the CLI agree on what a
valid agent id, session id or trace id is. Where the services used to disagree, the rule kept is
the one that accepts every id our own services mint (`tests/unit/test_ids.py` checks each minting
function's output against every validator):

- agent id: ``smolt-`` + 8 to 128 lower-case hex digits. The Registry mints ``smolt-`` + the
  first 8 hex digits of the agent hash, extended two digits at a time on a collision, up to the
  whole hash (at most 128 digits). The API allowed only 64 digits and the Observer 1 to 128.
- session id: printable text of at most 256 characters (the Registry's rule; a client names its
  sessions, and `core.sessions.usable_session_id` turns anything else into a digest). The API
  used to allow only ``[A-Za-z0-9._:-]`` and 200 characters, so a session named "my task" could
  not be listed.
- trace id: a letter or digit, then letters, digits and ``._:-``, at most 96 characters (the
  Observer's rule; we mint ``tr-<exchange id>-<index>``, about 40). The API allowed 200.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

from smoltbot.core.errors import InvalidArgument

__all__ = [
    "AGENT_HASH_MAX_HEX",
    "AGENT_HASH_MIN_HEX",
    "AGENT_HASH_PATTERN",
    "AGENT_ID_MIN_HEX",
    "AGENT_ID_PATTERN",
    "AGENT_ID_PREFIX",
    "EXCHANGE_ID_HEX",
    "EXCHANGE_ID_PATTERN",
    "MAX_AGENT_ID_LENGTH",
    "MAX_SESSION_ID_LENGTH",
    "MAX_TOOL_USE_ID_LENGTH",
    "MAX_TRACE_ID_LENGTH",
    "SESSION_ID_PATTERN",
    "TOOL_USE_ID_PATTERN",
    "TRACE_ID_PATTERN",
    "agent_id_candidates",
    "agent_id_matches_hash",
    "is_agent_hash",
    "is_agent_id",
    "is_exchange_id",
    "is_session_id",
    "is_tool_use_id",
    "is_trace_id",
    "new_exchange_id",
    "new_session_id",
    "trace_id_for",
    "validate_agent_hash",
    "validate_agent_id",
    "validate_exchange_id",
    "validate_session_id",
    "validate_tool_use_id",
    "validate_trace_id",
]

#: Every agent id starts with this; the rest are leading hex digits of the agent's hash.
AGENT_ID_PREFIX = "smolt-"
#: Hex digits of the hash in a new agent's id (more only when a shorter id is taken).
AGENT_ID_MIN_HEX = 8
#: An agent hash keeps at least 128 bits (the contract); core.identity makes 256 (64 digits).
AGENT_HASH_MIN_HEX = 32
AGENT_HASH_MAX_HEX = 128
MAX_AGENT_ID_LENGTH = len(AGENT_ID_PREFIX) + AGENT_HASH_MAX_HEX
#: The Registry's column width; longer client-named sessions are named by a digest instead.
MAX_SESSION_ID_LENGTH = 256
#: 128 random bits in hex (either case accepted; stored lower-case).
EXCHANGE_ID_HEX = 32
MAX_TRACE_ID_LENGTH = 96
#: Tool-use ids are minted by the model API ("toolu_...", "call_..."); the Observer's column width.
MAX_TOOL_USE_ID_LENGTH = 256

AGENT_ID_PATTERN = rf"^smolt-[0-9a-f]{{{AGENT_ID_MIN_HEX},{AGENT_HASH_MAX_HEX}}}$"
AGENT_HASH_PATTERN = rf"^[0-9a-fA-F]{{{AGENT_HASH_MIN_HEX},{AGENT_HASH_MAX_HEX}}}$"
EXCHANGE_ID_PATTERN = rf"^[0-9a-fA-F]{{{EXCHANGE_ID_HEX}}}$"
TRACE_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_TRACE_ID_LENGTH - 1}}}$"
TOOL_USE_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_TOOL_USE_ID_LENGTH - 1}}}$"
#: For OpenAPI: no C0/C1 control characters, at most 256 characters. `is_session_id` is the exact
#: rule (str.isprintable, which also refuses a few other non-printing characters); a session id the
#: pattern lets through and the rule does not is refused by the service behind the API.
SESSION_ID_PATTERN = rf"^[^\x00-\x1f\x7f-\x9f]{{1,{MAX_SESSION_ID_LENGTH}}}$"

_AGENT_ID = re.compile(AGENT_ID_PATTERN)
_AGENT_HASH = re.compile(AGENT_HASH_PATTERN)
_EXCHANGE_ID = re.compile(EXCHANGE_ID_PATTERN)
_TRACE_ID = re.compile(TRACE_ID_PATTERN)
_TOOL_USE_ID = re.compile(TOOL_USE_ID_PATTERN)


# -- shapes ---------------------------------------------------------------------------------------


def is_agent_id(value: str) -> bool:
    return _AGENT_ID.fullmatch(value) is not None


def is_agent_hash(value: str) -> bool:
    """32 to 128 hex digits: the shape of a credential hash (either case)."""
    return _AGENT_HASH.fullmatch(value) is not None


def is_session_id(value: str) -> bool:
    return 0 < len(value) <= MAX_SESSION_ID_LENGTH and value.isprintable()


def is_trace_id(value: str) -> bool:
    return _TRACE_ID.fullmatch(value) is not None


def is_exchange_id(value: str) -> bool:
    return _EXCHANGE_ID.fullmatch(value) is not None


def is_tool_use_id(value: str) -> bool:
    return _TOOL_USE_ID.fullmatch(value) is not None


# -- validators: InvalidArgument naming the field and saying what fits ---------------------------


def validate_agent_id(value: str, field: str = "agent_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not is_agent_id(value):
        raise InvalidArgument(field, "must look like smolt-<hex digits>")
    return value


def validate_agent_hash(value: str, field: str = "agent_hash") -> str:
    """A credential hash: 32..128 hex digits (at least 128 bits). Returned lower-case."""
    if not value:
        raise InvalidArgument(field, "is required (hex HMAC of the credential)")
    if not is_agent_hash(value):
        raise InvalidArgument(field,
                              f"must be {AGENT_HASH_MIN_HEX} to {AGENT_HASH_MAX_HEX} hexadecimal digits")
    return value.lower()


def validate_session_id(value: str, field: str = "session_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_SESSION_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_SESSION_ID_LENGTH} characters, got {len(value)}",
                              reason="FIELD_TOO_LONG")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def validate_trace_id(value: str, field: str = "trace_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not is_trace_id(value):
        raise InvalidArgument(field, "is not a trace id (a letter or digit, then letters, digits and "
                                     f"'._:-', at most {MAX_TRACE_ID_LENGTH} characters)")
    return value


def validate_exchange_id(value: str, field: str = "exchange_id") -> str:
    """Returned lower-case (the form it is stored in)."""
    if not is_exchange_id(value):
        raise InvalidArgument(field, f"must be {EXCHANGE_ID_HEX} hex digits")
    return value.lower()


def validate_tool_use_id(value: str, field: str = "tool_use_id") -> str:
    if not is_tool_use_id(value):
        raise InvalidArgument(field, "must be a tool_use block id (letters, digits, '_' and '-', "
                                     f"at most {MAX_TOOL_USE_ID_LENGTH} characters)")
    return value


# -- minting ---------------------------------------------------------------------------------------


def agent_id_candidates(agent_hash: str) -> Iterator[str]:
    """The ids an agent with this (lower-case) hash may get, shortest first: the Registry takes
    the first one no other hash holds."""
    lengths = [*range(AGENT_ID_MIN_HEX, len(agent_hash), 2), len(agent_hash)]
    for length in lengths:
        yield AGENT_ID_PREFIX + agent_hash[:length]


def agent_id_matches_hash(agent_id: str, agent_hash: str) -> bool:
    """Whether `agent_id` can be the id of the agent with this hash (its hex digits are a prefix
    of the hash). A cheap first check before asking the Registry, which alone knows the owner."""
    return (agent_id.startswith(AGENT_ID_PREFIX)
            and agent_hash.lower().startswith(agent_id.removeprefix(AGENT_ID_PREFIX)))


def new_exchange_id() -> str:
    """128 random bits, hex: the idempotency key all the way to the traces."""
    return secrets.token_hex(EXCHANGE_ID_HEX // 2)


def new_session_id() -> str:
    """A session the Registry starts (one no client named): 64 random bits."""
    return f"ses-{secrets.token_hex(8)}"


def trace_id_for(exchange_id: str, index: int) -> str:
    """The id of an exchange's `index`th trace: the same every time the exchange is processed."""
    return f"tr-{exchange_id}-{index}"
