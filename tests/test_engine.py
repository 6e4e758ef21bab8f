"""The in-process engine with the real SmolLM2 (no mocks)."""
from __future__ import annotations

import asyncio
import json

import pytest

from switchyard.settings import Settings, WorkerSettings
from workers.engine import (
    Engine,
    EngineError,
    XllamacppEngine,
    prepare_body,
)
from workers.models import ensure_model
from workers.tiers import build_engine

from tests.helpers import chat_body

CAP = 24


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    gguf = ensure_model("small", tmp_path_factory.mktemp("models"))
    e = XllamacppEngine(gguf, "smollm2-135m", n_ctx=1024, n_parallel=2, threads=1,
                        max_tokens_cap=CAP, metrics=True)
    yield e
    e.close()


def test_small_model_answers(engine):
    assert isinstance(engine, Engine)
    r = asyncio.run(engine.chat(chat_body("What is the capital of France? Answer in one word.", 16,
                                          temperature=0.0, seed=1)))
    assert r["object"] == "chat.completion"
    assert r["model"] == "smollm2-135m"
    msg = r["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str) and msg["content"].strip()
    u = r["usage"]
    assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 16
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_max_tokens_is_capped(engine):
    body = {"messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
            "max_tokens": 5000, "model": "ignored", "user": "u1", "metadata": {"a": 1}}
    r = asyncio.run(engine.chat(body))
    assert r["usage"]["completion_tokens"] <= CAP
    assert body["max_tokens"] == 5000  # caller's body untouched
    # no max_tokens at all: the cap applies too (llama.cpp would otherwise fill the context)
    r = asyncio.run(engine.chat({"messages": body["messages"]}))
    assert r["usage"]["completion_tokens"] <= CAP


def test_concurrent_requests_use_parallel_slots(engine):
    async def both():
        return await asyncio.gather(*(engine.chat(chat_body(f"Say the number {i}.", 8))
                                      for i in range(3)))

    for r in asyncio.run(both()):
        assert r["usage"]["completion_tokens"] > 0
    # llama.cpp's own count: busy slots per decode step is exactly 1 if requests ran one after
    # another, and above 1 once two of them were decoded in the same step.
    assert engine.server_metrics()["n_busy_slots_per_decode"] > 1


@pytest.mark.parametrize("body, status, type_", [
    ({"messages": "hello"}, 400, "invalid_request_error"),
    ({}, 400, "invalid_request_error"),
    ({"messages": []}, 400, "invalid_request_error"),
    ({"messages": [{"content": "no role"}]}, 400, "invalid_request_error"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400, "invalid_request_error"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "invalid_request_error"),
    # reaches llama.cpp, which answers with an error dict: mapped to EngineError too
    ({"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 4}, 400,
     "exceed_context_size_error"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, None),
])
def test_bad_requests_raise_engine_error(engine, body, status, type_):
    with pytest.raises(EngineError) as ei:
        asyncio.run(engine.chat(body))
    assert ei.value.status == status
    assert not ei.value.retryable
    if type_:
        assert ei.value.type == type_


def test_engine_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(EngineError("boom", status=400, type="t", details={"k": 1})))
    assert (str(e), e.status, e.type, e.details) == ("boom", 400, "t", {"k": 1})


def test_prepare_body_caps_and_filters():
    out = prepare_body({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 10,
                        "model": "m", "custom_id": "c"}, max_tokens_cap=8)
    assert out == {"messages": [{"role": "user", "content": "x"}], "max_tokens": 8}


def test_missing_model_file_is_engine_error(tmp_path):
    with pytest.raises(EngineError) as ei:
        XllamacppEngine(tmp_path / "nope.gguf", "nope")
    assert ei.value.status == 503


def test_build_engine_inprocess_all_tiers_small(tmp_path):
    s = Settings(workers=WorkerSettings(engine="inprocess", all_tiers_small=True, model_dir=tmp_path,
                                        max_tokens_cap=8))
    e = build_engine("large", s.workers)
    try:
        assert isinstance(e, XllamacppEngine) and e.name == "smollm2-135m"
        assert e.max_tokens_cap == 8
        r = asyncio.run(e.chat(chat_body("Hi", 50)))
        assert 0 < r["usage"]["completion_tokens"] <= 8
    finally:
        e.close()


def test_llama_cpp_port_refuses_local_callers_without_the_key(engine):
    """llama.cpp's own HTTP port is not a back door: another local process gets 401."""
    import urllib.error
    import urllib.request

    address = engine._server.listening_address
    assert address.startswith("http://127.0.0.1:")
    request = urllib.request.Request(f"{address}/v1/chat/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps(chat_body("Say hi.", max_tokens=2)).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    assert engine.chat_sync(chat_body("Say hi.", max_tokens=2))["choices"]  # in-process calls still work
