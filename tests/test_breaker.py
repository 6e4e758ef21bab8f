"""The tier worker's circuit breaker and fallback chain, with the real SmolLM2 model in-process.

FaultyEngine makes the medium tier's model fail while its fault file exists (a wrapper around the
real engine, not a mock of it); the large tier's processor answers what medium forwards."""
import asyncio
import time
from datetime import datetime, timezone

import pytest

from infra.clickhouse import apply_schema, connect
from schemas import Result, WorkItem, encode
from streams.records import RawRecord
from streams.sink import ClickHouseWriter, to_rows
from workers.breaker import TierBreaker, breaker_file, read_breaker_state
from workers.config import BreakerSettings
from workers.faults import FaultyEngine, clear_fault, fault_file, inject_fault
from workers.tier_worker import TierProcessor
from workers.tiers import build_engine, served_tier

from tests.conftest import lean_settings, request_line, run_job
from tests.helpers import chat_body, decode

FAST = dict(failures_to_open=2, engine_attempts=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    settings = lean_settings(tmp_path_factory.mktemp("breaker"))
    engine = build_engine("medium", settings.workers)  # every tier is SmolLM2 in lean mode
    yield settings, engine
    engine.close()


def _processor(setup, tier, run_dir, **breaker):
    settings, engine = setup
    breaker = TierBreaker(tier, BreakerSettings(**breaker), breaker_file(run_dir, tier))
    return TierProcessor(served_tier(tier, settings.workers), FaultyEngine(engine, fault_file(run_dir, tier)),
                         breaker=breaker)


def _work(custom_id: str, tier: str = "medium", fallback_from=(), **body) -> bytes:
    now = datetime.now(timezone.utc)
    return encode(WorkItem(request_id=f"j:{custom_id}", job_id="j", tenant="t", custom_id=custom_id, tier=tier,
                           body=body or chat_body("Name a colour.", max_tokens=4), router_version="v",
                           submitted_at=now, decided_at=now, fallback_from=list(fallback_from)))


def _run(processor, value: bytes):
    rec = RawRecord(value=value, topic=f"work.{processor.tier}", partition=0, offset=0)
    [out] = asyncio.run(processor.process([rec]))
    return out


def test_the_breaker_opens_forwards_to_the_fallback_and_closes_after_the_fault_clears(setup, tmp_path):
    run_dir = tmp_path / "run"
    medium = _processor(setup, "medium", run_dir, reset_timeout_seconds=5.0, **FAST)
    large = _processor(setup, "large", run_dir, **FAST)
    inject_fault(run_dir, "medium")

    # Two failed tries of one request open it; the request goes to the next tier of medium's chain.
    out = _run(medium, _work("a"))
    item = decode(WorkItem, out.value)
    assert out.topic == "work.large" and out.key == b"j:a"
    assert item.tier == "large" and item.fallback_from == ["medium"]
    state = read_breaker_state(breaker_file(run_dir, "medium"))
    assert state["state"] == "open" and state["opened_at"] and state["closed_at"] is None
    assert [(t["from"], t["to"]) for t in state["transitions"]] == [("closed", "open")]
    assert medium.engine.faults == 2

    # While open, medium's model is not even asked.
    out = _run(medium, _work("b"))
    assert out.topic == "work.large" and medium.engine.calls == 2

    # The large tier's worker answers the forwarded item with its own model, and says so.
    result = decode(Result, _run(large, encode(item)).value)
    assert result.status == "ok" and result.tier == "large" and result.answer_text()
    assert result.fallback_from == ["medium"] and any("medium failed" in w for w in result.warnings)

    # After the fault clears and the reset timeout passes, a probe half-opens and closes it.
    clear_fault(run_dir, "medium")
    deadline = time.monotonic() + 60
    n = 0
    while True:
        n += 1
        out = _run(medium, _work(f"c{n}"))
        if out.topic == "results":
            break
        assert out.topic == "work.large" and time.monotonic() < deadline, "the breaker never closed"
        time.sleep(0.2)
    result = decode(Result, out.value)
    assert result.status == "ok" and result.tier == "medium" and result.fallback_from == []
    state = read_breaker_state(breaker_file(run_dir, "medium"))
    assert state["state"] == "closed" and state["closed_at"] > state["opened_at"]
    assert [(t["from"], t["to"]) for t in state["transitions"]] == [
        ("closed", "open"), ("open", "half-open"), ("half-open", "closed")]

    # Later requests are answered by medium itself.
    later = decode(Result, _run(medium, _work("d")).value)
    assert later.status == "ok" and later.tier == "medium" and later.fallback_from == []


def test_a_failed_probe_opens_it_again(setup, tmp_path):
    run_dir = tmp_path / "run"
    small = _processor(setup, "small", run_dir, reset_timeout_seconds=0.5, failures_to_open=1, engine_attempts=1)
    inject_fault(run_dir, "small")
    assert _run(small, _work("a", tier="small")).topic == "work.medium"
    first = read_breaker_state(breaker_file(run_dir, "small"))
    deadline = time.monotonic() + 30
    while small.engine.faults < 2:  # the probe after the reset timeout, still failing
        assert time.monotonic() < deadline, "the breaker never probed"
        time.sleep(0.1)
        assert _run(small, _work("b", tier="small")).topic == "work.medium"
    state = read_breaker_state(breaker_file(run_dir, "small"))
    assert state["state"] == "open" and state["opened_at"] == first["opened_at"]
    assert state["open_since"] > first["open_since"]
    assert [(t["from"], t["to"]) for t in state["transitions"]][-2:] == [("open", "half-open"), ("half-open", "open")]


def test_the_chain_skips_tiers_already_tried_and_ends_with_an_error_that_says_so(setup, tmp_path):
    run_dir = tmp_path / "run"
    medium = _processor(setup, "medium", run_dir, failures_to_open=1, engine_attempts=1)
    inject_fault(run_dir, "medium")
    out = _run(medium, _work("a", fallback_from=["large"]))
    assert out.topic == "work.small" and decode(WorkItem, out.value).fallback_from == ["large", "medium"]

    out = _run(medium, _work("b", fallback_from=["large", "small"]))
    result = decode(Result, out.value)
    assert out.topic == "results" and result.status == "error" and result.fallback_from == ["large", "small"]
    assert "fallback chain is exhausted (tried large, small, medium)" in result.error


def test_a_request_the_model_refuses_is_neither_forwarded_nor_counted(setup, tmp_path):
    medium = _processor(setup, "medium", tmp_path / "run", failures_to_open=1)
    out = _run(medium, _work("a", messages=[{"role": "user", "content": "hi"}], n=3))
    result = decode(Result, out.value)
    assert out.topic == "results" and result.status == "error" and "n=1" in result.error
    assert medium.breaker.state == "closed" and medium.breaker.failures == 0


def test_a_restarted_worker_remembers_its_tier_is_open(tmp_path):
    path = breaker_file(tmp_path, "large")
    before = TierBreaker("large", BreakerSettings(failures_to_open=1, reset_timeout_seconds=600), path)
    with pytest.raises(RuntimeError), before.calling():
        raise RuntimeError("the model is down")
    assert before.is_open
    after = TierBreaker("large", BreakerSettings(failures_to_open=1, reset_timeout_seconds=600), path)
    assert after.is_open and read_breaker_state(path)["opened_at"] == before.record["opened_at"]


def test_the_sink_stores_the_fallback_chain(tmp_path):
    client = connect(f"chdb://{tmp_path / 'ch'}")
    apply_schema(client)
    result = Result(request_id="j:a", job_id="j", tenant="t", custom_id="a", tier="small", model="m",
                    status="ok", router_version="v", submitted_at="2026-01-01T00:00:00Z",
                    fallback_from=["medium", "large"])
    ClickHouseWriter(client).write([to_rows(RawRecord(encode(result), "results", 0, 0))])
    rows = client.query("SELECT tier, fallback_from FROM results FINAL WHERE request_id = 'j:a'").result_rows
    client.close()
    assert rows == [("small", ["medium", "large"])]


# --- through the real embedded stack: broker, router stream, three tier workers, sink ----------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from streams.limits import TenantLimit, TenantLimitSettings
    from switchyard.stack import Stack

    settings = lean_settings(tmp_path_factory.mktemp("breaker-stack"))
    settings.workers.breaker = BreakerSettings(failures_to_open=2, reset_timeout_seconds=2.0, engine_attempts=2)
    settings.tenant_limits = TenantLimitSettings(tenants={"greedy": TenantLimit(completion_tokens="16/hour")})
    stack = Stack(settings)
    stack.start(timeout=300)
    yield stack
    stack.stop()


def _pinned(custom_id: str, tier: str = "medium") -> bytes:
    return request_line(custom_id, "Name a fruit.", routing={"pinned_tier": tier})


def test_through_the_stack_a_failing_tier_is_answered_by_its_fallback_until_it_recovers(stack):
    run_dir = stack.settings.data_dir / "run"
    inject_fault(run_dir, "medium")
    _, outcome = run_job(stack.settings, [_pinned(f"m{i}") for i in range(4)], "fallback-down")
    assert sorted(outcome.results) == ["m0", "m1", "m2", "m3"]
    for result in outcome.results.values():
        assert result.status == "ok" and result.tier == "large" and result.fallback_from == ["medium"]
    assert read_breaker_state(breaker_file(run_dir, "medium"))["opened_at"]

    clear_fault(run_dir, "medium")
    deadline = time.monotonic() + 120
    n = 0
    while True:
        n += 1
        _, outcome = run_job(stack.settings, [_pinned("r")], f"fallback-up-{n}")
        result = outcome.results["r"]
        assert result.status == "ok"
        if result.tier == "medium":
            break
        assert result.fallback_from == ["medium"] and time.monotonic() < deadline, "the breaker never closed"
    assert result.fallback_from == []
    state = read_breaker_state(breaker_file(run_dir, "medium"))
    assert state["state"] == "closed" and state["closed_at"] > state["opened_at"]


def test_through_the_stack_a_tenant_over_its_budget_gets_error_results(stack):
    # request_line asks for 8 tokens: two of greedy's lines fit its 16 tokens an hour, the third does not.
    lines = [request_line(f"g{i}", "Name a fruit.") for i in range(3)]
    _, greedy = run_job(stack.settings, lines, "budget-greedy", tenant="greedy")
    _, other = run_job(stack.settings, lines, "budget-other", tenant="other")
    statuses = sorted((r.status, r.error or "") for r in greedy.results.values())
    assert statuses == [("error", "tenant 'greedy' over its token budget: this request may use 8 "
                                  "completion tokens and 0 of 16 per 1 hour remain"), ("ok", ""), ("ok", "")]
    assert all(r.status == "ok" for r in other.results.values()) and len(other.results) == 3
