"""The fuzz of tests/test_fuzz.py through the real embedded broker: generated malformed messages,
with well-formed ones interleaved, are published to the topics the router, a tier worker and the
sink consume. Every malformed one is dead-lettered (found in ClickHouse by its topic, partition
and offset, with a reason), every well-formed one is answered or stored, and no stage crashed or
was restarted. (test_fuzz.py throws its 10,080 at the processors; here fewer, end to end.)"""
from __future__ import annotations

import asyncio
import json
import time

from hypothesis import HealthCheck, given, settings

from schemas.validation import MAX_MESSAGE_BYTES, MAX_QUERY_BYTES
from streams.kafka import producing
from switchyard.warehouse import Warehouse
from tests.test_fuzz import (QUERY_BREAKERS, QUERY_REQUIRED, RESULT_BREAKERS, RESULT_REQUIRED, WORK_BREAKERS,
                             WORK_REQUIRED, batches, good_query, good_result, good_work, interleave)

EXAMPLES = 2  # batches per topic (60 malformed each)
THROUGH_BROKER = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])


async def _publish(kafka, topic: str, items, headers) -> list[tuple[bool, bytes, int, int]]:
    """(well-formed?, value, partition, offset) per published message, in order."""
    out = []
    async with producing(kafka) as producer:
        for ok, value in items:
            meta = await producer.send_and_wait(topic, value, key=b"fuzz", headers=headers)
            out.append((ok, value, meta.partition, meta.offset))
    return out


def _rows(settings_, sql: str, params: dict) -> list[dict]:
    wh = Warehouse.open(settings_)
    try:
        return wh.rows(sql, params)
    finally:
        wh.close()


def _wait_count(settings_, sql: str, params: dict, want: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = _rows(settings_, sql, params)[0]["n"]
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(1)


LETTERS = ("SELECT count() AS n FROM dead_letters FINAL WHERE topic = {topic:String} AND stage = {stage:String} "
           "AND reason != '' AND has({keys:Array(String)}, concat(toString(partition), ':', toString(offset)))")


def _check_topic(stack, topic: str, stage: str, items, headers, stored_sql: str, good_key) -> int:
    s = stack.settings
    published = asyncio.run(_publish(s.kafka, topic, items, headers))
    bad = [f"{p}:{o}" for ok, _, p, o in published if not ok]
    good = [good_key(json.loads(v)) for ok, v, _, _ in published if ok]
    assert _wait_count(s, LETTERS, {"topic": topic, "stage": stage, "keys": bad}, len(bad)) == len(bad)
    assert _wait_count(s, stored_sql, {"ids": good}, len(good)) == len(good)
    return len(bad)


def test_malformed_messages_through_the_broker_are_dead_lettered_and_no_stage_restarts(stack):
    s = stack.settings
    topics = s.kafka.topics
    pids = {name: stage.proc.pid for name, stage in stack.stages.items()}
    thrown = []
    answered = ("SELECT count() AS n FROM results FINAL WHERE status = 'ok' AND has({ids:Array(String)}, KEY)")

    @THROUGH_BROKER
    @given(batches(good_query, QUERY_BREAKERS, QUERY_REQUIRED, MAX_QUERY_BYTES),
           batches(good_work, WORK_BREAKERS, WORK_REQUIRED, MAX_MESSAGE_BYTES),
           batches(good_result, RESULT_BREAKERS, RESULT_REQUIRED, MAX_MESSAGE_BYTES))
    def check(queries, work, results):
        thrown.append(_check_topic(stack, topics.queries, "router", interleave(*queries, good_query),
                                   [("switchyard-job-id", b"fuzz-stack")],
                                   answered.replace("KEY", "custom_id") + " AND job_id = 'fuzz-stack'",
                                   lambda m: m["custom_id"]))
        thrown.append(_check_topic(stack, topics.work("small"), "worker.small", interleave(*work, good_work),
                                   None, answered.replace("KEY", "request_id"), lambda m: m["request_id"]))
        thrown.append(_check_topic(stack, topics.results, "sink", interleave(*results, good_result), None,
                                   answered.replace("KEY", "request_id"), lambda m: m["request_id"]))

    check()
    assert sum(thrown) >= 3 * EXAMPLES * 60
    for name, stage in stack.stages.items():
        assert stage.proc.poll() is None and stage.proc.pid == pids[name] and stage.restarts == 0, name
