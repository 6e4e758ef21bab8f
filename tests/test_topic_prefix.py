"""A non-empty `kafka.topic_prefix` end to end: a lean stack of its own (the real broker, router
stream, tier workers and chDB sink) answers a small job with every topic and consumer group
under the prefix, and nothing on the unprefixed names."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.topics import all_topics
from switchyard.warehouse import Warehouse

from tests.conftest import lean_settings, request_line, run_job

PREFIX = "acme-prod."
GROUPS = ("switchyard-router", "switchyard-sink", "switchyard-worker-small", "switchyard-worker-medium",
          "switchyard-worker-large")


@pytest.fixture(scope="module")
def prefixed_stack(tmp_path_factory):
    from switchyard.stack import Stack

    settings = lean_settings(tmp_path_factory.mktemp("prefixed"))
    settings.kafka.topic_prefix = PREFIX
    settings.retrain.enabled = False
    settings.api.enabled = False
    stack = Stack(settings)
    try:
        stack.start(timeout=300)
        yield stack
    finally:
        stack.stop()


async def _broker_view(bootstrap: str) -> tuple[set[str], dict[str, dict[TopicPartition, int | None]]]:
    """The broker's topics, and each stage group's committed offsets (prefixed and not) on the
    topics it consumes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        topics = await consumer.topics()
    finally:
        await consumer.stop()
    consumed = {"switchyard-router": "queries", "switchyard-sink": "results",
                **{f"switchyard-worker-{t}": f"work.{t}" for t in ("small", "medium", "large")}}
    committed = {}
    for group_prefix in (PREFIX, ""):
        for group in GROUPS:
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_prefix + group, enable_auto_commit=False)
            await c.start()
            try:
                tps = [TopicPartition(PREFIX + consumed[group], p) for p in range(4)]
                committed[group_prefix + group] = {tp: await c.committed(tp) for tp in tps}
            finally:
                await c.stop()
    return topics, committed


def test_a_job_is_answered_under_a_topic_prefix(prefixed_stack):
    settings = prefixed_stack.settings
    assert settings.kafka.topics.queries == PREFIX + "queries"
    lines = [request_line(f"p-{i}", prompt) for i, prompt in
             enumerate(["Name a colour.", "Say hi.", "What is 2 + 2?", "Name a fruit."])]
    sub, outcome = run_job(settings, lines + [b"{not json"], "prefix-job", timeout=120)
    assert sorted(outcome.results) == ["p-0", "p-1", "p-2", "p-3"]
    assert all(r.status == "ok" for r in outcome.results.values())
    assert len(outcome.dead_letters) == 1  # read from the prefixed dlq

    # the router (faust) commits on an interval, after the results may already be out: wait for it
    deadline = time.monotonic() + 60
    while True:
        topics, committed = asyncio.run(_broker_view(settings.kafka.bootstrap))
        stored = all(any(committed[PREFIX + g].values()) for g in ("switchyard-router", "switchyard-sink"))
        if stored or time.monotonic() > deadline:
            break
        time.sleep(1)
    expected = {PREFIX + spec.name for spec in all_topics()}
    assert expected <= topics
    assert not {spec.name for spec in all_topics()} & topics  # no unprefixed topic was ever used
    # the stages consumed under prefixed group ids, and never under the plain ones
    for group in ("switchyard-router", "switchyard-sink"):
        assert any(committed[PREFIX + group].values()), (group, committed[PREFIX + group])
    assert any(any(committed[PREFIX + f"switchyard-worker-{t}"].values()) for t in ("small", "medium", "large"))
    assert not any(any(offsets.values()) for group, offsets in committed.items() if not group.startswith(PREFIX))

    # and the sink stored it all from the prefixed topics
    wh = Warehouse.open(settings)
    try:
        deadline_rows = _wait(lambda: wh.ask("job_status", job="prefix-job")[0],
                              lambda c: c["answered"] == 4 and c["dead_letters"] == 1)
    finally:
        wh.close()
    assert deadline_rows["requests"] == 4 and deadline_rows["answered"] == 4 and deadline_rows["dead_letters"] == 1


def _wait(read, done, timeout: float = 60):
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)
