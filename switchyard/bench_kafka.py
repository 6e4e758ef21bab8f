"""The Kafka path of `switchyard bench pipeline`: the pipeline's own overhead, through the broker.

A lean stack (embedded broker, router stream, three tier workers, sink; no retrainer, no API, no
cache) whose tiers answer with the echo engine (`workers.engine.EchoEngine`: no model), so the
time from a request's publish on `queries` to its Result's arrival on `results` is the
pipeline's alone: producer linger and acks, the router's micro-batch wait and embedding, the
work topic, the worker's fetch, the results topic. Requests are published at a steady offered
load, one every 1/rps seconds; a consumer on `results` notes when each Result arrives.

A few loads below the offered one are tried first, lowest first, until one misses the p99 goal
(`probes`); then the offered load, last, so that its backlog (when the stack cannot carry it)
never delays another measurement. `sustainable_rps` is the highest load tried that met the goal.
"""
from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Result
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from schemas.validation import InvalidMessage, parse_message
from streams.config import KafkaSettings
from streams.kafka import produce, producing
from streams.records import Output
from switchyard.jobs import JobFile, _stop_quietly, prepare
from switchyard.settings import Settings

P99_GOAL_MS = 100.0
PROBE_RPS = (5.0, 10.0, 20.0, 40.0, 60.0)  # those below the offered load are tried, lowest first
WARM_UP_REQUESTS = 10
TENANT = "bench"
# The embedded broker answers a fetch only when its wait is over, not when a message arrives:
# the bench's own consumer waits little, so that what it measures is the pipeline's, not its own.
FETCH_MAX_WAIT_MS = 10


def sample_lines(n: int, variant: str = "") -> list[bytes]:
    """`n` job-file lines from the sample job, custom_ids bench-0.., each prompt made unique."""
    lines = files("switchyard").joinpath("data/sample_job.jsonl").read_text().splitlines()
    out = []
    for i in range(n):
        data = json.loads(lines[i % len(lines)])
        data["custom_id"] = f"bench-{i}"
        data["body"]["messages"][0]["content"] += f" (variant {variant}{i})"  # defeat any caching
        out.append(json.dumps(data).encode())
    return out


def bench_settings(data_dir: Path) -> Settings:
    """A lean stack whose tiers answer with the echo engine; no retrainer, API or cache."""
    s = Settings(data_dir=data_dir)
    s.workers.engine = "echo"
    s.workers.all_tiers_small = True
    s.retrain.enabled = False
    s.api.enabled = False
    s.cache.enabled = False
    s.clickhouse.dsn = None  # the stack's own chDB, in the scratch dir
    return s


class Arrivals:
    """Every Result on the results topic, by request id: when it arrived (perf_counter), its status.
    Reads every partition from the beginning, as `switchyard.jobs.wait_for` does."""

    def __init__(self, kafka: KafkaSettings):
        self.topic = kafka.topics.results
        self.consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        self.arrived: dict[str, tuple[float, str]] = {}
        self.submitted: dict[str, float] = {}  # every request the bench published, by request id
        self.running = True

    async def follow(self) -> None:
        await self.consumer.start()
        try:
            await self.consumer.topics()  # the cluster's metadata, so the partitions are known
            tps = [TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic) or ()]
            self.consumer.assign(tps)
            await self.consumer.seek_to_beginning(*tps)
            while self.running:
                batches = await self.consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for m in (m for msgs in batches.values() for m in msgs):
                    try:
                        result = parse_message(Result, m.value)
                    except InvalidMessage:
                        continue
                    self.arrived.setdefault(result.request_id, (now, result.status))
        finally:
            await _stop_quietly(self.consumer)

    async def wait(self, ids: Iterable[str], timeout: float) -> bool:
        """Whether every one of `ids` has a result, waiting up to `timeout` seconds."""
        missing = set(ids)
        deadline = time.monotonic() + timeout
        while missing:
            missing -= self.arrived.keys()
            if missing and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


async def offer(kafka: KafkaSettings, arrivals: Arrivals, rps: float, seconds: float, timeout: float) -> dict:
    """Publish rps·seconds requests, one every 1/rps s, then wait up to `timeout` s for their results."""
    job_id = f"bench-{rps:g}rps-{uuid.uuid4().hex[:6]}"
    lines = sample_lines(max(2, round(rps * seconds)), f"{job_id} ")
    _, messages = prepare(JobFile(Path(f"{job_id}.jsonl"), lines), job_id, TENANT)
    headers = ((HEADER_JOB_ID, job_id.encode()), (HEADER_TENANT, TENANT.encode()))
    submitted: dict[str, float] = {}
    async with producing(kafka) as producer:
        start = time.perf_counter()

        async def paced_send(o: Output):
            await asyncio.sleep(max(0.0, start + len(submitted) / rps - time.perf_counter()))
            submitted[o.key.decode()] = time.perf_counter()
            return await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers))

        await produce(paced_send, [Output(kafka.topics.queries, key, value, headers) for key, value in messages])
    arrivals.submitted.update(submitted)
    await arrivals.wait(submitted, timeout)
    return figures(rps, submitted, arrivals.arrived)


def figures(rps: float, submitted: dict[str, float], arrived: dict[str, tuple[float, str]]) -> dict:
    """One offered load's figures. The steady window runs from the first submit to the last."""
    got = {k: arrived[k] for k in submitted if k in arrived}
    overhead = sorted((got[k][0] - t) * 1000 for k, t in submitted.items() if k in got)
    first, last = min(submitted.values()), max(submitted.values())
    window = last - first
    in_window = sum(first <= at <= last for at, _ in got.values())
    return {
        "offered_load_rps": rps,
        "submitted": len(submitted), "answered": len(got), "lost": len(submitted) - len(got),
        "errors": sum(status != "ok" for _, status in got.values()),
        "published_rps": round((len(submitted) - 1) / window, 1),
        "achieved_rps": round(in_window / window, 1),
        "overhead_ms": ({**{f"p{q}": round(_percentile(overhead, q), 1) for q in (50, 90, 99)},
                         "max": round(overhead[-1], 1)} if overhead else None),
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: a value that was measured, never above the max."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def meets_goal(run: dict) -> bool:
    return run["lost"] == 0 and run["overhead_ms"] is not None and run["overhead_ms"]["p99"] <= P99_GOAL_MS


async def measure(kafka: KafkaSettings, offered_rps: float, seconds: float, probes: Iterable[float],
                  timeout: float) -> dict:
    arrivals = Arrivals(kafka)
    follower = asyncio.create_task(arrivals.follow())
    try:
        warm = await offer(kafka, arrivals, WARM_UP_REQUESTS, 1.0, timeout)  # first embeddings, joins
        if warm["lost"]:
            raise RuntimeError(f"the stack answered {warm['answered']} of {warm['submitted']} warm-up "
                               f"requests within {timeout:.0f}s")
        tried = []
        for rps in sorted(r for r in probes if r < offered_rps):
            tried.append(await offer(kafka, arrivals, rps, seconds, timeout))
            if not meets_goal(tried[-1]):
                break
        await arrivals.wait(arrivals.submitted, timeout)  # what a missed probe left queued, first
        main = await offer(kafka, arrivals, offered_rps, seconds, timeout)
    finally:
        arrivals.running = False
        await follower
    met = [r["offered_load_rps"] for r in (*tried, main) if meets_goal(r)]
    return {**main, "seconds": seconds, "timeout_s": timeout, "p99_goal_ms": P99_GOAL_MS,
            "sustainable_rps": max(met) if met else None, "probes": tried}


def run(offered_rps: float = 200.0, seconds: float = 10.0, probes: Iterable[float] = PROBE_RPS,
        timeout: float = 30.0) -> dict:
    """Start the lean echo stack in a scratch dir, measure, stop it; returns the figures."""
    from switchyard.stack import Stack

    with tempfile.TemporaryDirectory(prefix="switchyard-bench-kafka-") as scratch:
        stack = Stack(bench_settings(Path(scratch)))
        started = time.perf_counter()
        try:
            stack.start(timeout=300)
            start_s = time.perf_counter() - started
            out = asyncio.run(measure(stack.settings.kafka, offered_rps, seconds, probes, timeout))
        finally:
            stack.stop()
    return {**out, "stack_start_s": round(start_s, 1)}
