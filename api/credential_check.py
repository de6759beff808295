"""Asks the upstream whether it accepts a credential, before the API creates an agent for it.

An agent exists only for a credential the upstream accepted (issue 12): `POST /v1/agents/resolve`
would otherwise let anyone mint public agents from made-up keys. The check is one free call,
`GET {upstream}/v1/models?limit=1`, with the credential in the header the caller used. The
upstream answering 401/403 means rejected; 5xx or no answer means we cannot tell, and nothing
is created either. Any other answer (200, 429, ...) got past the upstream's authentication,
which is the gateway's rule too.

The credential goes only into that one request's header: no cookie jar, no environment proxy
or .netrc, no redirects, and never into a message or a log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import httpx

from smoltbot.core.errors import Unauthenticated, Unavailable

__all__ = ["ANTHROPIC_VERSION", "CredentialCheck"]

logger = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
_REJECTED = (401, 403)
_MAX_UPSTREAM_MESSAGE = 200
_MAX_ERROR_BODY = 16 * 1024


class CredentialCheck:
    """`await check.verify(request.headers)` raises `Unauthenticated` (rejected) or
    `Unavailable` (cannot tell); returns when the upstream accepted the credential."""

    def __init__(self, upstream_url: str, *, connect_timeout: float, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._transport = transport

    async def verify(self, headers: Mapping[str, str]) -> None:
        outgoing, credential = _credential_headers(headers)
        url = f"{self.upstream_url}/v1/models"
        # One client per check: a shared one would keep one caller's cookies for the next.
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False, follow_redirects=False,
                                     transport=self._transport) as client:
            try:
                async with client.stream("GET", url, params={"limit": "1"}, headers=outgoing) as response:
                    status = response.status_code
                    # Only an error's message is read, and only its start: whatever answers at
                    # the upstream URL cannot make the API hold a large body.
                    body = await _read_start(response) if status in _REJECTED else b""
            except httpx.HTTPError as error:
                logger.warning("credential check: upstream %s unreachable: %s", self.upstream_url,
                               type(error).__name__)
                raise Unavailable(
                    f"cannot check the credential: the upstream {self.upstream_url} is not answering "
                    f"({_why(error)}); nothing was created. Try again when it is reachable "
                    "(SMOLTBOT_UPSTREAM_URL says where it is)", reason="UPSTREAM_UNAVAILABLE") from None
        if status in _REJECTED:
            detail = _upstream_message(body, credential)
            logger.info("credential check: upstream answered %d (request-id %s); nothing created", status,
                        response.headers.get("request-id", "-"))
            raise Unauthenticated(
                f"the upstream {self.upstream_url} rejected this credential (HTTP {status}{detail}); "
                "nothing was created. Send the API key (x-api-key) or token (Authorization: Bearer) "
                "your agent calls the model with", reason="CREDENTIAL_REJECTED")
        if status >= 500:
            logger.warning("credential check: upstream %s answered %d", self.upstream_url, status)
            raise Unavailable(
                f"cannot check the credential: the upstream {self.upstream_url} answered HTTP {status}; "
                "nothing was created. Try again shortly", reason="UPSTREAM_UNAVAILABLE")


def _credential_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The credential header as the caller sent it (an OAuth token is refused as an x-api-key),
    with the anthropic-beta flags an OAuth token needs to be accepted."""
    outgoing = {"anthropic-version": ANTHROPIC_VERSION, "accept": "application/json",
                "accept-encoding": "identity",  # the error's start is read raw, never inflated
                "user-agent": "smoltbot-api/credential-check"}
    api_key = (headers.get("x-api-key") or "").strip()
    if api_key:
        outgoing["x-api-key"] = api_key
        credential = api_key
    else:
        credential = (headers.get("authorization") or "").strip().partition(" ")[2].strip()
        outgoing["authorization"] = f"Bearer {credential}"
    if not _is_header_token(credential):
        # Starlette hands us header bytes as latin-1; no key or token has such characters, and
        # they could not be sent on (httpx encodes header values as ASCII).
        raise Unauthenticated(
            "this credential contains characters no API key or token has (only printable ASCII without "
            "spaces); nothing was created. Send the key your agent calls the model with",
            reason="CREDENTIAL_REJECTED")
    beta = headers.get("anthropic-beta")
    if beta and beta.isascii() and beta.isprintable():
        outgoing["anthropic-beta"] = beta
    return outgoing, credential


def _is_header_token(value: str) -> bool:
    return bool(value) and all("!" <= ch <= "~" for ch in value)


async def _read_start(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            break
    return body[:_MAX_ERROR_BODY]


def _upstream_message(body: bytes, credential: str) -> str:
    """`: <type>: <message>` from an Anthropic error body, bounded and never with the credential."""
    try:
        error = json.loads(body).get("error") or {}
        text = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(text, str) or not text:
        return ""
    if credential:
        text = text.replace(credential, "[credential]")
    text = "".join(ch if ch.isprintable() else " " for ch in text)[:_MAX_UPSTREAM_MESSAGE]
    return f": {text}"


def _why(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = str(error).strip()
    return text.split("] ", 1)[-1] if text else type(error).__name__
