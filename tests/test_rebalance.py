"""A consumer-group rebalance in the middle of a batch, on the real embedded broker, for a stage
driven by `streams.runtime.run_stage` over a 4-partition topic.

Member A fetches a batch and, while it applies the batch's effect, a second member B joins the
group. A's batch holds A's event loop past the session timeout (as a long synchronous batch
would), so the broker gives every partition to B; A's commit then fails with CommitFailedError.
The runtime must skip that commit and go on (B, the new owner, replays the batch; the effect is
idempotent), so that every record ends up with its output and the group's offsets reach the end.
Each member runs in its own thread and event loop, as two processes would."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from infra.broker import create_topics, start_broker
from infra.topics import TopicSpec
from streams.config import KafkaSettings
from streams.kafka import make_consumer, make_producer, produce_all
from streams.records import Output
from streams.runtime import Stage, run_stage

N = 40
GROUP = "rebalance-stage"


@pytest.fixture(scope="module")
def kafka():
    proc, bootstrap = start_broker()
    asyncio.run(create_topics(bootstrap, "rb.", [TopicSpec("in", 4), TopicSpec("out", 4)]))
    yield KafkaSettings(bootstrap=bootstrap, topic_prefix="rb.")
    proc.kill()
    proc.wait()


class Member(threading.Thread):
    """One consumer of the group running the echo stage (input → one output on rb.out)."""

    def __init__(self, kafka: KafkaSettings, name: str, on_first_effect=None):
        super().__init__(name=f"member-{name}", daemon=True)
        self.kafka, self.tag, self.on_first_effect = kafka, name, on_first_effect
        self.first_batch: list[bytes] = []  # keys of the first batch this member processed
        self.commit_errors: list[BaseException] = []
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self.crash: BaseException | None = None
        self.ran_to_stop = False

    def run(self) -> None:
        try:
            asyncio.run(self._main())
            self.ran_to_stop = True
        except BaseException as exc:  # the stage crashed: reported by the test
            self.crash = exc

    async def _main(self) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        consumer = make_consumer(self.kafka, GROUP, "rb.in")
        real_commit = consumer.commit

        async def commit(offsets=None):  # the real commit, with its failures noted
            try:
                return await real_commit(offsets)
            except Exception as exc:
                self.commit_errors.append(exc)
                raise

        consumer.commit = commit
        await consumer.start()
        stop = asyncio.Event()

        def process(records):
            if not self.first_batch:
                self.first_batch = [r.key for r in records]
            return [Output("rb.out", r.key, r.value + b"|" + self.tag.encode(), origin=r) for r in records]

        async def effect(outputs):
            if self.on_first_effect is not None:
                hook, self.on_first_effect = self.on_first_effect, None
                hook()
            await produce_all(producer, outputs)

        async def watch():
            while not self.stopping.is_set():
                if consumer.assignment():
                    self.assigned.set()
                await asyncio.sleep(0.1)
            stop.set()

        watcher = asyncio.create_task(watch())
        try:
            await run_stage(Stage(f"echo-{self.tag}", process, effect, lambda o: None), consumer,
                            max_records=100, timeout_ms=200, stop=stop)
        finally:
            watcher.cancel()
            await producer.stop()


async def _read(kafka: KafkaSettings) -> tuple[dict[bytes, list[bytes]], dict[TopicPartition, int | None]]:
    """Every output on rb.out by key, and the group's committed offsets on rb.in."""
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None)
    await reader.start()
    try:
        tps = [TopicPartition("rb.out", p) for p in range(4)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        outputs: dict[bytes, list[bytes]] = {}
        quiet = 0
        while quiet < 2:  # until quiet (the embedded broker's end offsets are not reliable)
            batch = await reader.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for msgs in batch.values():
                for m in msgs:
                    outputs.setdefault(m.key, []).append(m.value)
    finally:
        await reader.stop()
    group = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=kafka.topics.group(GROUP),
                             enable_auto_commit=False)
    await group.start()
    try:
        committed = {TopicPartition("rb.in", p): await group.committed(TopicPartition("rb.in", p)) for p in range(4)}
    finally:
        await group.stop()
    return outputs, committed


def test_a_member_joining_mid_batch_loses_nothing_and_the_failed_commit_is_survived(kafka):
    async def produce():
        producer = make_producer(kafka)
        await producer.start()
        ends = {}
        try:
            for i in range(N):
                md = await producer.send_and_wait("rb.in", f"v{i}".encode(), key=f"k{i}".encode())
                ends[TopicPartition("rb.in", md.partition)] = md.offset + 1
        finally:
            await producer.stop()
        return ends

    ends = asyncio.run(produce())
    assert len(ends) > 1  # the batch spans partitions, so it can be split between members

    b = Member(kafka, "B")

    def b_joins_while_a_holds_its_batch():
        b.start()
        # A's loop is held (no heartbeats) until the broker has given B the partitions
        assert b.assigned.wait(90), "B never got partitions"

    a = Member(kafka, "A", on_first_effect=b_joins_while_a_holds_its_batch)
    a.start()
    outputs: dict[bytes, list[bytes]] = {}
    committed: dict[TopicPartition, int | None] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for every output and every offset
            outputs, committed = asyncio.run(_read(kafka))
            if len(outputs) == N and a.commit_errors and \
                    all((committed[tp] or 0) >= end for tp, end in ends.items()):
                break
            assert a.crash is None and b.crash is None, f"a member's stage crashed: {a.crash or b.crash!r}"
            threading.Event().wait(0.5)
    finally:  # one at a time, as a rolling restart would
        for member in (a, b):
            member.stopping.set()
            member.join(60)

    # the rebalance hit A between its effect and its commit, and A's stage survived it
    assert a.commit_errors and all(isinstance(e, (CommitFailedError, IllegalStateError)) for e in a.commit_errors)
    assert any(isinstance(e, CommitFailedError) for e in a.commit_errors)
    assert a.crash is None and b.crash is None and a.ran_to_stop and b.ran_to_stop
    # nothing lost: every record has its output, and the group committed up to the end
    assert sorted(outputs) == sorted(f"k{i}".encode() for i in range(N))
    assert all(committed[tp] == end for tp, end in ends.items()), committed
    # A's batch, whose commit failed, was replayed by the partitions' next owner: its outputs twice
    assert a.first_batch
    assert all(len(outputs[k]) >= 2 for k in a.first_batch)
