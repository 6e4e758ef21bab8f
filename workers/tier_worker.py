"""The tier worker: consumes work.<tier>, asks the tier's engine, produces results.

It runs as its own process beside Ray Serve (see README, "Where the consumer lives").
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from infra.topics import DLQ, RESULTS, work_topic
from schemas import Result, Usage, WorkItem, encode
from schemas.common import Tier, utcnow
from schemas.validation import InvalidMessage, parse_message
from streams.kafka import consume_in_batches, make_consumer, make_producer, produce_all
from streams.records import Output, RawRecord, dead_letter
from switchyard.settings import Settings, TierModel
from workers.engine import Engine, EngineError

log = logging.getLogger(__name__)


def estimate_cost(model: TierModel, usage: Usage) -> float:
    return (usage.prompt_tokens * model.price_per_mtok_in
            + usage.completion_tokens * model.price_per_mtok_out) / 1e6


class TierProcessor:
    """Turns work records into result (or dead-letter) outputs. Kafka-free, so tests call it."""

    def __init__(self, tier: Tier, engine: Engine, settings: Settings):
        self.tier = tier
        self.engine = engine
        self.settings = settings
        self.model = settings.workers.models["small" if settings.workers.all_tiers_small else tier]
        self.prefix = settings.kafka.topic_prefix
        # Twice the engine's slots: one request decoding per slot, one queued behind it.
        self.max_in_flight = max(1, self.model.parallel_slots * 2)
        self.slots = asyncio.Semaphore(self.max_in_flight)

    async def process(self, records: list[RawRecord]) -> list[Output]:
        return list(await asyncio.gather(*(self._one(r) for r in records)))

    async def _one(self, record: RawRecord) -> Output:
        try:
            item = parse_message(WorkItem, record.value)
        except InvalidMessage as exc:
            return dead_letter(f"worker.{self.tier}", exc.reason, record, f"{self.prefix}{DLQ}")
        async with self.slots:
            result = await self._answer(item)
        return Output(f"{self.prefix}{RESULTS}", item.request_id.encode(), encode(result))

    async def _answer(self, item: WorkItem) -> Result:
        body = item.body.model_dump(exclude_none=True)
        ref = dict(request_id=item.request_id, job_id=item.job_id, tenant=item.tenant,
                   custom_id=item.custom_id, tier=self.tier, model=self.engine.name,
                   router_version=item.router_version, submitted_at=item.submitted_at)
        started = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, EngineError) and e.retryable),
                stop=stop_after_attempt(3), wait=wait_exponential(min=0.5, max=5), reraise=True,
            ):
                with attempt:
                    response = await self.engine.chat(body)
        except Exception as exc:  # the request was valid; the model failed: an error result
            log.warning("engine %s failed on %s: %s", self.engine.name, item.request_id, exc)
            return Result(**ref, status="error", error=f"{type(exc).__name__}: {exc}",
                          model_latency_ms=(time.perf_counter() - started) * 1000)
        latency_ms = (time.perf_counter() - started) * 1000
        usage = Usage.model_validate(response.get("usage") or {})
        finished = utcnow()
        return Result(
            **ref, status="ok", response=response, usage=usage,
            cost_usd=estimate_cost(self.model, usage), model_latency_ms=latency_ms,
            end_to_end_ms=(finished - item.submitted_at).total_seconds() * 1000,
            finished_at=finished,
        )


async def run_tier_worker(tier: Tier, settings: Settings, engine: Engine | None = None,
                          stop: asyncio.Event | None = None,
                          on_ready: Callable[[], None] | None = None) -> None:
    if engine is None:
        from workers.engine import build_engine

        engine = await asyncio.to_thread(build_engine, tier, settings)
    stop = stop or _stop_on_signals()
    processor = TierProcessor(tier, engine, settings)
    consumer = make_consumer(settings.kafka, f"switchyard-worker-{tier}", work_topic(tier))
    producer = make_producer(settings.kafka)
    await producer.start()
    await consumer.start()
    log.info("tier worker %s serving %s", tier, engine.name)
    if on_ready:
        on_ready()

    async def handle(records: list[RawRecord]) -> None:
        await produce_all(producer, await processor.process(records))

    try:
        await consume_in_batches(consumer, handle, max_records=processor.max_in_flight,
                                 timeout_ms=500, stop=stop)
    finally:
        await consumer.stop()
        await producer.stop()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
