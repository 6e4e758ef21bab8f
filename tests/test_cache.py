"""The semantic cache's pure logic (streams.cache): keys, the per-tenant index, TTL, bounds, what
is cacheable, and the hit result. Hand-made unit vectors stand in for embeddings here; the
router-stage and stack tests use real MiniLM."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from schemas import ChatCompletionBody, QueryRequest, Result, RoutingPolicy
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from streams.cache import CacheSettings, SemanticCache, bypass_reason, numbers, request_keys
from streams.records import RawRecord
from tests.helpers import decode

DIM = 4


def _vec(*xs: float) -> np.ndarray:
    v = np.array(xs + (0.0,) * (DIM - len(xs)), dtype=np.float32)
    return v / np.linalg.norm(v)


def _req(cid: str, text: str, tenant: str = "acme", job: str = "j1", messages: list | None = None,
         routing: dict | None = None, **body) -> QueryRequest:
    msgs = messages or [{"role": "user", "content": text}]
    return QueryRequest(custom_id=cid, job_id=job, tenant=tenant,
                        body={"messages": msgs, "max_tokens": 8, **body}, routing=routing or {})


def _rec(req: QueryRequest) -> RawRecord:
    return RawRecord(value=req.model_dump_json().encode(), topic="queries", partition=0, offset=0,
                     headers={HEADER_JOB_ID: req.job_id.encode(), HEADER_TENANT: req.tenant.encode()})


def _answer(req: QueryRequest, text: str = "Paris.", status: str = "ok", at: datetime | None = None) -> Result:
    return Result(request_id=req.request_id, job_id=req.job_id, tenant=req.tenant, custom_id=req.custom_id,
                  tier="small", model="smol", status=status, router_version="v1",
                  response={"choices": [{"message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
                  usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, cost_usd=0.001,
                  submitted_at=req.submitted_at, finished_at=at or datetime.now(timezone.utc),
                  warnings=["max_tokens 8 capped at 4"])


class Clock:
    def __init__(self):
        self.now = datetime.now(timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


def _cache(clock=None, **settings) -> SemanticCache:
    return SemanticCache(CacheSettings(enabled=True, **settings), dim=DIM, **({"clock": clock} if clock else {}))


def _ask(cache: SemanticCache, req: QueryRequest, vec: np.ndarray):
    """(hit Result or None) for one request through the cache step."""
    outputs, route = cache.answer([(_rec(req), req)], vec[None, :])
    assert len(outputs) + len(route) == 1
    return decode(Result, outputs[0].value) if outputs else None


def _learned(cache: SemanticCache, req: QueryRequest, vec: np.ndarray, **answer) -> None:
    assert _ask(cache, req, vec) is None
    assert cache.wants(req.request_id.encode())
    assert cache.learn(_answer(req, **answer))


def test_an_exact_repeat_is_a_hit_with_zero_cost_and_its_source():
    cache = _cache()
    first = _req("a", "What is the capital of France?")
    _learned(cache, first, _vec(1))
    again = _req("b", "  What is the   capital of France? ", job="j2")  # whitespace does not matter
    hit = _ask(cache, again, _vec(0, 1))  # an unrelated vector: the exact path answers first
    assert hit.cache_hit and hit.cache_match == "exact" and hit.cache_similarity == 1.0
    assert hit.cache_source_request_id == first.request_id and hit.request_id == again.request_id
    assert hit.custom_id == "b" and hit.job_id == "j2" and hit.tenant == "acme"
    assert hit.cost_usd == 0 and hit.usage.total_tokens == 0 and hit.response["usage"]["total_tokens"] == 0
    assert hit.answer_text() == "Paris." and (hit.tier, hit.model, hit.router_version) == ("small", "smol", "v1")
    assert hit.warnings == ["max_tokens 8 capped at 4"]  # the same parameters, the same caveat
    assert cache.stats.exact == 1 and cache.stats.misses == 1


def test_a_similar_query_of_the_same_scope_is_a_hit_above_the_threshold_only():
    cache = _cache(similarity_threshold=0.95)
    _learned(cache, _req("a", "Who wrote Hamlet?"), _vec(1, 0))
    close = _vec(1, 0.2)  # cosine 0.98
    far = _vec(1, 0.5)  # cosine 0.89
    hit = _ask(cache, _req("b", "Who is the author of Hamlet?"), close)
    assert hit.cache_match == "similar" and hit.cache_similarity == pytest.approx(0.9806, abs=1e-3)
    assert _ask(cache, _req("c", "Who wrote Macbeth?"), far) is None


def test_no_hit_crosses_tenants_even_with_the_same_text_and_vector():
    cache = _cache()
    _learned(cache, _req("a", "What is 2 + 2?", tenant="acme"), _vec(1))
    assert _ask(cache, _req("a", "What is 2 + 2?", tenant="globex"), _vec(1)) is None
    assert cache.size("acme") == 1 and cache.size("globex") == 0
    assert _ask(cache, _req("b", "What is 2 + 2?", tenant="acme"), _vec(1)).cache_hit


def test_what_changes_an_answer_changes_the_key():
    base = _req("a", "Name a colour.")
    keys = request_keys(base.tenant, base.body, base.routing)
    variants = [
        _req("a", "Name a colour.", max_tokens=64),
        _req("a", "Name a colour.", temperature=0),
        _req("a", "Name a colour.", model="large"),
        _req("a", "Name a colour.", stop=["."]),
        _req("a", "Name a colour.", routing={"pinned_tier": "large"}),
        _req("a", "Name a colour.", routing={"alpha": 0.9}),
        _req("a", "Name a colour.", messages=[{"role": "system", "content": "Answer in French."},
                                              {"role": "user", "content": "Name a colour."}]),
        _req("a", "name a colour."),  # case is kept
    ]
    for v in variants:
        other = request_keys(v.tenant, v.body, v.routing)
        assert other.exact != keys.exact, v.body
    # ... but a different conversation around the question or other parameters is another scope,
    # while a different question text with the same numbers stays in the scope
    assert request_keys("acme", _req("x", "Name a color.").body, RoutingPolicy()).scope == keys.scope
    assert request_keys("globex", base.body, base.routing).scope != keys.scope
    # text parts and a plain string with the same text are the same request; the opt-out flag is not a key
    parts = _req("a", "", messages=[{"role": "user", "content": [{"type": "text", "text": "Name a  colour."}]}])
    assert request_keys("acme", parts.body, RoutingPolicy(cache=True)) == keys


def test_numbers_must_match_for_a_similarity_hit():
    assert numbers("sold 48 clips, then 1,250.5 more") == ("48", "1,250.5")
    cache = _cache()
    _learned(cache, _req("a", "Natalia sold clips to 48 of her friends."), _vec(1))
    # MiniLM puts these at 0.99: the same vector here, and still no hit
    assert _ask(cache, _req("b", "Natalia sold clips to 24 of her friends."), _vec(1)) is None
    assert _ask(cache, _req("c", "Natalia sold clips to 48 of her pals."), _vec(1)).cache_match == "similar"


def test_what_is_not_cached():
    s = CacheSettings(enabled=True)
    assert bypass_reason(_req("a", "x", temperature=0.7), s) == "temperature 0.7 > 0 (sampled answers are not reused)"
    assert bypass_reason(_req("a", "x", routing={"cache": False}), s) == "opted out (routing.cache = false)"
    assert bypass_reason(_req("a", "x", n=3), s) == "n > 1"
    assert bypass_reason(_req("a", "x", temperature=0), s) is None
    assert bypass_reason(_req("a", "x"), s) is None
    assert bypass_reason(_req("a", "x"), CacheSettings(cache_unset_temperature=False)) == "temperature unset"
    cache = _cache()
    sampled = _req("a", "Tell me a joke.", temperature=0.9)
    assert _ask(cache, sampled, _vec(1)) is None and not cache.wants(sampled.request_id.encode())
    assert not cache.learn(_answer(sampled))  # never remembered, so never learned
    _learned(cache, _req("b", "Tell me a joke.", temperature=0), _vec(1))
    assert _ask(cache, _req("c", "Tell me a joke.", routing={"cache": False}, temperature=0), _vec(1)) is None
    assert cache.stats.bypassed == 2


def test_only_ok_answers_to_routed_requests_are_learned_and_a_request_is_never_its_own_hit():
    cache = _cache()
    failed = _req("a", "Say hi.")
    assert _ask(cache, failed, _vec(1)) is None
    assert not cache.learn(_answer(failed, status="error"))
    assert _ask(cache, _req("b", "Say hi."), _vec(1)) is None  # nothing was learned
    stranger = _req("zz", "Say hi.", job="other")
    assert not cache.learn(_answer(stranger))  # not pending here: not learned
    first = _req("c", "Say hello.")
    _learned(cache, first, _vec(0, 1))
    # a replay of the same request (same request id) is routed again, not answered from itself
    assert _ask(cache, first, _vec(0, 1)) is None
    hit = _ask(cache, _req("d", "Say hello."), _vec(0, 1))
    assert not cache.learn(hit)  # a hit never becomes a source


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = _cache(clock, ttl_s=60)
    start = datetime.fromtimestamp(clock.now, timezone.utc)
    _learned(cache, _req("a", "Name a planet."), _vec(1), at=start)
    clock.now += 59
    assert _ask(cache, _req("b", "Name a planet."), _vec(1)).cache_hit
    clock.now += 2
    assert _ask(cache, _req("c", "Name a planet."), _vec(1)) is None
    assert cache.size("acme") == 0  # expired entries are dropped, not only skipped


def test_each_tenant_keeps_its_newest_entries_and_pending_is_bounded():
    cache = _cache(max_entries_per_tenant=3, max_pending=2)
    for i in range(5):
        _learned(cache, _req(f"a{i}", f"Question number {i}?"), _vec(1, i))
    assert cache.size("acme") == 3
    assert _ask(cache, _req("x", "Question number 0?"), _vec(0, 0, 1)) is None  # evicted
    assert _ask(cache, _req("y", "Question number 4?"), _vec(0, 0, 1)).cache_hit
    reqs = [_req(f"p{i}", f"Pending {i}?") for i in range(3)]
    for r in reqs:
        _ask(cache, r, _vec(0, 0, 0, 1))
    assert not cache.wants(reqs[0].request_id.encode()) and cache.wants(reqs[2].request_id.encode())


def test_removing_many_entries_compacts_a_scope_and_lookups_stay_right():
    cache = SemanticCache(CacheSettings(enabled=True, max_entries_per_tenant=40), dim=128)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(200, 128)).astype(np.float32)  # nearly orthogonal: no two above 0.95
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    reqs = [_req(f"q{i}", f"Question {'x' * i}") for i in range(200)]  # no numbers: one scope
    for r, v in zip(reqs, vecs):
        _learned(cache, r, v)
    index = cache.tenants["acme"]
    scope = next(iter(index.scopes.values()))
    assert len(index) == 40 and len(scope.ids) < 120  # compacted along the way
    for r, v in zip(reqs[-40:], vecs[-40:]):  # each newest entry is found again by its own vector
        hit = _ask(cache, _req("again-" + r.custom_id, r.body.messages[0].text() + "?"), v)
        assert hit is not None and hit.cache_source_request_id == r.request_id


def test_seed_indexes_stored_answers_oldest_first_within_the_ttl():
    cache = _cache(ttl_s=3600)
    now = datetime.now(timezone.utc)
    reqs = [_req("a", "Name a fruit."), _req("b", "Name a tree."), _req("c", "Tell a story.", temperature=1.0),
            _req("d", "Name a river.")]
    results = [_answer(reqs[0], at=now - timedelta(minutes=5)), _answer(reqs[1], at=now - timedelta(hours=2)),
               _answer(reqs[2]), _answer(reqs[3], status="error")]
    assert cache.seed(reqs, results, np.stack([_vec(1), _vec(0, 1), _vec(0, 0, 1), _vec(0, 0, 0, 1)])) == 1
    assert _ask(cache, _req("x", "Name a fruit."), _vec(1)).cache_source_request_id == "j1:a"
    assert _ask(cache, _req("y", "Name a tree."), _vec(0, 1)) is None  # older than the TTL


def test_a_result_that_names_no_source_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="names its source"):
        Result(request_id="j:a", job_id="j", tenant="t", custom_id="a", tier="small", model="m", status="ok",
               router_version="v", submitted_at=datetime.now(timezone.utc), cache_hit=True)
    assert json.loads(RoutingPolicy(cache=False).model_dump_json())["cache"] is False
    assert ChatCompletionBody(messages=[{"role": "user", "content": "x"}]).temperature is None


def test_the_benchmarks_cache_holds_every_entry_in_one_scope_and_its_lookups_hit():
    """`switchyard bench cache` times the worst case (one scope); check it really builds it (the
    model-call half of the bench is not run here)."""
    from switchyard.bench_cache import QUERIES, _request, filled_cache

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(len(QUERIES), 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cache = filled_cache(500, QUERIES, vecs, 32)
    scopes = cache.tenants["bench"].scopes
    assert len(scopes) == 1 and len(next(iter(scopes.values())).ids) == 500 + len(QUERIES)
    outputs, _ = cache.answer([_request("r", QUERIES[2], 32)], vecs[2][None, :])
    assert decode(Result, outputs[0].value).cache_match == "exact"
    outputs, _ = cache.answer([_request("s", QUERIES[2] + " please", 32)], vecs[2][None, :])
    assert decode(Result, outputs[0].value).cache_match == "similar"
