"""Channels to smoltbot's gRPC services.

An address is "host:port", a comma-separated list of them, or any gRPC target
("dns:///observer.internal:50052"). Lists and DNS names are balanced round-robin, and
grpc reconnects on its own when a backend goes away.
"""

from __future__ import annotations

import json

import grpc

from smoltbot.core.grpc_server import GRPC_MESSAGE_LIMIT

__all__ = ["channel_target", "open_channel"]

_RETRYABLE_READS = {
    "methodConfig": [
        {
            "name": [{}],
            "waitForReady": False,
        }
    ],
    "loadBalancingConfig": [{"round_robin": {}}],
}


def channel_target(address: str) -> str:
    """The gRPC target for an address, a list of addresses, or a target URI."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if not parts:
        raise ValueError("empty gRPC address")
    if len(parts) == 1:
        return parts[0] if "://" in parts[0] or parts[0].startswith(("dns:", "ipv4:", "ipv6:", "unix:")) \
            else f"dns:///{parts[0]}"
    # Several host:port pairs: an ipv4/ipv6 list when they are literal addresses, else
    # grpc cannot take a list, so we fall back to the first DNS name (documented).
    if all(_is_ipv4_literal(part) for part in parts):
        return "ipv4:" + ",".join(parts)
    return f"dns:///{parts[0]}"


def _is_ipv4_literal(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    pieces = host.split(".")
    return port.isdigit() and len(pieces) == 4 and all(p.isdigit() for p in pieces)


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel (loopback and trusted networks) with our limits and round-robin."""
    options = [
        ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
        ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.service_config", json.dumps(_RETRYABLE_READS)),
        ("grpc.enable_retries", 1),
        # Reconnect quickly when a service comes back (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    return grpc.aio.insecure_channel(channel_target(address), options=options)
