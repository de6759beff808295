"""The CLI and the API agree: every call, query parameter, body field and response field the CLI
uses (cli/api_contract.py) exists in the API's own OpenAPI document; and real responses carry
the fields the CLI reads."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from smoltbot.api.app import create_app
from smoltbot.cli import api_contract
from smoltbot.cli.api_contract import ENDPOINTS, FIELDS
from smoltbot.core.ids import AGENT_ID_PATTERN
from smoltbot.core.settings import Settings
from tests.integration.cli.conftest import Cli, LocalStack, PutTraces
from tests.integration.cli.test_cli_traces import _exchanges


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    settings = Settings(home="/nonexistent-smoltbot-home", hash_secret="x")  # type: ignore[arg-type]
    return create_app(settings).openapi()


def _component(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = openapi["components"]["schemas"][name]
    return schema


def _alternatives(openapi: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas a value may match: `X | None` is anyOf [X, null]."""
    schema = _component(openapi, schema)
    options = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if options:
        return [alt for option in options for alt in _alternatives(openapi, option)]
    return [schema]


def resolves(openapi: dict[str, Any], component: str, path: str) -> bool:
    """Whether `path` (dotted, `[]` for list items) names a field of the component's schema."""
    schemas = [openapi["components"]["schemas"][component]]
    for part in path.split("."):
        name, is_list = (part[:-2], True) if part.endswith("[]") else (part, False)
        found = []
        for schema in (alt for s in schemas for alt in _alternatives(openapi, s)):
            prop = schema.get("properties", {}).get(name)
            if prop is None:
                continue
            if is_list:
                found += [alt["items"] for alt in _alternatives(openapi, prop) if alt.get("type") == "array"]
            else:
                found.append(prop)
        if not found:
            return False
        schemas = found
    return True


def _response_component(openapi: dict[str, Any], method: str, path: str) -> str:
    operation = openapi["paths"][path][method.lower()]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return str(schema["$ref"].rsplit("/", 1)[1])


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_every_call_the_cli_makes_exists_with_the_response_schema_it_reads(openapi: dict[str, Any],
                                                                           name: str) -> None:
    endpoint = ENDPOINTS[name]
    assert endpoint.path in openapi["paths"], f"the API has no {endpoint.path}"
    assert endpoint.method.lower() in openapi["paths"][endpoint.path], f"the API has no {endpoint.method}"
    assert _response_component(openapi, endpoint.method, endpoint.path) == endpoint.response


@pytest.mark.parametrize("name", sorted(name for name, e in ENDPOINTS.items() if e.query))
def test_every_query_parameter_the_cli_sends_is_declared(openapi: dict[str, Any], name: str) -> None:
    endpoint = ENDPOINTS[name]
    declared = {
        p["name"]
        for p in openapi["paths"][endpoint.path][endpoint.method.lower()].get("parameters", [])
        if p["in"] == "query"
    }
    assert set(endpoint.query) <= declared, set(endpoint.query) - declared


@pytest.mark.parametrize("name", sorted(name for name, e in ENDPOINTS.items() if e.body))
def test_every_body_field_the_cli_sends_is_declared(openapi: dict[str, Any], name: str) -> None:
    endpoint = ENDPOINTS[name]
    body = openapi["paths"][endpoint.path][endpoint.method.lower()]["requestBody"]["content"][
        "application/json"
    ]
    assert endpoint.body in re.findall(r"#/components/schemas/(\w+)", str(body["schema"]))
    for field in endpoint.body_fields:
        assert resolves(openapi, str(endpoint.body), field), f"{endpoint.body}.{field}"


@pytest.mark.parametrize("schema,path", sorted((s, p) for s, paths in FIELDS.items() for p in paths))
def test_every_field_the_cli_reads_is_in_the_api_schema(
    openapi: dict[str, Any], schema: str, path: str
) -> None:
    assert schema in openapi["components"]["schemas"], f"the API has no {schema} schema"
    assert resolves(openapi, schema, path), f"the CLI reads {schema}.{path}, which the API does not define"


def test_the_check_fails_for_a_field_the_api_does_not_have(openapi: dict[str, Any]) -> None:
    # The checker itself: a CLI reading `last_seen` (the API says `last_seen_at`) must be caught.
    assert not resolves(openapi, "Agent", "last_seen")
    assert not resolves(openapi, "TraceList", "items[].action.tool")
    assert resolves(openapi, "TraceList", "items[].verification.violations[].type")


def test_the_cli_agent_id_pattern_is_the_apis(openapi: dict[str, Any]) -> None:
    parameters = openapi["paths"]["/v1/agents/{agent_id}"]["get"]["parameters"]
    agent_id = next(p for p in parameters if p["name"] == "agent_id")
    assert agent_id["schema"]["pattern"] == AGENT_ID_PATTERN


def test_the_error_body_the_cli_reads_is_the_apis(openapi: dict[str, Any]) -> None:
    for path in FIELDS[api_contract.ERROR_SCHEMA]:
        assert resolves(openapi, api_contract.ERROR_SCHEMA, path)


def _present(document: Any, path: str) -> bool:
    parts = path.split(".")
    values = [document]
    for part in parts:
        name, is_list = (part[:-2], True) if part.endswith("[]") else (part, False)
        values = [value[name] for value in values if isinstance(value, dict) and name in value]
        if is_list:
            values = [item for value in values for item in value]
        if not values:
            return False
    return True


async def test_real_responses_carry_the_fields_the_cli_reads(
    cli: Cli, local_stack: LocalStack, initialised: str, credential: str, put_traces: PutTraces
) -> None:
    await put_traces(initialised, *_exchanges(local_stack, credential, initialised))
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        bodies: dict[str, Any] = {
            "Agent": (await client.get(f"/v1/agents/{initialised}")).json(),
            "TraceList": (await client.get(f"/v1/agents/{initialised}/traces")).json(),
            "Integrity": (await client.get(f"/v1/integrity/{initialised}")).json(),
            "Card": (await client.get(f"/v1/agents/{initialised}/card")).json(),
            "Health": (await client.get("/health")).json(),
            "ErrorResponse": (await client.get("/v1/agents/smolt-0123456789abcdef")).json(),
        }
    # Fields the API leaves out when unset on purpose (optional in its schema).
    optional = {
        ("Card", "expires_at"), ("Card", "audit.query_endpoint"), ("ErrorResponse", "error.field"),
        ("Card", "autonomy.escalation_triggers[].condition"),
        ("Card", "autonomy.escalation_triggers[].action"),
        ("TraceList", "items[].verification.violations[].type"),
        ("TraceList", "items[].verification.violations[].severity"),
        ("TraceList", "items[].verification.violations[].description"),
    }
    missing = [f"{schema}.{path}" for schema, body in bodies.items() for path in FIELDS[schema]
               if (schema, path) not in optional and not _present(body, path)]
    assert not missing, missing
