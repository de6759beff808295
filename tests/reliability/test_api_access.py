"""Writes without proof of ownership are refused across every write endpoint of the API, and
a claimed agent cannot be claimed by another credential.

The write endpoints are read from the running API's /openapi.json, not listed here: a new
write endpoint is covered (or fails this test) without anyone remembering to add it. Request
bodies are built from the operation's own schema, aimed at the victim agent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.reliability.harness import Stack, new_credential

pytestmark = pytest.mark.timeout(60)

WRITE_METHODS = ("post", "put", "patch", "delete")


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def sample(schema: dict[str, Any], components: dict[str, Any], agent_id: str, name: str = "") -> Any:
    """A valid value for `schema` (examples first), with every agent_id set to the victim's."""
    schema = _resolve(schema, components)
    if name == "agent_id":
        return agent_id
    for key in ("examples", "example"):
        if key in schema:
            value = schema[key]
            return value[0] if key == "examples" and isinstance(value, list) else value
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, components).get("type") != "null"]
            return sample(options[0], components, agent_id, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: sample(value, components, agent_id, key) for key, value in properties.items()
                if key in schema.get("required", []) or key == "agent_id"}
    if kind == "array":
        return []
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    if schema.get("format") == "email":
        return "owner@example.com"
    return f"{name or 'value'}-1"


def write_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in openapi["paths"].items()
            for method, operation in item.items() if method in WRITE_METHODS]


def _call(stack: Stack, method: str, path: str, operation: dict[str, Any], components: dict[str, Any],
          agent_id: str, credential: str | None) -> Any:
    url = path.replace("{agent_id}", agent_id)
    # Other path parameters (an alert's id, ...) get a well-formed value from their own schema:
    # the ownership check must refuse before anything looks the named object up.
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter["name"] != "agent_id":
            value = sample(parameter.get("schema", {}), components, agent_id, parameter["name"])
            url = url.replace("{" + parameter["name"] + "}", str(value))
    assert "{" not in url, f"a path parameter this test cannot fill: {path}"
    body = None
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        body = sample(content["schema"], components, agent_id)
    headers = {"x-api-key": credential} if credential else {}
    return stack.api(method.upper(), url, json=body, headers=headers)


def test_every_write_endpoint_refuses_a_missing_or_foreign_credential_and_changes_nothing(
        shared_stack: Stack) -> None:
    openapi = shared_stack.api("GET", "/openapi.json").json()
    components = openapi.get("components", {}).get("schemas", {})
    owner, intruder = new_credential("owner"), new_credential("intruder")
    victim = shared_stack.resolve_agent(owner)
    shared_stack.resolve_agent(intruder)
    before_agent = shared_stack.api("GET", f"/v1/agents/{victim}").json()
    before_card = shared_stack.api("GET", f"/v1/agents/{victim}/card").json()

    operations = write_operations(openapi)
    assert len(operations) >= 5, [f"{m} {p}" for m, p, _ in operations]
    wrong = []
    for method, path, operation in operations:
        label = f"{method.upper()} {path}"
        missing = _call(shared_stack, method, path, operation, components, victim, None)
        if missing.status_code != 401:
            wrong.append(f"{label} without a credential: {missing.status_code} {missing.text[:200]}")
        elif missing.json()["error"]["status"] != "UNAUTHENTICATED":
            wrong.append(f"{label}: 401 not in the one error shape: {missing.text[:200]}")
        if not operation.get("security"):
            # Names the caller's own agent (POST /v1/agents/resolve): nothing to take from another agent.
            targets_agent = "{agent_id}" in path or "agent_id" in str(operation.get("requestBody", ""))
            if targets_agent:
                wrong.append(f"{label} writes to a named agent but declares no security scheme")
            continue
        foreign = _call(shared_stack, method, path, operation, components, victim, intruder)
        if foreign.status_code != 403:
            wrong.append(
                f"{label} with another agent's credential: {foreign.status_code} {foreign.text[:200]}"
            )
    assert not wrong, "\n".join(wrong)

    after_agent = shared_stack.api("GET", f"/v1/agents/{victim}").json()
    assert after_agent["claimed"] is False and after_agent == before_agent
    assert shared_stack.api("GET", f"/v1/agents/{victim}/card").json() == before_card
    assert shared_stack.api("GET", f"/v1/agents/{victim}/sessions").json()["items"] == []

    # The same writes with the owner's credential get past the ownership check: the refusals
    # above were about ownership, not about malformed requests.
    for method, path, operation in operations:
        if operation.get("security") and not path.endswith("/claim"):
            response = _call(shared_stack, method, path, operation, components, victim, owner)
            assert response.status_code not in (401, 403), (method, path, response.text[:300])


def test_a_claimed_agent_cannot_be_claimed_by_another_credential(shared_stack: Stack) -> None:
    owner, other = new_credential("claimer"), new_credential("thief")
    agent_id = shared_stack.resolve_agent(owner)
    other_id = shared_stack.resolve_agent(other)
    assert shared_stack.api("POST", f"/v1/agents/{agent_id}/claim").status_code == 401
    assert (
        shared_stack.api("POST", f"/v1/agents/{agent_id}/claim", headers={"x-api-key": other}).status_code
        == 403
    )
    claimed = shared_stack.api("POST", f"/v1/agents/{agent_id}/claim", headers={"x-api-key": owner},
                               json={"email": "owner@example.com"})
    assert claimed.status_code == 200 and claimed.json()["claimed"] is True, claimed.text
    stolen = shared_stack.api(
        "POST",
        f"/v1/agents/{agent_id}/claim",
        headers={"authorization": f"Bearer {other}"},
        json={"email": "thief@example.com"},
    )
    assert stolen.status_code == 403, stolen.text
    again = shared_stack.api("POST", f"/v1/agents/{agent_id}/claim", headers={"x-api-key": owner})
    assert again.status_code == 409, again.text
    assert shared_stack.api("GET", f"/v1/agents/{agent_id}").json()["claimed"] is True
    assert shared_stack.api("GET", f"/v1/agents/{other_id}").json()["claimed"] is False
    # The email is never shown publicly.
    assert "owner@example.com" not in shared_stack.api("GET", f"/v1/agents/{agent_id}").text


def test_the_documented_card_example_is_accepted_for_its_owner(shared_stack: Stack) -> None:
    openapi = shared_stack.api("GET", "/openapi.json").json()
    operation = openapi["paths"]["/v1/agents/{agent_id}/card"]["put"]
    example = operation["requestBody"]["content"]["application/json"]["schema"]["examples"][0]
    owner = new_credential("example")
    agent_id = shared_stack.resolve_agent(owner)
    response = shared_stack.api(
        "PUT", f"/v1/agents/{agent_id}/card", json=example, headers={"x-api-key": owner}
    )
    assert response.status_code == 200, response.text
