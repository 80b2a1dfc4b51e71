"""The dashboard's ASGI application (Starlette): three pages, their JSON, one
server-sent-events stream, and the token-guarded actions.

Routes:

* ``GET /`` (the fleet), ``GET /agent/{name}``, ``GET /events``: static HTML pages that
  fill themselves from the stream (:file:`static/app.js`);
* ``GET /api/fleet``, ``GET /api/agent/{name}``, ``GET /api/events?agent=&kind=&since=``: JSON;
* ``GET /api/stream?view=fleet|agent|events&agent=&kind=&since=``: ``text/event-stream``;
  event ``fleet`` / ``agent`` (the whole view, sent when it changed; checked every
  ``poll`` seconds) and ``events`` (new log entries, a list);
* ``POST /api/action`` (JSON or form: ``action``, ``agent``, ``text``, ``args``; the token
  in ``X-CCCI-Token`` or the ``token`` field): :meth:`ccci.web.view.FleetView.act`.

Every read of the fleet runs on one worker thread (the state store is one SQLite
connection); the event loop only waits.
"""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from importlib import resources
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ccci.clock import UTC
from ccci.web import auth

STATIC = resources.files("ccci.web") / "static"
#: seconds without a message after which a stream sends an SSE comment (finds closed tabs)
HEARTBEAT_S = 15.0

#: sent with every response: scripts and styles only from this server (inline style
#: attributes carry a screen's colours), no framing, no referrer
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                 b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware: the ``Host`` check (DNS rebinding), the token on every request
    when ``remote``, and :data:`SECURITY_HEADERS` on every response."""

    def __init__(self, app, token: str, host: str, port: int) -> None:
        self.app, self.token, self.host, self.port = app, token, host, port
        self.remote = not auth.is_loopback(host)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        if not auth.host_ok(headers.get("host", ""), self.host, self.port):
            return await _plain(403, "forbidden: unexpected Host header (use http://127.0.0.1:PORT/)")(scope, receive, send)
        if self.remote and not auth.token_ok(auth.presented_token(headers), self.token):
            resp = _plain(401, "the dashboard's token is required (user: anything, password: the token)")
            resp.headers["www-authenticate"] = 'Basic realm="ccci", charset="UTF-8"'
            return await resp(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def create_app(make_view: Callable[[], Any], token: str, host: str = "127.0.0.1", port: int = 8765,
               poll: float = 1.0) -> Guard:
    """The ASGI app for one fleet.

    :param make_view: builds the :class:`ccci.web.view.FleetView`; called once, on the
        worker thread that runs every later call.
    :param token: the dashboard token (:func:`ccci.web.auth.load_or_create_token`).
    :param host, port: where the server listens (for the ``Host`` check; a
        non-loopback ``host`` makes the token required on every request).
    :param poll: seconds between two looks at the fleet for each open stream.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccci-web")
    view = pool.submit(make_view).result()
    names = [a.name for a in view.cfg.agents]

    async def call(fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args, **kw))

    def page(name: str):
        async def endpoint(request: Request):
            if "name" in request.path_params and request.path_params["name"] not in names:
                return _plain(404, "no such agent")
            return FileResponse(str(STATIC / name), media_type="text/html")
        return endpoint

    def _filters(request: Request) -> dict:
        q = request.query_params
        from ccci.web.view import parse_since

        since = parse_since(q.get("since", ""), datetime.now(UTC))
        agent = q.get("agent", "")
        if agent and agent not in names:
            raise ValueError(f"no agent {agent!r}")
        return {"agent": agent, "kind": q.get("kind", "").strip(), "since": since}

    async def api_fleet(request: Request):
        return JSONResponse(await call(view.fleet))

    async def api_agent(request: Request):
        name = request.path_params["name"]
        if name not in names:
            return JSONResponse({"error": "no such agent"}, status_code=404)
        return JSONResponse(await call(view.agent, name))

    async def api_events(request: Request):
        try:
            f = _filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(await call(view.events, **f))

    async def stream(request: Request):
        q = request.query_params
        kind = q.get("view", "fleet")
        try:
            f = _filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if kind not in ("fleet", "agent", "events") or (kind == "agent" and not f["agent"]):
            return JSONResponse({"error": "view: fleet, agent (with agent=NAME) or events"}, status_code=400)

        async def gen():
            yield "retry: 2000\n\n"
            last = None
            backlog = await call(view.events, **f, limit=200 if kind == "events" else 30)
            after = backlog[-1]["id"] if backlog else await call(view.last_event_id)
            yield _sse("events", backlog)
            quiet_since = asyncio.get_running_loop().time()
            while True:
                # a closed tab: uvicorn (ASGI 2.4) only tells when a write fails, and a view
                # that does not change writes nothing, so ask, and write a comment now and then
                if await request.is_disconnected():
                    return
                if asyncio.get_running_loop().time() - quiet_since > HEARTBEAT_S:
                    quiet_since = asyncio.get_running_loop().time()
                    yield ": still here\n\n"
                if kind != "events":
                    snap = await call(view.fleet if kind == "fleet" else partial(view.agent, f["agent"]))
                    text = json.dumps(snap, default=str)
                    if text != last:
                        last = text
                        quiet_since = asyncio.get_running_loop().time()
                        yield f"event: {kind}\ndata: {text}\n\n"
                new = await call(view.events, agent=f["agent"], kind=f["kind"], after_id=after)
                if new:
                    after = new[-1]["id"]
                    quiet_since = asyncio.get_running_loop().time()
                    yield _sse("events", new)
                await asyncio.sleep(poll)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no", "cache-control": "no-store"})

    async def action(request: Request):
        if not auth.origin_ok(request.headers):
            return JSONResponse({"error": "refused: the request comes from another site (Origin)"}, status_code=403)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        elif ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            body = dict(await request.form())
        else:
            return JSONResponse({"error": "send JSON or a form"}, status_code=415)
        presented = auth.presented_token(request.headers) or str(body.get("token", ""))
        if not auth.token_ok(presented, token):
            return JSONResponse({"error": "refused: actions need the dashboard's token (ccci web --token prints it)"},
                                status_code=403)
        args = body.get("args") or []
        if isinstance(args, str):
            args = args.split()
        client = request.client.host if request.client else ""
        try:
            res = await call(view.act, str(body.get("action", "")), str(body.get("agent", "")),
                             text=str(body.get("text", "")), args=[str(a) for a in args], client=client)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(res, status_code=200 if res["ok"] else 500)

    routes = [
        Route("/", page("fleet.html")),
        Route("/agent/{name}", page("agent.html")),
        Route("/events", page("events.html")),
        Route("/api/fleet", api_fleet),
        Route("/api/agent/{name}", api_agent),
        Route("/api/events", api_events),
        Route("/api/stream", stream),
        Route("/api/action", action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.pool = pool
    app.state.view = view
    return Guard(app, token, host, port)


def _sse(event: str, payload: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, default=str)}\n\n"
