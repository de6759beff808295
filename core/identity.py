"""Agent identity: the credential is turned into an HMAC at the edge and then dropped.

One function computes the agent hash for every process (gateway, API, CLI tools), so the
same credential always maps to the same agent, and a leaked database reveals no key.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from smoltbot.core.data_dir import read_or_create_secret

__all__ = [
    "AGENT_HASH_HEX_LENGTH",
    "CREDENTIAL_HEADERS",
    "KEY_HEADERS",
    "AmbiguousCredential",
    "agent_hash",
    "bearer_credential",
    "credential_from_headers",
    "gemini_credential",
    "load_hash_secret",
]

#: Full HMAC-SHA256 in hex: 256 bits kept (the contract demands at least 128).
AGENT_HASH_HEX_LENGTH = 64
#: Every header known to carry an API key, a token or a session cookie, for Anthropic and for the
#: other providers an agent may point us at; never captured, logged or shipped. The one home of
#: these names (the gateway's capture drops exactly these).
CREDENTIAL_HEADERS = frozenset({
    "x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie",
    "anthropic-api-key", "openai-api-key", "api-key", "x-goog-api-key",
    "x-auth-token", "x-access-token", "x-amz-security-token", "x-csrf-token",
})
#: The headers an agent's key is read from (below). Each may appear once: with two, the gateway
#: would name the agent by one key while the upstream may bill and answer another, so the record
#: would say the call was one agent's when it was another's. The gateway refuses a repeated one.
KEY_HEADERS = frozenset({"x-api-key", "authorization", "x-goog-api-key"})
_SECRET_FILE = "hash_secret"


class AmbiguousCredential(ValueError):
    """The request names its key more than once, with different values."""


def agent_hash(credential: str, secret: bytes) -> str:
    """HMAC-SHA256 of the credential under the server secret, as 64 hex digits."""
    return hmac.new(secret, credential.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The credential of a request: `x-api-key`, else an `Authorization: Bearer` token.

    `headers` must be case-insensitive (aiohttp/starlette header mappings are).
    """
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return bearer_credential(headers)


def bearer_credential(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer` header (OpenAI's only form), or None."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def gemini_credential(headers: Mapping[str, str], query: str = "") -> str | None:
    """The Gemini API key: the `x-goog-api-key` header, else the `key` query parameter (the raw
    query string, percent-decoded here as Google decodes it), else None. Two different `key`
    values are refused (`AmbiguousCredential`): which one Google reads is not ours to guess."""
    api_key = headers.get("x-goog-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    keys = {urllib.parse.unquote_plus(value, errors="surrogateescape").strip()
            for name, _, value in (part.partition("=") for part in query.split("&"))
            if name == "key"} - {""}
    if len(keys) > 1:
        raise AmbiguousCredential("The key query parameter appears twice with different values; send one key")
    return keys.pop() if keys else None


def load_hash_secret(home: Path, configured: str = "") -> bytes:
    """The HMAC secret: SMOLTBOT_HASH_SECRET if set, else one generated once into the data dir.

    Every process of one installation shares the data dir, so they agree on the secret. The
    file is 0600 in a 0700 directory, written whole before it appears (`read_or_create_secret`),
    so two processes starting at once cannot end up with different secrets.
    """
    if configured:
        return configured.encode("utf-8")
    return read_or_create_secret(home / _SECRET_FILE).encode("utf-8")
