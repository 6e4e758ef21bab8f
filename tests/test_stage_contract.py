"""The stage contract: the dead-letter limit stops a stage before the batch's effect, and the
router stream dead-letters only RoutingError (anything else is a bug and propagates)."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from infra.topics import Topics
from router.base import RouteChoice, RoutingError
from streams.config import DlqLimitSettings
from streams.records import RawRecord
from streams.routing import RouterProcessor
from streams.runtime import DlqLimit, DlqLimitExceeded, Stage, process_batch


def _query(custom_id: str) -> RawRecord:
    line = {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": "hi"}]}}
    return RawRecord(json.dumps(line).encode(), "p.queries", 0, 0, headers={"switchyard-job-id": b"j"})


class _Router:
    version = "test"

    def __init__(self, error: Exception | None):
        self.error = error

    def route(self, texts, embeddings, knobs):
        if self.error is not None:
            raise self.error
        return [RouteChoice("m", "small", 0, 0.5, 0.0) for _ in texts]


def _processor(error: Exception | None) -> RouterProcessor:
    return RouterProcessor(_Router(error), lambda texts: np.zeros((len(texts), 384), np.float32),
                           {"small": "s", "medium": "m", "large": "l"}, Topics("p."))


def test_routing_error_dead_letters_only_that_request_under_the_prefix():
    outputs = _processor(RoutingError("no allowed model")).process([_query("a")])
    assert [(o.topic, o.dead_letter) for o in outputs] == [("p.dlq", True)]
    assert b"cannot route: no allowed model" in outputs[0].value


def test_a_router_bug_is_not_dead_lettered():
    with pytest.raises(IndexError):
        _processor(IndexError("shape bug")).process([_query("a")])


def test_routed_outputs_use_the_prefixed_topics():
    outputs = _processor(None).process([_query("a")])
    assert [o.topic for o in outputs] == ["p.work.small", "p.decisions"]
    assert not any(o.dead_letter for o in outputs)


def test_dlq_limit_stops_before_the_effect():
    applied: list[list] = []

    async def effect(outputs):
        applied.append(outputs)

    stage = Stage("t", lambda records: [r.value == b"bad" for r in records], effect,
                  lambda bad: "bad input: test" if bad else None)
    limit = DlqLimit(DlqLimitSettings(max_consecutive_count=3), "t")
    good, bad = RawRecord(b"ok", "t", 0, 0), RawRecord(b"bad", "t", 0, 1)
    asyncio.run(process_batch(stage, [bad, bad, good, bad], limit))  # a valid one breaks the run
    asyncio.run(process_batch(stage, [bad, bad], limit))
    with pytest.raises(DlqLimitExceeded):
        asyncio.run(process_batch(stage, [bad, bad], limit))  # 4 in a row
    assert len(applied) == 2  # the batch that crossed the limit had no effect


def test_dlq_ratio_limit_over_a_window():
    limit = DlqLimit(DlqLimitSettings(max_invalid_ratio=0.5, window=10), "t")
    limit.observe(10, 5)  # exactly half: allowed
    with pytest.raises(DlqLimitExceeded):
        limit.observe(4, 4)  # the last 10 now hold 7 invalid
    unlimited = DlqLimit(DlqLimitSettings(), "t")
    unlimited.observe(1000, 1000)  # off by default: bad input never stops a stage


def test_dead_letters_are_counted_by_the_kind_of_their_reason():
    from prometheus_client import REGISTRY

    from streams.records import reason_kind

    assert reason_kind("message is 1,234,567 bytes; the limit is 1,000,000") == "message is N bytes"
    assert reason_kind("unknown request id 'job:x'") == "unknown request id"
    assert reason_kind("not valid JSON: Expecting value: line 1 column 1 (char 0)") == "not valid JSON"
    assert reason_kind("invalid request: body.messages: Field required") == "invalid request"
    assert reason_kind("schema_version 'v9' is not supported (this build reads 1)") == \
        "schema_version is not supported (this build reads N)"
    assert len(reason_kind("x" * 500)) == 60

    async def effect(outputs):
        pass

    def count(reason: str) -> float:
        return REGISTRY.get_sample_value("switchyard_dead_letters_total",
                                         {"stage": "kinds", "reason": reason}) or 0.0

    reasons = {b"big": "message is 2,048 bytes; the limit is 1,024", b"json": "not valid JSON: line 1"}
    stage = Stage("kinds", lambda records: [reasons.get(r.value) for r in records], effect, lambda r: r)
    batch = [RawRecord(v, "t", 0, i) for i, v in enumerate([b"big", b"ok", b"json", b"big"])]
    asyncio.run(process_batch(stage, batch, DlqLimit(DlqLimitSettings(), "kinds")))
    assert count("message is N bytes") == 2 and count("not valid JSON") == 1
