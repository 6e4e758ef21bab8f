"""Scale-out on one machine (issue 12): two router-stream instances and two tier workers per tier,
in the same consumer groups, over 6-partition topics, on the real embedded broker and chDB (the
lean configuration: every tier served in-process by the small model).

A job of a few hundred requests is published; one router instance is SIGKILLed once some but
not all decisions are stored, then one worker of the tier with the most pending work once some
but not all results are (neither is restarted). The survivors' groups rebalance, take over the dead members' partitions and replay
whatever those had fetched but not committed. Then ClickHouse must hold, for every request,
exactly one decision and one result:

- `count()` with FINAL == requests (one row per request id after ReplacingMergeTree's dedup),
- `uniqExact(request_id)` without FINAL == requests (nothing lost: every id has a row),
- FINAL rows minus distinct ids == 0 (nothing doubled).

Delivery is at-least-once, so a batch replayed after a kill may be written twice: until a merge,
the raw row count (without FINAL) may exceed the request count. That is the design's contract
(README, "Delivery"); the test reports the raw rows not yet merged (`raw_replayed_rows`, a lower
bound of the replays: chDB merges in the background) and, with the stack stopped, checks that
`OPTIMIZE ... FINAL` leaves exactly one row per request: the replays are the same request ids.

Both instances of each killed kind must have done work before the kill, read from their own
Prometheus counters (`switchyard_records_total`), and the survivors must have done more after it.
`make test-scale` runs it; about two minutes on 2 cores."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.auth import Keyring
from infra.broker import free_port
from infra.clickhouse import connect
from infra.lifetime import die_with_parent
from schemas.common import TIERS
from switchyard.jobs import JobFile, Submission, prepare, publish
from switchyard.settings import SETTINGS_FILE_ENV, Settings
from switchyard.stack import Stack, run_dir
from switchyard.warehouse import Warehouse
from tests.conftest import lean_settings

pytestmark = pytest.mark.scale

REQUESTS = int(os.environ.get("SWITCHYARD_SCALE_REQUESTS", "300"))
PARTITIONS = 6
JOB = "scale-out"
TENANT = "scale"
ROUTER_KILL_AT = 0.25  # share of decisions stored when a router instance is killed
WORKER_KILL_AT = 0.3  # share of results stored when a worker is killed

PER_TIER = """
SELECT d.tier AS tier, count() AS decided, countIf(r.request_id != '') AS answered
FROM (SELECT request_id, tier FROM decisions FINAL WHERE job_id = {job:String}) AS d
LEFT JOIN (SELECT request_id FROM results FINAL WHERE job_id = {job:String}) AS r USING request_id
GROUP BY d.tier
"""
ROWS = """
SELECT (SELECT count() FROM {table:Identifier} FINAL WHERE job_id = {job:String}) AS final_rows,
       (SELECT uniqExact(request_id) FROM {table:Identifier} WHERE job_id = {job:String}) AS distinct_ids,
       (SELECT count() FROM {table:Identifier} WHERE job_id = {job:String}) AS raw_rows
"""


@dataclass
class Instance:
    """One process of a stage: `kind` is the stage's name (router, worker-small, ...)."""

    kind: str
    label: str  # its name in logs and in the report: router-1, router-2, ...
    proc: subprocess.Popen
    metrics_url: str
    stage: str  # the `stage` label of its switchyard_records_total


def _stage_label(kind: str) -> str:
    return "router" if kind == "router" else kind.replace("worker-", "worker.")


def _stage_args(kind: str) -> list[str]:
    return ["router"] if kind == "router" else ["worker", "--tier", kind.removeprefix("worker-")]


def _second_instance(stack: Stack, kind: str) -> Instance:
    """Start another `switchyard stage ...` process of `kind` beside the stack's own, as a second
    container of the same service would run: the same settings (broker, groups, data dir),
    except its own metrics port. Its readiness file has the stage's name, so it is removed first
    and waited for (the first instance wrote its own before the stack's start returned)."""
    s: Settings = stack.settings.model_copy(deep=True)
    port = free_port()
    s.metrics_ports = {kind: port}
    frozen = s.data_dir / f"settings.{kind}-2.json"
    frozen.write_text(s.model_dump_json(indent=2))
    (run_dir(s) / f"{kind}.ready").unlink(missing_ok=True)
    log_file = open(s.data_dir / "logs" / f"{kind}-2.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "stage", *_stage_args(kind)],
                            env={**stack.env, SETTINGS_FILE_ENV: str(frozen)}, stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent())
    return Instance(kind, f"{kind}-2", proc, f"http://127.0.0.1:{port}/metrics", _stage_label(kind))


def _records(instance: Instance, token: str) -> float:
    request = urllib.request.Request(instance.metrics_url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "switchyard_records_total" and s.labels.get("stage") == instance.stage)


def _kill(instance: Instance) -> None:
    os.killpg(instance.proc.pid, signal.SIGKILL)
    instance.proc.wait()


def _stop(instances: list[Instance], grace: float = 15) -> None:
    for inst in instances:
        if inst.proc.poll() is None:
            inst.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for inst in instances:
        try:
            inst.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(inst.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        inst.proc.wait()


def _lines(n: int) -> list[bytes]:
    # Distinct prompts of a few kinds, so the router spreads them over the tiers.
    kinds = ["Say the number {i}.", "What is {i} plus {i}?", "Write a python function that returns {i}.",
             "Prove that {i} squared is not negative.", "Name a fruit that starts with letter {i}."]
    return [json.dumps({"custom_id": f"r-{i}", "body": {"messages": [
        {"role": "user", "content": kinds[i % len(kinds)].format(i=i)}], "max_tokens": 8}}).encode()
        for i in range(n)]


@pytest.fixture
def scaled(tmp_path):
    """A lean stack on 6-partition topics plus a second router and a second worker per tier."""
    settings = lean_settings(tmp_path / "sy")
    settings.kafka.partitions = PARTITIONS
    settings.retrain.enabled = False
    settings.api.enabled = False
    stack = Stack(settings)
    extra: list[Instance] = []
    try:
        stack.start(timeout=300)
        kinds = ["router", *(f"worker-{t}" for t in TIERS)]
        extra = [_second_instance(stack, kind) for kind in kinds]
        for inst in extra:
            stack._wait_for_file(run_dir(stack.settings) / f"{inst.kind}.ready", 300, inst.proc, inst.label)
        first = [Instance(kind, f"{kind}-1", stack.stages[kind].proc, stack.info.metrics_urls[kind],
                          _stage_label(kind)) for kind in kinds]
        yield stack, {kind: [a, b] for kind, a, b in zip(kinds, first, extra)}
    finally:
        _stop(extra)
        stack.stop()


def test_two_instances_per_stage_split_the_work_and_a_sigkill_loses_and_doubles_nothing(scaled):
    stack, instances = scaled
    started = time.monotonic()
    s = stack.settings
    token = Keyring(s.secrets_dir).operator_token()
    wh = Warehouse.open(s)
    assert wh.url, "while the stack runs, reads go through the sink's query endpoint"

    def one(sql: str, **params) -> dict:
        return wh.rows(sql, {"job": JOB, **params})[0]

    def answered() -> int:
        return int(one("SELECT count() AS n FROM results FINAL WHERE job_id = {job:String}")["n"])

    # every data topic really has 6 partitions, and each group has two live members
    async def partitions() -> dict[str, int]:
        from aiokafka.admin import AIOKafkaAdminClient
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap)
        await admin.start()
        try:
            topics = [s.kafka.topics.queries, *(s.kafka.topics.work(t) for t in TIERS), s.kafka.topics.results]
            return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
        finally:
            await admin.close()

    assert set(asyncio.run(partitions()).values()) == {PARTITIONS}

    sub, messages = prepare(JobFile(Path(f"{JOB}.jsonl"), _lines(REQUESTS)), JOB, TENANT)
    assert len(sub.expected) == REQUESTS
    asyncio.run(publish(s.kafka, Submission(JOB, TENANT), messages))
    published_at = time.monotonic()

    def decided() -> int:
        return int(one("SELECT count() AS n FROM decisions FINAL WHERE job_id = {job:String}")["n"])

    def wait_until(done, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    # mid-routing: a router instance dies with some but not all decisions stored
    wait_until(lambda: decided() >= REQUESTS * ROUTER_KILL_AT, "the first decisions")
    router_victim = instances["router"][0]
    routers_before = [_records(i, token) for i in instances["router"]]
    _kill(router_victim)
    decided_at_kill = decided()
    assert 0 < decided_at_kill < REQUESTS, f"the router kill was not mid-job: {decided_at_kill} decided"

    # mid-answering: a worker of the tier with the most work pending dies, some results stored
    wait_until(lambda: answered() >= REQUESTS * WORKER_KILL_AT, "the first results")
    per_tier = {r["tier"]: (int(r["decided"]), int(r["answered"])) for r in wh.rows(PER_TIER, {"job": JOB})}
    victim_tier = max(per_tier, key=lambda t: per_tier[t][0] - per_tier[t][1])
    pending = per_tier[victim_tier][0] - per_tier[victim_tier][1]
    before = {kind: [_records(i, token) for i in pair] for kind, pair in instances.items() if kind != "router"}
    before["router"] = routers_before
    worker_pair = instances[f"worker-{victim_tier}"]
    worker_victim = max(worker_pair, key=lambda i: before[i.kind][worker_pair.index(i)])
    _kill(worker_victim)
    killed_at = time.monotonic()
    stored_at_kill = answered()
    assert 0 < stored_at_kill < REQUESTS, f"the worker kill was not mid-job: {stored_at_kill} answered"
    assert pending > 0, f"the {victim_tier} tier had nothing in flight: {per_tier}"

    # both routers, and both workers of every tier, had done work before the kills
    assert all(n > 0 for pair in before.values() for n in pair), before

    # the survivors finish the job
    deadline = time.monotonic() + 300
    while answered() < REQUESTS:
        assert time.monotonic() < deadline, f"{answered()}/{REQUESTS} answered 300 s after the kill"
        assert all(i.proc.poll() is None for pair in instances.values() for i in pair
                   if i not in (router_victim, worker_victim)), "a surviving instance died"
        time.sleep(0.5)
    finished_at = time.monotonic()
    time.sleep(2 * s.clickhouse.sink_flush_seconds + 1)  # let late replays of the dead members land
    survivors = {"router": instances["router"][1],
                 "worker": next(i for i in worker_pair if i is not worker_victim)}
    assert _records(survivors["router"], token) > before["router"][1]
    assert _records(survivors["worker"], token) > before[worker_victim.kind][worker_pair.index(survivors["worker"])]

    counts = {t: {k: int(v) for k, v in one(ROWS, table=t).items()} for t in ("requests", "decisions", "results")}
    ids = {r["custom_id"] for r in wh.rows("SELECT custom_id FROM results FINAL WHERE job_id = {job:String}",
                                             {"job": JOB})}
    statuses = one("SELECT countIf(status = 'ok') AS ok, count() AS n FROM results FINAL WHERE job_id = {job:String}")
    letters = int(one("SELECT count() AS n FROM dead_letters FINAL WHERE job_id = {job:String}")["n"])
    report = {
        "requests": REQUESTS, "partitions": PARTITIONS,
        "killed": [router_victim.label, worker_victim.label], "decided_at_router_kill": decided_at_kill,
        "answered_at_worker_kill": stored_at_kill,
        "pending_on_victim_tier": pending, "records_before_kill": before,
        "lost": {t: REQUESTS - c["distinct_ids"] for t, c in counts.items()},
        "duplicated": {t: c["final_rows"] - c["distinct_ids"] for t, c in counts.items()},
        "raw_replayed_rows": {t: c["raw_rows"] - c["distinct_ids"] for t, c in counts.items()},
        "answer_s": round(finished_at - published_at, 1), "after_kill_s": round(finished_at - killed_at, 1),
        "test_s": round(time.monotonic() - started, 1),
    }
    print("scale-out:", json.dumps(report))  # shown with -s; the figures the README quotes

    assert ids == sub.expected
    for table, c in counts.items():
        assert c["distinct_ids"] == REQUESTS, (table, report)  # lost = 0
        assert c["final_rows"] == REQUESTS, (table, report)  # duplicated = 0
    assert int(statuses["ok"]) == REQUESTS, statuses
    assert letters == 0

    wh.close()

    # replays the merge has not folded yet are the same request ids: with the stack stopped (the
    # sink owns the chDB directory while it runs), OPTIMIZE FINAL leaves one row per request
    _stop([i for pair in instances.values() for i in pair if i.label.endswith("-2")])
    stack.stop()
    client = connect(s.clickhouse_dsn)
    try:
        for table in ("decisions", "results"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
            raw = client.query(f"SELECT count(), uniqExact(request_id) FROM {table} WHERE job_id = {{job:String}}",
                               parameters={"job": JOB}).result_rows[0]
            assert tuple(raw) == (REQUESTS, REQUESTS), (table, raw)
    finally:
        client.close()
