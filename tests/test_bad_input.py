"""Bad input is contained: bounded parsing, too-large outputs dead-lettered by the stage that
finds them (real embedded broker), the submit-side checks, and warnings on results."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.broker import create_topics, start_broker
from infra.clickhouse import apply_schema, connect
from infra.topics import Topics
from schemas import DeadLetter, Result, WorkItem, encode
from schemas.validation import InvalidMessage, parse_message, parse_query
from streams.kafka import DeadLetterTo, produce_all
from streams.records import MAX_LETTER_ORIGINAL_BYTES, Output, RawRecord, dead_letter
from streams.sink import ClickHouseWriter, to_rows
from switchyard.console import warning_summary
from switchyard.jobs import JobFile, prepare
from workers.engine import body_warnings
from workers.tier_worker import TierProcessor
from workers.tiers import served_tier

from tests.conftest import lean_settings, request_line
from tests.helpers import decode

JOB = {"switchyard-job-id": b"job-b"}


# --- bounded parsing ---------------------------------------------------------------------------


def test_deep_nesting_is_refused_with_a_reason_not_a_recursion_error():
    for raw in (b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                request_line("q", "hi")[:-1] + b', "x": ' + b"[" * 65 + b"]" * 65 + b"}"):
        with pytest.raises(InvalidMessage) as info:
            parse_query(raw, JOB)
        assert info.value.reason == "JSON nested deeper than 64 levels"
        assert info.value.job_id == "job-b"
    parse_query(request_line("q", "hi")[:-1] + b', "x": ' + b"[" * 60 + b"]" * 60 + b"}", JOB)  # shallow enough

def test_the_bracket_count_shortcut_never_lets_a_deep_message_through():
    """Parsing skips the depth walk when a message has no more brackets than the limit; brackets
    inside strings only raise the count, so a shallow message full of them is walked and passes,
    and the limit is exact at its edge (the outer object is level 1)."""
    from schemas.validation import parse_json_object

    edge = b'{"x": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 levels
    assert parse_json_object(edge, max_depth=64)
    with pytest.raises(InvalidMessage):
        parse_json_object(b'{"x": ' + b"[" * 64 + b"]" * 64 + b"}", max_depth=64)
    assert parse_json_object(b'{"x": "' + b"{[" * 500 + b'"}', max_depth=64)
    assert parse_json_object('{"x": [[1]]}', max_depth=3)  # str input too
    with pytest.raises(InvalidMessage):
        parse_json_object('{"x": [[1]]}', max_depth=2)


def test_a_message_over_the_limit_is_refused_before_it_is_parsed():
    raw = json.dumps({"custom_id": "q", "body": {"messages": [{"role": "user", "content": "x" * (10 << 20)}]}})
    with pytest.raises(InvalidMessage) as info:
        parse_query(raw.encode(), JOB)
    assert info.value.reason == f"message is {len(raw):,} bytes; the limit is 1,048,576"
    with pytest.raises(InvalidMessage, match="the limit is 100"):
        parse_query(request_line("q", "hi" * 100), JOB, max_bytes=100)


@pytest.mark.parametrize("version", [0, 2, "1", True, None, 1.5])
def test_another_schema_version_is_refused(version):
    line = json.loads(request_line("q", "hi"))
    with pytest.raises(InvalidMessage, match="schema_version .* is not supported"):
        parse_query(json.dumps({**line, "schema_version": version}).encode(), JOB)


def test_json_that_python_accepts_but_is_not_json_is_refused():
    for raw in (b'{"custom_id": NaN}', b'{"custom_id": "\\ud800"}', b"\xef\xbb\xbf{}"):
        with pytest.raises(InvalidMessage, match="not valid JSON"):
            parse_query(raw, JOB)


def test_the_tenant_header_overrides_the_lines_tenant():
    raw = request_line("q", "hi", tenant="someone-else")
    assert parse_query(raw, {**JOB, "switchyard-tenant": b"acme"}).tenant == "acme"
    assert parse_query(raw, JOB).tenant == "someone-else"  # no trusted header: the line's own


def test_a_dead_letter_of_a_huge_message_is_small_and_says_it_was_cut():
    raw = b"x" * (10 << 20)
    out = dead_letter("router", "message is too big", RawRecord(raw, "queries", 0, 7, headers=JOB), "dlq")
    letter = decode(DeadLetter, out.value)
    assert len(out.value) < 4 * MAX_LETTER_ORIGINAL_BYTES
    assert letter.reason == f"message is too big (the letter keeps the first 65,536 of its {len(raw):,} bytes)"
    assert letter.job_id == "job-b" and len(letter.original) == MAX_LETTER_ORIGINAL_BYTES


def test_a_dead_letter_the_dead_letters_table_could_not_hold_is_itself_refused():
    bad = {"stage": "x", "reason": "r", "original": "o", "topic": "t", "partition": 2**40, "offset": 1}
    with pytest.raises(InvalidMessage, match="partition"):
        parse_message(DeadLetter, json.dumps(bad).encode())


# --- an output too large to produce (real embedded broker) ---------------------------------------


@pytest.fixture(scope="module")
def broker():
    proc, bootstrap = start_broker()
    asyncio.run(create_topics(bootstrap, "bi."))
    yield bootstrap
    proc.kill()
    proc.wait()


async def _read_all(bootstrap: str, topics: list[str]) -> dict[str, list]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[str, list] = {t: [] for t in topics}
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for tp, msgs in batch.items():
                found[tp.topic] += msgs
        return found
    finally:
        await consumer.stop()


def test_an_output_too_large_for_the_producer_is_dead_lettered_and_its_batch_mates_are_produced(broker):
    topics = Topics("bi.")
    inputs = [RawRecord(f"query {i}".encode(), topics.queries, 0, i, headers=JOB) for i in range(3)]

    def outputs_for(record: RawRecord, size: int) -> list[Output]:
        key = f"job-b:{record.offset}".encode()
        mine = dict(origin=record, job_id="job-b")
        return [Output(topics.work("small"), key, b"w" * size, **mine),
                Output(topics.decisions, key, b"d", **mine)]

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", max_request_size=1 << 20)
        await producer.start()
        try:
            outputs = (outputs_for(inputs[0], 10) + outputs_for(inputs[1], 2 << 20)
                       + outputs_for(inputs[2], 10))
            return await produce_all(producer, outputs, dlq=DeadLetterTo("router", topics.dlq))
        finally:
            await producer.stop()

    assert asyncio.run(run()) == 5  # two inputs' work and decision, one letter
    found = asyncio.run(_read_all(broker, [topics.work("small"), topics.decisions, topics.dlq]))
    assert sorted(m.key for m in found[topics.work("small")]) == [b"job-b:0", b"job-b:2"]
    assert sorted(m.key for m in found[topics.decisions]) == [b"job-b:0", b"job-b:2"]  # none for the refused one
    [letter] = [decode(DeadLetter, m.value) for m in found[topics.dlq]]
    assert letter.stage == "router" and letter.job_id == "job-b" and letter.offset == 1
    assert letter.original == "query 1"  # the input the refused output answered
    assert "could not produce its bi.work.small message of 2,097,152 bytes" in letter.reason
    assert "MessageSizeTooLargeError" in letter.reason


def test_without_a_dead_letter_topic_a_refusal_is_raised(broker):
    from aiokafka.errors import MessageSizeTooLargeError

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker, max_request_size=1 << 20)
        await producer.start()
        try:
            await produce_all(producer, [Output("bi.results", None, b"r" * (2 << 20))])
        finally:
            await producer.stop()

    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(run())


# --- at submit ---------------------------------------------------------------------------------


def _job(lines: list[bytes]) -> JobFile:
    return JobFile(Path("bad.jsonl"), lines)


def test_submit_reports_deep_huge_and_repeated_lines_by_number_and_still_dead_letters_them():
    lines = [request_line("q1", "hi"), b"[" * 10_000, request_line("q2", "x" * (2 << 20)),
             request_line("q1", "again"), request_line("q3", "hello")]
    sub, messages = prepare(_job(lines), "job-s", "acme")
    assert sub.expected == {"q1", "q3"}
    reasons = dict(sub.invalid)
    assert reasons[2] == "JSON nested deeper than 64 levels"
    assert reasons[3].startswith("message is 2,097,") and reasons[3].endswith("the limit is 1,048,576")
    assert reasons[4] == "custom_id 'q1' repeats line 1; refused"
    # Deep and huge lines fit the topic, so they are sent as they are (the router dead-letters
    # them); the repeat is valid JSON the router would answer, so its letter is written here.
    assert [k for k, _ in messages] == [b"job-s:q1", b"job-s:line-2", b"job-s:line-3", b"job-s:q3"]
    [letter] = sub.letters
    assert (letter.stage, letter.topic, letter.offset, letter.job_id, letter.tenant) == (
        "submit", "submit:job-s", 4, "job-s", "acme")
    assert json.loads(letter.original)["body"]["messages"][0]["content"] == "again"


def test_a_line_too_large_for_the_topic_gets_its_letter_at_submit():
    big = request_line("q", "x" * (17 << 20))
    sub, messages = prepare(_job([big, request_line("ok", "hi")]), "job-t", "t")
    assert [k for k, _ in messages] == [b"job-t:ok"]
    [letter] = sub.letters
    assert letter.offset == 1 and "too large to send" in letter.reason
    assert "the letter keeps the first 65,536" in letter.reason
    assert len(encode(letter)) < 4 * MAX_LETTER_ORIGINAL_BYTES


def test_the_submitters_tenant_wins_and_the_line_that_said_otherwise_is_warned_about():
    sub, messages = prepare(_job([request_line("a", "hi", tenant="other"), request_line("b", "hi")]), "j", "acme")
    assert sub.warnings == [(1, "tenant 'other' in the line is ignored; submitted as 'acme'")]
    assert {json.loads(v)["tenant"] for _, v in messages} == {"acme"}


def test_the_same_file_from_two_tenants_is_two_jobs():
    job = _job([request_line("a", "hi")])
    assert job.default_job_id("acme") != job.default_job_id("globex")
    assert job.default_job_id("acme") == _job([request_line("a", "hi")]).default_job_id("acme")


# --- reported, not silent ----------------------------------------------------------------------


def test_body_warnings_name_a_capped_max_tokens_and_a_model_not_served():
    body = {"model": "gpt-4o", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    assert body_warnings(body, 256, "smollm2-135m") == [
        "max_tokens 1000 capped at 256", "model 'gpt-4o' is not served here; smollm2-135m answered"]
    assert body_warnings({**body, "model": "smollm2-135m", "max_tokens": 256}, 256, "smollm2-135m") == []
    assert body_warnings({"max_completion_tokens": 300}, 256, "m") == ["max_tokens 300 capped at 256"]


class _Echo:
    name = "echo"

    async def chat(self, body: dict) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def test_the_result_says_what_was_not_done_as_asked_and_the_sink_stores_it(tmp_path):
    workers = lean_settings(tmp_path).workers
    processor = TierProcessor(served_tier("small", workers), _Echo())
    now = datetime.now(timezone.utc)
    item = WorkItem(request_id="j:a", job_id="j", tenant="t", custom_id="a", tier="small",
                    body={"model": "gpt-4o", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]},
                    router_version="v", submitted_at=now, decided_at=now)
    [out] = asyncio.run(processor.process([RawRecord(encode(item), "work.small", 0, 0)]))
    result = decode(Result, out.value)
    assert result.warnings == [f"max_tokens 500 capped at {workers.max_tokens_cap}",
                               "model 'gpt-4o' is not served here; echo answered"]
    client = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        apply_schema(client)
        ClickHouseWriter(client).write([to_rows(RawRecord(out.value, "results", 0, 0))])
        stored = client.query("SELECT warnings FROM results FINAL WHERE request_id = 'j:a'").result_rows
        assert stored == [(result.warnings,)]
    finally:
        client.close()


def test_submit_summarises_the_warnings_in_one_line_each():
    def result(*warnings):
        return Result(request_id="j:x", job_id="j", tenant="t", custom_id="x", tier="small", model="m",
                      status="ok", router_version="v", submitted_at=datetime.now(timezone.utc),
                      warnings=list(warnings))

    capped = "max_tokens 1000 capped at 256"
    other = "model 'gpt-4o' is not served here; smollm2-135m answered"
    lines = warning_summary([result(capped)] * 12 + [result(capped, other), result()])
    assert lines == ["13 answers were capped at 256 tokens",
                     "1 answer was not from the model named: 'gpt-4o' was asked for; smollm2-135m answered"]
