"""JSON request bodies as RFC 8259 has them, for every route that takes one.

Python's `json.loads` accepts more than JSON: `NaN`/`Infinity`, which no JSON response can carry
back (Starlette renders with `allow_nan=False`, so a stored NaN would be a 500 on every later
read), and `\\ud800`-style escapes of lone surrogates, which no UTF-8 text (PostgreSQL, SQLite,
protobuf strings) can hold. Both are refused here as invalid JSON (422, in the one error shape),
before anything is sent on or stored.

Routers opt in with `APIRouter(route_class=StrictJsonRoute)` (FastAPI's documented way to give
routes their own Request class).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["StrictJsonRequest", "StrictJsonRoute"]

# A \u escape of a surrogate; only such escapes can put a lone surrogate into decoded text.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
            try:
                value = json.loads(body, parse_constant=_refuse_constant)
            except json.JSONDecodeError:
                raise
            except UnicodeDecodeError as error:
                raise json.JSONDecodeError("the body is not UTF-8 text", text, error.start) from None
            except ValueError as error:  # from _refuse_constant
                at = max(text.find(str(error)), 0)
                raise json.JSONDecodeError(f"{error} is not JSON (numbers must be finite)", text,
                                           at) from None
            match = _SURROGATE_ESCAPE.search(body)
            if match is not None:
                try:
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    raise json.JSONDecodeError("a \\u escape of a lone surrogate is not text", text,
                                               match.start()) from None
            self._json = value
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
