"""The operator console at ``/console/`` on the status port: server-rendered HTML, no JS.

Access needs ``REDRIVE_CONSOLE_TOKEN`` (unset, the console is off). A browser signs in
once through a form (POST, so the token never appears in a URL or a log line) and gets a
session cookie (HttpOnly, SameSite=Strict, path ``/console/``) that carries an issue time,
a nonce and an HMAC of both under the token: nothing is stored server-side, and changing
the token signs every session out. Scripts send ``Authorization: Bearer <token>``
instead. Tokens and MACs are compared in constant time.

Every POST action carries a CSRF token, an HMAC of the session's nonce, in a hidden field
(and its ``Origin``, when the browser sends one, must be this host); SameSite=Strict is the
second fence. Bearer-token requests need no CSRF token: nothing ambient authorises them.

Pages: the list of recent requests and of dead letters with filters (service, state,
reason, time) and a chart of captures and replays per minute; one request's state history,
attempts and dead-letter record (as stored: redacted headers stay absent, sealed ones stay
ciphertext); replaying one or many dead letters, with a dry run and a rate, through the
same code as ``redrive dlq replay`` (so the same re-signing rules).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from urllib.parse import urlencode

from aiohttp import web

from redrive.cli import Entry, latest_by_id, replay_entries, replayable
from redrive.cli_kafka import CliError, read_all
from redrive.deadletter import REASONS, REPLAYED
from redrive.settings import KafkaSettings
from redrive.signing import SigningKeys
from redrive.status import STATES, valid_id
from retry_worker.status_api import NO_STORE, error, json_response, lookup
from retry_worker.status_store import StatusView

log = logging.getLogger(__name__)

COOKIE = "redrive_console"
SESSION_SECONDS = 12 * 3600
SINCE = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86_400, "7d": 7 * 86_400}
MAX_ROWS = 200
DLQ_CACHE_SECONDS = 2.0



class DeadLetters(Protocol):
    """Reads the DLQ's latest entry per id (cached unless ``fresh``)."""

    async def __call__(self, fresh: bool = False) -> list[Entry]: ...


Replay = Callable[[Sequence[Entry], float], Awaitable[None]]


@dataclass(frozen=True)
class Filters:
    service: str = ""
    state: str = ""
    reason: str = ""
    since: str = "1h"

    @classmethod
    def parse(cls, query: Any) -> Filters:
        since = query.get("since", "1h")
        state = query.get("state", "")
        return cls(service=query.get("service", "").strip()[:200],
                   state=state if state in STATES else "",
                   reason=query.get("reason", "").strip()[:64],
                   since=since if since in SINCE else "1h")

    def cutoff(self, now: float) -> float:
        return now - SINCE[self.since]

    def service_ok(self, source: str) -> bool:
        if not self.service:
            return True
        pattern = self.service if any(c in self.service for c in "*?[") else \
            f"*{self.service}*"
        return fnmatch.fnmatchcase(source, pattern)

    def reason_ok(self, reason: str | None) -> bool:
        return not self.reason or fnmatch.fnmatchcase(reason or "", self.reason)


class Auth:
    """Token, sessions and CSRF tokens (see the module docstring)."""

    def __init__(self, token: str, clock: Callable[[], float] = time.time) -> None:
        self._key = token.encode()
        self._clock = clock

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()

    def token_ok(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self._key)

    def new_session(self) -> str:
        body = f"{int(self._clock())}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac('session', body)}"

    def session_nonce(self, cookie: str | None) -> str | None:
        """The nonce of a valid, unexpired session cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        issued, nonce, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session",
                                                           f"{issued}.{nonce}").encode()):
            return None
        if not issued.isdigit() or self._clock() - int(issued) > SESSION_SECONDS:
            return None
        return nonce

    def csrf(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def bearer_ok(self, request: web.Request) -> bool:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(offered) and self.token_ok(offered.strip())


@dataclass
class Caller:
    nonce: str | None
    """The session nonce for a browser; None for a bearer-token caller."""


CALLER = web.RequestKey("caller", Caller)


def build_console(view: StatusView, *, token: str, kafka: KafkaSettings,
                  signing: SigningKeys | None, timeout: float = 10.0,
                  dead_letters: DeadLetters | None = None, replay: Replay | None = None,
                  clock: Callable[[], float] = time.time) -> web.Application:
    """The console application, to mount at ``/console/``."""
    auth = Auth(token, clock)
    letters = dead_letters or _dlq_reader(kafka, timeout)

    async def do_replay(chosen: Sequence[Entry], rate: float) -> None:
        await replay_entries(kafka, chosen, by="console", rate=rate, signing=signing,
                             timeout=timeout)

    run_replay = replay or do_replay

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path in ("/console/login", "/console/login/"):
            return await handler(request)
        nonce = auth.session_nonce(request.cookies.get(COOKIE))
        if nonce is None and not auth.bearer_ok(request):
            if "/api/" in request.path or request.headers.get("Authorization"):
                resp = error(401, "unauthorized", "the console needs REDRIVE_CONSOLE_TOKEN: "
                                                  "sign in, or send Authorization: Bearer")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="redrive-console"'
                return resp
            return _page(_login_form(""), status=401, title="Sign in")
        caller = Caller(nonce)
        if request.method == "POST":
            problem = _csrf_problem(request, caller, auth, await request.post())
            if problem is not None:
                return error(403, "csrf", problem) if "/api/" in request.path else \
                    _page(f"<p class=err>{html.escape(problem)}</p>", status=403,
                          title="Refused")
        request[CALLER] = caller
        return await handler(request)

    async def login_form(_: web.Request) -> web.Response:
        return _page(_login_form(""), title="Sign in")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        offered = str(form.get("token", ""))
        if not offered or not auth.token_ok(offered):
            await asyncio.sleep(0.3)  # a little friction for guessing
            return _page(_login_form("That token is not right."), status=401, title="Sign in")
        resp = web.HTTPSeeOther("/console/")
        resp.set_cookie(COOKIE, auth.new_session(), path="/console/", httponly=True,
                        samesite="Strict", secure=request.secure, max_age=SESSION_SECONDS)
        raise resp

    async def logout(_: web.Request) -> web.Response:
        resp = web.HTTPSeeOther("/console/login")
        resp.del_cookie(COOKIE, path="/console/")
        raise resp

    async def index(request: web.Request) -> web.Response:
        filters = Filters.parse(request.query)
        now = clock()
        rows = _recent_rows(view, filters, now)
        entries, dlq_problem = await _letters(letters)
        dead = [e for e in entries if _letter_ok(e, filters, now)]
        caller = request[CALLER]
        csrf = auth.csrf(caller.nonce) if caller.nonce else ""
        notice = request.query.get("notice", "")[:300]
        body = [
            f"<p class=notice>{html.escape(notice)}</p>" if notice else "",
            _filter_form(filters),
            "<h2>Captures and replays per minute</h2>",
            _chart(view, filters, now),
            f"<h2>Requests ({len(rows)} shown, {len(view)} tracked)</h2>",
            _requests_table(rows, now),
            f"<h2>Dead letters ({len(dead)})</h2>",
            f"<p class=err>{html.escape(dlq_problem)}</p>" if dlq_problem else "",
            _dead_letter_form(dead, csrf, filters, now),
        ]
        return _page("".join(body), title="Requests", csrf=csrf)

    async def show(request: web.Request) -> web.Response:
        rid = request.match_info["id"].lower()
        if not valid_id(rid):
            return _page("<p class=err>Not a request id.</p>", status=400, title="Request")
        record = view.get(rid)
        recent = view.recent(rid)
        entries, dlq_problem = await _letters(letters)
        letter = next((e for e in entries if e.letter.id == rid), None)
        if record is None and letter is None:
            return _page(f"<p>No request <code>{html.escape(rid)}</code> is known.</p>",
                         status=404, title="Request")
        caller = request[CALLER]
        csrf = auth.csrf(caller.nonce) if caller.nonce else ""
        return _page(_request_page(rid, record.public() if record else None, recent,
                                   letter, csrf, dlq_problem), title=f"Request {rid}",
                     csrf=csrf)

    async def replay_action(request: web.Request) -> web.Response:
        form = await request.post()
        ids = [str(v) for v in form.getall("id", [])]
        dry_run = form.get("dry_run") in ("1", "on", "true")
        try:
            rate = max(0.0, min(1000.0, float(str(form.get("rate", "0") or "0"))))
        except ValueError:
            rate = 0.0
        entries, problem = await _letters(letters, fresh=True)
        if problem:
            return _back(f"Replay failed: {problem}")
        if form.get("all") == "1":
            filters = Filters.parse(form)
            now = clock()
            chosen = [e for e in entries if _letter_ok(e, filters, now)]
        else:
            wanted = set(ids)
            chosen = [e for e in entries if e.letter.id in wanted]
        chosen = [e for e in chosen if replayable(e)]
        if not chosen:
            return _back("Nothing to replay: select dead letters that are still dead.")
        names = ", ".join(e.letter.id for e in chosen[:5]) + (" ..." if len(chosen) > 5 else "")
        if dry_run:
            return _back(f"Dry run: would replay {len(chosen)} record(s): {names}")
        try:
            await run_replay(chosen, rate)
        except CliError as exc:
            return _back(f"Replay failed: {exc}")
        await _letters(letters, fresh=True)  # the replay markers: those letters are not dead
        log.info("console replay", extra={"records": len(chosen), "rate": rate})
        return _back(f"Replayed {len(chosen)} record(s): {names}")

    async def api_requests(request: web.Request) -> web.Response:
        filters = Filters.parse(request.query)
        rows = _recent_rows(view, filters, clock())
        return json_response(200, {"requests": [
            {**r.record.public(), "method": r.record.method, "path": r.record.path,
             "source": r.record.source, "detail": r.record.detail,
             "attempt_history": r.attempts} for r in rows]})

    async def api_request(request: web.Request) -> web.Response:
        return lookup(view, request.match_info["id"])

    app = web.Application(middlewares=[guard])
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", index)
    app.router.add_get("/requests/{id}", show)
    app.router.add_post("/replay", replay_action)
    app.router.add_get("/api/requests", api_requests)
    app.router.add_get("/api/requests/{id}", api_request)
    return app


def _csrf_problem(request: web.Request, caller: Caller, auth: Auth, form: Any) -> str | None:
    if caller.nonce is None:
        return None  # a bearer-token caller: no ambient credential to abuse
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin.partition("://")[2] != request.host:
        return f"cross-origin request refused (Origin {origin})"
    offered = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
    if not offered or not hmac.compare_digest(offered.encode(), auth.csrf(caller.nonce).encode()):
        return "missing or wrong CSRF token: reload the page and try again"
    return None


def _dlq_reader(kafka: KafkaSettings, timeout: float) -> DeadLetters:
    cache: dict[str, Any] = {"at": 0.0, "entries": []}
    lock = asyncio.Lock()

    async def read(fresh: bool = False) -> list[Entry]:
        async with lock:
            if fresh or time.monotonic() - cache["at"] > DLQ_CACHE_SECONDS:
                messages = await read_all(kafka, kafka.dlq_topic, timeout)
                cache["entries"] = latest_by_id(messages)
                cache["at"] = time.monotonic()
            entries: list[Entry] = cache["entries"]
            return entries

    return read


async def _letters(read: DeadLetters, *, fresh: bool = False) -> tuple[list[Entry], str]:
    """Dead letters still dead, newest first, and a problem sentence if the DLQ is unreadable."""
    try:
        entries = await read(fresh)
    except CliError as exc:
        return [], str(exc)
    alive = [e for e in entries if e.letter.reason != REPLAYED]
    return list(reversed(alive)), ""


def _source(entry: Entry) -> str:
    record = entry.letter.record
    if record is None:
        return ""
    return f"{record.source.namespace}/{record.source.pod}".strip("/")


def _letter_ok(entry: Entry, filters: Filters, now: float) -> bool:
    at = entry.letter.at or entry.message.timestamp_ms / 1000
    return (at >= filters.cutoff(now) and filters.service_ok(_source(entry))
            and filters.reason_ok(entry.letter.reason)
            and filters.state in ("", "dead_lettered"))


def _recent_rows(view: StatusView, filters: Filters, now: float) -> list[Any]:
    cutoff = filters.cutoff(now)
    rows = []
    for recent in view.recents():
        r = recent.record
        if r.updated_at < cutoff:
            continue
        current = view.get(r.id)
        state = current.state if current is not None else r.state
        if filters.state and state != filters.state:
            continue
        if not filters.service_ok(r.source) or not filters.reason_ok(r.reason):
            continue
        rows.append(recent)
        if len(rows) >= MAX_ROWS:
            break
    return rows


def _when(at: float | None) -> str:
    if not at:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _filter_form(f: Filters) -> str:
    states = "".join(f"<option{' selected' if f.state == s else ''}>{s}</option>"
                     for s in STATES)
    since = "".join(f"<option{' selected' if f.since == s else ''}>{s}</option>"
                    for s in SINCE)
    reasons = "".join(f"<option>{r}</option>" for r in REASONS)
    return (
        "<form method=get action='/console/' class=filters>"
        f"<label>service <input name=service value='{_e(f.service)}' "
        "placeholder='namespace/pod glob'></label>"
        f"<label>state <select name=state><option value=''>any</option>{states}</select></label>"
        f"<label>reason <input name=reason list=reasons value='{_e(f.reason)}'>"
        f"<datalist id=reasons>{reasons}</datalist></label>"
        f"<label>since <select name=since>{since}</select></label>"
        "<button type=submit>Filter</button></form>")


def _requests_table(rows: Sequence[Any], now: float) -> str:
    if not rows:
        return "<p>No requests match.</p>"
    out = ["<table><tr><th>id</th><th>state</th><th>attempts</th><th>response</th>"
           "<th>reason</th><th>method</th><th>path</th><th>service</th><th>updated</th></tr>"]
    for recent in rows:
        r = recent.record
        out.append(
            f"<tr class='state-{_e(r.state)}'><td><a href='/console/requests/{_e(r.id)}'>"
            f"<code>{_e(r.id)}</code></a></td><td>{_e(r.state)}</td><td>{r.attempts}</td>"
            f"<td>{_e(r.response or '')}</td><td>{_e(r.reason or '')}</td><td>{_e(r.method)}</td>"
            f"<td>{_e(r.path)}</td><td>{_e(r.source)}</td><td>{_when(r.updated_at)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _dead_letter_form(entries: Sequence[Entry], csrf: str, f: Filters, now: float) -> str:
    if not entries:
        return "<p>No dead letters match.</p>"
    out = ["<form method=post action='/console/replay' class=replay>",
           f"<input type=hidden name=csrf value='{_e(csrf)}'>",
           "<table><tr><th></th><th>id</th><th>reason</th><th>attempts</th><th>method</th>"
           "<th>path</th><th>service</th><th>dead-lettered</th></tr>"]
    for e in entries[:MAX_ROWS]:
        letter, record = e.letter, e.letter.record
        box = (f"<input type=checkbox name=id value='{_e(letter.id)}' "
               f"aria-label='select {_e(letter.id)}'>" if replayable(e) else "")
        out.append(
            f"<tr><td>{box}</td><td><a href='/console/requests/{_e(letter.id)}'>"
            f"<code>{_e(letter.id)}</code></a></td><td>{_e(letter.reason)}</td>"
            f"<td>{len(letter.attempts)}</td><td>{_e(record.method if record else '-')}</td>"
            f"<td>{_e((record.path or record.uri) if record else '-')}</td>"
            f"<td>{_e(_source(e))}</td><td>{_when(letter.at)}</td></tr>")
    out.append("</table>")
    for name, value in (("service", f.service), ("reason", f.reason), ("since", f.since),
                        ("state", f.state)):
        out.append(f"<input type=hidden name={name} value='{_e(value)}'>")
    out.append(
        "<p><label><input type=checkbox name=dry_run value=1> dry run</label> "
        "<label>rate <input name=rate type=number min=0 step=any value=0 size=4> "
        "records/s (0: no limit)</label> "
        "<button type=submit name=all value=0 id=replay-selected>Replay selected</button> "
        "<button type=submit name=all value=1 id=replay-all>Replay all matching</button>"
        "</p></form>")
    return "".join(out)


def _request_page(rid: str, public: dict[str, Any] | None, recent: Any, letter: Entry | None,
                  csrf: str, dlq_problem: str) -> str:
    out = [f"<p><a href='/console/'>&larr; all requests</a></p><h2><code>{_e(rid)}</code></h2>"]
    if public is not None:
        out.append("<h3>Status (what the API answers)</h3><pre>"
                   f"{_e(json.dumps(public, indent=2))}</pre>")
    if recent is not None:
        r = recent.record
        out.append(f"<p>{_e(r.method)} <code>{_e(r.path)}</code> from {_e(r.source or '?')}, "
                   f"captured {_when(r.captured_at)}</p>")
        if r.detail:
            out.append(f"<p>Detail: {_e(r.detail)}</p>")
        out.append("<h3>State history</h3><ol class=states>" + "".join(
            f"<li>{_when(at)} {_e(state)}</li>" for at, state in recent.states) + "</ol>")
    attempts = (recent.attempts if recent is not None and recent.attempts else
                [a.to_dict() for a in letter.letter.attempts] if letter is not None else [])
    if attempts:
        out.append("<h3>Attempts</h3><table><tr><th>#</th><th>at</th><th>status</th>"
                   "<th>error</th><th>seconds</th></tr>")
        for i, a in enumerate(attempts, 1):
            out.append(f"<tr><td>{i}</td><td>{_when(a.get('at'))}</td><td>{_e(a.get('status'))}"
                       f"</td><td>{_e(a.get('error'))}</td>"
                       f"<td>{_e(a.get('duration_seconds'))}</td></tr>")
        out.append("</table>")
    if dlq_problem:
        out.append(f"<p class=err>{_e(dlq_problem)}</p>")
    if letter is not None:
        out.append(f"<h3>Dead letter ({_e(letter.letter.reason)})</h3>")
        if replayable(letter):
            out.append(
                "<form method=post action='/console/replay'>"
                f"<input type=hidden name=csrf value='{_e(csrf)}'>"
                f"<input type=hidden name=id value='{_e(rid)}'>"
                "<label><input type=checkbox name=dry_run value=1> dry run</label> "
                "<button type=submit id=replay-one>Replay this request</button></form>")
        # As stored: redacted headers are absent, sealed_headers stays ciphertext.
        raw = letter.letter.raw if letter.letter.raw is not None else \
            letter.message.value.decode("utf-8", "replace")
        out.append("<pre class=record>" + _e(json.dumps(raw, indent=2, ensure_ascii=False)
                                             if not isinstance(raw, str) else raw) + "</pre>")
    return "".join(out)


def _chart(view: StatusView, f: Filters, now: float) -> str:
    """An SVG line chart of captures and replays (and outcomes) per minute, up to 60 bars."""
    span = min(SINCE[f.since], 86_400) // 60
    end = int(now // 60)
    step = max(1, span // 60)
    buckets = []
    for start in range(end - span + 1, end + 1, step):
        total = [0, 0, 0, 0]
        for m in range(start, min(start + step, end + 1)):
            row = view.minutes.get(m)
            if row:
                total = [a + b for a, b in zip(total, row, strict=True)]
        buckets.append(total)
    width, height, pad = 720, 160, 24
    top = max([max(b) for b in buckets] + [1])
    n = len(buckets)

    def points(col: int) -> str:
        return " ".join(
            f"{pad + i * (width - 2 * pad) / max(1, n - 1):.1f},"
            f"{height - pad - b[col] * (height - 2 * pad) / top:.1f}"
            for i, b in enumerate(buckets))

    series = (("captured", 0, "#1f77b4"), ("replayed", 1, "#ff7f0e"),
              ("delivered", 2, "#2ca02c"), ("dead-lettered", 3, "#d62728"))
    lines = "".join(f"<polyline fill=none stroke='{color}' stroke-width=2 "
                    f"points='{points(col)}'><title>{name}</title></polyline>"
                    for name, col, color in series)
    legend = "".join(f"<text x='{pad + i * 130}' y='14' fill='{color}'>&#9632; {name} "
                     f"({sum(b[col] for b in buckets)})</text>"
                     for i, (name, col, color) in enumerate(series))
    minutes = "minute" if step == 1 else f"{step} minutes"
    return (f"<svg class=chart width={width} height={height} role=img "
            f"aria-label='captures and replays per {minutes}' "
            f"xmlns='http://www.w3.org/2000/svg'>"
            f"<rect x=0 y=0 width={width} height={height} fill='#fafafa'/>"
            f"<line x1={pad} y1={height - pad} x2={width - pad} y2={height - pad} stroke='#999'/>"
            f"<text x={pad} y={height - 6} font-size=11>-{f.since}</text>"
            f"<text x={width - pad - 24} y={height - 6} font-size=11>now</text>"
            f"<text x=2 y={pad + 4} font-size=11>{top}</text>"
            f"{legend}{lines}</svg><p class=hint>per {minutes}</p>")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left}th{background:#f3f3f3}code{font-size:12px}.err{color:#b00}
.notice{background:#eef6ee;border:1px solid #9c9;padding:6px}pre{background:#f6f6f6;
padding:8px;overflow:auto;max-width:100%}.filters label{margin-right:1em}
tr.state-dead_lettered td{background:#fff3f3}tr.state-delivered td{background:#f3fff3}
header{display:flex;justify-content:space-between;align-items:center}
"""


def _page(body: str, *, status: int = 200, title: str, csrf: str = "") -> web.Response:
    signout = ("<form method=post action='/console/logout'>"
               f"<input type=hidden name=csrf value='{_e(csrf)}'>"
               "<button type=submit>Sign out</button></form>") if csrf else ""
    text = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)} · Redrive console</title><style>{_STYLE}</style></head>"
            f"<body><header><h1>Redrive console</h1>{signout}</header>{body}</body></html>")
    return web.Response(status=status, text=text, content_type="text/html",
                        headers={**NO_STORE, "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; img-src 'self'; "
                                 "form-action 'self'; frame-ancestors 'none'",
                                 "Referrer-Policy": "no-referrer"})


def _login_form(problem: str) -> str:
    note = f"<p class=err>{_e(problem)}</p>" if problem else ""
    return (f"<h2>Sign in</h2>{note}<p>The console needs the token in "
            "<code>REDRIVE_CONSOLE_TOKEN</code>.</p>"
            "<form method=post action='/console/login'><label>token "
            "<input type=password name=token id=token autocomplete=off required></label> "
            "<button type=submit id=sign-in>Sign in</button></form>")


def _back(notice: str) -> NoReturn:
    raise web.HTTPSeeOther("/console/?" + urlencode({"notice": notice}))
