"""The OpenAI-compatible HTTP API (FastAPI): Files, Batches, chat completions and models.

FastAPI because Ray Serve already brings it (and uvicorn) and the OpenAI SDKs only need plain
HTTP + JSON + SSE; a Ray Serve ingress would tie the front door to Ray, which the tier workers
already keep at arm's length (they reach Serve through handles). The API publishes to the same
`queries` topic as `switchyard submit`, shares its `prepare`/`publish`, and reads progress
through the same named questions as `switchyard status` / `results`.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.auth import AuthError, Keyring
from schemas import QueryRequest, Result, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, TIERS
from schemas.validation import describe
from streams import metrics
from streams.config import KafkaSettings
from streams.kafka import make_producer, produce_all
from streams.records import Output
from streams.result_waiter import ResultWaiter
from switchyard.api.batches import Batches
from switchyard.api.errors import ApiError
from switchyard.api.store import FileStore, Store
from switchyard.settings import Settings
from switchyard.warehouse import Warehouse

AUTO = "switchyard/auto"


def model_ids(served: dict[str, str]) -> list[str]:
    return [AUTO, *(f"switchyard/{t}" for t in served), *dict.fromkeys(served.values())]


def pinned_tier(model: str, served: dict[str, str]) -> str | None:
    """None for the router's choice; the tier a tier or served-model name pins; ApiError for
    anything else (never silently answered by another model)."""
    if model == AUTO:
        return None
    name = model.removeprefix("switchyard/")
    if name in served:
        return name
    for tier in TIERS:
        if served.get(tier) == model:
            return tier
    raise ApiError(404, f"The model '{model}' does not exist; this stack serves {', '.join(model_ids(served))}",
                   param="model", code="model_not_found")


def _page(items: list[dict], limit: int, after: str | None) -> dict[str, Any]:
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)}


def _chunks(response: dict, created: int) -> list[dict]:
    """An answered completion as chat.completion.chunk objects (the answer is complete before the
    first chunk: a queue answers whole; streaming keeps SSE clients working unchanged)."""
    choice = (response.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content") or ""
    base = {"id": response["id"], "object": "chat.completion.chunk", "created": created, "model": response["model"]}
    pieces = [content[i:i + 64] for i in range(0, len(content), 64)]
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}]})
    return chunks


def create_app(settings: Settings, kafka: KafkaSettings, served: dict[str, str]) -> FastAPI:
    """`served`: tier -> the model that serves it. `settings`: the stack's (data dir, limits)."""
    api = settings.api
    keyring = Keyring(settings.secrets_dir)
    files = FileStore(settings.data_dir / "api" / "files")
    waiter = ResultWaiter(kafka)
    producers = []  # made in the lifespan: aiokafka binds a producer to the running loop
    batches = Batches(files, Store(settings.data_dir / "api" / "batches"), kafka, lambda: Warehouse.open(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        producers.append(make_producer(kafka))
        await producers[0].start()
        await waiter.start()
        try:
            yield
        finally:
            await waiter.stop()
            await producers.pop().stop()

    app = FastAPI(title="Switchyard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")  # the template, so ids do not become label values
        path = getattr(route, "path", "unmatched")
        metrics.API_REQUESTS.labels(path, str(response.status_code)).inc()
        metrics.API_SECONDS.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(400, f"{param or 'request'}: {first.get('msg', 'invalid request')}",
                                     param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (f"Unsupported endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405)
                   else str(exc.detail))
        return JSONResponse(ApiError(exc.status_code, message, code="unsupported_endpoint"
                                     if exc.status_code in (404, 405) else None).body(), status_code=exc.status_code)

    async def tenant_of(authorization: str | None = Header(default=None)) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        try:
            caller = keyring.caller(token.strip() if scheme.lower() == "bearer" else None)
        except AuthError as exc:
            raise ApiError(401, f"Incorrect API key provided ({exc})", code="invalid_api_key") from None
        return caller.tenant or "default"  # the operator's token acts for the default tenant

    # --- files ---------------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...), tenant: str = Depends(tenant_of)):
        if purpose != "batch":
            raise ApiError(400, f"purpose {purpose!r} is not supported; use 'batch'", param="purpose")
        content = await file.read(api.max_file_bytes + 1)
        if len(content) > api.max_file_bytes:
            raise ApiError(413, f"file is larger than {api.max_file_bytes:,} bytes", param="file", code="file_too_large")
        return files.create(tenant, file.filename or "upload.jsonl", purpose, content)

    @app.get("/v1/files")
    async def list_files(purpose: str | None = None, limit: int = 10000, after: str | None = None,
                         tenant: str = Depends(tenant_of)):
        items = [f for f in files.list(tenant) if purpose is None or f["purpose"] == purpose]
        return _page(items, limit, after)

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, tenant: str = Depends(tenant_of)):
        found = files.get(file_id, tenant)
        if found is None:
            raise ApiError(404, f"No such File object: {file_id}", param="file_id")
        return found

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, tenant: str = Depends(tenant_of)):
        content = files.content(file_id, tenant)
        if content is None:
            raise ApiError(404, f"No such File object: {file_id}", param="file_id")
        return Response(content, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, tenant: str = Depends(tenant_of)):
        if not files.delete(file_id, tenant):
            raise ApiError(404, f"No such File object: {file_id}", param="file_id")
        return {"id": file_id, "object": "file", "deleted": True}

    # --- batches -------------------------------------------------------------------------------

    @app.post("/v1/batches")
    async def create_batch(request: Request, tenant: str = Depends(tenant_of)):
        body = await _json_body(request)
        for field in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(field), str):
                raise ApiError(400, f"Missing required parameter: '{field}'", param=field)
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ApiError(400, "metadata must be an object", param="metadata")
        return await batches.create(tenant, body["input_file_id"], body["endpoint"], body["completion_window"], metadata)

    @app.get("/v1/batches")
    async def list_batches(limit: int = 20, after: str | None = None, tenant: str = Depends(tenant_of)):
        items = [await batches.refresh(b["id"], tenant) if b["status"] in {"in_progress", "cancelling"} else b
                 for b in batches.store.list(tenant)]
        return _page(items, limit, after)

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, tenant: str = Depends(tenant_of)):
        return await batches.refresh(batch_id, tenant)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, tenant: str = Depends(tenant_of)):
        return await batches.cancel(batch_id, tenant)

    # --- chat completions and models -------------------------------------------------------------

    @app.get("/v1/models")
    async def models(_tenant: str = Depends(tenant_of)):
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "switchyard"}
                                           for m in model_ids(served)]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, tenant: str = Depends(tenant_of)):
        body = await _json_body(request)
        model = body.get("model") or AUTO
        tier = pinned_tier(model, served)
        routing = body.pop("routing", None) or {}
        stream = bool(body.pop("stream", False))
        include_usage = bool((body.pop("stream_options", None) or {}).get("include_usage"))
        if body.get("n", 1) not in (1, None):
            raise ApiError(400, "n > 1 is not supported by this stack's engines", param="n")
        if tier is not None:
            routing = {**routing, "pinned_tier": tier}
        try:
            query = QueryRequest(custom_id=uuid.uuid4().hex, job_id=f"chat-{tenant}-{time.strftime('%Y-%m-%d')}",
                                 tenant=tenant, body=body, routing=routing)
        except ValidationError as exc:
            raise ApiError(400, describe(exc)) from None
        outcome = waiter.expect(query.request_id)
        headers = ((HEADER_JOB_ID, query.job_id.encode()), (HEADER_TENANT, tenant.encode()))
        try:
            await produce_all(producers[0], [Output(kafka.topics.queries, query.request_id.encode(), encode(query), headers)])
            result = await asyncio.wait_for(outcome, api.chat_timeout_seconds)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within {api.chat_timeout_seconds:.0f}s") from None
        finally:
            waiter.forget(query.request_id)
        if not isinstance(result, Result):
            raise ApiError(400, f"the request was refused: {result.reason}")
        if result.status != "ok" or not result.response:
            raise ApiError(502, f"the {result.tier} tier's model failed: {result.error}")
        response = {**result.response, "id": f"chatcmpl-{uuid.uuid4().hex}", "model": result.model}
        decision = {"x-switchyard-tier": result.tier, "x-switchyard-model": result.model,
                    "x-switchyard-router-version": result.router_version, "x-switchyard-request-id": result.request_id}
        if not stream:
            return JSONResponse(response, headers=decision)
        created = int(time.time())
        chunks = _chunks(response, created)
        if include_usage:
            chunks.append({**chunks[-1], "choices": [], "usage": response.get("usage")})

        async def events():
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=decision)

    return app


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body
