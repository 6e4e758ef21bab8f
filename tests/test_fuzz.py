"""Fuzzing the three stages' processors with generated malformed messages (hypothesis).

Bad JSON, truncated JSON, deep nesting, huge messages, huge fields, wrong types, wrong schema
versions, binary garbage and valid JSON of the wrong shape are thrown, with well-formed messages
interleaved, at the router stage (a real router and real MiniLM embeddings), the tier worker
(an echo engine behind the same `Engine` interface: the model is not what is under test) and
the sink (`to_rows` and the real ClickHouseWriter on chDB). No exception may escape, every
malformed message must yield exactly one dead letter with a reason, and every well-formed one
must be answered (router, worker) or stored (sink). Each stage gets over 3,300 malformed
messages, so the module throws more than 10,000.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.clickhouse import apply_schema, connect
from router.embeddings import embed, load_encoder
from router.heuristic import HeuristicRouter
from schemas import SCHEMA_VERSION, DeadLetter, Result, RoutingDecision, WorkItem, encode
from schemas.validation import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MAX_QUERY_BYTES
from streams.records import RawRecord
from streams.routing import RouterProcessor
from streams.sink import ClickHouseWriter, to_rows
from workers.tier_worker import TierProcessor
from workers.tiers import served_tier

from tests.conftest import lean_settings
from tests.helpers import decode

PER_BATCH = 60  # malformed messages per generated batch
BATCHES = 56  # batches per stage: 3,360 malformed messages per stage, 10,080 in all
FUZZ = settings(max_examples=BATCHES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
NOW = "2026-01-01T00:00:00Z"
_ids = itertools.count()
_offsets = itertools.count()


# --- well-formed messages --------------------------------------------------------------------


def good_query() -> dict:
    n = next(_ids)
    return {"custom_id": f"good-{n}", "body": {"messages": [{"role": "user", "content": f"What is {n} + 1?"}],
                                               "max_tokens": 8}, "routing": {"alpha": 0.5}}


def good_work() -> dict:
    n = next(_ids)
    return {"request_id": f"fz:good-{n}", "job_id": "fz", "tenant": "t", "custom_id": f"good-{n}",
            "tier": "small", "body": {"messages": [{"role": "user", "content": f"echo {n}"}]},
            "router_version": "v", "submitted_at": NOW, "decided_at": NOW}


def good_result() -> dict:
    n = next(_ids)
    return {"request_id": f"fz:good-{n}", "job_id": "fz", "tenant": "t", "custom_id": f"good-{n}",
            "tier": "small", "model": "m", "status": "ok",
            "response": {"choices": [{"message": {"role": "assistant", "content": "hi"}}]},
            "router_version": "v", "submitted_at": NOW}


# --- malformed messages ----------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
                         allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
not_a_string = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(json_scalars, min_size=1, max_size=2),
                         st.dictionaries(st.text(max_size=4), json_scalars, max_size=2))
not_a_list = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                       st.dictionaries(st.text(max_size=4), json_scalars, max_size=2))


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def set_path(message: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(message))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def dumps(value) -> bytes:
    return json.dumps(value).encode()


def malformed(good, wrong_fields: dict[tuple, st.SearchStrategy], required: tuple[str, ...],
              max_bytes: int) -> st.SearchStrategy:
    """Messages no stage may accept, given a well-formed one, per field values that break it,
    and the fields it cannot do without."""
    base = good()
    garbage = st.binary(max_size=64)
    not_json = st.text(max_size=40).map(lambda t: ("{" + t).encode()) | st.just(b"") | st.just(b"NaN")
    truncated = st.integers(1, len(dumps(base)) - 1).map(lambda n: dumps(base)[:n])
    invalid_utf8 = st.binary(min_size=1, max_size=8).map(
        lambda b: dumps(base).replace(b'": "', b'": "\xff' + b, 1))  # into the first string
    nested = st.builds(deep, st.integers(MAX_JSON_DEPTH + 1, 20_000), st.sampled_from(["list", "dict"]))
    nested_inside = st.integers(MAX_JSON_DEPTH, 900).map(
        lambda d: dumps(base)[:-1] + b', "extra": ' + deep(d, "list") + b"}")
    huge = st.integers(max_bytes + 1, max_bytes + 4096).map(
        lambda n: dumps(set_path(base, ("custom_id",), "x" * n)))
    wrong_shape = st.one_of(json_scalars.map(dumps), st.lists(json_values, max_size=4).map(dumps),
                            st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(dumps))
    bad_version = st.one_of(st.integers().filter(lambda v: v != SCHEMA_VERSION), st.text(max_size=4),
                            st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False)
                            ).map(lambda v: dumps({**base, "schema_version": v}))
    wrong_type = st.sampled_from(sorted(wrong_fields, key=str)).flatmap(
        lambda path: wrong_fields[path].map(lambda v: dumps(set_path(base, path, v))))
    missing = st.sampled_from(required).map(lambda k: dumps({f: v for f, v in base.items() if f != k}))
    # Wrong types weigh three times: they reach the deepest code (schema validation).
    return st.one_of(garbage, not_json, truncated, invalid_utf8, nested, nested_inside, huge, wrong_shape,
                     bad_version, wrong_type, wrong_type, wrong_type, missing)


QUERY_BREAKERS = {
    ("custom_id",): not_a_string | st.just("") | st.just("x" * 513),
    ("body",): not_a_string,
    ("body", "messages"): not_a_list | st.just([]),
    ("body", "messages", 0): not_a_string | st.just({"role": "user"}),
    ("body", "messages", 0, "role"): not_a_string | st.text(max_size=5).filter(lambda r: r not in (
        "system", "user", "assistant", "tool", "developer")),
    ("body", "messages", 0, "content"): not_a_string,
    ("body", "max_tokens"): st.one_of(st.integers(max_value=0), st.integers(min_value=32769), st.lists(
        st.integers(), max_size=2), st.just("lots")),
    ("routing",): st.one_of(st.integers(), st.text(max_size=4), st.just({"no_such_knob": 1})),
    ("routing", "alpha"): st.one_of(st.floats(min_value=1.01, max_value=1e300), st.just("high")),
}
WORK_BREAKERS = {
    ("request_id",): not_a_string | st.just("fz:someone-else"),
    ("job_id",): not_a_string,
    ("custom_id",): not_a_string,
    ("tier",): not_a_string | st.just("huge"),
    ("body",): not_a_string,
    ("body", "messages"): not_a_list | st.just([]),
    ("submitted_at",): st.one_of(st.integers(min_value=2**62), st.just("yesterday"), st.lists(st.integers(), max_size=1)),
    ("router_version",): not_a_string,
}
RESULT_BREAKERS = {
    ("request_id",): not_a_string,
    ("status",): not_a_string | st.just("fine"),
    ("tier",): not_a_string | st.just("huge"),
    ("usage",): st.one_of(st.integers(), st.text(max_size=3), st.just({"prompt_tokens": "many"})),
    ("response",): st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=1)),
    ("submitted_at",): st.just("not a time"),
    ("model",): not_a_string,
}


QUERY_REQUIRED = ("custom_id", "body")
WORK_REQUIRED = ("request_id", "job_id", "tenant", "custom_id", "tier", "body", "router_version",
                 "submitted_at", "decided_at")
RESULT_REQUIRED = ("request_id", "job_id", "tenant", "custom_id", "tier", "model", "status",
                   "router_version", "submitted_at")


def good_letter() -> dict:
    return {"stage": "router", "reason": "bad input", "original": "x", "topic": "queries",
            "partition": 0, "offset": next(_ids)}


LETTER_BREAKERS = {  # a dead letter on the dlq topic that the dead_letters table could not hold
    ("partition",): st.one_of(st.integers(min_value=2**31), st.integers(max_value=-2)),
    ("offset",): st.one_of(st.integers(min_value=2**63), st.integers(max_value=-2)),
    ("reason",): st.sampled_from(["", "   "]) | not_a_string,
    ("stage",): not_a_string,
    ("created_at",): st.just("soon"),
}
LETTER_REQUIRED = ("stage", "reason", "original", "topic", "partition", "offset")


def batches(good, breakers, required, max_bytes) -> st.SearchStrategy:
    """A batch: PER_BATCH malformed messages with 1-4 well-formed ones at drawn positions."""
    bad = st.lists(malformed(good, breakers, required, max_bytes), min_size=PER_BATCH, max_size=PER_BATCH)
    return st.tuples(bad, st.lists(st.integers(0, PER_BATCH), min_size=1, max_size=4))


def interleave(bad: list[bytes], positions: list[int], good) -> list[tuple[bool, bytes]]:
    """(well-formed?, bytes) in order: the good messages are fresh, so their ids are unique."""
    items = [(False, b) for b in bad]
    for p in sorted(positions, reverse=True):
        items.insert(p, (True, dumps(good())))
    return items


def records(items, topic: str, headers=None) -> list[RawRecord]:
    return [RawRecord(value, topic, 0, next(_offsets), headers=headers or {}) for _, value in items]


def assert_contained(items, recs, letters: list[DeadLetter]):
    bad_offsets = [r.offset for (ok, _), r in zip(items, recs) if not ok]
    assert sorted(d.offset for d in letters) == bad_offsets, "one dead letter per malformed message"
    assert all(d.reason.strip() for d in letters)


# --- the router stage ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    encoder = load_encoder()
    return RouterProcessor(HeuristicRouter(), lambda t: embed(t, encoder=encoder, use_cache=False),
                           {"small": "s", "medium": "m", "large": "l"})


def test_the_router_stage_dead_letters_every_malformed_query_and_routes_the_rest(router):
    thrown = []

    @FUZZ
    @given(batches(good_query, QUERY_BREAKERS, QUERY_REQUIRED, MAX_QUERY_BYTES))
    def check(batch):
        bad, positions = batch
        items = interleave(bad, positions, good_query)
        recs = records(items, "queries", {"switchyard-job-id": b"fz"})
        outputs = router.process(recs)
        letters = [decode(DeadLetter, o.value) for o in outputs if o.topic == "dlq"]
        assert all(o.dead_letter for o in outputs if o.topic == "dlq")
        assert_contained(items, recs, letters)
        assert all(d.stage == "router" for d in letters)
        good_ids = {json.loads(v)["custom_id"] for ok, v in items if ok}
        works = [decode(WorkItem, o.value) for o in outputs if o.topic.startswith("work.")]
        decisions = [decode(RoutingDecision, o.value) for o in outputs if o.topic == "decisions"]
        assert {w.custom_id for w in works} == good_ids == {d.custom_id for d in decisions}
        assert len(works) == len(decisions) == len(good_ids)
        thrown.append(len(bad))

    check()
    assert sum(thrown) >= BATCHES * PER_BATCH


# --- the tier worker -------------------------------------------------------------------------


class EchoEngine:
    """An `Engine` that answers with the prompt: the worker's handling is under test, not a model."""

    name = "echo"

    async def chat(self, body: dict) -> dict:
        text = body["messages"][-1]["content"]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    workers = lean_settings(tmp_path_factory.mktemp("fuzz-worker")).workers
    return TierProcessor(served_tier("small", workers), EchoEngine())


def test_the_tier_worker_dead_letters_every_malformed_work_item_and_answers_the_rest(worker):
    thrown = []
    loop = asyncio.new_event_loop()  # one loop for the whole run: the worker's slots live on it

    @FUZZ
    @given(batches(good_work, WORK_BREAKERS, WORK_REQUIRED, MAX_MESSAGE_BYTES))
    def check(batch):
        bad, positions = batch
        items = interleave(bad, positions, good_work)
        recs = records(items, "work.small")
        outputs = loop.run_until_complete(worker.process(recs))
        assert len(outputs) == len(recs)
        letters = [decode(DeadLetter, o.value) for o in outputs if o.topic == "dlq"]
        assert_contained(items, recs, letters)
        results = [decode(Result, o.value) for o in outputs if o.topic == "results"]
        good = {json.loads(v)["custom_id"]: json.loads(v)["body"]["messages"][0]["content"]
                for ok, v in items if ok}
        assert {r.custom_id: r.answer_text() for r in results} == good
        assert all(r.status == "ok" for r in results)
        thrown.append(len(bad))

    try:
        check()
    finally:
        loop.close()
    assert sum(thrown) >= BATCHES * PER_BATCH


# --- the sink --------------------------------------------------------------------------------

SINK_TOPICS = ["results", "decisions", "feedback", "dlq", "router.models"]


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.mktemp('fuzz-ch')}")
    apply_schema(client)
    yield client
    client.close()


def test_the_sink_dead_letters_every_malformed_message_and_stores_the_rest(clickhouse):
    writer = ClickHouseWriter(clickhouse)
    thrown = []

    bad_letters = st.lists(malformed(good_letter, LETTER_BREAKERS, LETTER_REQUIRED, MAX_MESSAGE_BYTES),
                           min_size=10, max_size=10)

    @FUZZ
    @given(batches(good_result, RESULT_BREAKERS, RESULT_REQUIRED, MAX_MESSAGE_BYTES), st.sampled_from(SINK_TOPICS),
           bad_letters)
    def check(batch, topic, letters):
        bad, positions = batch
        items = interleave(bad, positions, good_result)
        # The good messages are results; the malformed ones land on a drawn topic, and malformed
        # dead letters on the dlq topic.
        recs = [RawRecord(value, "results" if ok else topic, 0, next(_offsets)) for ok, value in items]
        items += [(False, value) for value in letters]
        recs += [RawRecord(value, "dlq", 0, next(_offsets)) for value in letters]
        rows = [to_rows(r) for r in recs]
        writer.write(rows)
        offsets = [r.offset for (ok, _), r in zip(items, recs) if not ok]
        stored = clickhouse.query(
            "SELECT offset, reason FROM dead_letters FINAL WHERE stage = 'sink' AND offset IN {o:Array(Int64)}",
            parameters={"o": offsets}).result_rows
        assert sorted(o for o, _ in stored) == offsets, "one dead-letter row per malformed message"
        assert all(reason.strip() for _, reason in stored)
        good_ids = [f"fz:{json.loads(v)['custom_id']}" for ok, v in items if ok]
        answered = clickhouse.query("SELECT request_id FROM results FINAL WHERE request_id IN {ids:Array(String)}",
                                    parameters={"ids": good_ids}).result_rows
        assert sorted(r[0] for r in answered) == sorted(good_ids)
        thrown.append(len(bad) + len(letters))

    check()
    assert sum(thrown) >= BATCHES * PER_BATCH


def test_the_sink_stores_no_row_for_a_malformed_query_and_stores_the_good_ones(clickhouse):
    """A bad query is the router's to dead-letter (one letter per request), so the sink skips it."""
    thrown = []

    @settings(FUZZ, max_examples=8)
    @given(batches(good_query, QUERY_BREAKERS, QUERY_REQUIRED, MAX_QUERY_BYTES))
    def check(batch):
        bad, positions = batch
        items = interleave(bad, positions, good_query)
        rows = [to_rows(r) for r in records(items, "queries", {"switchyard-job-id": b"fzq"})]
        assert [row is not None for row in rows] == [ok for ok, _ in items]
        ClickHouseWriter(clickhouse).write([r for r in rows if r is not None])
        thrown.append(len(bad))

    check()
    n = clickhouse.query("SELECT count() FROM requests FINAL WHERE job_id = 'fzq'").result_rows[0][0]
    assert n >= len(thrown) and sum(thrown) == 8 * PER_BATCH
