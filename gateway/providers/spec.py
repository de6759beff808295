"""What the relay needs to know of one provider API, in one small object per provider.

The relay (`smoltbot.gateway.proxy`) is the same for every provider; a `ProviderSpec` holds
what differs: the path prefix the gateway serves it under, the setting naming its upstream, how
a request carries its credential, the shape of the errors the gateway itself answers with (so
each provider's SDK reads them as it reads the provider's own), how a client is told to point
at the gateway, and which of its streamed replies capture reassembles (`reassembler`).

Each provider module defines its spec (`anthropic.SPEC`, `openai.SPEC`, `gemini.SPEC`); the
next provider is a new module with a new spec, listed in `smoltbot.gateway.providers.SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._base import Reassembler

__all__ = ["GatewayError", "ProviderSpec"]


class GatewayError(StrEnum):
    """The errors the gateway answers with itself (everything else is the upstream's answer)."""

    #: 400: a request target the gateway does not relay.
    INVALID_REQUEST = "invalid_request"
    #: 401: no credential in the provider's form.
    AUTHENTICATION = "authentication"
    #: 404: a path outside every provider prefix.
    NOT_FOUND = "not_found"
    #: 413: a body over `max_request_bytes`.
    TOO_LARGE = "too_large"
    #: 502: the upstream could not be reached or dropped the response.
    UPSTREAM = "upstream"
    #: 504: the upstream did not answer in time.
    TIMEOUT = "timeout"


#: (headers, raw query string) -> the credential, or None when the request carries none.
CredentialRule = Callable[[Mapping[str, str], str], "str | None"]
#: (status, error, message) -> the JSON body of an error in the provider's shape.
ErrorShape = Callable[[int, GatewayError, str], dict[str, Any]]
#: (upstream path, raw query, byte limit) -> the stream reassembler of that call, or None.
ReassemblerRule = Callable[[str, str, "int | None"], "Reassembler | None"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    #: "anthropic", "openai", "gemini": the value of `Exchange.provider`.
    name: str
    #: The gateway path the provider is served under ("/openai"); the rest of the path and the
    #: query go to the upstream unchanged.
    prefix: str
    #: The `Settings` field holding the upstream URL.
    upstream_setting: str
    credential: CredentialRule
    #: What a client without a credential is told (in the provider's 401).
    missing_credential: str
    error_shape: ErrorShape
    #: How a client points at the gateway, e.g. "OPENAI_BASE_URL=http://<gateway>/openai/v1".
    base_url_hint: str
    reassembler: ReassemblerRule
    #: Streams that are not `text/event-stream` (Gemini's JSON array without `alt=sse`):
    #: (upstream path, raw query) -> whether a 2xx reply to it is a stream.
    streams_as_json: Callable[[str, str], bool] = lambda _path, _query: False

    def fix(self) -> str:
        """The sentence that ends a refusal: how to address the gateway for this provider."""
        return f"Send requests to the gateway as plain paths under {self.prefix} ({self.base_url_hint})"
