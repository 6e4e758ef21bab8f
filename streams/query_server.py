"""A read-only query endpoint served by the process that owns the embedded ClickHouse."""
from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import uuid

from aiohttp import web


def is_read_only(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head in {"SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS"}


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(type(value).__name__)


async def start_query_server(client, port: int, lock: asyncio.Lock) -> web.AppRunner:
    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        sql = body.get("sql", "")
        if not is_read_only(sql):
            return web.Response(status=400, text="only read-only statements (SELECT, WITH, SHOW, ...)")
        try:
            async with lock:  # one chDB connection, shared with the writer
                result = await asyncio.to_thread(client.query, sql, parameters=body.get("parameters") or {})
        except Exception as exc:  # a bad query is the caller's problem, not the sink's
            return web.Response(status=400, text=str(exc))
        rows = [dict(zip(result.column_names, r)) for r in result.result_rows]
        return web.Response(text=json.dumps({"rows": rows}, default=_jsonable),
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
