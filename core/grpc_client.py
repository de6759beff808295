"""Channels to smoltbot's gRPC services.

An address is "host:port", a comma-separated list of them, or any gRPC target
("dns:///observer.internal:50052"). Lists and DNS names are balanced round-robin, and
grpc reconnects on its own when a backend goes away.

Transport security comes from a `TlsConfig` (`smoltbot.core.tls`): TLS when it has a CA,
with our certificate as client certificate when we have one; plaintext otherwise, and then
only to loopback unless insecure transport was allowed. Its service credential, when it has
one, goes with every call (`smoltbot.core.service_auth`); our servers refuse calls without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2

from smoltbot.core.grpc_server import GRPC_MESSAGE_LIMIT
from smoltbot.core.request_ids import send_request_id
from smoltbot.core.service_auth import attach_credential, attach_credential_sync
from smoltbot.core.tls import TlsConfig, TlsError, target_hosts

__all__ = ["channel_target", "health_check", "health_check_sync", "open_channel", "open_sync_channel"]

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


def _server_name(target: str, tls: TlsConfig) -> str:
    """The name server certificates are checked against. grpc takes it from the target's
    authority, which for an `ipv4:`/`ipv6:` list is the whole list and matches no certificate."""
    if tls.server_name or not target.startswith(("ipv4:", "ipv6:")):
        return tls.server_name
    hosts = set(target_hosts(target))
    if len(hosts) == 1:
        return hosts.pop()
    raise TlsError(f"TLS to several hosts ({target}) needs SMOLTBOT_TLS_SERVER_NAME: the one name "
                   "(DNS or IP SAN) that every one of their certificates carries")


def _options(
    target: str, tls: TlsConfig, message_limit: int = GRPC_MESSAGE_LIMIT
) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", message_limit),
        ("grpc.max_send_message_length", message_limit),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.service_config", json.dumps(_RETRYABLE_READS)),
        ("grpc.enable_retries", 1),
        # Reconnect quickly when a service comes back (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if tls.uses_tls and (name := _server_name(target, tls)):
        options.append(("grpc.ssl_target_name_override", name))
    return options


def open_channel(address: str, tls: TlsConfig | None = None, *,
                 message_limit: int = GRPC_MESSAGE_LIMIT,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """A channel with our limits and round-robin: TLS when `tls` has a CA, else plaintext, which
    is refused (`InsecureTransportError`) for a non-loopback target unless `tls` allows it.

    Every call sends the current request id (`smoltbot.core.request_ids`) and the service
    credential; `interceptors` run first (outermost), so they see every failure."""
    tls = tls or TlsConfig()
    target = channel_target(address)
    tls.check_target(target)
    credentials = tls.channel_credentials()
    chain: list[grpc.aio.ClientInterceptor] = [*interceptors, *send_request_id()]
    if tls.credential is not None:
        tls.credential.value  # noqa: B018 - read (or create) it now, not in the first call
        chain += attach_credential(tls.credential)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=_options(target, tls, message_limit),
                                         interceptors=chain)
    return grpc.aio.secure_channel(target, credentials, options=_options(target, tls, message_limit),
                                   interceptors=chain)


def open_sync_channel(address: str, tls: TlsConfig | None = None) -> grpc.Channel:
    """`open_channel` for synchronous callers (health checks from the CLI)."""
    tls = tls or TlsConfig()
    target = channel_target(address)
    tls.check_target(target)
    credentials = tls.channel_credentials()
    if credentials is None:
        channel = grpc.insecure_channel(target, options=_options(target, tls))
    else:
        channel = grpc.secure_channel(target, credentials, options=_options(target, tls))
    return channel if tls.credential is None else attach_credential_sync(channel, tls.credential)


_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def health_check(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """grpc.health.v1 Check on `channel`, typed (grpc_health's own stub declares no methods)."""
    return channel.unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def health_check_sync(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """`health_check` for a synchronous channel."""
    return channel.unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
