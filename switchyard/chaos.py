"""`switchyard chaos`: one job through the embedded lean stack while it is knocked about, and an
account, from ClickHouse, of what was lost, doubled or dead-lettered.

The run, in two halves around a broker loss:
1. the first half of the job is published in chunks, each stored before the next (what `submit`
   guarantees), while the router, a tier worker and the sink are SIGKILLed and restarted at
   random moments, and malformed, oversized and deeply nested messages are injected;
2. the broker is SIGKILLed mid-job; the stack is started again and `replay` re-publishes every
   stored request without a result;
3. the second half runs while one tier's model fails (its fault file) until that tier's circuit
   breaker opens, its traffic is answered by the fallback tiers, then the fault is cleared and
   the breaker must close again.
Then the stack stops and ClickHouse is counted with FINAL, and without it after OPTIMIZE FINAL.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infra.clickhouse import connect
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, TIERS
from schemas.validation import MAX_QUERY_BYTES
from streams.kafka import produce_all, producing
from streams.records import Output
from switchyard.jobs import JobFile, Submission, prepare, publish
from switchyard.replay import replay
from switchyard.settings import Settings
from switchyard.stack import Stack, StackError, run_dir
from switchyard.warehouse import Warehouse, WarehouseError
from workers.breaker import breaker_file, read_breaker_state
from workers.faults import clear_fault, inject_fault

JOB = "chaos"
TENANT = "chaos"
FAILING_TIER = "medium"
STAGE_VICTIMS = ("router", "sink", *(f"worker-{t}" for t in TIERS))

COUNTS = """
SELECT
    (SELECT count() FROM requests FINAL WHERE job_id = {job:String}) AS requests,
    (SELECT count() FROM results FINAL WHERE job_id = {job:String}) AS answered,
    (SELECT count() FROM dead_letters FINAL WHERE job_id = {job:String}) AS dead_letters
"""
FINAL_DUPLICATES = """
SELECT count() - uniqExact(request_id) AS n FROM {table:Identifier} FINAL WHERE job_id = {job:String}
"""
RAW_DUPLICATES = "SELECT count() - uniqExact(request_id) AS n FROM {table:Identifier} WHERE job_id = {job:String}"
# Answers the failing tier forwarded along its fallback chain (Result.fallback_from).
FALLBACK_ANSWERED = """
SELECT countIf(has(fallback_from, {tier:String})) AS fallback, countIf(tier = {tier:String}) AS failing_tier
FROM results FINAL WHERE job_id = {job:String}
"""
LETTER_REASONS = "SELECT key, reason FROM dead_letters FINAL WHERE job_id = {job:String}"


class ChaosError(RuntimeError):
    pass


@dataclass
class Run:
    settings: Settings
    rng: random.Random
    say: Callable[[str], None]
    stack: Stack | None = None
    events: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str, **extra) -> None:
        self.events.append({"at_s": round(time.monotonic() - self.started, 1), "event": what, **extra})
        self.say(what)

    # --- the stack ----------------------------------------------------------------------------

    def start(self) -> None:
        self.stack = Stack(self.settings)
        self.stack.start(timeout=600)

    def rows(self, sql: str, params: dict) -> list[dict]:
        wh = Warehouse.open(self.stack.settings)
        try:
            return wh.rows(sql, params)
        finally:
            wh.close()

    def counts(self) -> dict:
        for _ in range(20):  # the sink may be restarting
            try:
                return self.rows(COUNTS, {"job": JOB})[0]
            except (WarehouseError, OSError):
                time.sleep(0.5)
        raise ChaosError("ClickHouse (the sink's endpoint) did not answer")

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> bool:
        """Poll `done`, restarting crashed stages as `switchyard up` would; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stack.check()
            if done():
                return True
            time.sleep(0.5)
        self.note(f"timed out waiting for {what}")
        return False

    def kill_stage(self, name: str) -> None:
        time.sleep(self.rng.uniform(0, 1.5))  # a random moment, in-flight work likely
        self.note(f"SIGKILL {name}, restart")
        self.stack.restart_stage(name, wait=True)


async def _publish_raw(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    kafka = settings.kafka
    headers = ((HEADER_JOB_ID, JOB.encode()), (HEADER_TENANT, TENANT.encode()))
    async with producing(kafka) as producer:
        await produce_all(producer, [Output(kafka.topics.queries, k, v, headers) for k, v in messages])


def bad_messages() -> list[tuple[bytes, bytes]]:
    """What a hostile or broken client sends: each must end as a dead letter with a reason."""
    nested = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    huge = json.dumps({"custom_id": "huge", "body": {"messages": [
        {"role": "user", "content": "x" * (MAX_QUERY_BYTES + 1)}]}}).encode()
    return [(b"bad-malformed", b"{not json"), (b"bad-binary", bytes(range(256))),
            (b"bad-nested", nested), (b"bad-oversized", huge),
            (b"bad-wrong-type", b'{"custom_id": 7, "body": "no"}'),
            (b"bad-schema", b'{"schema_version": 99, "custom_id": "v", "body": {"messages": []}}')]


def job_lines(n: int) -> list[bytes]:
    """n short requests; every third is pinned to the tier that will fail, so it has traffic."""
    lines = []
    for i in range(n):
        pinned = i % 3 == 0
        line = {"custom_id": f"{'pinned' if pinned else 'free'}-{i}",
                "body": {"messages": [{"role": "user", "content": f"Say the number {i}."}], "max_tokens": 4}}
        if pinned:
            line["routing"] = {"pinned_tier": FAILING_TIER}
        lines.append(json.dumps(line).encode())
    return lines


def run_chaos(settings: Settings, requests: int, seed: int = 0, say: Callable[[str], None] = print,
              answer_timeout: float = 1800) -> dict:
    """`settings`: a lean stack's (every tier the small model, in-process engine) on a data dir
    of the run's own."""
    settings = settings.model_copy(deep=True)
    settings.retrain.enabled = False
    settings.workers.breaker.reset_timeout_seconds = min(settings.workers.breaker.reset_timeout_seconds, 5.0)
    run = Run(settings, random.Random(seed), say)
    sub, messages = prepare(JobFile(Path(f"{JOB}.jsonl"), job_lines(requests)), JOB, TENANT)
    chunks = [messages[i::6] for i in range(6)]  # 6 chunks, pinned requests in each
    first, second = chunks[:3], chunks[3:]
    victims = ["router", "sink", f"worker-{run.rng.choice(TIERS)}"]  # each kind of stage dies once
    run.rng.shuffle(victims)
    bad = bad_messages()
    published = 0
    report: dict = {"submitted": requests, "seed": seed}
    try:
        run.start()
        run.note("stack up")

        def send(chunk) -> None:
            nonlocal published
            asyncio.run(publish(run.stack.settings.kafka, Submission(JOB, TENANT), chunk))
            published += len(chunk)
            if not run.wait(lambda: run.counts()["requests"] >= published, 300, "requests to be stored"):
                raise ChaosError(f"ClickHouse did not store the {published} requests published")

        # 1. stage kills and bad input, each chunk stored before the next (as `submit` does)
        asyncio.run(_publish_raw(run.stack.settings, bad))
        run.note(f"injected {len(bad)} bad messages")
        for chunk, victim in zip(first[:2], victims):
            send(chunk)
            run.kill_stage(victim)
        run.wait(lambda: run.counts()["dead_letters"] >= len(bad), 120, "the bad messages' dead letters")

        # 2. the broker goes while the last chunk is in flight; the stack comes back; replay
        send(first[2])
        time.sleep(run.rng.uniform(0, 1))
        before = run.counts()
        run.note("SIGKILL the broker", answered_before=before["answered"], stored=before["requests"])
        run.stack.broker.kill()
        run.stack.stop(grace=5)
        run.start()
        replayed = asyncio.run(replay(run.rows, run.stack.settings.kafka, JOB))
        run.note(replayed.line())
        report["replayed"] = replayed.replayed

        # 3. one tier fails until its breaker opens; then it recovers and the breaker must close
        rd = run_dir(run.stack.settings)
        inject_fault(rd, FAILING_TIER, "chaos")
        fault_at = time.time()
        run.note(f"fault injected on the {FAILING_TIER} tier")
        state = lambda: read_breaker_state(breaker_file(rd, FAILING_TIER)) or {}  # noqa: E731
        opened = lambda: (state().get("opened_at") or 0) >= fault_at  # noqa: E731
        for number, chunk in enumerate(second[:2]):
            send(chunk)
            if number == 0:
                run.kill_stage(victims[2])
            if opened():
                break
        run.wait(opened, 120, "the breaker to open")
        report["breaker_open_s"] = round(state()["opened_at"] - fault_at, 2) if opened() else None
        clear_fault(rd, FAILING_TIER)
        cleared_at = time.time()
        run.note(f"fault cleared (breaker {'open' if opened() else 'never opened'})")
        closed = lambda: (state().get("closed_at") or 0) >= cleared_at  # noqa: E731
        sent_second = published - sum(len(c) for c in first)
        rest = [m for chunk in second for m in chunk][sent_second:]
        if rest:
            send(rest)
        run.kill_stage(run.rng.choice(STAGE_VICTIMS))
        if opened() and not closed():  # a probe needs traffic on the tier after the reset timeout
            time.sleep(settings.workers.breaker.reset_timeout_seconds + 1)
            probe = [m for m in messages if m[0].startswith(f"{JOB}:pinned-".encode())][:2]  # answered again, not doubled
            asyncio.run(publish(run.stack.settings.kafka, Submission(JOB, TENANT), probe))
            run.wait(closed, 120, "the breaker to close")
        report["breaker_close_s"] = round(state()["closed_at"] - cleared_at, 2) if closed() else None
        run.wait(lambda: run.counts()["answered"] >= requests, answer_timeout, "every answer")
        fallback = run.rows(FALLBACK_ANSWERED, {"job": JOB, "tier": FAILING_TIER})[0]
        report["fallback_answered"] = int(fallback["fallback"])
        report["answered_by_failing_tier"] = int(fallback["failing_tier"])
        letters = run.rows(LETTER_REASONS, {"job": JOB})
    except StackError as exc:
        raise ChaosError(f"the stack failed: {exc}") from None
    finally:
        if run.stack is not None:
            run.stack.stop()
    report.update(_count(settings, requests, len(bad), letters))
    report["stage_restarts"] = [e["event"] for e in run.events if e["event"].startswith("SIGKILL")]
    report["events"] = run.events
    report["seconds"] = round(time.monotonic() - run.started, 1)
    return report


def _count(settings: Settings, submitted: int, injected: int, letters: list[dict]) -> dict:
    """From the engine's directory, the stack stopped: FINAL reads, then OPTIMIZE FINAL and plain
    counts (a ReplacingMergeTree only deduplicates when it merges)."""
    client = connect(settings.clickhouse_dsn)
    try:
        def one(sql: str, **params) -> int:
            return int(client.query(sql, parameters={"job": JOB, **params}).result_rows[0][0])

        answered = one("SELECT count() FROM results FINAL WHERE job_id = {job:String}")
        submitted_ids = one("SELECT count() FROM requests FINAL WHERE job_id = {job:String}")
        final_dupes = {t: one(FINAL_DUPLICATES, table=t) for t in ("requests", "decisions", "results")}
        for table in ("requests", "decisions", "results"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        raw_dupes = {t: one(RAW_DUPLICATES, table=t) for t in ("requests", "decisions", "results")}
    finally:
        client.close()
    bad_keys = {k.decode() for k, _ in bad_messages()}
    bad_letters = [r for r in letters if r["key"] in bad_keys]
    return {"stored_requests": submitted_ids, "answered": answered, "lost": submitted - answered,
            "duplicated": sum(raw_dupes.values()), "duplicated_final": sum(final_dupes.values()),
            "duplicated_by_table": raw_dupes, "dead_lettered": len(letters), "injected_bad": injected,
            "bad_dead_lettered_with_reason": sum(bool(r["reason"].strip()) for r in bad_letters)}
