"""The read endpoint served by the process that owns the embedded ClickHouse (the sink).

Loopback only, and every call but /health carries a bearer token (infra.auth):
- `POST /v1/questions/{name}` asks a named question (infra.clickhouse.questions), scoped to the
  caller's tenant; the operator may name a tenant or ask across all of them;
- `POST /v1/sql` is the operator's read-only SQL door (infra.clickhouse.sql_guard);
- `POST /v1/analytics/refresh` recomputes the analytics views now (coalesced) and says as of when;
- `GET /v1/whoami` says which tenant a key belongs to (the CLI stamps submissions with it).
Bodies must be `application/json`, so a web page cannot post here without a CORS preflight,
which this server never answers.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import logging
import time
import uuid

from aiohttp import web

from infra.auth import AuthError, Caller, Keyring
from infra.clickhouse import analytics_as_of, refresh_analytics
from infra.clickhouse.questions import QuestionError, bind
from infra.clickhouse.sql_guard import UnsafeQuery, guard

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
TABLE_FUNCTIONS = "SELECT name FROM system.table_functions"
CALLER = web.RequestKey("caller", Caller)
REFRESH_GAP_S = 2.0


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(type(value).__name__)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def start_query_server(client, port: int, lock: asyncio.Lock, keyring: Keyring,
                             host: str = "127.0.0.1") -> web.AppRunner:
    async with lock:
        table_functions = {r[0] for r in (await asyncio.to_thread(client.query, TABLE_FUNCTIONS)).result_rows}

    async def run(sql: str, parameters: dict) -> web.Response:
        try:
            async with lock:  # one chDB connection, shared with the writer
                result = await asyncio.to_thread(client.query, sql, parameters=parameters)
        except Exception as exc:  # a bad query is the caller's problem, not the sink's
            return _error(400, str(exc).splitlines()[0][:2000])
        rows = [dict(zip(result.column_names, r)) for r in result.result_rows]
        return web.Response(text=json.dumps({"rows": rows}, default=_jsonable), content_type="application/json")

    @web.middleware
    async def authenticate(request: web.Request, handler):
        if request.path == "/health":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            request[CALLER] = keyring.caller(token.strip() if scheme.lower() == "bearer" else None)
        except AuthError as exc:
            return _error(401, f"unauthorized: {exc}")
        if request.method == "POST" and request.content_type != "application/json":
            return _error(415, "send Content-Type: application/json")
        return await handler(request)

    async def body_of(request: web.Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def whoami(request: web.Request) -> web.Response:
        caller = request[CALLER]
        return web.json_response({"tenant": caller.tenant, "operator": caller.is_operator})

    async def question(request: web.Request) -> web.Response:
        caller = request[CALLER]
        body = await body_of(request)
        try:
            sql, params = bind(request.match_info["name"], body.get("parameters") or {}, caller.tenant)
        except QuestionError as exc:
            return _error(400, str(exc))
        return await run(sql, params)

    async def raw_sql(request: web.Request) -> web.Response:
        caller = request[CALLER]
        if not caller.is_operator:
            return _error(403, "the SQL door is the operator's; tenants ask named questions")
        body = await body_of(request)
        sql, params = body.get("sql"), body.get("parameters") or {}
        if not isinstance(sql, str) or not isinstance(params, dict):
            return _error(400, "expected {\"sql\": string, \"parameters\": object}")
        try:
            guarded = guard(sql, table_functions)
        except UnsafeQuery as exc:
            log.warning("refused operator SQL: %s", exc)
            return _error(400, f"refused: {exc}")
        return await run(guarded, params)

    last_refresh = [float("-inf")]

    async def refresh(request: web.Request) -> web.Response:
        # Any caller may ask (a report right after a job should see it); refreshes closer together
        # than REFRESH_GAP_S are coalesced, so callers cannot keep the engine recomputing.
        async with lock:
            if time.monotonic() - last_refresh[0] >= REFRESH_GAP_S:
                await asyncio.to_thread(refresh_analytics, client)
                last_refresh[0] = time.monotonic()
            as_of = await asyncio.to_thread(analytics_as_of, client)
        return web.Response(text=json.dumps({"as_of": as_of}, default=_jsonable), content_type="application/json")

    app = web.Application(middlewares=[authenticate], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_post("/v1/questions/{name}", question)
    app.router.add_post("/v1/sql", raw_sql)
    app.router.add_post("/v1/analytics/refresh", refresh)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
