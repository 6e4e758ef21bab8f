"""`switchyard bench cache`: what a semantic-cache hit costs against a model call.

In one process, on real parts: the router stage's cache step (`SemanticCache.answer`, the same
call the router makes for each micro-batch) over a tenant holding `entries` answers in one scope
(the worst case: every lookup compares against all of them), and the small tier's model
(SmolLM2 in-process through xllamacpp, as the lean stack serves it) answering the same queries.
Reported per request, median and p95 over the repetitions:

- `exact_hit_ms`: the hash lookup path (a repeat);
- `similar_hit_ms`: the cosine path (exact key missed; the query's own embedding compared with
  every entry of the scope);
- `miss_ms`: what the step adds to a request that is routed after all (lookup + remembering it);
- `embed_ms`: one MiniLM embedding, which the router computes for routing with or without the
  cache (so not a cost of the hit; reported for a conservative ratio);
- `model_call_ms`: one chat completion of `max_tokens` tokens on the small model.

`ratios` divide the hit times by the model call (the goal: a hit under 5 % of a model call).
No broker and no ClickHouse in the loop: the cache's own cost, not the transport's.
"""
from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np

from schemas import QueryRequest, Result
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, utcnow
from streams.cache import CacheSettings, SemanticCache
from streams.records import RawRecord

QUERIES = [
    "What is the capital of France?",
    "Write a python function that adds two numbers.",
    "How many legs does a spider have?",
    "Explain what a hash table is in one sentence.",
    "Name three primary colours.",
    "Who wrote the play Hamlet?",
    "Summarise the water cycle briefly.",
    "What does HTTP stand for?",
]


def _request(cid: str, text: str, max_tokens: int) -> tuple[RawRecord, QueryRequest]:
    req = QueryRequest(custom_id=cid, job_id="bench-cache", tenant="bench",
                       body={"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})
    return RawRecord(req.model_dump_json().encode(), "queries", 0, 0,
                     headers={HEADER_JOB_ID: b"bench-cache", HEADER_TENANT: b"bench"}), req


def _answer(req: QueryRequest, text: str) -> Result:
    return Result(request_id=req.request_id, job_id=req.job_id, tenant=req.tenant, custom_id=req.custom_id,
                  tier="small", model="bench", status="ok", router_version="bench",
                  response={"choices": [{"message": {"role": "assistant", "content": text}}]},
                  submitted_at=req.submitted_at, finished_at=utcnow())


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered) * 1000, 4),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 4),
            "n": len(ordered)}


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _letters(i: int) -> str:
    """A distinct word per number, without digits (numbers would put each in its own scope)."""
    word = ""
    while True:
        i, r = divmod(i, 26)
        word = chr(97 + r) + word
        if i == 0:
            return word


def filled_cache(entries: int, queries: list[str], vectors: np.ndarray, max_tokens: int,
                 seed: int = 0) -> SemanticCache:
    """A cache whose one tenant holds `entries` answers in one scope: the queries' own, and
    random unit vectors for the rest (the cost of a lookup does not depend on what they say)."""
    cache = SemanticCache(CacheSettings(enabled=True, max_entries_per_tenant=entries + len(queries),
                                        max_pending=1_000_000))
    rng = np.random.default_rng(seed)
    filler = rng.normal(size=(entries, vectors.shape[1])).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    pairs = [_request(f"filler-{i}", f"filler question {_letters(i)}", max_tokens) for i in range(entries)]
    for (record, req), vec in zip(pairs, filler):
        cache.answer([(record, req)], vec[None, :])
        cache.learn(_answer(req, "filler"))
    for i, (text, vec) in enumerate(zip(queries, vectors)):
        record, req = _request(f"source-{i}", text, max_tokens)
        cache.answer([(record, req)], vec[None, :])
        cache.learn(_answer(req, f"answer {i}"))
    held = cache.size("bench")
    assert held == entries + len(queries), f"the cache holds {held} answers, not {entries + len(queries)}"
    return cache


def run(entries: int = 10_000, repeat: int = 200, model_calls: int = 8, max_tokens: int = 32) -> dict:
    from router.embeddings import embed, load_encoder
    from workers.config import WorkerSettings
    from workers.tiers import build_engine, served_tier

    encoder = load_encoder()
    vectors = embed(QUERIES, encoder=encoder, use_cache=False)
    cache = filled_cache(entries, QUERIES, vectors, max_tokens)

    repeats = [_request(f"repeat-{i}", text, max_tokens) for i, text in enumerate(QUERIES)]
    # a different text (so the exact key misses) with the query's own vector: the cosine path
    similars = [_request(f"similar-{i}", text.rstrip("?.") + ", please.", max_tokens) for i, text in enumerate(QUERIES)]
    misses = [_request(f"miss-{i}", f"Something nobody asked yet, variant {chr(97 + i)}.", max_tokens)
              for i in range(len(QUERIES))]
    odd = np.zeros_like(vectors[0])
    odd[0] = 1.0

    def step(pairs, vecs, expect: str | None):
        k = 0

        def once():
            nonlocal k
            i = k % len(pairs)
            k += 1
            outputs, route = cache.answer([pairs[i]], vecs[i][None, :])
            if expect is not None:
                assert outputs and f'"cache_match":"{expect}"' in outputs[0].value.decode(), "the lookup missed"
            else:
                assert route == [0]
        return once

    exact = _time(step(repeats, vectors, "exact"), repeat)
    similar = _time(step(similars, vectors, "similar"), repeat)
    miss = _time(step(misses, np.stack([odd] * len(misses)), None), repeat)
    embedding = _time(lambda: embed([QUERIES[1]], encoder=encoder, use_cache=False), max(20, repeat // 10))

    workers = WorkerSettings(engine="inprocess", all_tiers_small=True)
    engine = build_engine("small", workers)
    model = served_tier("small", workers).name
    try:
        async def call(i: int) -> dict:
            return await engine.chat({"messages": [{"role": "user", "content": QUERIES[i % len(QUERIES)]}],
                                      "max_tokens": max_tokens, "temperature": 0})

        asyncio.run(call(0))  # warm-up
        calls, tokens = [], []
        for i in range(model_calls):
            started = time.perf_counter()
            response = asyncio.run(call(i))
            calls.append(time.perf_counter() - started)
            tokens.append((response.get("usage") or {}).get("completion_tokens", 0))
    finally:
        close = getattr(engine, "close", None)
        if close:
            close()

    figures = {"exact_hit_ms": _ms(exact), "similar_hit_ms": _ms(similar), "miss_ms": _ms(miss),
               "embed_ms": _ms(embedding), "model_call_ms": _ms(calls)}
    model_ms = figures["model_call_ms"]["median"]
    worst_hit = max(figures["exact_hit_ms"]["median"], figures["similar_hit_ms"]["median"])
    return {
        **figures,
        "ratios": {
            "exact_hit_vs_model_call": round(figures["exact_hit_ms"]["median"] / model_ms, 6),
            "similar_hit_vs_model_call": round(figures["similar_hit_ms"]["median"] / model_ms, 6),
            "similar_hit_plus_embed_vs_model_call": round(
                (figures["similar_hit_ms"]["median"] + figures["embed_ms"]["median"]) / model_ms, 6),
        },
        "goal": "a hit under 5% of a model call",
        "goal_met": worst_hit / model_ms < 0.05,
        "entries_in_scope": len(next(iter(cache.tenants["bench"].scopes.values())).ids), "repeat": repeat, "model": model,
        "model_calls": model_calls, "max_tokens": max_tokens,
        "completion_tokens_median": statistics.median(tokens) if tokens else 0,
    }
