"""The router stage's processor with real MiniLM embeddings (no broker needed), wired as the
stage wires it (`switchyard.stages.router_processor`): the live router, not a stand-in."""
import json

import pytest

from router.artifact import load_default
from router.base import Knobs
from router.embeddings import embed, load_encoder
from schemas import RoutingDecision, WorkItem
from schemas.messages import DeadLetter
from streams.records import RawRecord
from streams.routing import RouterProcessor
from tests.helpers import decode

SERVED = {"small": "s-model", "medium": "m-model", "large": "l-model"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    from switchyard.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("router"))
    settings.router.explore_rate = 0.0  # no random tier: every decision is the router's own
    return settings


@pytest.fixture(scope="module")
def processor(settings):
    from switchyard.stages import router_processor

    return router_processor(settings)


def _rec(value, offset=0, job=b"job-1"):
    return RawRecord(value=value, topic="queries", partition=1, offset=offset,
                     headers={"switchyard-job-id": job})


def _line(cid, prompt, **extra):
    return json.dumps({"custom_id": cid, "body": {"messages": [{"role": "user", "content": prompt}]}, **extra}).encode()


def test_each_valid_query_gets_work_on_its_tier_and_a_decision(processor, settings):
    from workers.tiers import served_models

    # (prompt, routing knobs): the stage must pass each request's knobs to the router
    queries = {
        "easy": ("What is the capital of France?", {}),
        "hard": ("Solve step by step: if 3x + 7 = 22 and y = 2x - 1, calculate y. Explain why. " * 6, {}),
        "cheap": ("Write a python function that returns the nth Fibonacci number.", {"alpha": 0.0}),
        "best": ("Name a planet.", {"alpha": 1.0}),
    }
    lines = [_line(cid, text, routing=knobs) for cid, (text, knobs) in queries.items()]
    outputs = processor.process([_rec(line, i) for i, line in enumerate(lines)])
    decisions = {d.custom_id: d for d in (decode(RoutingDecision, o.value) for o in outputs if o.topic == "decisions")}
    works = [o for o in outputs if o.topic.startswith("work.")]
    assert set(decisions) == set(queries) and len(works) == len(queries)

    # What the live router (the shipped default artifact, loaded afresh) decides offline for the
    # same texts and knobs, embedded independently: the stage's decisions must be exactly these.
    router = load_default()
    assert processor.router.version == router.version
    texts = [text for text, _ in queries.values()]
    offline = router.route(texts, embed(texts, encoder=load_encoder(), use_cache=False),
                           [Knobs(**knobs) for _, knobs in queries.values()])
    expected = dict(zip(queries, offline))
    assert len({c.tier for c in offline}) >= 2, "the queries must not all land on one tier"
    for cid, d in decisions.items():
        assert (d.tier, d.router_model, d.cluster) == (expected[cid].tier, expected[cid].model, expected[cid].cluster), cid
        assert d.predicted_quality == pytest.approx(expected[cid].predicted_quality, abs=1e-4)
    served = served_models(settings.workers)
    for out in works:
        item = decode(WorkItem, out.value)
        assert out.topic == f"work.{item.tier}" and item.tier == decisions[item.custom_id].tier
        assert out.key == f"job-1:{item.custom_id}".encode()
        assert decisions[item.custom_id].served_model == served[item.tier]
    assert all(d.router_version == router.version for d in decisions.values())


def test_bad_input_goes_to_the_dlq_with_its_reason_and_the_rest_is_routed(processor):
    outputs = processor.process([_rec(b"not json at all", 5), _rec(_line("ok", "hello"), 6),
                                 _rec(b'{"custom_id": "x", "body": {"messages": "hi"}}', 7)])
    letters = [decode(DeadLetter, o.value) for o in outputs if o.topic == "dlq"]
    assert [(d.offset, d.job_id) for d in letters] == [(5, "job-1"), (7, "job-1")]
    assert "not valid JSON" in letters[0].reason and "body.messages" in letters[1].reason
    assert letters[0].original == "not json at all"
    assert sum(o.topic == "decisions" for o in outputs) == 1


def test_a_pinned_tier_is_honoured(processor):
    line = _line("p", "What is the capital of France?", routing={"pinned_tier": "large"})
    outputs = processor.process([_rec(line)])
    assert {o.topic for o in outputs} == {"work.large", "decisions"}


def test_knobs_the_learned_router_cannot_honour_dead_letter_only_that_request():
    from router.artifact import load_default

    encoder = load_encoder()
    processor = RouterProcessor(load_default(), lambda t: embed(t, encoder=encoder, use_cache=False), SERVED)
    bad = _line("bad", "What is 2 + 2?", routing={"allowed_models": ["no-such-model"]})
    outputs = processor.process([_rec(_line("fine", "Name a planet."), 1), _rec(bad, 2)])
    letters = [decode(DeadLetter, o.value) for o in outputs if o.topic == "dlq"]
    assert len(letters) == 1 and letters[0].offset == 2 and "no-such-model" in letters[0].reason
    decisions = [decode(RoutingDecision, o.value) for o in outputs if o.topic == "decisions"]
    assert [d.custom_id for d in decisions] == ["fine"]
    assert decisions[0].router_version == load_default().version


def test_a_dead_letter_keeps_the_exact_original_bytes(processor):
    import base64

    raw = b"\xff\xfe not utf-8 \x00"
    letter = decode(DeadLetter, processor.process([_rec(raw, 9)])[0].value)
    assert base64.b64decode(letter.original_base64) == raw
    assert "not utf-8" in letter.original


def test_exploration_under_a_tight_budget_never_sends_a_request_to_a_tier_it_cannot_pay_for(settings):
    """Round 3 of the learning experiment spent 1.5× its budget because exploration drew large for
    requests budgeted below large's price. With the budget, exploration draws only what fits."""
    from switchyard.stages import router_processor

    explore_all = settings.model_copy(deep=True)
    explore_all.router.explore_rate = 1.0
    proc = router_processor(explore_all)
    budget = 5e-5  # above medium's predicted cost of these prompts, far below large's
    lines = [_line(f"q{i}", f"Question {i}: which gas do plants absorb from the air?", routing={"budget_usd": budget})
             for i in range(40)] + [_line(f"free{i}", f"Question {i}: which gas do plants absorb from the air?")
                                    for i in range(40)]
    outputs = proc.process([_rec(line, i) for i, line in enumerate(lines)])
    decisions = [decode(RoutingDecision, o.value) for o in outputs if o.topic == "decisions"]
    budgeted = [d for d in decisions if d.custom_id.startswith("q")]
    free = [d for d in decisions if d.custom_id.startswith("free")]
    assert len(budgeted) == 40 and len(free) == 40
    assert all(d.explored or d.propensity < 1 for d in budgeted)
    assert not any(d.tier == "large" for d in budgeted if d.explored), [d.tier for d in budgeted]
    assert any(d.tier == "large" for d in free)  # without a budget exploration does reach large
