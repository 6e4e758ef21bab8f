"""The semantic cache in the router stage, wired by the composition root (`switchyard.stages`)
with real MiniLM embeddings and the live router; and its refill from stored answers in a real
chDB. No broker: answers are handed to the cache as the results follower would."""
from __future__ import annotations

import json

import pytest

from schemas import Result, RoutingDecision, WorkItem
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, utcnow
from streams.records import RawRecord
from tests.helpers import decode

ORIGINALS = {
    "france": "What is the capital of France?",
    "sky": "What colour is the sky?",
    "adder": "Write a python function that adds two numbers.",
    "spider": "How many legs does a spider have?",
}
# MiniLM cosine to the original: 0.99, 0.99, 0.99, 0.97; and two near misses at 0.66 and 0.84
PARAPHRASES = {
    "france": "What's the capital of France?",
    "sky": "What color is the sky?",
    "adder": "Write a Python function that adds two numbers together.",
    "spider": "How many legs do spiders have?",
}
NEAR_MISSES = {"germany": "What is the capital of Germany?", "insect": "How many legs does an insect have?"}


def _rec(cid: str, prompt: str, tenant: str, job: str, offset: int = 0, **extra) -> RawRecord:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8, **extra.pop("body", {})}
    value = json.dumps({"custom_id": cid, "body": body, **extra}).encode()
    return RawRecord(value=value, topic="queries", partition=0, offset=offset,
                     headers={HEADER_JOB_ID: job.encode(), HEADER_TENANT: tenant.encode()})


def _split(outputs):
    hits = {r.custom_id: r for r in (decode(Result, o.value) for o in outputs if o.topic == "results")}
    work = {w.custom_id: w for w in (decode(WorkItem, o.value) for o in outputs if o.topic.startswith("work."))}
    decided = {d.custom_id for d in (decode(RoutingDecision, o.value) for o in outputs if o.topic == "decisions")}
    return hits, work, decided


def _answer(item: WorkItem, text: str) -> Result:
    """What a tier worker would put on `results` for this work item."""
    return Result(request_id=item.request_id, job_id=item.job_id, tenant=item.tenant, custom_id=item.custom_id,
                  tier=item.tier, model="smol", status="ok", router_version=item.router_version,
                  response={"choices": [{"message": {"role": "assistant", "content": text}}]},
                  usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}, cost_usd=0.002,
                  submitted_at=item.submitted_at, finished_at=utcnow())


def _settings(tmp_path, **cache):
    from switchyard.settings import Settings

    settings = Settings(data_dir=tmp_path)
    settings.router.explore_rate = 0.0
    settings.cache = settings.cache.model_copy(update=cache)
    return settings


@pytest.fixture(scope="module")
def enabled(tmp_path_factory):
    from switchyard.stages import router_processor

    return router_processor(_settings(tmp_path_factory.mktemp("cache-on"), enabled=True))


def _originals(processor, tenant: str, job: str) -> dict[str, WorkItem]:
    outputs = processor.process([_rec(cid, p, tenant, job, i) for i, (cid, p) in enumerate(ORIGINALS.items())])
    hits, work, decided = _split(outputs)
    assert not hits and set(work) == set(decided) == set(ORIGINALS)
    for item in work.values():
        assert processor.cache.learn(_answer(item, f"answer to {item.custom_id}"))
    return work


def test_repeats_and_paraphrases_are_answered_from_the_cache_and_not_routed(enabled):
    _originals(enabled, "acme", "first")
    records = [_rec(f"again-{cid}", "  " + p.replace(" ", "  ") + " ", "acme", "second", i)
               for i, (cid, p) in enumerate(ORIGINALS.items())]
    records += [_rec(f"para-{cid}", p, "acme", "second", 10 + i) for i, (cid, p) in enumerate(PARAPHRASES.items())]
    records += [_rec(cid, p, "acme", "second", 20 + i) for i, (cid, p) in enumerate(NEAR_MISSES.items())]
    records += [_rec("optout", ORIGINALS["france"], "acme", "second", 30, routing={"cache": False}),
                _rec("sampled", ORIGINALS["france"], "acme", "second", 31, body={"temperature": 0.7}),
                _rec("longer", ORIGINALS["france"], "acme", "second", 32, body={"max_tokens": 64})]
    hits, work, decided = _split(enabled.process(records))
    assert set(hits) == {f"again-{c}" for c in ORIGINALS} | {f"para-{c}" for c in PARAPHRASES}
    assert set(work) == set(decided) == {*NEAR_MISSES, "optout", "sampled", "longer"}  # a hit gets no decision
    for cid in ORIGINALS:
        exact, similar = hits[f"again-{cid}"], hits[f"para-{cid}"]
        assert exact.cache_match == "exact" and exact.cache_similarity == 1.0
        assert similar.cache_match == "similar" and 0.95 <= similar.cache_similarity < 1.0
        for hit in (exact, similar):
            assert hit.cache_source_request_id == f"first:{cid}" and hit.answer_text() == f"answer to {cid}"
            assert hit.cost_usd == 0 and hit.usage.total_tokens == 0 and hit.job_id == "second"


def test_the_same_queries_from_another_tenant_are_never_hits(enabled):
    _originals(enabled, "initech", "mine")
    lines = [(f"o-{c}", p) for c, p in ORIGINALS.items()] + [(f"p-{c}", p) for c, p in PARAPHRASES.items()]
    hits, work, _ = _split(enabled.process([_rec(cid, p, "umbrella", "theirs", i) for i, (cid, p) in enumerate(lines)]))
    assert not hits and len(work) == len(lines)
    # and the tenant that asked first does get its hits
    hits, _, _ = _split(enabled.process([_rec(cid, p, "initech", "again", i) for i, (cid, p) in enumerate(lines)]))
    assert len(hits) == len(lines) and {h.cache_source_request_id.split(":")[0] for h in hits.values()} == {"mine"}


def test_the_cache_disabled_setting_gives_no_hits(tmp_path):
    from switchyard.stages import cache_tasks, router_processor

    settings = _settings(tmp_path)
    assert settings.cache.enabled is False  # off unless switched on
    processor = router_processor(settings)
    assert processor.cache is None and cache_tasks(settings, processor) == []
    for round_ in range(2):
        outputs = processor.process([_rec(f"{cid}-{round_}", p, "acme", "off", i)
                                     for i, (cid, p) in enumerate(ORIGINALS.items())])
        hits, work, decided = _split(outputs)
        assert not hits and len(work) == len(decided) == len(ORIGINALS)


def test_env_settings_reach_the_cache(monkeypatch, tmp_path):
    from switchyard.settings import Settings
    from switchyard.stages import semantic_cache

    monkeypatch.setenv("SWITCHYARD_CACHE__ENABLED", "true")
    monkeypatch.setenv("SWITCHYARD_CACHE__SIMILARITY_THRESHOLD", "0.97")
    monkeypatch.setenv("SWITCHYARD_CACHE__TTL_S", "600")
    cache = semantic_cache(Settings(data_dir=tmp_path))
    assert cache.settings.similarity_threshold == 0.97 and cache.settings.ttl_s == 600


def test_a_restarted_router_refills_from_stored_answers(tmp_path, enabled):
    """Requests and answers stored by the sink's own row functions in a real chDB; the refill
    reads them back, re-embeds them and a new router answers a paraphrase from them."""
    from infra.clickhouse import apply_schema, connect
    from streams.cache import SemanticCache
    from streams.sink import ClickHouseWriter, to_rows
    from schemas import encode
    from switchyard.cache_refill import fill, stored_answers

    dsn = f"chdb://{tmp_path / 'ch'}"
    client = connect(dsn)
    try:
        apply_schema(client)
        queries = [_rec(cid, p, "hooli", "stored", i) for i, (cid, p) in enumerate(ORIGINALS.items())]
        outputs = enabled.process(queries)
        _, work, _ = _split(outputs)
        answers = [_answer(item, f"stored answer to {cid}") for cid, item in work.items()]
        failed = answers[0].model_copy(update={"status": "error", "response": None, "error": "boom"})
        rows = [to_rows(q) for q in queries]
        rows += [to_rows(RawRecord(encode(a), "results", 0, i)) for i, a in enumerate([failed, *answers[1:]])]
        ClickHouseWriter(client).write(rows)
    finally:
        client.close()
    settings = _settings(tmp_path, enabled=True)
    settings.clickhouse.dsn = dsn
    stored = stored_answers(settings)
    assert sorted(r["custom_id"] for r in stored) == sorted(set(ORIGINALS) - {answers[0].custom_id})
    fresh = SemanticCache(settings.cache)
    assert fill(fresh, stored, enabled.embed) == len(ORIGINALS) - 1
    enabled_cache, enabled.cache = enabled.cache, fresh
    try:
        hits, work, _ = _split(enabled.process([_rec(f"p-{cid}", p, "hooli", "later", i)
                                                for i, (cid, p) in enumerate(PARAPHRASES.items())]))
    finally:
        enabled.cache = enabled_cache
    failed_cid = answers[0].custom_id
    assert set(work) == {f"p-{failed_cid}"}  # its stored answer was an error: nothing to reuse
    assert all(h.cache_source_request_id == f"stored:{h.custom_id[2:]}" for h in hits.values())
    assert all(h.answer_text() == f"stored answer to {h.custom_id[2:]}" for h in hits.values())
