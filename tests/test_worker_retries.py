"""The tier worker when its engine fails: retryable errors are retried and the request answered
once; a request the engine refuses is an error result (not a crash, not retried); retries used
up forward the work (or, with no fallback, answer with an error). Against the real small model
(in-process xllamacpp), wrapped by an engine that fails on purpose, and the OpenAI-compatible
endpoint engine against a real local HTTP server that answers 429 / 500 before the model."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from aiohttp import web

from infra.broker import free_port
from schemas import Result, WorkItem, encode
from streams.records import RawRecord
from workers.breaker import TierBreaker
from workers.config import BreakerSettings
from workers.engine import EngineError, XllamacppEngine
from workers.openai_engine import OpenAIEngine
from workers.tier_worker import TierProcessor
from workers.tiers import engine_kwargs, served_tier

from tests.conftest import lean_settings
from tests.helpers import decode

BODY = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return lean_settings(tmp_path_factory.mktemp("retries"))


@pytest.fixture(scope="module")
def small_engine(settings):
    engine = XllamacppEngine(**engine_kwargs(served_tier("small", settings.workers), settings.workers))
    yield engine
    engine.close()


class FailingFirst:
    """The real engine, after `failures` calls that raise `error`."""

    def __init__(self, engine, failures: int, error: Exception):
        self.engine, self.failures, self.error = engine, failures, error
        self.name = engine.name
        self.calls = 0

    async def chat(self, body: dict) -> dict:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return await self.engine.chat(body)


def _processor(settings, engine, **breaker) -> TierProcessor:
    return TierProcessor(served_tier("small", settings.workers), engine,
                         breaker=TierBreaker("small", BreakerSettings(**breaker)))


def _record(custom_id: str, body: dict = BODY) -> RawRecord:
    now = datetime.now(timezone.utc)
    item = WorkItem(request_id=f"rj:{custom_id}", job_id="rj", tenant="t", custom_id=custom_id, tier="small",
                    body=body, router_version="v", submitted_at=now, decided_at=now)
    return RawRecord(value=encode(item), topic="work.small", partition=0, offset=0)


def _answer(processor: TierProcessor, custom_id: str):
    outputs = asyncio.run(processor.process([_record(custom_id)]))
    assert len(outputs) == 1  # one answer (or one forward) per request, never more
    return outputs[0]


def test_retryable_engine_errors_are_retried_and_the_request_answered_once(settings, small_engine):
    engine = FailingFirst(small_engine, 2, EngineError("model overloaded", status=503, type="overloaded"))
    processor = _processor(settings, engine, engine_attempts=3)
    out = _answer(processor, "retried")
    result = decode(Result, out.value)
    assert out.topic == "results" and result.status == "ok" and result.answer_text()
    assert result.tier == "small" and not result.fallback_from
    assert engine.calls == 3  # two retries, then the real model's answer
    assert processor.breaker.state == "closed"


def test_a_request_the_engine_refuses_is_an_error_result_not_retried_or_forwarded(settings, small_engine):
    # would succeed on a second call: the test fails if a refusal is retried
    engine = FailingFirst(small_engine, 1, EngineError("'messages' must be a non-empty array", status=400,
                                                       type="invalid_request_error"))
    processor = _processor(settings, engine, engine_attempts=3)
    out = _answer(processor, "refused")
    result = decode(Result, out.value)
    assert out.topic == "results"  # answered here: another tier would refuse it too
    assert result.status == "error" and "must be a non-empty array" in result.error
    assert engine.calls == 1
    assert processor.breaker.failures == 0  # the request's fault says nothing about the model


def test_retries_used_up_forward_the_work_or_answer_with_an_error(settings, small_engine):
    down = EngineError("model crashed", status=500)
    engine = FailingFirst(small_engine, 10**6, down)
    out = _answer(_processor(settings, engine, engine_attempts=2, failures_to_open=50), "forwarded")
    forwarded = decode(WorkItem, out.value)
    assert out.topic == "work.medium" and forwarded.tier == "medium" and forwarded.fallback_from == ["small"]
    assert engine.calls == 2

    engine = FailingFirst(small_engine, 10**6, down)
    out = _answer(_processor(settings, engine, engine_attempts=2, enabled=False), "no-fallback")
    result = decode(Result, out.value)
    assert out.topic == "results" and result.status == "error" and "model crashed" in result.error
    assert engine.calls == 2


# --- the OpenAI-compatible endpoint engine against a real HTTP server ------------------------------


class Endpoint:
    """An OpenAI-compatible endpoint in front of the real model: `plan` lists the statuses it
    answers first (429, 500, ...), then it serves the model; `always` answers that status forever."""

    def __init__(self, engine: XllamacppEngine, plan: list[int] = (), always: int | None = None):
        self.engine, self.plan, self.always = engine, list(plan), always
        self.requests: list[int] = []  # the status each request got

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.always or (self.plan.pop(0) if self.plan else 200)
        self.requests.append(status)
        if status == 429:
            return web.json_response({"error": {"message": "rate limit reached", "type": "rate_limit_error"}},
                                     status=429, headers={"Retry-After": "1"})
        if status != 200:
            return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}},
                                     status=status)
        return web.json_response(await self.engine.chat(body))

    async def serve(self, processor_for, custom_id: str):
        port = free_port()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "remote-small", max_tokens_cap=8)
        try:
            return await processor_for(engine).process([_record(custom_id)])
        finally:
            await engine.close()
            await runner.cleanup()


def test_a_rate_limited_endpoint_is_retried_then_answers(settings, small_engine):
    endpoint = Endpoint(small_engine, plan=[429])
    outputs = asyncio.run(endpoint.serve(lambda e: _processor(settings, e, engine_attempts=3), "rate-limited"))
    result = decode(Result, outputs[0].value)
    assert len(outputs) == 1 and outputs[0].topic == "results"
    assert result.status == "ok" and result.answer_text() and result.model == "remote-small"
    assert endpoint.requests == [429, 200]


def test_an_endpoint_that_keeps_failing_gives_an_error_result_after_the_retries(settings, small_engine):
    endpoint = Endpoint(small_engine, always=500)
    outputs = asyncio.run(endpoint.serve(lambda e: _processor(settings, e, engine_attempts=3, enabled=False),
                                         "always-500"))
    result = decode(Result, outputs[0].value)
    assert len(outputs) == 1 and outputs[0].topic == "results"
    assert result.status == "error" and "upstream exploded" in result.error
    assert endpoint.requests == [500, 500, 500]


def test_a_rate_limit_that_does_not_lift_is_retried_then_forwarded(settings, small_engine):
    endpoint = Endpoint(small_engine, always=429)
    outputs = asyncio.run(endpoint.serve(lambda e: _processor(settings, e, engine_attempts=2), "always-429"))
    assert len(outputs) == 1 and outputs[0].topic == "work.medium"  # another tier may not be limited
    assert decode(WorkItem, outputs[0].value).fallback_from == ["small"]
    assert endpoint.requests == [429, 429]
