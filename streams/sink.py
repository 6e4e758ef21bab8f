"""The ClickHouse sink: requests, decisions, results, feedback and dead letters, in batches.

`to_rows` is a pure processor (a record becomes one row for one table); `ClickHouseWriter`
writes a batch; offsets are committed only after the write (snuba's pattern).
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from infra.clickhouse import apply_schema, connect
from infra.topics import DECISIONS, DLQ, FEEDBACK, QUERIES, RESULTS
from schemas import DeadLetter, Feedback, Result, RoutingDecision
from schemas.validation import InvalidMessage, parse_message, parse_query
from streams.kafka import consume_in_batches, make_consumer
from streams.query_server import start_query_server
from streams.records import RawRecord
from switchyard.settings import Settings

log = logging.getLogger(__name__)

STAGE = "sink"


@dataclass(frozen=True)
class Row:
    table: str
    values: dict[str, Any]


def _dead_letter_row(record: RawRecord, reason: str, job_id: str | None = None) -> Row:
    letter = DeadLetter(stage=STAGE, reason=reason,
                        original=record.value.decode("utf-8", errors="replace"),
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        job_id=job_id)
    return _dead_letter_values(letter)


def _dead_letter_values(d: DeadLetter) -> Row:
    return Row("dead_letters", dict(
        stage=d.stage, reason=d.reason, original=d.original, topic=d.topic,
        partition=d.partition, offset=d.offset, job_id=d.job_id or "", key=d.key or "",
        created_at=d.created_at))


def _request_row(record: RawRecord) -> Row | None:
    try:
        q = parse_query(record.value, record.headers)
    except InvalidMessage:
        return None  # the router stage dead-letters it; one dead letter per bad request
    return Row("requests", dict(
        request_id=q.request_id, job_id=q.job_id, tenant=q.tenant, custom_id=q.custom_id,
        body=q.body.model_dump_json(), prompt_chars=len(q.body.prompt_text()),
        policy=q.routing.model_dump_json(), submitted_at=q.submitted_at))


def _decision_row(d: RoutingDecision) -> Row:
    values = d.model_dump(exclude={"schema_version"})
    values["policy"] = d.policy.model_dump_json()
    return Row("decisions", values)


def _result_row(r: Result) -> Row:
    return Row("results", dict(
        request_id=r.request_id, job_id=r.job_id, tenant=r.tenant, custom_id=r.custom_id,
        tier=r.tier, model=r.model, status=r.status,
        response=json.dumps(r.response) if r.response else "", answer=r.answer_text(),
        error=r.error or "", prompt_tokens=r.usage.prompt_tokens,
        completion_tokens=r.usage.completion_tokens, cost_usd=r.cost_usd,
        model_latency_ms=r.model_latency_ms, end_to_end_ms=r.end_to_end_ms,
        router_version=r.router_version, submitted_at=r.submitted_at, finished_at=r.finished_at))


def _feedback_row(f: Feedback) -> Row:
    return Row("feedback", dict(
        request_id=f.request_id, job_id=f.job_id, source=f.source, score=f.score,
        metric=f.metric or "", comment=f.comment or "", created_at=f.created_at))


_PARSERS = {
    DECISIONS: (RoutingDecision, _decision_row),
    RESULTS: (Result, _result_row),
    FEEDBACK: (Feedback, _feedback_row),
    DLQ: (DeadLetter, _dead_letter_values),
}


def to_rows(record: RawRecord, prefix: str = "") -> Row | None:
    topic = record.topic.removeprefix(prefix)
    if topic == QUERIES:
        return _request_row(record)
    cls, make_row = _PARSERS[topic]
    try:
        return make_row(parse_message(cls, record.value))
    except InvalidMessage as exc:
        return _dead_letter_row(record, exc.reason)


class ClickHouseWriter:
    def __init__(self, client):
        self.client = client

    def write(self, rows: list[Row]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_table[row.table].append(row.values)
        for table, values in by_table.items():
            columns = list(values[0])
            self.client.insert(table, [[v[c] for c in columns] for v in values],
                               column_names=columns)


SINK_TOPICS = (QUERIES, DECISIONS, RESULTS, FEEDBACK, DLQ)


async def run_sink(settings: Settings, stop: asyncio.Event | None = None,
                   on_ready: Callable[[], None] | None = None) -> None:
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    client = connect(settings.clickhouse_dsn)
    apply_schema(client)
    writer = ClickHouseWriter(client)
    lock = asyncio.Lock()
    runner = None
    if settings.query_port:
        runner = await start_query_server(client, settings.query_port, lock)
    consumer = make_consumer(settings.kafka, "switchyard-sink", *SINK_TOPICS)
    await consumer.start()
    if on_ready:
        on_ready()
    prefix = settings.kafka.topic_prefix

    async def handle(records: list[RawRecord]) -> None:
        rows = [row for r in records if (row := to_rows(r, prefix)) is not None]
        if rows:
            async with lock:
                await asyncio.to_thread(writer.write, rows)

    try:
        await consume_in_batches(consumer, handle, max_records=settings.clickhouse.sink_batch_size,
                                 timeout_ms=int(settings.clickhouse.sink_flush_seconds * 1000),
                                 stop=stop)
    finally:
        await consumer.stop()
        if runner is not None:
            await runner.cleanup()
        client.close()
