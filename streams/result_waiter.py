"""Waiting for one request's outcome on Kafka: its result, or its dead letter.

One consumer per process tails `results` and `dlq` (no group: every API process sees every
message) and resolves the future registered for a request id. Registration comes before the
request is published, so an outcome can never arrive unseen.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import DeadLetter, Result
from schemas.validation import InvalidMessage, parse_message
from streams.config import KafkaSettings

log = logging.getLogger(__name__)

Outcome = Result | DeadLetter


class ResultWaiter:
    def __init__(self, kafka: KafkaSettings):
        self.kafka = kafka
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        await consumer.topics()
        topics = self.kafka.topics
        tps = [TopicPartition(t, p) for t in (topics.results, topics.dlq)
               for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        # The embedded broker's end offsets can lag the true end (docs/architecture.md), so seek
        # there and accept a few old records rather than miss a new one.
        await consumer.seek_to_end(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for future in self._pending.values():
            future.cancel()

    def expect(self, request_id: str) -> asyncio.Future[Outcome]:
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    async def _run(self) -> None:
        assert self._consumer is not None
        results = self.kafka.topics.results
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, messages in batches.items():
                for m in messages:
                    if not self._pending:
                        continue
                    outcome = self._parse(m.value, tp.topic == results)
                    if outcome is None:
                        continue
                    request_id = outcome.request_id if isinstance(outcome, Result) else outcome.key
                    future = self._pending.pop(request_id or "", None)
                    if future is not None and not future.done():
                        future.set_result(outcome)

    @staticmethod
    def _parse(raw: bytes, is_result: bool) -> Outcome | None:
        try:
            return parse_message(Result if is_result else DeadLetter, raw)
        except InvalidMessage:
            return None
