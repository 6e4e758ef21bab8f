"""The tier worker: consumes work.<tier>, asks the tier's engine, produces results.

It runs as its own process beside Ray Serve (see README, "Where the consumer lives").
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from infra.topics import Topics
from schemas import Result, Usage, WorkItem, encode
from schemas.common import utcnow
from schemas.validation import InvalidMessage, parse_message
from streams.config import DlqLimitSettings, KafkaSettings
from streams.kafka import make_consumer, make_producer, produce_all
from streams.records import Output, RawRecord, dead_letter
from streams.runtime import Stage, run_stage
from workers.engine import Engine, EngineError
from workers.tiers import ServedTier

log = logging.getLogger(__name__)


class TierProcessor:
    """Turns work records into result (or dead-letter) outputs. Kafka-free, so tests call it."""

    def __init__(self, served: ServedTier, engine: Engine, topics: Topics = Topics()):
        self.served = served
        self.tier = served.tier
        self.engine = engine
        self.topics = topics
        self.max_in_flight = served.max_in_flight
        self.slots = asyncio.Semaphore(self.max_in_flight)

    @property
    def stage(self) -> str:
        return f"worker.{self.tier}"

    async def process(self, records: list[RawRecord]) -> list[Output]:
        return list(await asyncio.gather(*(self._one(r) for r in records)))

    async def _one(self, record: RawRecord) -> Output:
        try:
            item = parse_message(WorkItem, record.value)
        except InvalidMessage as exc:
            return dead_letter(self.stage, exc.reason, record, self.topics.dlq)
        async with self.slots:
            result = await self._answer(item)
        return Output(self.topics.results, item.request_id.encode(), encode(result))
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
            cost_usd=self.served.cost_usd(usage.prompt_tokens, usage.completion_tokens),
            model_latency_ms=latency_ms,
            end_to_end_ms=(finished - item.submitted_at).total_seconds() * 1000,
            finished_at=finished,
        )


async def run_tier_worker(processor: TierProcessor, kafka: KafkaSettings, *,
                          dlq_limit: DlqLimitSettings = DlqLimitSettings(), stop: asyncio.Event | None = None,
                          on_ready: Callable[[], None] | None = None) -> None:
    """Answer work.<tier> until SIGTERM/SIGINT (or `stop`); results are produced and acked
    before the batch's offsets are committed."""
    tier = processor.tier
    consumer = make_consumer(kafka, f"switchyard-worker-{tier}", kafka.topics.work(tier))
    producer = make_producer(kafka)
    await producer.start()
    await consumer.start()
    log.info("tier worker %s serving %s", tier, processor.engine.name)

    async def produce(outputs: list[Output]) -> None:
        await produce_all(producer, outputs)

    stage = Stage(processor.stage, processor.process, produce, lambda out: out.dead_letter)
    try:
        await run_stage(stage, consumer, max_records=processor.max_in_flight, timeout_ms=500,
                        dlq_limit=dlq_limit, stop=stop, on_ready=on_ready)
    finally:
        await producer.stop()
