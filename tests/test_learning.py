"""The learning loop's pure parts: exploration, outcome tables, off-policy estimates, the gate,
feedback files, artifacts as bytes. Real MiniLM where texts are embedded."""
from __future__ import annotations

import json

import numpy as np
import pytest

from router.base import TIERS
from router.explore import affordable_tiers, explore
from router.outcomes import (Estimate, GateRules, Outcome, OutcomeError, gate, outcome_table, snips,
                             tier_models)
from schemas import Feedback, RouterVersion
from switchyard.feedback import feedback_lines
from switchyard.retrain import split_recent


def test_exploration_rate_and_propensities_match_the_mixture():
    rate = 0.3
    picks = [explore(f"job:{i}", "small", rate) for i in range(6000)]
    explored = np.mean([p.explored for p in picks])
    assert abs(explored - rate) < 0.03
    off = [p for p in picks if p.tier != "small"]
    assert abs(len(off) / len(picks) - rate * 2 / 3) < 0.03
    assert all(p.propensity == pytest.approx(rate / 3) for p in off)
    assert all(p.propensity == pytest.approx(1 - rate + rate / 3) for p in picks if p.tier == "small")
    # the same request always gets the same pick (a replayed message is routed the same way)
    assert [explore(f"job:{i}", "small", rate) for i in range(50)] == picks[:50]


def test_no_exploration_at_rate_zero():
    assert all(explore(f"j:{i}", "large", 0.0) == explore(f"j:{i}", "large", 0.0) for i in range(10))
    assert {explore(f"j:{i}", "large", 0.0).tier for i in range(500)} == {"large"}
    with pytest.raises(ValueError):
        explore("j:1", "small", 1.5)


def test_exploration_under_a_budget_draws_only_tiers_the_budget_pays_for():
    costs = {"small": 1e-5, "medium": 4e-5, "large": 2e-4}
    assert affordable_tiers(costs, None, "small") == TIERS
    assert affordable_tiers(costs, 5e-5, "small") == ("small", "medium")
    # the policy's own tier stays (the policy answers for the budget), however dear
    assert affordable_tiers(costs, 5e-6, "large") == ("large",)
    rate = 0.6
    picks = [explore(f"job:{i}", "small", rate, ("small", "medium")) for i in range(6000)]
    assert {p.tier for p in picks} == {"small", "medium"}
    medium = [p for p in picks if p.tier == "medium"]
    assert abs(len(medium) / len(picks) - rate / 2) < 0.03
    assert all(p.propensity == pytest.approx(rate / 2) for p in medium)
    assert all(p.propensity == pytest.approx(1 - rate / 2) for p in picks if p.tier == "small")
    # a policy tier outside the drawable set is never drawn by exploration: its propensity is 1 − ε
    off = [explore(f"j:{i}", "large", rate, ("small", "medium")) for i in range(2000)]
    assert all(p.propensity == pytest.approx(1 - rate) for p in off if p.tier == "large")
    assert all(p.explored for p in off if p.tier != "large")


def _emb(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


COLUMNS = {"small": "s", "medium": "m", "large": "l"}


def test_outcome_table_keeps_observed_cells_and_imputes_the_rest_with_ipw():
    # two query families: in family A large scores 1, in family B small scores 1
    outcomes, embs = [], []
    base = _emb(2, seed=1)
    rng = np.random.default_rng(2)
    for i in range(60):
        fam = i % 2
        e = base[fam] + 0.05 * rng.normal(size=8)
        e /= np.linalg.norm(e)
        tier = TIERS[i % 3]
        good = "large" if fam == 0 else "small"
        outcomes.append(Outcome(f"q{i}", tier, 1.0 if tier == good else 0.0, {"small": 1, "medium": 2, "large": 5}[tier]))
        embs.append(e)
    table, q_emb, observed = outcome_table(outcomes, np.array(embs), COLUMNS)
    assert table.models == ["s", "m", "l"] and observed.sum() == 60 and observed.shape == (60, 3)
    for i, o in enumerate(outcomes):
        assert table.scores[i, TIERS.index(o.tier)] == o.score  # observed cells untouched
    fam0 = np.arange(60) % 2 == 0
    # imputed large cells in family A are high, in family B low
    assert table.scores[fam0 & ~observed[:, 2], 2].mean() > 0.6
    assert table.scores[~fam0 & ~observed[:, 2], 2].mean() < 0.4
    assert not np.isnan(table.scores).any() and not np.isnan(table.costs).any()


def test_outcome_table_needs_every_tier_observed():
    with pytest.raises(OutcomeError, match="large"):
        outcome_table([Outcome("a", "small", 1, 1), Outcome("b", "medium", 0, 2)], _emb(2), COLUMNS)


def test_tier_models_are_unique_when_one_model_serves_every_tier():
    assert tier_models({"small": "a", "medium": "b", "large": "c"}) == {"small": "a", "medium": "b", "large": "c"}
    assert len(set(tier_models({"small": "a", "medium": "a", "large": "a"}).values())) == 3


def test_snips_is_exact_on_full_information_and_weights_by_propensity():
    full = [Outcome("q", t, s, c) for t, s, c in [("small", 0.0, 1), ("medium", 1.0, 2), ("large", 1.0, 5)]]
    assert snips(["medium"] * 3, full) == Estimate(1.0, 2.0, 1, 3)
    # a logged pick with propensity 0.1 counts ten times one with propensity 1
    logged = [Outcome("a", "large", 1.0, 5, propensity=0.1), Outcome("b", "large", 0.0, 5, propensity=1.0)]
    assert snips(["large", "large"], logged).quality == pytest.approx(10 / 11)
    assert np.isnan(snips(["small", "small"], logged).quality)


def test_gate_refuses_a_worse_candidate_and_says_why():
    current = Estimate(0.50, 1.0, 40, 40)
    curve = [(0.2, 0.30), (1.0, 0.50), (3.0, 0.60)]  # the current version's α sweep
    ok, why = gate(Estimate(0.40, 0.5, 40, 40), current, curve)
    assert ok  # 0.40 beats the 0.375 the current reaches at cost 0.5 (between its first two points)
    ok, why = gate(Estimate(0.40, 0.5, 40, 40), current, [(0.5, 0.45), (1.0, 0.5)])
    assert not ok  # …here it reaches 0.45 for the same money
    ok, why = gate(Estimate(0.70, 2.0, 40, 40), current, curve)
    assert ok and "better quality" in why  # dearer, but above what the current buys at that cost
    ok, why = gate(Estimate(0.56, 2.5, 40, 40), current, curve)
    assert not ok  # the current reaches 0.575 at 2.5
    ok, why = gate(Estimate(0.50, 0.6, 40, 40), current, [(1.0, 0.5)])
    assert ok and "same quality for less" in why
    ok, why = gate(Estimate(0.9, 0.1, 3, 40), current, curve, GateRules(min_matched=10))
    assert not ok and "too little held-back evidence" in why


def test_split_recent_holds_back_whole_queries_by_latest_feedback():
    outcomes = [Outcome(f"q{i % 10}", "small", 1, 1, at=float(i)) for i in range(30)]
    train, held = split_recent(outcomes, 0.2)
    assert {o.text for o in held} == {"q8", "q9"} and not {o.text for o in train} & {"q8", "q9"}


def test_feedback_lines_flag_problems_and_keep_every_line():
    lines = [b'{"custom_id": "a", "score": 0.5}', b'{"custom_id": "b", "thumbs": "up"}',
             b'{"custom_id": "c", "score": 1.7}', b'{"custom_id": "d", "score": "great"}',
             b'{"custom_id": "e", "thumbs": "sideways"}', b'not json', b'{"score": 1}']
    parsed = feedback_lines("job1", lines)
    assert len(parsed) == len(lines)
    problems = [p for _, _, p in parsed]
    assert problems[:2] == [None, None] and all(problems[2:])
    assert "less than or equal to 1" in problems[2] and "thumbs" in problems[4]
    up = Feedback.model_validate_json(parsed[1][1])
    assert up.score == 1.0 and up.request_id == "job1:b" and up.source == "rating"
    assert json.loads(parsed[2][1])["score"] == 1.7  # sent as written: the sink dead-letters it


def test_feedback_rejects_nan_scores():
    with pytest.raises(ValueError):
        Feedback(request_id="j:a", job_id="j", source="label", score=float("nan"))


def test_published_versions_need_an_artifact():
    with pytest.raises(ValueError, match="artifact"):
        RouterVersion(version="v1", verdict="published")
    assert RouterVersion(version="v1", verdict="refused", reason="not better").artifact_base64 == ""


def test_a_code_answer_that_loops_forever_is_graded_zero_within_the_time_limit():
    from datetime import datetime, timezone

    from schemas import Result
    from switchyard.feedback import Reference, auto_grade

    now = datetime.now(timezone.utc)
    answer = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    result = Result(request_id="j:loop", job_id="j", tenant="t", custom_id="loop", tier="large", model="m",
                    status="ok", response={"choices": [{"message": {"role": "assistant", "content": answer}}]},
                    router_version="v", submitted_at=now)
    ref = Reference("loop", "code_eval", "['assert add(1, 2) == 3']", query="Write a function add(a, b).")
    [fb] = auto_grade([result], {"loop": ref})
    assert fb.score == 0.0 and "timed out" in fb.comment


def _family_outcomes(best_tier_by_family: dict[int, str], n: int, start_at: float = 0.0) -> list[Outcome]:
    """Queries of two kinds (arithmetic, trivia); every tier observed on each query."""
    cost = {"small": 1e-6, "medium": 5e-6, "large": 2.5e-5}
    out = []
    for i in range(n):
        fam = i % 2
        text = (f"What is {i} plus {3 * i + 7}? Show your work." if fam == 0
                else f"Which country has the city number {i} on the list of capitals?")
        for tier in TIERS:
            out.append(Outcome(text, tier, 1.0 if tier == best_tier_by_family[fam] else 0.0, cost[tier],
                               at=start_at + i))
    return out


def test_retrain_refuses_a_candidate_worse_on_recent_feedback(tmp_path):
    """Old outcomes say small answers everything; the recent (held-back) ones say arithmetic needs
    large. The current version learnt the recent truth; a candidate fitted on the old rows is
    worse where it matters, and the gate says so."""
    from router.embeddings import embed
    from router.outcomes import fit_on_outcomes, outcome_table
    from switchyard.retrain import RetrainOptions, retrain

    served = {"small": "s", "medium": "m", "large": "l"}
    embed_ = lambda texts: embed(texts, cache_dir=tmp_path)  # noqa: E731
    recent_truth = {0: "large", 1: "small"}
    truth_rows = _family_outcomes(recent_truth, 40)
    table, q_emb, _ = outcome_table(truth_rows, embed_([o.text for o in truth_rows]), served)
    tiers = {"s": "small", "m": "medium", "l": "large"}
    current = fit_on_outcomes(table, q_emb, tiers, kind="sw_ranking")
    old = _family_outcomes({0: "small", 1: "small"}, 60)
    recent = [Outcome(o.text + " (new)", o.tier, o.score, o.cost_usd, at=1000 + o.at)
              for o in _family_outcomes(recent_truth, 20)]
    options = RetrainOptions(holdout_share=0.25, min_outcomes=10, kind="sw_ranking")
    result = retrain(old + recent, current, served, embed_, options)
    v = result.verdict
    assert v.verdict == "refused" and v.artifact_base64 == ""
    assert "not better" in v.reason, v.reason
    cand, cur = result.metrics["candidate"]["default"], result.metrics["current"]["default"]
    assert cand["quality"] < cur["quality"]
    # and the same machinery publishes a candidate that learnt the recent truth
    stale = fit_on_outcomes(*outcome_table(old, embed_([o.text for o in old]), served)[:2], tiers, kind="sw_ranking")
    better = retrain(truth_rows + recent, stale, served, embed_, options)
    assert better.verdict.verdict == "published", better.verdict.reason
    assert better.verdict.artifact_base64


def test_the_schedule_retrains_on_enough_feedback_or_enough_time_with_some():
    from switchyard.settings import RetrainSettings
    from switchyard.stages import retrain_due

    r = RetrainSettings(every_feedback=100, every_minutes=10)
    assert retrain_due(r, 100, 0) and not retrain_due(r, 99, 599)
    assert retrain_due(r, 1, 600) and not retrain_due(r, 0, 10_000)


def test_the_schedule_retrains_early_when_the_live_mix_drifted_and_some_feedback_is_new():
    from switchyard.settings import RetrainSettings
    from switchyard.stages import retrain_due

    r = RetrainSettings(every_feedback=100, every_minutes=10, drift_threshold=0.4, drift_min_requests=50)
    assert retrain_due(r, 1, 0, drift=0.4, drift_requests=50)
    assert not retrain_due(r, 0, 0, drift=0.9, drift_requests=500)  # nothing new to learn from
    assert not retrain_due(r, 1, 0, drift=0.39, drift_requests=500)
    assert not retrain_due(r, 1, 0, drift=0.9, drift_requests=49)  # too few decisions to tell
    assert not retrain_due(r, 1, 0, drift=None, drift_requests=500)  # the router records no training mix


def test_with_every_tier_at_one_price_the_default_operating_point_follows_quality(tmp_path):
    """One model at one price on every tier (the lean stack): the tiers' costs differ only by a
    token here and there, so cost offers no trade-off. The default α must not be fitted to that
    noise (it came out NaN, and the picks then followed rounding error, not the feedback)."""
    import random

    from router.embeddings import embed
    from router.learned import choose_default_alpha
    from router.outcomes import fit_on_outcomes, picked_tiers, tier_models

    prompts = {"math": "What is {i} times {j}? Give the number.",
               "chat": "Write a friendly one-line greeting for guest number {i}."}
    columns = tier_models({"small": "m", "medium": "m", "large": "m"})
    tiers = {m: t for t, m in columns.items()}
    rng = np.random.default_rng(19)  # the draw whose calibrated costs differ by ~1e-8 relative
    rows = [Outcome(p.format(i=i, j=i + 3), tier, float(tier == ("large" if kind == "math" else "small")),
                    (1.16e-6 if kind == "math" else 1.18e-6) + float(rng.choice([0, 0, 2e-8])))
            for tier in TIERS for i in range(12) for kind, p in prompts.items()]
    random.Random(19).shuffle(rows)
    embed_ = lambda texts: embed(texts, cache_dir=tmp_path)  # noqa: E731
    table, q_emb, _ = outcome_table(rows, embed_([o.text for o in rows]), columns)
    router = fit_on_outcomes(table, q_emb, tiers, kind="sw_ranking")
    assert router.meta["default_alpha"] == 1.0 == choose_default_alpha(router, 0.95)
    queries = [prompts["math"].format(i=77, j=3), prompts["chat"].format(i=77)]
    emb = embed_(queries)
    assert picked_tiers(router, queries, emb) == ["large", "small"]
    assert picked_tiers(router, queries, emb, alpha=0.5) == ["large", "small"]  # α cannot buy savings here


def test_the_default_operating_point_keeps_quality_when_the_good_picks_cost_least():
    """Tiers whose prices differ less than their answers' lengths: the best-quality operating
    points can cost less than sending everything to the cheapest tier. The default α must still
    land on a point that keeps the quality (it was 0, which routes everything to the cheapest)."""
    from types import SimpleNamespace

    from router.learned import choose_default_alpha
    from router.policy import UTILITY, Calibration, setting_for_alpha

    settings = np.concatenate([[0.0], np.geomspace(1e3, 1e7, 30), [np.inf]])
    quality = np.where(np.arange(len(settings)) < 20, 0.9, 0.14)
    cost = np.where(np.arange(len(settings)) < 20, 1.4e-6, 1.5e-6)  # the good picks are the cheap ones
    cost[0] = 1.6e-6
    cal = Calibration(settings, cost, quality)
    alpha = choose_default_alpha(SimpleNamespace(calibration=cal, policy=UTILITY), 0.95)
    lam = setting_for_alpha(cal, UTILITY, alpha)
    assert quality[min(np.searchsorted(settings, lam), len(settings) - 1)] >= 0.95 * 0.9
    assert 0 < alpha < 1


def test_the_format_knn_router_names_semantic_clusters_and_keeps_them_through_a_round_trip(tmp_path):
    from router.artifact import load_router, save_router
    from router.data import RoutingTable
    from router.learned import fit_router

    rng = np.random.default_rng(3)
    texts = [f"question {i} about topic {i % 3}" for i in range(60)]
    emb = rng.normal(size=(60, 8)).astype(np.float32) + np.eye(8, dtype=np.float32)[np.arange(60) % 3] * 4
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.random((60, 2))
    costs = np.tile([1e-6, 1e-5], (60, 1))
    table = RoutingTable("t", [str(i) for i in range(60)], texts, ["a", "b"], scores, costs, ["train"] * 60)
    router = fit_router("format_knn", table, emb)
    clusters = router.predict(texts, emb).cluster
    assert (clusters >= 0).all() and len(set(clusters)) > 1
    assert router.training_mix and abs(sum(router.training_mix) - 1) < 1e-4
    save_router(router, tmp_path / "r")
    again = load_router(tmp_path / "r")
    assert (again.predict(texts, emb).cluster == clusters).all()
