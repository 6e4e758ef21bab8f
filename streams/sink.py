"""The ClickHouse sink: requests, decisions, results, feedback and dead letters, in batches.

`to_rows` is a pure processor (a record becomes one row for one table); `ClickHouseWriter`
writes a batch; offsets are committed only after the write (snuba's pattern).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable

import orjson
from clickhouse_connect.driver.exceptions import OperationalError

from infra.auth import Keyring
from infra.clickhouse import apply_analytics, apply_schema, connect
from infra.topics import DECISIONS, DLQ, FEEDBACK, QUERIES, RESULTS, ROUTER_MODELS, Topics
from schemas import DeadLetter, Feedback, Result, RouterVersion, RoutingDecision
from schemas.validation import InvalidMessage, parse_message, parse_query
from streams.config import DlqLimitSettings, KafkaSettings
from streams.kafka import make_consumer
from streams.query_server import start_query_server
from streams.records import RawRecord, letter_for
from streams.runtime import Stage, run_stage

log = logging.getLogger(__name__)

STAGE = "sink"


@dataclass(frozen=True)
class Row:
    table: str
    values: dict[str, Any]
    origin: RawRecord | None = None  # the Kafka record the row came from
    dead_letter: bool = False  # the sink found its record invalid (not a stored dlq message)


def _dead_letter_row(record: RawRecord, reason: str, job_id: str | None = None) -> Row:
    return replace(_dead_letter_values(letter_for(STAGE, reason, record, job_id)), dead_letter=True)


def _dead_letter_values(d: DeadLetter) -> Row:
    return Row("dead_letters", dict(
        stage=d.stage, reason=d.reason, original=d.original, original_base64=d.original_base64,
        topic=d.topic,
        partition=d.partition, offset=d.offset, job_id=d.job_id or "", tenant=d.tenant or "", key=d.key or "",
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
        response=orjson.dumps(r.response).decode() if r.response else "", answer=r.answer_text(),
        error=r.error or "", prompt_tokens=r.usage.prompt_tokens,
        completion_tokens=r.usage.completion_tokens, cost_usd=r.cost_usd,
        model_latency_ms=r.model_latency_ms, end_to_end_ms=r.end_to_end_ms,
        router_version=r.router_version, submitted_at=r.submitted_at, finished_at=r.finished_at,
        warnings=r.warnings, fallback_from=r.fallback_from, cache_hit=r.cache_hit,
        cache_source_request_id=r.cache_source_request_id or "", cache_similarity=r.cache_similarity or 0.0,
        cache_match=r.cache_match or ""))


def _feedback_row(f: Feedback) -> Row:
    return Row("feedback", dict(
        request_id=f.request_id, job_id=f.job_id, source=f.source, score=f.score,
        metric=f.metric or "", comment=f.comment or "", created_at=f.created_at))


def _router_version_row(v: RouterVersion) -> Row:
    values = v.model_dump(exclude={"schema_version", "metrics"})
    values["metrics"] = json.dumps(v.metrics, default=str)
    return Row("router_versions", values)


_PARSERS = {
    DECISIONS: (RoutingDecision, _decision_row),
    RESULTS: (Result, _result_row),
    FEEDBACK: (Feedback, _feedback_row),
    DLQ: (DeadLetter, _dead_letter_values),
    ROUTER_MODELS: (RouterVersion, _router_version_row),
}


def to_rows(record: RawRecord, topics: Topics = Topics()) -> Row | None:
    topic = topics.base(record.topic)
    if topic == QUERIES:
        row = _request_row(record)
    else:
        cls, make_row = _PARSERS[topic]
        try:
            row = make_row(parse_message(cls, record.value))
        except InvalidMessage as exc:
            row = _dead_letter_row(record, exc.reason)
    return None if row is None else replace(row, origin=record)


KNOWN_REQUESTS = "SELECT DISTINCT request_id FROM requests WHERE request_id IN {ids:Array(String)}"


def check_feedback(rows: list[Row], known: set[str]) -> list[Row]:
    """Feedback must name a request Switchyard has seen (stored, or in this batch); any other is
    dead-lettered with the reason instead of becoming a training row for nothing."""
    known = known | {r.values["request_id"] for r in rows if r.table == "requests"}
    checked = []
    for row in rows:
        if row.table == "feedback" and row.values["request_id"] not in known and row.origin is not None:
            row = replace(_dead_letter_row(row.origin, f"feedback for unknown request id "
                                                       f"{row.values['request_id']!r}", row.values["job_id"]),
                          origin=row.origin)
        checked.append(row)
    return checked


def feedback_ids(rows: list[Row]) -> list[str]:
    return sorted({r.values["request_id"] for r in rows if r.table == "feedback"})


class ClickHouseWriter:
    def __init__(self, client):
        self.client = client

    def write(self, rows: list[Row]) -> list[Row]:
        """Insert rows per table. A batch the server refuses is retried row by row, and each row
        it still refuses becomes a dead-letter row instead (a poison row must not wedge the sink).
        Returns the rows that were dead-lettered. ClickHouse unreachable (OperationalError: the
        network, not a refusal) is raised at once, so the batch is replayed rather than dead-lettered."""
        by_table: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_table[row.table].append(row)
        refused: list[Row] = []
        for table, table_rows in by_table.items():
            try:
                self._insert(table, table_rows)
            except OperationalError:
                raise
            except Exception:
                if table == "dead_letters":
                    raise  # nowhere left to put them: stop (and replay) rather than lose them
                for row in table_rows:
                    try:
                        self._insert(table, [row])
                    except OperationalError:
                        raise
                    except Exception as exc:
                        if row.origin is None:
                            raise
                        log.warning("ClickHouse refused a %s row: %s", table, exc)
                        refused.append(_dead_letter_row(row.origin, f"ClickHouse refused the {table} "
                                                        f"row: {exc}"[:2000], row.values.get("job_id")))
        if refused:
            self._insert("dead_letters", refused)
        return refused

    def known_requests(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        result = self.client.query(KNOWN_REQUESTS, parameters={"ids": ids})
        return {r[0] for r in result.result_rows}

    def _insert(self, table: str, rows: list[Row]) -> None:
        columns = list(rows[0].values)
        self.client.insert(table, [[r.values[c] for c in columns] for r in rows], column_names=columns)


SINK_TOPICS = (QUERIES, DECISIONS, RESULTS, FEEDBACK, DLQ, ROUTER_MODELS)


async def run_sink(kafka: KafkaSettings, clickhouse_dsn: str, *, batch_size: int, flush_seconds: float,
                   query_port: int = 0, keyring: Keyring | None = None,
                   analytics_refresh_seconds: int = 60,
                   tier_prices: dict[str, tuple[str, float, float]] | None = None,
                   training_mixes: dict[str, list[float]] | None = None,
                   dlq_limit: DlqLimitSettings = DlqLimitSettings(),
                   stop: asyncio.Event | None = None, on_ready: Callable[[], None] | None = None) -> None:
    """Store every topic's messages in ClickHouse until SIGTERM/SIGINT (or `stop`). `tier_prices`
    and `training_mixes` ({router version: share per cluster}, for the routers the stream may run
    that are not on `router.models`) go to the analytics tables at start. With a
    `query_port` and a `keyring`, also serve authenticated reads on loopback (one process owns a
    chDB directory)."""
    client = connect(clickhouse_dsn)
    apply_schema(client)
    apply_analytics(client, analytics_refresh_seconds, tier_prices or {}, training_mixes or {})
    writer = ClickHouseWriter(client)
    lock = asyncio.Lock()
    runner = None
    if query_port:
        if keyring is None:
            raise ValueError("the read endpoint needs a keyring: no endpoint without authentication")
        runner = await start_query_server(client, query_port, lock, keyring)
    topics = kafka.topics

    async def write(rows: list[Row]) -> None:
        if rows:
            async with lock:
                await asyncio.to_thread(writer.write, rows)

    async def process(records: list[RawRecord]) -> list[Row]:
        rows = [row for r in records if (row := to_rows(r, topics)) is not None]
        ids = feedback_ids(rows)
        if ids:
            async with lock:
                known = await asyncio.to_thread(writer.known_requests, ids)
            rows = check_feedback(rows, known)
        return rows

    stage = Stage(STAGE, process, write, lambda row: row.values["reason"] if row.dead_letter else None)
    consumer = make_consumer(kafka, "switchyard-sink", *map(topics.name, SINK_TOPICS))
    await consumer.start()
    try:
        await run_stage(stage, consumer, max_records=batch_size, timeout_ms=int(flush_seconds * 1000),
                        dlq_limit=dlq_limit, stop=stop, on_ready=on_ready)
    finally:
        if runner is not None:
            await runner.cleanup()
        client.close()
