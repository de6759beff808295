"""A bare aiohttp relay: the baseline `bench/gateway_latency.py` measures the gateway against.

    python bench/aiohttp_relay.py PORT UPSTREAM_URL

What the gateway was built on, with nothing of the gateway: an aiohttp server whose one handler
forwards every request (method, path, query, body, end-to-end headers) to UPSTREAM_URL with one
pooled keep-alive aiohttp ClientSession and relays the response, chunk by chunk. No capture, no
identity, no shipping, no target checks: the floor of an aiohttp-on-both-sides relay. Sized
responses are read whole and sent in one write, streams chunk by chunk, as the gateway does.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-connection", "host", "content-length", "expect"})


def build(upstream: str, prefix: str = "/anthropic") -> web.Application:
    state: dict[str, aiohttp.ClientSession] = {}

    async def relay(request: web.Request) -> web.StreamResponse:
        session = state.get("session")
        if session is None:
            session = state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        body = await request.read()
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        target = upstream + request.raw_path.removeprefix(prefix)
        async with session.request(request.method, target, headers=headers, data=body or None,
                                   allow_redirects=False) as upstream_response:
            out = CIMultiDict((k, v) for k, v in upstream_response.headers.items()
                              if k.lower() not in _HOP_BY_HOP)
            if upstream_response.content_length is not None:
                # Sized: read whole and answer in one write, as the gateway does.
                data = await upstream_response.read()
                return web.Response(status=upstream_response.status, headers=out, body=data)
            response = web.StreamResponse(status=upstream_response.status, headers=out)
            try:
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the load generator closed its connections at the end of a run
            return response

    app = web.Application(handler_args={"auto_decompress": False, "access_log": None})
    app.router.add_route("*", prefix + "/{path:.*}", relay)
    return app


if __name__ == "__main__":
    web.run_app(build(sys.argv[2].rstrip("/")), host="127.0.0.1", port=int(sys.argv[1]),
                access_log=None, print=None)
