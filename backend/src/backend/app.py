"""The demo backend's aiohttp applications: the original demo's API, faults, idempotency.

:func:`build_app` makes the main application (``/api/...`` plus the control API) and
:func:`build_control_app` the control-only one for ``BACKEND_CONTROL_PORT``. Both share
one :class:`BackendState`, stored under the :data:`STATE` key.

Middlewares, outermost first: turn errors into JSON, count the request, inject the
current fault, answer repeated ``Idempotency-Key`` s. A fault therefore happens before
any work and is never stored as a key's response, so a redriven request is served for
real once the fault clears. Control paths (``/_faults``, ``/_stats``) skip all but the
first, so faults never affect them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from backend.faults import (
    Clock,
    FaultMode,
    FaultSpec,
    FaultSpecError,
    FaultState,
    parse_fault_spec,
)
from backend.idempotency import (
    SAFE_METHODS,
    IdempotencyStore,
    KeyLocks,
    StoredResponse,
    check_key,
    fingerprint,
)
from backend.users import InvalidUser, Users, validate_new_user

log = logging.getLogger(__name__)

CONTROL_PATHS = frozenset({"/_faults", "/_stats"})
REPLAYED_HEADER = "Idempotent-Replayed"


class PortSwitch(Protocol):
    """Closes and reopens the main listening socket (``refuse`` mode)."""

    async def refuse(self, seconds: float | None) -> None:
        """Stop accepting connections on the main port; reopen after ``seconds`` if set."""

    async def reopen(self) -> None:
        """Accept connections on the main port again now (no-op if it is open)."""


class NoPortSwitch:
    """A :class:`PortSwitch` for an app without its own listener (e.g. a test client)."""

    async def refuse(self, seconds: float | None) -> None:
        """Do nothing: there is no socket to close."""

    async def reopen(self) -> None:
        """Do nothing: there is no socket to open."""


@dataclass
class Stats:
    """Counters for ``GET /_stats``, which the demo uses to show exactly-once effects."""

    requests_by_path: Counter[str] = field(default_factory=Counter)
    idempotent_replays: int = 0
    idempotency_conflicts: int = 0


@dataclass
class BackendState:
    """Everything the handlers share, held by both applications."""

    clock: Clock = time.monotonic
    faults: FaultState = field(init=False)
    users: Users = field(default_factory=Users)
    responses: IdempotencyStore = field(default_factory=IdempotencyStore)
    key_locks: KeyLocks = field(default_factory=KeyLocks)
    stats: Stats = field(default_factory=Stats)
    port_switch: PortSwitch = field(default_factory=NoPortSwitch)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at SIGTERM so that ``slow`` requests stop waiting and the process can exit."""
    started_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.faults = FaultState(self.clock)
        self.started_at = self.clock()

    def uptime(self) -> float:
        """Seconds since start."""
        return self.clock() - self.started_at


STATE = web.AppKey("state", BackendState)
CONTROL_ONLY = web.AppKey("control_only", bool)
"""True for the separate control port's app, which stays up while the main port refuses."""


def error_response(status: int, error: str, message: str, *,
                   headers: dict[str, str] | None = None, **fields: Any) -> web.Response:
    """A JSON error body ``{"error", "message", ...}`` with ``status``."""
    return web.json_response({"error": error, "message": message, **fields},
                             status=status, headers=headers)


async def read_json(request: web.Request) -> object:
    """The request body as JSON; raises :class:`ValueError` with a readable reason."""
    raw = await request.read()
    if not raw:
        raise ValueError("request body is empty; expected JSON")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON ({exc})") from None


def reset_connection(request: web.Request) -> None:
    """Drop the client's connection at once with a TCP RST and send no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send RST rather than FIN: the client sees a reset.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- the original demo's API ------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    """``GET /api/health``: liveness and uptime."""
    state = request.app[STATE]
    return web.json_response({"status": "ok", "uptime_seconds": round(state.uptime(), 3)})


async def list_users(request: web.Request) -> web.Response:
    """``GET /api/users``: every user."""
    users = request.app[STATE].users.all()
    return web.json_response({"users": [u.to_json() for u in users]})


async def create_user(request: web.Request) -> web.Response:
    """``POST /api/users``: ``{"name", "email"}`` becomes a user (201), else 400."""
    state = request.app[STATE]
    try:
        name, email = validate_new_user(await read_json(request))
    except InvalidUser as exc:
        return error_response(400, "validation_error", exc.message, field=exc.field)
    except ValueError as exc:
        return error_response(400, "invalid_json", str(exc), field="body")
    user = state.users.create(name, email)
    log.debug("user created", extra={"user_id": user.id})
    return web.json_response(user.to_json(), status=201)


async def get_data(request: web.Request) -> web.Response:
    """``GET /api/data``: a fixed list of items and when it was generated."""
    items = [{"id": i, "name": name, "value": value}
             for i, (name, value) in enumerate((("alpha", 10), ("beta", 20), ("gamma", 30)), 1)]
    generated_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return web.json_response({"items": items, "generated_at": generated_at})


# --- control API ------------------------------------------------------------------------

async def get_faults(request: web.Request) -> web.Response:
    """``GET /_faults``: the current fault state."""
    return web.json_response(request.app[STATE].faults.snapshot())


async def put_faults(request: web.Request) -> web.Response:
    """``PUT /_faults``: set the fault (strictly validated; 400 names the bad field)."""
    state = request.app[STATE]
    try:
        spec = parse_fault_spec(await read_json(request),
                                refuse_needs_duration=not request.app[CONTROL_ONLY])
    except FaultSpecError as exc:
        return error_response(400, "invalid_fault", str(exc), field=exc.field)
    except ValueError as exc:
        return error_response(400, "invalid_json", str(exc), field="body")
    await apply_fault(state, spec)
    log.info("fault set", extra={"fault": spec.to_json()})
    response = web.json_response(state.faults.snapshot())
    if spec.mode is FaultMode.REFUSE:
        # This connection may be to the port that is closing; do not leave it for reuse.
        response.force_close()
    return response


async def delete_faults(request: web.Request) -> web.Response:
    """``DELETE /_faults``: back to normal, reopening the main port if it was refusing."""
    state = request.app[STATE]
    await apply_fault(state, FaultSpec())
    log.info("faults cleared")
    return web.json_response(state.faults.snapshot())


async def apply_fault(state: BackendState, spec: FaultSpec) -> None:
    """Make ``spec`` current, closing or reopening the main port as it requires."""
    state.faults.set(spec)
    if spec.mode is FaultMode.REFUSE:
        await state.port_switch.refuse(spec.for_seconds)
    else:
        await state.port_switch.reopen()


async def get_stats(request: web.Request) -> web.Response:
    """``GET /_stats``: request, user, replay and fault counters."""
    state = request.app[STATE]
    stats = state.stats
    return web.json_response({
        "requests_total": sum(stats.requests_by_path.values()),
        "requests_by_path": dict(sorted(stats.requests_by_path.items())),
        "users_created": state.users.created,
        "users_total": len(state.users.all()),
        "idempotent_replays": stats.idempotent_replays,
        "idempotency_conflicts": stats.idempotency_conflicts,
        "idempotency_keys_stored": len(state.responses),
        "faults_injected": state.faults.injected_total,
        "faults_injected_by_mode": dict(state.faults.injected_by_mode),
        "uptime_seconds": round(state.uptime(), 3),
    })


# --- middlewares ------------------------------------------------------------------------

def _route_name(request: web.Request) -> str:
    """The matched route's path pattern, so unknown paths cannot grow the counters."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count application requests by route (control requests are not counted)."""
    if request.path not in CONTROL_PATHS:
        request.app[STATE].stats.requests_by_path[_route_name(request)] += 1
    return await handler(request)


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the current fault to a matching request before any work is done."""
    state = request.app[STATE]
    if request.path in CONTROL_PATHS:
        return await handler(request)
    spec = state.faults.take(request.path)
    if spec is None:
        return await handler(request)
    if spec.count is not None and state.faults.current().mode is FaultMode.NONE:
        log.info("fault count used up; serving normally", extra={"fault": spec.to_json()})
    if spec.mode is FaultMode.STATUS:
        headers = {} if spec.retry_after is None else {"Retry-After": str(spec.retry_after)}
        return error_response(spec.status, "injected_fault",
                              f"fault injected: status {spec.status}", headers=headers)
    if spec.mode is FaultMode.SLOW:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), spec.delay_seconds)
        if state.stopping.is_set():
            response = error_response(503, "shutting_down", "the backend is shutting down")
            response.force_close()
            return response
        return await handler(request)
    # reset, or refuse reaching a connection that was open before the port closed.
    if spec.mode is FaultMode.RESET:
        await request.read()  # take the whole request, so it did reach the app
    reset_connection(request)
    # Nothing can be written any more; aiohttp notices the closed transport and moves on.
    return web.Response(status=499)


@web.middleware
async def replay_idempotent(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a repeated ``Idempotency-Key`` with the first response (or 422 on misuse)."""
    raw_key = request.headers.get("Idempotency-Key")
    if raw_key is None or request.method in SAFE_METHODS or request.path in CONTROL_PATHS:
        return await handler(request)
    key = check_key(raw_key)
    if key is None:
        return error_response(400, "invalid_idempotency_key",
                              "Idempotency-Key must be 1-255 printable characters")
    state = request.app[STATE]
    request_fingerprint = fingerprint(request.method, request.path_qs, await request.read(),
                                      request.content_type)
    async with state.key_locks.hold(key):
        stored = state.responses.get(key)
        if stored is not None:
            if stored.fingerprint != request_fingerprint:
                state.stats.idempotency_conflicts += 1
                return error_response(
                    422, "idempotency_key_reused",
                    "this Idempotency-Key was first used for a different request "
                    "(method, path or body differ); use a new key for new work")
            state.stats.idempotent_replays += 1
            return web.Response(status=stored.status, body=stored.body,
                                headers={"Content-Type": stored.content_type,
                                         REPLAYED_HEADER: "true"})
        response = await handler(request)
        # Server errors are not the request's fault: a retry with the key may do the work.
        if (isinstance(response, web.Response) and response.status < 500
                and isinstance(response.body, bytes)):
            state.responses.put(key, StoredResponse(
                fingerprint=request_fingerprint, status=response.status, body=response.body,
                content_type=response.headers.get("Content-Type", "application/json")))
        return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors (404, 405, 413, ...) and crashes into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = (exc.reason or "error").lower().replace(" ", "_")
        message = f"{exc.reason}: {request.method} {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, slug, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request failed", extra={"method": request.method,
                                               "path": request.path})
        return error_response(500, "internal_error", "the backend failed to handle this request")


# --- assembly ---------------------------------------------------------------------------

def _add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_faults", get_faults)
    app.router.add_put("/_faults", put_faults)
    app.router.add_delete("/_faults", delete_faults)
    app.router.add_get("/_stats", get_stats)


def build_app(state: BackendState) -> web.Application:
    """The main application: the demo API, the control API, faults and idempotency."""
    app = web.Application(middlewares=[json_errors, count_requests, inject_faults,
                                       replay_idempotent])
    app[STATE] = state
    app[CONTROL_ONLY] = False
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/users", list_users)
    app.router.add_post("/api/users", create_user)
    app.router.add_get("/api/data", get_data)
    _add_control_routes(app)
    return app


def build_control_app(state: BackendState) -> web.Application:
    """The control-only application (``/_faults``, ``/_stats``) for its own port."""
    app = web.Application(middlewares=[json_errors])
    app[STATE] = state
    app[CONTROL_ONLY] = True
    _add_control_routes(app)
    return app
