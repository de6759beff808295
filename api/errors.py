"""Every error the API returns has one JSON shape:

    {"error": {"code": 404, "status": "NOT_FOUND", "reason": "AGENT_NOT_FOUND",
               "message": "agent smolt-0123abcd not found", "field": null}}

`code` is the HTTP status; `status` the gRPC code name (or, for HTTP-only errors such as
405, the HTTP reason in UPPER_SNAKE); `reason` the ErrorInfo reason (AIP-193); `field` names
the parameter or body field to fix, when there is one.

gRPC errors map to HTTP through `smoltbot.core.errors.http_status_for`, the one table.
Dashboard pages get the same status as a friendly HTML page instead. The OpenAPI document
lists, per route, which of these statuses it can answer (`error_responses`).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from smoltbot.api.schemas import ErrorResponse
from smoltbot.core.errors import SmoltbotError, error_info_of, http_status_for

__all__ = [
    "READ_ERRORS",
    "WRITE_ERRORS",
    "BackendError",
    "error_body",
    "error_responses",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

# gRPC code names for statuses that did not come from a gRPC call (the inverse of the table
# in core.errors, restricted to the unambiguous entries).
_STATUS_NAME_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_REASON_BY_GRPC_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: "FIELD_INVALID",
    grpc.StatusCode.UNAUTHENTICATED: "CREDENTIAL_MISSING",
    grpc.StatusCode.PERMISSION_DENIED: "NOT_OWNER",
    grpc.StatusCode.UNAVAILABLE: "BACKEND_UNAVAILABLE",
    grpc.StatusCode.DEADLINE_EXCEEDED: "BACKEND_TIMEOUT",
}


_MAX_SHOWN_PATH = 120

# gRPC request fields as the REST caller knows them; a card body is `card_json` to the registry.
_REST_NAME_OF_FIELD = {"page_token": "cursor", "page_size": "limit", "order_by": "order",
                       "agent_hash": "credential", "card_json": "body", "session_ids": "session_id"}


def _rest_field(field: str) -> str:
    head, dot, rest = field.partition(".")
    if head == "card_json" and rest:
        return rest
    return _REST_NAME_OF_FIELD.get(head, head) + dot + rest


class BackendError(Exception):
    """A failed call to one of the gRPC services, with which one it was (for the message)."""

    def __init__(self, service: str, address: str, code: grpc.StatusCode, details: str,
                 rpc_error: grpc.aio.AioRpcError | None = None) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.address = address
        self.code = code
        self.details = details
        self.rpc_error = rpc_error


def _status_name(code: int) -> str:
    if code in _STATUS_NAME_BY_HTTP:
        return _STATUS_NAME_BY_HTTP[code]
    try:
        return HTTPStatus(code).phrase.upper().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "UNKNOWN"


def error_body(code: int, *, message: str, reason: str | None = None, status: str | None = None,
               field: str | None = None) -> dict[str, Any]:
    """The one error body. Kept as a plain function so templates and tests share it."""
    status_name = status or _status_name(code)
    return {
        "error": {
            "code": code,
            "status": status_name,
            "reason": reason or status_name,
            "message": message,
            "field": field,
        }
    }


# --------------------------------------------------------------------------- the OpenAPI document

_ERROR_DESCRIPTIONS = {
    400: "The request is invalid (a backend rejected a value, e.g. a malformed cursor or card).",
    401: "The call needs the agent's credential (x-api-key or Authorization: Bearer).",
    403: "The credential belongs to another agent.",
    404: "No such agent, trace or resource.",
    409: "Conflict (e.g. the agent is already claimed).",
    422: "A parameter or body field does not match its schema; `field` names it.",
    503: "A backend service is unavailable.",
    504: "A backend service did not answer in time.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body."""
    return {code: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


#: Errors any call that reaches a backend can get.
READ_ERRORS = error_responses(400, 404, 422, 503, 504)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 503, 504)


# --------------------------------------------------------------------------- handlers

def _is_dashboard(request: Request) -> bool:
    """Dashboard routes answer errors with HTML; so do unknown paths asked for by a browser."""
    path = request.url.path
    if path.startswith(("/v1/", "/static/")) or path in ("/health", "/openapi.json", "/docs", "/v1"):
        return False
    if path == "/" or path.startswith("/agents/"):
        return True
    return "text/html" in request.headers.get("accept", "")


def _respond(request: Request, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    code = body["error"]["code"]
    if _is_dashboard(request) and request.method in ("GET", "HEAD"):
        templates = getattr(request.app.state, "templates", None)
        if templates is not None:
            return templates.TemplateResponse(
                request, "error.html", {"error": body["error"], "title": HTTPStatus(code).phrase},
                status_code=code, headers=headers,
            )
    return JSONResponse(body, status_code=code, headers=headers)


def _backend_body(error: BackendError) -> dict[str, Any]:
    code = http_status_for(error.code)
    info = error_info_of(error.rpc_error) if error.rpc_error is not None else None
    reason = info.reason if info is not None and info.reason else _DEFAULT_REASON_BY_GRPC_CODE.get(
        error.code, error.code.name)
    grpc_field = info.metadata.get("field") if info is not None else None
    field = _rest_field(grpc_field) if grpc_field else None
    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # The gRPC details ("failed to connect to all addresses; ...") are for the log.
        what = "is unavailable" if error.code is grpc.StatusCode.UNAVAILABLE else "did not answer in time"
        message = f"the {error.service} service {what}; try again shortly"
    elif code >= 500:
        message = f"the {error.service} service failed; see its log"
    else:
        message = error.details or error.code.name.lower()
        if grpc_field and field and message.startswith(f"{grpc_field}:"):
            message = field + message[len(grpc_field):]
    return error_body(code, message=message, reason=reason, status=error.code.name, field=field)


async def _on_backend_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, BackendError)
    if http_status_for(error.code) >= 500:
        logger.warning("%s call failed (%s at %s): %s", error.service, error.code.name, error.address,
                       error.details)
    return _respond(request, _backend_body(error))


async def _on_smoltbot_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, SmoltbotError)
    code = http_status_for(error.grpc_code)
    return _respond(request, error_body(code, message=error.message, reason=error.reason,
                                        status=error.grpc_code.name, field=error.metadata.get("field")))


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc[1:]] if len(loc) > 1 else [str(part) for part in loc]
    return ".".join(parts)


async def _on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    if not problems:
        return _respond(request, error_body(422, message="invalid request", reason="FIELD_INVALID"))
    if problems[0].get("type") == "json_invalid":
        # loc is ("body", <offset>): the field to fix is the body; say where and why.
        offset = problems[0].get("loc", ("body", 0))[-1]
        why = (problems[0].get("ctx") or {}).get("error") or "not JSON"
        return _respond(request, error_body(422, message=f"body: invalid JSON at character {offset}: {why}",
                                            reason="FIELD_INVALID", field="body"))
    messages = []
    for problem in problems:
        field = _field_of(tuple(problem.get("loc", ())))
        where = problem.get("loc", ("",))[0]
        text = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        if problem.get("type") == "missing":
            text = f"required {where} parameter is missing" if where in ("query", "path", "header") \
                else "required field is missing"
        messages.append(f"{field}: {text}")
    first = _field_of(tuple(problems[0].get("loc", ())))
    return _respond(request, error_body(422, message="; ".join(messages), reason="FIELD_INVALID",
                                        field=first or None))


def _allowed_methods(request: Request) -> str:
    """The methods the OpenAPI document lists for this path (Starlette names only those of the
    first matching route). The most specific template wins: /v1/agents/resolve over
    /v1/agents/{agent_id}."""
    table: list[tuple[int, re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            methods = {method.upper() for method in operations}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((template.count("{"), pattern, methods))
        request.app.state.allow_table = table
    matching = [(params, methods) for params, pattern, methods in table if pattern.match(request.url.path)]
    if not matching:
        return ""
    fewest = min(params for params, _ in matching)
    allowed = set().union(*(methods for params, methods in matching if params == fewest))
    return ", ".join(sorted(allowed))


def _shown_path(request: Request) -> str:
    """The request's path as error messages repeat it: bounded, so a client cannot make a page
    (or a log) carry a long text of its choosing."""
    path = request.url.path
    return path if len(path) <= _MAX_SHOWN_PATH else path[:_MAX_SHOWN_PATH] + "…"


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = error.status_code
    headers = dict(error.headers or {})
    if code == 404:
        message = f"no such resource: {_shown_path(request)}"
        reason = "ROUTE_NOT_FOUND"
    elif code == 413:
        message = str(error.detail)
        reason = "BODY_TOO_LARGE"
    elif code == 405:
        allowed = _allowed_methods(request) or headers.get("Allow", "")
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed on {_shown_path(request)}; allowed: {allowed}"
        reason = "METHOD_NOT_ALLOWED"
    else:
        message = str(error.detail) if error.detail else HTTPStatus(code).phrase
        reason = None
    return _respond(request, error_body(code, message=message, reason=reason), headers=headers or None)


async def _on_unexpected(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _respond(request, error_body(500, message="internal error; see the API log", reason="INTERNAL"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BackendError, _on_backend_error)
    app.add_exception_handler(SmoltbotError, _on_smoltbot_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
