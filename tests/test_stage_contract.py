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

    stage = Stage("t", lambda records: [r.value == b"bad" for r in records], effect, lambda bad: bad)
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
