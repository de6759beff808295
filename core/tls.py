"""Transport security of the gRPC links between smoltbot's services.

* A server with a certificate and key (`SMOLTBOT_TLS_CERT`, `SMOLTBOT_TLS_KEY`, PEM files)
  serves TLS. When `SMOLTBOT_TLS_CA` is also set it requires a client certificate signed by
  that CA (mutual TLS).
* A client uses TLS when `SMOLTBOT_TLS_CA` is set and checks the server's certificate against
  that CA (and nothing else); it presents `SMOLTBOT_TLS_CERT`/`KEY` when they are set.
* Without TLS, traffic stays on loopback: a server bound to another interface, or a client
  aimed at another host, refuses to start unless `SMOLTBOT_ALLOW_INSECURE_GRPC=true`.

The `TlsConfig` also carries the installation's service credential
(`smoltbot.core.service_auth`): servers built with it refuse calls that lack it, channels built
with it send it on every call. TLS protects the link; the credential says the caller is one of
our services, also on loopback, where any local user can connect.

One process has one `TlsConfig` (its certificate serves both roles), built once at its entry
point by `TlsConfig.from_settings`. Every problem is a `TlsError` or a `ServiceCredentialError`,
both `OSError`s, which `smoltbot serve` reports as a one-line start error.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from smoltbot.core.service_auth import ServiceCredential

if TYPE_CHECKING:
    from smoltbot.core.settings import Settings

__all__ = [
    "InsecureTransportError",
    "TlsConfig",
    "TlsError",
    "client_tls",
    "is_loopback_host",
    "target_hosts",
]

_INSECURE_HINT = ("set SMOLTBOT_TLS_CERT and SMOLTBOT_TLS_KEY (and SMOLTBOT_TLS_CA for mutual TLS), "
                  "or SMOLTBOT_ALLOW_INSECURE_GRPC=true on a network you trust")


class TlsError(OSError):
    """The TLS configuration cannot be used (missing pair, unreadable file, not PEM)."""


class InsecureTransportError(TlsError):
    """Plaintext gRPC would leave the machine and nobody allowed it."""


@dataclass(frozen=True, repr=False)
class TlsConfig:
    """PEM bytes of this process's certificate chain, its key and the CA it trusts."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    #: Name the server certificate must carry, when it is not the host in the address.
    server_name: str = ""
    allow_insecure: bool = False
    #: Sent by our channels, required by our servers (None: neither, for tests of TLS alone).
    credential: ServiceCredential | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsError("SMOLTBOT_TLS_CERT and SMOLTBOT_TLS_KEY must be set together")

    def __repr__(self) -> str:  # never print a key
        return (f"TlsConfig(cert={self.cert is not None}, key={'<hidden>' if self.key else None}, "
                f"ca={self.ca is not None}, server_name={self.server_name!r}, "
                f"allow_insecure={self.allow_insecure}, credential={self.credential!r})")

    @classmethod
    def from_files(cls, cert: str | Path | None = None, key: str | Path | None = None,
                   ca: str | Path | None = None, *, server_name: str = "",
                   allow_insecure: bool = False, credential: ServiceCredential | None = None) -> TlsConfig:
        return cls(
            cert=_read_pem(cert, "SMOLTBOT_TLS_CERT", b"CERTIFICATE"),
            key=_read_pem(key, "SMOLTBOT_TLS_KEY", b"PRIVATE KEY"),
            ca=_read_pem(ca, "SMOLTBOT_TLS_CA", b"CERTIFICATE"),
            server_name=server_name,
            allow_insecure=allow_insecure,
            credential=credential,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsConfig:
        """TLS from the settings, and the service credential: SMOLTBOT_SERVICE_TOKEN, else the one
        in the data dir (read or generated when the first channel or server needs it)."""
        return cls.from_files(settings.tls_cert or None, settings.tls_key or None, settings.tls_ca or None,
                              server_name=settings.tls_server_name,
                              allow_insecure=settings.allow_insecure_grpc,
                              credential=ServiceCredential(settings.service_token, home=settings.home))

    # ------------------------------------------------------------------ server side

    @property
    def serves_tls(self) -> bool:
        return self.cert is not None

    @property
    def requires_client_cert(self) -> bool:
        return self.serves_tls and self.ca is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS (mutual when a CA is set) credentials, or None for plaintext."""
        if self.cert is None or self.key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=self.ca is not None)

    def check_bind(self, address: str) -> None:
        """Raises unless a plaintext server may bind `address` ("host:port")."""
        if self.serves_tls or self.allow_insecure:
            return
        host = address.rpartition(":")[0].strip("[]") if ":" in address else address
        if not is_loopback_host(host):
            raise InsecureTransportError(
                f"refusing to serve plaintext gRPC on {address}, which is reachable from other machines: "
                + _INSECURE_HINT)

    # ------------------------------------------------------------------ client side

    @property
    def uses_tls(self) -> bool:
        return self.ca is not None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials checking the server against our CA (with our client certificate when
        we have one), or None for plaintext."""
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def check_target(self, target: str) -> None:
        """Raises unless a plaintext channel to `target` (an address or gRPC target) is allowed."""
        if self.uses_tls or self.allow_insecure:
            return
        remote = [host for host in target_hosts(target) if not is_loopback_host(host)]
        if remote:
            raise InsecureTransportError(
                f"refusing plaintext gRPC to {target}: {', '.join(remote)} is not loopback; set "
                "SMOLTBOT_TLS_CA (and SMOLTBOT_TLS_CERT/KEY when the server wants a client certificate), "
                "or SMOLTBOT_ALLOW_INSECURE_GRPC=true on a network you trust")


def client_tls(settings: Settings, *targets: str) -> TlsConfig:
    """The process's TLS configuration, checked against the gRPC targets it will dial, so that
    a misconfiguration stops the process at start rather than at its first call."""
    tls = TlsConfig.from_settings(settings)
    for target in targets:
        tls.check_target(target)
    return tls


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_hosts(target: str) -> list[str]:
    """The hosts an address ("h:p", "h1:p,h2:p") or gRPC target URI would connect to.

    Unix sockets count as loopback; an unknown scheme gives its authority-less path as host,
    which is then treated as remote (the safe side).
    """
    target = target.strip()
    if target.startswith(("unix:", "unix-abstract:")):
        return ["localhost"]
    if target.startswith(("ipv4:", "ipv6:")):
        parts = target.split(":", 1)[1].split(",")
    elif target.startswith("dns:"):
        rest = target[4:]
        if rest.startswith("//"):  # dns://authority/host:port
            rest = rest[2:].split("/", 1)[1] if "/" in rest[2:] else ""
        parts = [rest]
    elif "://" in target:
        parts = [target.split("://", 1)[1].split("/", 1)[-1]]
    else:
        parts = target.split(",")
    return [_host_of(part.strip()) for part in parts if part.strip()]


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    if hostport.count(":") > 1:  # a bare IPv6 address without a port
        return hostport
    return hostport.rpartition(":")[0] if ":" in hostport else hostport


def _read_pem(path: str | Path | None, variable: str, marker: bytes) -> bytes | None:
    if path is None or str(path) == "":
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TlsError(f"cannot read {variable} ({path}): {error.strerror or error}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise TlsError(f"{variable} ({path}) is not a PEM file with a {marker.decode()}")
    return data
