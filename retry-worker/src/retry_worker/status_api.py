"""The request-status API on ``REDRIVE_STATUS_PORT`` (and the console, when enabled).

``GET /v1/requests/{id}`` answers from this replica's :class:`StatusView`:

- ``200`` ``{"id", "state", "attempts", "updated_at", "created_at", "response"}`` (plus
  ``reason`` once dead-lettered): nothing about the request itself, no headers, no body;
- ``400`` for an id that is not a capture id, ``404`` for an id the view does not know;
- ``503`` while the view is still reading the topic and does not know the id yet, so a
  replica that just started never answers 404 for a request it simply has not read.

Every answer is JSON with ``Cache-Control: no-store``. The port serves nothing else but
``/healthz`` and the console (see :mod:`retry_worker.console`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from redrive.status import API_PREFIX, valid_id
from retry_worker.status_store import StatusView

NO_STORE = {"Cache-Control": "no-store"}


def json_response(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(),
                        content_type="application/json", headers=NO_STORE)


def error(status: int, code: str, message: str) -> web.Response:
    return json_response(status, {"error": code, "message": message})


def lookup(view: StatusView, capture_id: str) -> web.Response:
    """The API's answer for one id (shared by the API route and the console's JSON)."""
    if not valid_id(capture_id):
        return error(400, "malformed_id", "a request id is a UUID such as "
                                          "0192f4c8-5b7e-7d3a-9c1e-2f4b6a8d0e1f")
    record = view.get(capture_id)
    if record is not None:
        return json_response(200, record.public())
    if not view.caught_up:
        resp = error(503, "status_loading", "this replica is still reading the status "
                                            "topic; ask again in a moment")
        resp.headers["Retry-After"] = "1"
        return resp
    return error(404, "unknown_request", "no request with this id is known (never "
                                         "captured, or older than the status retention)")


def build_status_app(view: StatusView,
                     console: web.Application | None = None) -> web.Application:
    """The status port's application; ``console`` is mounted at ``/console/``."""

    async def get_request(request: web.Request) -> web.Response:
        return lookup(view, request.match_info["id"])

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def console_off(_: web.Request) -> web.Response:
        return web.Response(
            status=404, content_type="text/plain", headers=NO_STORE,
            text="the console is off: set REDRIVE_CONSOLE_TOKEN on the retry worker to "
                 "enable it\n")

    app = web.Application()
    app.router.add_get(API_PREFIX + "{id}", get_request)
    app.router.add_get("/healthz", healthz)
    if console is not None:
        app.add_subapp("/console/", console)
    else:
        app.router.add_route("*", "/console", console_off)
        app.router.add_route("*", "/console/{tail:.*}", console_off)
    return app
