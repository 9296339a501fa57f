"""Baseline for the benchmark: the smallest honest aiohttp reverse proxy.

One pooled ClientSession, streamed response bodies, hop-by-hop headers dropped, no
capture, no metrics. The sidecar must be at least as fast as this.

    python bench/minimal_proxy.py LISTEN_PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
       "transfer-encoding", "upgrade", "content-length"}


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    session: aiohttp.ClientSession | None = None

    async def start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        auto_decompress=False)

    async def stop(app: web.Application) -> None:
        assert session is not None
        await session.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with session.request(request.method, upstream + request.raw_path,
                                   headers=headers, data=body or None,
                                   allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
