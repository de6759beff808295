"""`smoltbot up` prints where each service's Prometheus /metrics is, and each one answers there."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_up_end_to_end import RunningStack, stack, standin  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)

#: A metric each service is known by.
_KNOWN = {"gateway": "smoltbot_gateway_spool_depth", "api": "smoltbot_api_requests",
          "registry": "smoltbot_registry_pending_touches", "observer": "smoltbot_observer_exchanges"}


async def test_up_prints_every_services_metrics_url(stack: RunningStack) -> None:  # noqa: F811
    found = {match.group(2): match.group(1) for line in stack.lines
             if (match := re.search(r"(http://\S+/metrics) \((\w+)\)", line))}
    assert set(found) == set(_KNOWN), stack.lines
    async with httpx.AsyncClient() as client:
        for service, url in found.items():
            response = await client.get(url)
            assert response.status_code == 200, (service, url)
            names = {family.name for family in text_string_to_metric_families(response.text)}
            assert _KNOWN[service] in names, (service, sorted(names))
