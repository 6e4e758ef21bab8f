"""The OpenAI-compatible engine against a real HTTP endpoint serving the real small model.

The endpoint here is a few lines of aiohttp around the in-process engine; in production it is a
Ray Serve LLM app or any vendor's API (which cannot run here)."""
import asyncio

import pytest
from aiohttp import web

from infra.broker import free_port
from workers.config import TierModel
from workers.engine import EngineError, XllamacppEngine
from workers.tiers import engine_kwargs, served_tier
from workers.openai_engine import OpenAIEngine

from tests.conftest import lean_settings


async def _serve(engine: XllamacppEngine, port: int) -> web.AppRunner:
    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        if request.headers.get("Authorization") != "Bearer sekrit":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        try:
            return web.json_response(await engine.chat(body))
        except EngineError as exc:
            return web.json_response({"error": {"message": str(exc), "type": exc.type}}, status=exc.status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    settings = lean_settings(tmp_path_factory.mktemp("m"))
    return XllamacppEngine(**engine_kwargs(served_tier("small", settings.workers), settings.workers))


def test_openai_engine_answers_and_maps_errors(small_engine, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TIER_KEY", "sekrit")
    tier = TierModel(name="remote-small", price_per_mtok_in=1, price_per_mtok_out=1,
                     endpoint=f"http://127.0.0.1:{port}/v1", api_key_env="TIER_KEY")

    async def scenario():
        runner = await _serve(small_engine, port)
        engine = OpenAIEngine.for_tier(tier, max_tokens_cap=8)
        try:
            ok = await engine.chat({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 50})
            with pytest.raises(EngineError) as bad:  # the endpoint's own refusal comes back typed
                await engine.chat({"messages": [{"role": "user", "content": 5}]})
            monkeypatch.setenv("TIER_KEY", "wrong")
            with pytest.raises(EngineError) as denied:
                await OpenAIEngine.for_tier(tier, 8).chat({"messages": [{"role": "user", "content": "x"}]})
        finally:
            await engine.close()
            await runner.cleanup()
        with pytest.raises(EngineError) as down:  # nothing listening any more
            await OpenAIEngine.for_tier(tier, 8).chat({"messages": [{"role": "user", "content": "x"}]})
        return ok, bad.value, denied.value, down.value

    ok, bad, denied, down = asyncio.run(scenario())
    assert ok["choices"][0]["message"]["content"] and 0 < ok["usage"]["completion_tokens"] <= 8
    assert bad.status == 400 and not bad.retryable
    assert denied.status == 401 and "bad key" in str(denied)
    assert down.status == 503 and down.retryable
