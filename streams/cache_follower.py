"""How the semantic cache learns answers: the router process follows `results`.

Every partition, from the beginning, with no consumer group: each router instance sees every
answer (an instance only learns the ones to requests it routed itself, which it remembers as
pending; the others are skipped by their Kafka key, the request id, without being parsed).
From the beginning rather than the end because the embedded broker's end offsets are not
reliable (docs/architecture.md); reading old answers again costs a key lookup each.
"""
from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Result
from schemas.validation import InvalidMessage, parse_message
from streams.cache import SemanticCache
from streams.config import KafkaSettings

log = logging.getLogger(__name__)


class ResultFollower:
    def __init__(self, kafka: KafkaSettings, cache: SemanticCache):
        self.kafka = kafka
        self.cache = cache
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest", group_id=None)
        await self.consumer.start()
        topic = self.kafka.topics.results
        await self.consumer.topics()
        parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    def take(self, key: bytes | None, value: bytes | None) -> bool:
        """One results message: learned when it answers a pending miss."""
        if not value or not self.cache.wants(key):
            return False
        try:
            result = parse_message(Result, value)
        except InvalidMessage as exc:
            log.warning("ignoring a bad results message: %s", exc.reason)
            return False
        return self.cache.learn(result)

    async def poll_once(self, timeout_ms: int = 500) -> int:
        assert self.consumer is not None, "start() first"
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        return sum(self.take(m.key, m.value) for msgs in batches.values() for m in msgs)

    async def follow(self) -> None:
        await self.start()
        try:
            while True:
                await self.poll_once()
        finally:
            await self.consumer.stop()
