"""The tier worker: consumes work.<tier>, asks the tier's engine, produces results.

It runs as its own process beside Ray Serve (see README, "Where the consumer lives").

When the tier's model fails (a server-side error after the retries, or the tier's circuit
breaker is open) the worker does not answer with an error: it forwards the work item to
work.<next> of its fallback chain, recording itself in the item's `fallback_from`, and that
tier's own worker answers it with its own model (docs/architecture.md, "Model failures").
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
from streams.metrics import MODEL_TOKENS
from streams.kafka import DeadLetterTo, make_consumer, make_producer, produce_all
from streams.records import Output, RawRecord, dead_letter
from streams.runtime import Stage, run_stage
from workers.breaker import BreakerOpen, TierBreaker
from workers.config import BreakerSettings
from workers.engine import Engine, EngineError, body_warnings
from workers.tiers import ServedTier

log = logging.getLogger(__name__)


class TierProcessor:
    """Turns work records into result (or dead-letter) outputs. Kafka-free, so tests call it."""

    def __init__(self, served: ServedTier, engine: Engine, topics: Topics = Topics(),
                 breaker: TierBreaker | None = None):
        self.served = served
        self.tier = served.tier
        self.engine = engine
        self.topics = topics
        self.breaker = breaker or TierBreaker(served.tier, BreakerSettings())
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
        if isinstance(result, WorkItem):  # forwarded: the next tier of the chain answers it
            return Output(self.topics.work(result.tier), item.request_id.encode(), encode(result),
                          origin=record, job_id=item.job_id)
        return Output(self.topics.results, item.request_id.encode(), encode(result),
                      origin=record, job_id=item.job_id)

    async def _answer(self, item: WorkItem) -> Result | WorkItem:
        body = item.body.model_dump(exclude_none=True)
        ref = dict(request_id=item.request_id, job_id=item.job_id, tenant=item.tenant,
                   custom_id=item.custom_id, tier=self.tier, model=self.engine.name,
                   router_version=item.router_version, submitted_at=item.submitted_at,
                   warnings=body_warnings(body, self.served.max_tokens_cap, self.engine.name),
                   fallback_from=list(item.fallback_from))
        if item.fallback_from:
            ref["warnings"] = [*ref["warnings"], f"answered by the {self.tier} tier: "
                                                 f"{' then '.join(item.fallback_from)} failed it"]
        started = time.perf_counter()
        try:
            response = await self._call_engine(body)
        except Exception as exc:  # the request was valid; the model failed: forward, or an error result
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, BreakerOpen):
                error = f"the {self.tier} tier's circuit breaker is open: its model keeps failing"
            if self._models_fault(exc):
                forward = self._forward(item, error)
                if forward is not None:
                    return forward
                error = self._exhausted(item, error)
            log.warning("engine %s failed on %s: %s", self.engine.name, item.request_id, error)
            return Result(**ref, status="error", error=error,
                          model_latency_ms=(time.perf_counter() - started) * 1000)
        latency_ms = (time.perf_counter() - started) * 1000
        usage = Usage.model_validate(response.get("usage") or {})
        MODEL_TOKENS.labels(self.tier, "prompt").inc(usage.prompt_tokens)
        MODEL_TOKENS.labels(self.tier, "completion").inc(usage.completion_tokens)
        finished = utcnow()
        return Result(
            **ref, status="ok", response=response, usage=usage,
            cost_usd=self.served.cost_usd(usage.prompt_tokens, usage.completion_tokens),
            model_latency_ms=latency_ms,
            end_to_end_ms=(finished - item.submitted_at).total_seconds() * 1000,
            finished_at=finished,
        )

    async def _call_engine(self, body: dict) -> dict:
        """The engine's answer, retried while the error is the server's and the breaker is closed;
        every try goes through the breaker, so a failing model opens it after a few requests."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(self._retry_worthy),
            stop=stop_after_attempt(self.breaker.settings.engine_attempts),
            wait=wait_exponential(min=0.5, max=5), reraise=True,
        ):
            with attempt:
                with self.breaker.calling():
                    response = await self.engine.chat(body)
        return response

    def _retry_worthy(self, exc: BaseException) -> bool:
        return isinstance(exc, EngineError) and exc.retryable and not self.breaker.is_open

    @staticmethod
    def _models_fault(exc: BaseException) -> bool:
        """A fault of the model (another tier may answer), not of the request (none would)."""
        return not isinstance(exc, EngineError) or exc.retryable  # BreakerOpen included

    def _next_tier(self, item: WorkItem) -> str | None:
        tried = {*item.fallback_from, self.tier}
        return next((t for t in self.breaker.settings.chain(self.tier) if t not in tried), None)

    def _forward(self, item: WorkItem, error: str) -> WorkItem | None:
        if not self.breaker.settings.enabled:
            return None
        nxt = self._next_tier(item)
        if nxt is None:
            return None
        log.warning("tier %s cannot answer %s (%s); forwarding it to %s", self.tier, item.request_id,
                    error, nxt)
        return item.model_copy(update={"tier": nxt, "fallback_from": [*item.fallback_from, self.tier]})

    def _exhausted(self, item: WorkItem, error: str) -> str:
        tried = [*item.fallback_from, self.tier]
        if not self.breaker.settings.enabled:
            return error
        return (f"the {self.tier} tier's model failed ({error}) and the fallback chain is exhausted "
                f"(tried {', '.join(tried)})")


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
        await produce_all(producer, outputs, dlq=DeadLetterTo(processor.stage, kafka.topics.dlq))

    stage = Stage(processor.stage, processor.process, produce, lambda out: out.reason if out.dead_letter else None)
    try:
        await run_stage(stage, consumer, max_records=processor.max_in_flight, timeout_ms=500,
                        dlq_limit=dlq_limit, stop=stop, on_ready=on_ready)
    finally:
        await producer.stop()
