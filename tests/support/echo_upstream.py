"""A scriptable upstream app for proxy tests: ``python -m tests.support.echo_upstream PORT``.

/echo/...          200 JSON: method, raw path, query, header pairs, body (base64)
/status/CODE       that status (``?retry_after=N`` adds Retry-After)
/slow?seconds=S    answers after S seconds
/big?mb=N          N MiB streamed in chunks, deterministic bytes (no Content-Length)
/hop               a response with hop-by-hop headers the proxy must strip
/count             how many requests reached this app, per "method path" (GET only)
"""

from __future__ import annotations

import asyncio
import base64
import collections
import sys

from aiohttp import web

SEEN: collections.Counter[str] = collections.Counter()


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


CHUNK = pattern(65536)


async def handle(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/count":
        return web.json_response(dict(SEEN))
    SEEN[f"{request.method} {path}"] += 1
    body = await request.read()
    if path.startswith("/status/"):
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=int(path.split("/")[2]), text="upstream says no",
                            headers=headers)
    if path == "/slow":
        await asyncio.sleep(float(request.query.get("seconds", "1")))
        return web.Response(text="slow ok")
    if path == "/big":
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(int(request.query.get("mb", "1")) * 16):
            await resp.write(CHUNK)
        await resp.write_eof()
        return resp
    if path == "/hop":
        return web.Response(text="hop", headers={
            "Connection": "X-Private-Hop", "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5", "X-End-To-End": "kept"})
    resp = web.json_response({
        "method": request.method,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "headers": list(request.headers.items()),
        "body_b64": base64.b64encode(body).decode(),
    }, status=int(request.query.get("status", "200")))
    resp.headers.add("Set-Cookie", "a=1")
    resp.headers.add("Set-Cookie", "b=2")
    resp.headers["X-Upstream"] = "yes"
    return resp


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
