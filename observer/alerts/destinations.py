"""Where a webhook may go. An agent's owner chooses the URL, so the observer must not become a
way to reach what only it can reach (SSRF): unless the operator sets
`SMOLTBOT_WEBHOOK_ALLOW_PRIVATE`, a URL whose host is, or resolves to, a loopback, private,
link-local, multicast, reserved or unspecified address is refused, when subscribing and again
before every delivery (DNS may answer differently later). Deliveries never follow redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

import httpx

from smoltbot.core.errors import InvalidArgument

__all__ = ["MAX_URL_LENGTH", "DestinationRefused", "check_address", "destination_of", "validate_url"]

MAX_URL_LENGTH = 2048


class DestinationRefused(Exception):
    """The URL's host is not a public address and the operator does not allow private ones."""


def validate_url(url: str, field: str = "url") -> SplitResult:
    """An http(s) URL with a host, no credentials, no fragment, at most MAX_URL_LENGTH."""
    if not url:
        raise InvalidArgument(field, "is required (an http:// or https:// URL)")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_URL_LENGTH} characters, got {len(url)}")
    if not url.isprintable() or any(ch.isspace() for ch in url):
        raise InvalidArgument(field, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise InvalidArgument(field, f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field, "must start with http:// or https://")
    if not parts.hostname:
        raise InvalidArgument(field, "must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(field, "must not carry user:password@ (put a token in the path or query)")
    if parts.fragment:
        raise InvalidArgument(field, "must not have a #fragment")
    try:
        httpx.URL(url)  # what the sender will parse: an unusable host (bad IDNA, ...) fails here
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:
        raise InvalidArgument(field, f"is not a usable URL ({error})") from None
    return parts


def destination_of(url: str) -> str:
    """scheme://host[:port]: what may be shown of a URL to anyone (the path may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_address(url: str, *, allow_private: bool) -> None:
    """DestinationRefused unless every address the URL's host resolves to is public (or the
    operator allows private destinations). A host that does not resolve is left to the
    delivery, which fails and is retried."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    elif host.lower() == "localhost" or host.lower().endswith(".localhost"):
        addresses = ["127.0.0.1"]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            return
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not _is_public(address):
            raise DestinationRefused(
                f"{destination_of(url)} is not a public address; the operator allows private webhook "
                "destinations with SMOLTBOT_WEBHOOK_ALLOW_PRIVATE=1"
            )
