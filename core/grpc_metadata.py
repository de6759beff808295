"""Client interceptors for `grpc.aio` channels that set one metadata entry on every call.

The service credential (`service_auth`) and the request id (`request_ids`) both travel this way.
grpc.aio files an interceptor under the first call kind it implements only, so one interceptor
per kind is built around the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["metadata_interceptors"]

#: The value to send for a call, read when the call is made (None: leave the metadata alone).
MetadataValue = Callable[[], str | None]


class _SetMetadata:
    def __init__(self, key: str, value: MetadataValue) -> None:
        self._key = key
        self._value = value

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        value = self._value()
        if value is None:
            return details
        pairs = [(key, old) for key, old in (details.metadata or ()) if key != self._key]
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*pairs, (self._key, value)),
                                          details.credentials, details.wait_for_ready)


class _UnaryUnary(_SetMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_SetMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_SetMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_SetMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def metadata_interceptors(key: str, value: MetadataValue) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors (one per call kind) that send `key: value()` with every call, replacing any
    entry of that key the caller set."""
    return [kind(key, value) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
