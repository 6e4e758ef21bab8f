"""The tier worker's processor against the real SmolLM2 model (in-process xllamacpp)."""
import asyncio
from datetime import datetime, timezone

import pytest

from schemas import Result, WorkItem, encode
from schemas.messages import DeadLetter
from streams.records import RawRecord
from workers.tiers import build_engine, price_table, served_tier
from workers.tier_worker import TierProcessor

from tests.conftest import lean_settings
from tests.helpers import decode


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return lean_settings(tmp_path_factory.mktemp("worker"))


@pytest.fixture(scope="module")
def processor(settings):
    return TierProcessor(served_tier("medium", settings.workers), build_engine("medium", settings.workers))


def _work(custom_id: str, body: dict) -> bytes:
    now = datetime.now(timezone.utc)
    return encode(WorkItem(request_id=f"j:{custom_id}", job_id="j", tenant="t", custom_id=custom_id,
                           tier="medium", body=body, router_version="v", submitted_at=now, decided_at=now))


def _rec(value: bytes, offset: int) -> RawRecord:
    return RawRecord(value=value, topic="work.medium", partition=0, offset=offset)


def test_answers_with_usage_cost_and_latency_and_dead_letters_garbage(processor, settings):
    body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}
    outputs = asyncio.run(processor.process([_rec(_work("a", body), 0), _rec(b"{}", 1)]))
    result = decode(Result, outputs[0].value)
    assert outputs[0].topic == "results" and outputs[0].key == b"j:a"
    assert result.status == "ok" and result.answer_text()
    assert 0 < result.usage.completion_tokens <= 8 and result.usage.prompt_tokens > 0
    # the usage is the engine's own, and the cost is the medium tier's list prices times it
    assert result.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == \
        {k: result.response["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
    model, per_mtok_in, per_mtok_out = price_table(settings.workers)["medium"]
    assert model == result.model and (per_mtok_in, per_mtok_out) != (0, 0)
    expected = (result.usage.prompt_tokens * per_mtok_in + result.usage.completion_tokens * per_mtok_out) / 1e6
    assert result.cost_usd == pytest.approx(expected, rel=1e-12)
    assert result.model == "smollm2-135m" and result.model_latency_ms > 0
    letter = decode(DeadLetter, outputs[1].value)
    assert outputs[1].topic == "dlq" and letter.stage == "worker.medium" and "request_id" in letter.reason


def test_a_request_the_engine_refuses_becomes_an_error_result(processor):
    body = {"messages": [{"role": "user", "content": "hi"}], "n": 3}
    result = decode(Result, asyncio.run(processor.process([_rec(_work("b", body), 2)]))[0].value)
    assert result.status == "error" and "n=1" in result.error
