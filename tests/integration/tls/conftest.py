"""A test PKI: the CA every service trusts, a certificate per role, and an outsider CA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from smoltbot.core.settings import Settings
from tests.integration.tls.certs import Authority, Issued

#: The service credential of the services these tests start (configured, as across machines).
SERVICE_TOKEN = "tls-tests-service-token-0123456789abcdef"


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    client: Issued
    outsider_ca: Authority
    #: Signed by the outsider CA, with the same names as `client`.
    outsider_client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path / "pki")
    outsider = Authority(tmp_path / "outsider", name="someone else's CA")
    return Pki(ca, ca.issue("server"), ca.issue("client"), outsider, outsider.issue("client"))


@pytest.fixture
def mtls_settings(settings_factory: Callable[..., Settings], pki: Pki) -> Callable[..., Settings]:
    """Settings of a service with the server certificate and mutual TLS, plus overrides."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key),
                                     "tls_ca": str(pki.ca.ca), "service_token": SERVICE_TOKEN}
        values.update(overrides)
        return settings_factory(**values)

    return build
