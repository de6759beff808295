"""One exception hierarchy for every domain module, and its one mapping to gRPC and HTTP.

Domain code raises these; servicers turn them into a gRPC status carrying a
`google.rpc.Status` with an `ErrorInfo` (AIP-193); the API turns gRPC errors into HTTP
through `HTTP_STATUS_BY_GRPC_CODE`. The table lives here so that no layer invents its own.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "ERROR_DOMAIN",
    "HTTP_STATUS_BY_GRPC_CODE",
    "AlreadyExists",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "SmoltbotError",
    "Unauthenticated",
    "Unavailable",
    "error_info_of",
    "grpc_status_for",
    "http_status_for",
]

ERROR_DOMAIN = "smoltbot.v1"


class SmoltbotError(Exception):
    """Base of every error smoltbot's domain raises on purpose.

    `reason` is the UPPER_SNAKE ErrorInfo reason; `metadata` travels with it
    (e.g. {"field": "values.declared"}).
    """

    grpc_code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {key: str(value) for key, value in metadata.items()}


class InvalidArgument(SmoltbotError):
    """The request is malformed; `field` names what to fix."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "FIELD_INVALID"

    def __init__(self, field: str, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(f"{field}: {message}", reason=reason, field=field, **metadata)
        self.field = field


class NotFound(SmoltbotError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(SmoltbotError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Unauthenticated(SmoltbotError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "CREDENTIAL_MISSING"


class PermissionDenied(SmoltbotError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "NOT_OWNER"


class Unavailable(SmoltbotError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    default_reason = "BACKEND_UNAVAILABLE"


HTTP_STATUS_BY_GRPC_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status_for(code: grpc.StatusCode) -> int:
    return HTTP_STATUS_BY_GRPC_CODE.get(code, 500)


def grpc_status_for(error: SmoltbotError) -> grpc.Status:
    """The rich gRPC status (code, message, ErrorInfo details) for a domain error."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message, details=[detail])
    return rpc_status.to_status(status)


def error_info_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carried, if any."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a status without details, or a malformed trailer: no ErrorInfo
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


