"""The API's OpenAPI document promises what the app does: one error shape everywhere, stable
response schemas for the CLI, no CDN-loaded docs page."""

from __future__ import annotations

from pathlib import Path

from smoltbot.api.app import create_app
from smoltbot.core.settings import load_settings


def _spec(tmp_path: Path) -> dict:
    return create_app(load_settings(home=tmp_path, hash_secret="unit")).openapi()


def test_every_error_response_is_documented_with_the_one_error_body(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "default" in responses, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith("2"):
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


def test_writes_declare_the_credential_and_lists_page_with_a_cursor(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method in ("put", "post") and path != "/v1/agents/resolve":
                assert operation["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}], path
                assert {"401", "403"} <= set(operation["responses"]), path
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            ok = operation["responses"].get("200", {}).get("content", {}).get("application/json", {})
            ref = ok.get("schema", {}).get("$ref", "")
            if ref.endswith("List"):
                assert {"limit", "cursor"} <= names, path
                schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
                assert {"items", "next_cursor"} <= set(schema["required"]), path


def test_no_docs_page_that_loads_assets_from_a_cdn(tmp_path: Path) -> None:
    app = create_app(load_settings(home=tmp_path, hash_secret="unit"))
    assert app.docs_url is None and app.redoc_url is None
