"""Which request targets the gateway relays: plain paths under a provider prefix, nothing else.

The upstream URL is the upstream setting plus the request's path and query, nothing else. That
holds only for an origin-form target (RFC 9112 §3.2.1) whose path cannot be normalised, by us,
by a server or proxy in between, or by the upstream, into something outside the prefix. The
server hands the app the target as sent (`raw_path`: the whole URL for absolute-form, the
authority for CONNECT, `*`) while the app routes on the percent-decoded path, so
`GET http://host/anthropic/...`, `GET /%61nthropic/...` and `GET /openai/%2e%2e/...` could all
reach the relay; each is refused here, before anything is read or forwarded, by one check every
request goes through (`refused_target`, the first thing `app.py`'s dispatch does), with a 400 in
the shape of the provider the target was meant for.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes, urlsplit

from .http_messages import Request, Response, json_response
from .providers import SPECS, GatewayError, ProviderSpec, spec_for_path

__all__ = ["TargetRefused", "check_target", "refusal", "refused_target", "spec_for_target"]

#: Paths made only of these need no closer look (the common case: /v1/messages and friends).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_\-]*")
_PERCENT_ROUNDS = 3  # a path decoded this often by the hops on the way is decoded as often here


class TargetRefused(ValueError):
    """A request target the gateway will not relay; the message says why (`refusal` adds how to
    address the gateway for the provider the target was meant for)."""


def check_target(raw_target: str) -> None:
    """Raises TargetRefused unless `raw_target` is origin-form with a path no one would normalise.

    Refused: absolute-form (with or without userinfo), authority-form (CONNECT), asterisk-form,
    `//` at the start (a scheme-relative reference), fragments, and a path with a dot segment
    (`.`/`..`, percent-encoded in any case, with `;params`, full-width), an encoded `/` or `\\`,
    a literal backslash, control characters or bytes that are not UTF-8 once decoded.
    """
    if not raw_target.startswith("/") or raw_target.startswith("//"):
        if raw_target == "*":
            form = "the asterisk form (OPTIONS *)"
        elif "://" in raw_target:
            form = "an absolute URL (the gateway is not an HTTP proxy)"
        elif raw_target.startswith("//"):
            form = "a scheme-relative reference (//host/...)"
        else:
            form = "an authority (CONNECT host:port; the gateway is not an HTTP proxy)"
        raise TargetRefused(f"The request target must be a path, not {form}.")
    if "#" in raw_target:
        raise TargetRefused("The request target must not carry a fragment (#...).")
    path = raw_target.partition("?")[0]
    if _PLAIN_PATH.fullmatch(path):
        return
    if "\\" in path:
        raise TargetRefused("The request path must not contain a backslash.")
    for segment in path.split("/"):
        _check_segment(segment)


def _check_segment(segment: str) -> None:
    shown = segment if len(segment) <= 64 else segment[:61] + "..."
    value = segment
    for _ in range(_PERCENT_ROUNDS):
        if "%" not in value:
            break
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TargetRefused(
                f"The request path must be UTF-8 once percent-decoded (segment {shown!r}).") from None
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise TargetRefused("The request path must not contain control characters.")
    # NFKC: full-width dots and solidi are read as '.' and '/' by some servers.
    normalised = unicodedata.normalize("NFKC", value)
    if "/" in normalised or "\\" in normalised:
        raise TargetRefused(
            f"The request path must not encode '/' or '\\' inside a segment (segment {shown!r}).")
    if normalised.partition(";")[0] in (".", ".."):
        raise TargetRefused(
            f"The request path must not contain dot segments ('.' or '..', encoded or not; "
            f"segment {shown!r}): "
            "the gateway relays only under its prefix.")


def spec_for_target(raw_target: str) -> ProviderSpec:
    """The provider a target was meant for (its prefix, also inside an absolute URL); Anthropic
    when none shows, so a refusal is in the shape of the gateway's first provider."""
    path = raw_target
    if "://" in raw_target or raw_target.startswith("//"):
        try:
            path = urlsplit(raw_target).path
        except ValueError:
            path = ""
    return spec_for_path(path) or SPECS["anthropic"]


def refusal(spec: ProviderSpec, reason: str) -> Response:
    """The 400 for a target the gateway does not relay, in the provider's shape."""
    return json_response(400, spec.error_shape(400, GatewayError.INVALID_REQUEST, f"{reason} {spec.fix()}."))


def refused_target(request: Request) -> Response | None:
    """The refusal of a request whose target is not relayed (`check_target`, and CONNECT
    whatever its target), None for every other; each request, whatever it is routed to, passes it."""
    try:
        if request.method == "CONNECT":
            raise TargetRefused("CONNECT is not served: the gateway is not an HTTP proxy.")
        check_target(request.raw_path)
    except TargetRefused as refused:
        return refusal(spec_for_target(request.raw_path), str(refused))
    return None
