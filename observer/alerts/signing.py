"""Signing a delivery, as receivers check it: HMAC-SHA256 under the subscription's secret over
``"<timestamp>.<body>"``, sent as ``smoltbot-signature: t=<unix seconds>,v1=<hex digest>``.
A receiver recomputes the digest, compares it in constant time, and refuses a timestamp too far
from its clock (replays). `verify` is that check, for receivers written in Python and for tests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = [
    "EVENT_HEADER",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "new_secret",
    "sign",
    "signature_header",
    "verify",
]

SIGNATURE_HEADER = "smoltbot-signature"
IDEMPOTENCY_HEADER = "smoltbot-idempotency-key"
EVENT_HEADER = "smoltbot-event"
_PREFIX = "whsec_"


def new_secret() -> str:
    """A new subscription secret: 256 random bits."""
    return _PREFIX + secrets.token_hex(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},v1={sign(secret, stamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """Whether `header` is a valid signature of `body` under `secret`, made within `tolerance`
    seconds of `now`."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        stamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = sign(secret, stamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
