"""End to end on the real embedded stack: broker, faust router stream, tier workers, chDB sink."""
import asyncio
import json
import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Result
from switchyard.warehouse import Warehouse

from tests.conftest import request_line, run_job

PROMPTS = ["What is 2 + 2?", "Name a fruit.", "Say hello in French.", "What colour is the sky?",
           "Write a python function that adds two numbers.", "Who wrote Hamlet?"]


def _prompts(prefix: str, n: int) -> dict[str, str]:
    return {f"{prefix}-{i}": PROMPTS[i % len(PROMPTS)] for i in range(n)}


def _lines(prefix: str, n: int) -> list[bytes]:
    return [request_line(cid, prompt) for cid, prompt in _prompts(prefix, n).items()]


def _offline_decisions(settings, job_id: str, prompts: dict[str, str]) -> tuple[str, dict[str, tuple[str, bool]]]:
    """What the live router (the shipped default artifact) decides for these prompts offline,
    with the same knobs (none: its default) and the stack's exploration draw, which is a pure
    function of the request id: {custom_id: (tier, explored)}, and the router's version."""
    from router.artifact import load_default
    from router.base import Knobs
    from router.embeddings import embed, load_encoder
    from router.explore import explore

    router = load_default()
    texts = list(prompts.values())
    choices = router.route(texts, embed(texts, encoder=load_encoder(), use_cache=False), [Knobs()] * len(texts))
    decided = {}
    for cid, choice in zip(prompts, choices):
        pick = explore(f"{job_id}:{cid}", choice.tier, settings.router.explore_rate)
        decided[cid] = (pick.tier, pick.explored)
    return router.version, decided


def _query(stack, sql: str, job: str) -> list[dict]:
    wh = Warehouse.open(stack.settings)
    assert wh.url, "while the stack runs, reads go through the sink's query endpoint"
    return wh.rows(sql, {"job": job})


def _wait_rows(stack, sql: str, job: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = _query(stack, sql, job)[0]["n"]
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.3)


RESULTS_N = "SELECT count() AS n FROM results FINAL WHERE job_id = {job:String}"
DECISIONS_N = "SELECT count() AS n FROM decisions FINAL WHERE job_id = {job:String}"


def _kafka_results(settings, job_id: str) -> dict[str, list[Result]]:
    """Every result message of a job on the results topic, replays included."""
    async def read():
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None)
        await consumer.start()
        tps = [TopicPartition("results", p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[str, list[Result]] = {}
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for msgs in batch.values():
                for m in msgs:
                    r = Result.model_validate_json(m.value)
                    if r.job_id == job_id:
                        found.setdefault(r.custom_id, []).append(r)
        await consumer.stop()
        return found
    return asyncio.run(read())


def test_every_request_gets_exactly_one_result_and_one_decision_row(stack):
    sub, outcome = run_job(stack.settings, _lines("basic", 6), "e2e-basic")
    assert set(outcome.results) == sub.expected and len(sub.expected) == 6
    assert all(r.status == "ok" and r.answer_text() for r in outcome.results.values())
    assert _wait_rows(stack, RESULTS_N, "e2e-basic", 6) == 6
    assert _wait_rows(stack, DECISIONS_N, "e2e-basic", 6) == 6
    # The tiers stored are the live router's own decisions for these texts, request by request.
    version, decided = _offline_decisions(stack.settings, "e2e-basic", _prompts("basic", 6))
    assert len({tier for tier, _ in decided.values()}) >= 2, "these prompts should span tiers (else the check is weak)"
    rows = _query(stack, "SELECT custom_id, tier, explored, router_version FROM decisions FINAL "
                         "WHERE job_id = {job:String}", "e2e-basic")
    assert {r["custom_id"]: (r["tier"], bool(r["explored"])) for r in rows} == decided
    assert {r["router_version"] for r in rows} == {version}
    answered = _query(stack, "SELECT custom_id, tier FROM results FINAL WHERE job_id = {job:String}", "e2e-basic")
    assert {r["custom_id"]: r["tier"] for r in answered} == {cid: tier for cid, (tier, _) in decided.items()}


def test_submitting_the_same_job_twice_yields_no_duplicate_rows(stack):
    lines = _lines("dup", 4)
    run_job(stack.settings, lines, "e2e-dup")
    run_job(stack.settings, lines, "e2e-dup")
    # Wait until the second round really was answered (two results per request on Kafka) ...
    deadline = time.monotonic() + 120
    while min(map(len, (found := _kafka_results(stack.settings, "e2e-dup")).values())) < 2:
        assert time.monotonic() < deadline, "the re-sent job was never answered again"
        time.sleep(1)
    newest = max(r.finished_at for rs in found.values() for r in rs)
    # ... and stored (the column keeps milliseconds), then count with FINAL: still one row per request.
    sql = ("SELECT count() AS n FROM results WHERE job_id = {job:String} AND finished_at >= "
           f"toDateTime64('{newest:%Y-%m-%d %H:%M:%S}.{newest.microsecond // 1000:03d}', 3, 'UTC')")
    assert _wait_rows(stack, sql, "e2e-dup", 1) >= 1  # the sink may write a replay twice
    assert _query(stack, RESULTS_N, "e2e-dup")[0]["n"] == 4
    assert _query(stack, DECISIONS_N, "e2e-dup")[0]["n"] == 4


def test_malformed_lines_are_dead_lettered_and_the_rest_completes(stack):
    bad = [b"this is not json", b'{"custom_id": "m-x", "body": {"max_tokens": 5}}',
           b'{"custom_id": "m-y", "body": {"messages": [{"role": "user", "content": 42}]}}']
    sub, outcome = run_job(stack.settings, _lines("mal", 3) + bad, "e2e-malformed")
    assert len(outcome.results) == 3 and len(outcome.dead_letters) == 3
    rows = []
    deadline = time.monotonic() + 60
    while len(rows) < 3 and time.monotonic() < deadline:
        rows = _query(stack, "SELECT stage, reason, original FROM dead_letters FINAL "
                             "WHERE job_id = {job:String} ORDER BY offset", "e2e-malformed")
        time.sleep(0.3)
    reasons = sorted(r["reason"] for r in rows)
    assert len(rows) == 3 and {r["stage"] for r in rows} == {"router"}
    assert any("not valid JSON" in r for r in reasons)
    assert any("body.messages: Field required" in r for r in reasons)
    assert any("body.messages.0.content" in r for r in reasons)
    assert "this is not json" in {r["original"] for r in rows}


def test_restarting_stages_mid_job_leaves_exactly_one_row_per_request(stack):
    from switchyard.jobs import JobFile, prepare, publish, wait_for

    lines = _lines("restart", 12)
    sub, messages = prepare(JobFile(stack.settings.data_dir / "r.jsonl", lines), "e2e-restart", "tests")
    # Part of the job first; once some of it is answered and stored, the rest, then the kills: the
    # stages die with some of the job answered and the rest in flight.
    asyncio.run(publish(stack.settings.kafka, sub, messages[:8]))
    assert _wait_rows(stack, RESULTS_N, "e2e-restart", 1, timeout=120) >= 1, "none of the first part was answered"
    asyncio.run(publish(stack.settings.kafka, sub, messages[8:]))
    answered = _query(stack, RESULTS_N, "e2e-restart")[0]["n"]
    assert 0 < answered < 12, f"{answered} of 12 answered when the stages are killed: not mid-job"
    names = ("worker-small", "router", "sink", "worker-medium")
    before = {name: (stack.stages[name].proc, stack.stages[name].restarts) for name in names}
    for name in names:
        stack.restart_stage(name, wait=False)
    for name in names:
        stack.wait_ready(name)
    for name, (old, restarts) in before.items():
        stage = stack.stages[name]
        assert old.returncode == -signal.SIGKILL, f"{name}'s old process was not killed ({old.returncode})"
        assert stage.proc.pid != old.pid and stage.proc.poll() is None, f"{name} did not come back"
        assert stage.restarts == restarts + 1, name
    outcome = asyncio.run(wait_for(stack.settings.kafka, sub, 300))
    assert not outcome.timed_out and set(outcome.results) == sub.expected
    assert _wait_rows(stack, RESULTS_N, "e2e-restart", 12, timeout=120) == 12
    assert _wait_rows(stack, DECISIONS_N, "e2e-restart", 12) == 12
    ids = _query(stack, "SELECT custom_id FROM results FINAL WHERE job_id = {job:String}", "e2e-restart")
    assert sorted(r["custom_id"] for r in ids) == sorted(sub.expected)


def test_a_plain_third_party_kafka_client_gets_a_result(stack):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": stack.settings.kafka.bootstrap, "acks": "all"})
    line = json.loads(request_line("3p-1", "Name a planet."))
    line["job_id"] = "e2e-third-party"
    producer.produce("queries", json.dumps(line).encode(), key=b"e2e-third-party:3p-1")
    assert producer.flush(30) == 0
    from switchyard.jobs import Submission, wait_for

    sub = Submission(job_id="e2e-third-party", tenant="default", expected={"3p-1"})
    outcome = asyncio.run(wait_for(stack.settings.kafka, sub, 120))
    assert not outcome.timed_out and outcome.results["3p-1"].status == "ok"


def test_auto_grades_flow_to_feedback_and_the_outcomes_report(stack):
    from switchyard.feedback import Reference, auto_grade, publish_feedback

    lines = [request_line("g-1", "What is 2 + 2? Answer with a number."),
             request_line("g-2", "Say the word banana.")]
    sub, outcome = run_job(stack.settings, lines, "e2e-graded")
    refs = {"g-1": Reference("g-1", "GSM8K", "2 + 2 = 4\n#### 4"),
            "g-2": Reference("g-2", "f1_score", "banana")}
    feedback = auto_grade(outcome.results.values(), refs)
    assert {f.request_id for f in feedback} == {"e2e-graded:g-1", "e2e-graded:g-2"}
    asyncio.run(publish_feedback(stack.settings.kafka, feedback))
    n = _wait_rows(stack, "SELECT count() AS n FROM feedback FINAL WHERE job_id = {job:String}", "e2e-graded", 2)
    assert n == 2
    rows = Warehouse.open(stack.settings).ask("job_tiers", job="e2e-graded")
    assert sum(r["requests"] for r in rows) == 2 and sum(r["graded"] for r in rows) == 2
    expected = sum(f.score for f in feedback) / 2
    got = sum(r["quality"] * r["graded"] for r in rows) / 2
    assert abs(got - expected) < 1e-9


def test_a_second_stack_on_the_same_data_dir_is_refused_and_the_first_survives(stack):
    from switchyard.stack import Stack, StackError

    second = Stack(stack.settings.model_copy(deep=True))
    with pytest.raises(StackError, match="already running"):
        second.start()
    second.stop()
    assert Warehouse.open(stack.settings).url, "the running stack's info must be left alone"
