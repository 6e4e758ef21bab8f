"""The shipped artifacts and the embedding cache (real MiniLM on a handful of texts)."""
import json
from pathlib import Path

import numpy as np

from router.artifact import DCROUTER_DIR, ROUTERBENCH_DIR, load_default, load_router
from router.base import TIERS, Knobs
from router.embeddings import DIM, embed, embedding_text

SAMPLE_JOB = Path(__file__).resolve().parents[1] / "switchyard" / "data" / "sample_job.jsonl"


def load_routerbench():
    """The shipped router fitted on all train rows of the RouterBench subset."""
    return load_router(ROUTERBENCH_DIR)


def test_default_artifact_knows_the_local_models_and_routes(tmp_path):
    from workers.models import LOCAL_MODELS

    router = load_default()
    assert router.version and router.meta["dataset"] == "local"
    assert router.tiers == {m.name: tier for tier, m in LOCAL_MODELS.items()}
    assert 0 < router.default_alpha < 1  # an operating point chosen by the fit, not the 0.5 fallback
    texts = ["Write a python function to check whether a number is prime.",
             "Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nC) helium\nD) neon\nAnswer:"]
    emb = embed(texts, cache_dir=tmp_path)
    best = router.route(texts, emb, [Knobs(alpha=1.0)] * 2)
    cheap = router.route(texts, emb, [Knobs(alpha=0.0)] * 2)
    assert all(c.predicted_cost_usd <= b.predicted_cost_usd for c, b in zip(cheap, best))
    assert all(c.tier == "small" for c in cheap)
    assert all(c.tier in TIERS and 0 <= c.predicted_quality <= 1 for c in best + cheap)


def test_dcrouter_artifact_is_kept_as_the_experiments_starting_point():
    router = load_router(DCROUTER_DIR)
    assert router.meta["dataset"] == "llmrouter_dcrouter" and router.tiers["llama3-chatqa-1.5-70b"] == "large"


def test_default_router_uses_all_three_tiers_on_the_sample_job(tmp_path):
    """At the default knob the live stream must exercise small, medium and large."""
    texts = [json.loads(line)["body"]["messages"][-1]["content"] for line in SAMPLE_JOB.read_text().splitlines()]
    assert len(texts) == 30
    router = load_default()
    choices = router.route(texts, embed(texts, cache_dir=tmp_path), [Knobs()] * len(texts))
    tiers = [c.tier for c in choices]
    assert set(tiers) == set(TIERS), {t: tiers.count(t) for t in TIERS}
    # what the local models' outcomes taught it: the 135M model does not get grade-school math or
    # code, which the bigger models solve, and the questions no local model answers (competition
    # math, open trivia) mostly stay with it: a bigger tier there is cost without gain
    tasks = [json.loads(line)["task"] for line in SAMPLE_JOB.with_name("sample_job.grades.jsonl").read_text().splitlines()]
    assert all(t != "small" for t, task in zip(tiers, tasks) if task in ("gsm8k", "mbpp"))
    unsolved = [t for t, task in zip(tiers, tasks) if task in ("math", "natural_qa", "trivia_qa")]
    assert unsolved.count("small") > len(unsolved) / 2, unsolved


def test_routerbench_artifact_loads_and_routes(tmp_path):
    router = load_routerbench()
    assert router.meta["dataset"] == "routerbench_subset" and set(router.tiers.values()) == set(TIERS)
    assert router.tiers["gpt-4-1106-preview"] == "large" and router.tiers["mistralai/mistral-7b-chat"] == "small"
    texts = ["Write a python function to check whether a number is prime."]
    emb = embed(texts, cache_dir=tmp_path)
    assert router.route(texts, emb, [Knobs(alpha=1.0)])[0].tier in TIERS
    assert router.route(texts, emb, [Knobs(alpha=0.0)])[0].model == "mistralai/mistral-7b-chat"


def test_embeddings_are_normalised_and_cached(tmp_path):
    texts = ["hello world", "hello world", "a different sentence"]
    e1 = embed(texts, cache_dir=tmp_path)
    assert e1.shape == (3, DIM) and e1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e1[0], e1[1])
    assert list(tmp_path.glob("shard-*.npz"))

    class NoEncoder:
        def encode(self, *a, **k):
            raise AssertionError("cache miss: encoder called")

    e2 = embed(texts, encoder=NoEncoder(), cache_dir=tmp_path)
    np.testing.assert_allclose(e1, e2)


def test_long_prompts_keep_their_tail():
    text = "EXEMPLAR " * 500 + "the actual question?"
    assert embedding_text(text).endswith("the actual question?") and len(embedding_text(text)) < 1100


LOCAL_OUTCOMES = SAMPLE_JOB.with_name("local_outcomes.jsonl.gz")
MATH_AND_CODE = ("gsm8k", "agentverse-mgsm", "mbpp", "human_eval")
UNSOLVED = ("math", "natural_qa", "trivia_qa")  # no local model scores on them (the committed outcomes)


def test_refitted_on_the_local_outcomes_math_and_code_go_up_and_unsolved_questions_stay_small():
    """Fit on three quarters of the local models' outcomes as retraining does (kind "auto"), route
    the held-back quarter at the default knob: grade-school math and code go to medium or large
    clearly more often than the tasks no local model answers, where a bigger tier buys nothing.
    The stack alone fails this (it sends nearly all of them up: docs/learning.md)."""
    from collections import defaultdict

    from router.data import build_table, load_rows
    from router.outcomes import fit_on_outcomes
    from switchyard.graded import in_holdout

    rows = load_rows([LOCAL_OUTCOMES])
    tiers = {r["model"]: r["tier"] for r in rows}
    task_of = {r["query_id"]: r["task"] for r in rows}
    table = build_table(rows)
    emb = embed(table.texts)
    held = np.array([in_holdout(q, 0.25) for q in table.query_ids])
    router = fit_on_outcomes(table.subset(np.flatnonzero(~held)), emb[~held], tiers)
    assert router.meta["kind_selection"]  # both kinds were judged
    test = table.subset(np.flatnonzero(held))
    picked = [c.tier for c in router.route(test.texts, emb[held], [Knobs()] * len(test))]
    up = defaultdict(list)
    for qid, tier in zip(test.query_ids, picked):
        task = task_of[qid]
        group = "math_code" if task in MATH_AND_CODE else "unsolved" if task in UNSOLVED else None
        if group:
            up[group].append(tier != "small")
    assert len(up["math_code"]) >= 5 and len(up["unsolved"]) >= 5
    assert np.mean(up["math_code"]) >= np.mean(up["unsolved"]) + 0.3, {k: np.mean(v) for k, v in up.items()}


def test_a_format_knn_router_round_trips_through_its_artifact(tmp_path):
    from router.artifact import save_router
    from router.data import build_table, load_rows
    from router.learned import fit_router

    rows = load_rows([LOCAL_OUTCOMES])
    table = build_table(rows).subset(np.arange(60))
    emb = embed(table.texts)
    router = fit_router("format_knn", table, emb, tiers={r["model"]: r["tier"] for r in rows})
    save_router(router, tmp_path / "r")
    again = load_router(tmp_path / "r")
    assert again.quality_model.kind == "format_knn" and again.version == router.version
    np.testing.assert_allclose(again.predict(table.texts, emb).quality, router.predict(table.texts, emb).quality,
                               atol=2e-3)  # scores stored as float16
