"""The request id: one id per public API request, on every log line written for it, in the API
and in the gRPC services it calls.

The API takes the caller's `x-request-id` (when it is sane, see `clean_request_id`) or makes
one, and keeps it in `REQUEST_ID` while it serves the request. Every smoltbot client channel
(`smoltbot.core.grpc_client`) sends the id of the request it is called in as `x-request-id`
metadata (`send_request_id`); every smoltbot gRPC server reads it back into the same
contextvar for the RPC (`ReadRequestId`), so it follows the request into the Registry and the
Observer, and on from there. `RequestIdLogFilter`, installed on the process's log handler where
logging is configured (`smoltbot.cli.stack.configure_logging`), writes it on every record as
`%(request_id)s`: "-" for lines that belong to no request (startup, background work).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from smoltbot.core.grpc_metadata import metadata_interceptors

__all__ = [
    "LOG_FORMAT",
    "REQUEST_ID",
    "REQUEST_ID_METADATA",
    "ReadRequestId",
    "RequestIdLogFilter",
    "clean_request_id",
    "send_request_id",
]

#: The gRPC metadata key (and HTTP header) that carries the id.
REQUEST_ID_METADATA = "x-request-id"
#: The id of the request being served in this context; "" outside one.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("smoltbot_request_id", default="")
#: Every process's log line: the request id sits between the level and the logger.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"

# What a caller may choose as an id: short and plain, so it cannot forge or flood a log line.
_SANE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def clean_request_id(value: str | bytes | None) -> str:
    """`value` when it is a usable id (1-64 of A-Z a-z 0-9 . _ -), else ""."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if value and _SANE.match(value) else ""


class RequestIdLogFilter(logging.Filter):
    """Puts the current request id on every record (`%(request_id)s`), "-" outside a request.
    Installed on handlers, so it covers every logger, ours and libraries'."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class ReadRequestId(grpc.aio.ServerInterceptor):
    """Copies the caller's `x-request-id` metadata into `REQUEST_ID` for the RPC.

    grpc.aio runs the interceptors and then the handler in the one task it makes for each RPC,
    so a value set here is what the handler (and everything it awaits) reads, and it ends with
    the RPC. Calls without an id set "" explicitly, so nothing carries over.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        found = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_METADATA:
                found = clean_request_id(value)
                break
        REQUEST_ID.set(found)
        return await continuation(handler_call_details)


# --------------------------------------------------------------------------- client side


def send_request_id() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio` channels that send the current request id (when there is one)
    as `x-request-id` metadata with every call, so the services' log lines for it carry it too.
    The id is read when the call is made, in the caller's context."""
    return metadata_interceptors(REQUEST_ID_METADATA, lambda: REQUEST_ID.get() or None)
