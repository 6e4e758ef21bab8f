"""Transfer across models and tasks (issue 16): the pooled IRT quality model on tables with
missing cells, the transfer protocol, and `router fit --data A,B` → `router route --allowed-models`."""
import json

import numpy as np
import pytest

from router.artifact import load_router, save_router
from router.bench.transfer import random_share, share_to_reach, transfer_bench, union_tables
from router.data import RoutingTable, build_table
from router.features import text_features
from router.irt import PooledQuality
from router.learned import fit_router
from tests.test_router_cli import run, write_jsonl

DIM = 32


def irt_dataset(name, models, ability, tasks, n_per_task, rng, direction, centers):
    """Queries whose difficulty is linear in their embedding (shared by every model):
    P(m solves q) = σ(θ_m − 4·⟨u, e_q⟩)."""
    emb, task_of = [], []
    for t in tasks:
        e = centers[t] + 0.5 * rng.normal(size=(n_per_task, DIM))
        emb.append(e)
        task_of += [f"t{t}"] * n_per_task
    emb = np.vstack(emb)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    b = 4.0 * emb @ direction
    p = 1 / (1 + np.exp(-(np.asarray(ability)[None] - 2.0 * b[:, None])))
    scores = (rng.random(p.shape) < p).astype(float)
    n = len(emb)
    texts = [f"{name} question {i} about task {task_of[i]}" for i in range(n)]
    price = np.geomspace(1, 20, len(models))[np.argsort(np.argsort(ability))] * 1e-6
    costs = np.array([len(t) for t in texts], float)[:, None] * price[None]
    table = RoutingTable(name, [f"{name}-{i}" for i in range(n)], texts, list(models), scores, costs, ["train"] * n,
                         task_of)
    return table, emb


@pytest.fixture(scope="module")
def two_datasets():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    centers = rng.normal(size=(4, DIM)) * 0.3
    a, ea = irt_dataset("A", ["a-weak", "a-mid", "a-mid2", "a-strong"], [-1.0, 0.0, 0.3, 1.5], [0, 1], 150, rng,
                        direction, centers)
    b, eb = irt_dataset("B", ["b-weak", "b-mid", "b-strong"], [-0.5, 0.5, 1.2], [0, 1, 2, 3], 150, rng,
                        direction, centers)
    return {"A": a, "B": b}, {"A": ea, "B": eb}, direction


def test_build_table_keeps_missing_cells_as_nan_only_when_asked():
    rows = [{"query_id": "q1", "query_text": "a", "model": "m1", "score": 1, "cost_usd": 0.1},
            {"query_id": "q1", "query_text": "a", "model": "m2", "score": 0, "cost_usd": 0.2},
            {"query_id": "q2", "query_text": "b", "model": "m1", "score": 0, "cost_usd": 0.1}]
    assert len(build_table(rows)) == 1
    t = build_table(rows, complete=False)
    assert t.query_ids == ["q1", "q2"] and np.isnan(t.scores[1, 1]) and np.isnan(t.costs[1, 1])


def test_pooled_fits_with_nan_cells_and_predicts_every_model(two_datasets):
    tables, embs, direction = two_datasets
    union, source = union_tables(tables)
    assert np.isnan(union.scores).mean() > 0.3 and list(source[:2]) == [0, 0]
    emb = np.vstack(list(embs.values()))
    router = fit_router("pooled", union, emb)
    assert router.calibration is None  # no realised costs to calibrate on: α is uncalibrated
    pred = router.predict(union.texts, emb)
    assert pred.quality.shape == (len(union), 7)
    assert np.isfinite(pred.quality).all() and np.isfinite(pred.cost).all()
    # the shared difficulty is recovered from both datasets' outcomes
    model = router.quality_model
    assert isinstance(model, PooledQuality)
    fitted = model.difficulty(emb, text_features(union.texts))
    assert np.corrcoef(emb @ direction, fitted)[0, 1] > 0.8


def test_pooled_artifact_round_trip_gives_identical_predictions(two_datasets, tmp_path):
    tables, embs, _ = two_datasets
    union, _ = union_tables(tables)
    emb = np.vstack(list(embs.values()))
    router = fit_router("pooled", union, emb)
    save_router(router, tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    a, b = router.predict(union.texts[:50], emb[:50]), loaded.predict(union.texts[:50], emb[:50])
    np.testing.assert_array_equal(a.quality, b.quality)
    np.testing.assert_array_equal(a.cost, b.cost)
    assert loaded.sweep_settings(5) == router.sweep_settings(5)


def test_share_to_reach_and_random_share():
    assert random_share(0.8, 0.6) == pytest.approx((0.76 - 0.6) / 0.2)
    assert random_share(0.8, 0.79) == 0.0
    # the random line itself reads its own share
    s = np.linspace(0, 1, 11)
    assert share_to_reach(s, 0.6 + 0.2 * s, 0.8) == pytest.approx(random_share(0.8, 0.6))
    assert share_to_reach([0, 1], [0.5, 0.7], 0.8) == 1.0  # never reaches 95 %: all strong


def test_pooled_routes_a_hidden_task_and_pair_better_than_random(two_datasets):
    tables, embs, _ = two_datasets
    res = transfer_bench(tables, embs, routers=("pooled", "knn"), n_pairs=1, points=21, hide="dataset",
                         tasks={"A": ["t1"], "B": []})
    (case,) = res["cases"]
    assert case["strong"] == "a-strong" and case["task"] == "t1"
    shares = case["share_to_95"]
    assert shares["random"] > 0.3
    # a constant predictor would route all-or-nothing and read exactly the random share
    assert shares["pooled"] < shares["random"] - 0.1
    agg = res["overall"]
    assert agg["pooled"]["wins_vs_random"] == 1 and agg["n_nontrivial"] == 1


def test_router_fit_on_two_datasets_then_route_any_pair(tmp_path):
    def rows(dataset, models, n=24):
        out = []
        for i in range(n):
            hard = i % 3 == 0
            text = (f"Prove the theorem number {i} about primes." if hard else f"What is {i} plus {i}?")
            for j, m in enumerate(models):
                out.append({"dataset": dataset, "query_id": f"{dataset}-{i}", "query_text": text, "model": m,
                            "score": float(not hard or j == len(models) - 1), "cost_usd": 0.001 * (j * 9 + 1),
                            "split": "train"})
        return out

    a = write_jsonl(tmp_path / "a.jsonl", rows("A", ["a-small", "a-big"]))
    b = write_jsonl(tmp_path / "b.jsonl.gz", rows("B", ["b-small", "b-mid", "b-big"]))
    r = run("router", "fit", "--data", f"{a},{b}", "--out", tmp_path / "art")
    assert r.exit_code == 0, r.output
    assert "pooled" in r.output
    assert json.loads((tmp_path / "art" / "router.json").read_text())["quality_kind"] == "pooled"
    q = write_jsonl(tmp_path / "q.jsonl", [{"query_id": f"n{i}", "query_text": t} for i, t in
                                           enumerate(["Prove the theorem about squares.", "What is 3 plus 4?"])])
    r = run("router", "route", "--router", tmp_path / "art", "--queries", q, "--allowed-models", "a-big,b-small",
            "--sweep", 5, "--out", tmp_path / "out.jsonl")
    assert r.exit_code == 0, r.output
    picks = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(picks) == 10 and {p["model"] for p in picks} <= {"a-big", "b-small"}
    assert {p["model"] for p in picks if p["point"] == 0} == {"b-small"}  # α = 0: the cheaper one
    # one dataset, default kind: unchanged (the switchyard stack, complete table)
    r = run("router", "fit", "--data", a, "--out", tmp_path / "one", "--kind", "knn")
    assert r.exit_code == 0, r.output


def test_a_budget_with_allowed_models_is_met_on_the_batch():
    """budget_lambda with a model mask: masked cells must not poison its λ scale (they did: the
    median over NaN cells is NaN, and every interior budget came back as λ = ∞, all cheapest)."""
    from router.policy import budget_lambda, lagrangian_choice

    rng = np.random.default_rng(0)
    quality, cost = rng.random((200, 4)), rng.uniform(1e-4, 1e-3, (200, 4))
    mask = np.array([True, False, True, False])
    cheap = cost[np.arange(200), lagrangian_choice(quality, cost, float("inf"), mask)].mean()
    best = cost[np.arange(200), lagrangian_choice(quality, cost, 0.0, mask)].mean()
    target = (cheap + best) / 2
    lam = budget_lambda(quality, cost, target, mask)
    spend = cost[np.arange(200), lagrangian_choice(quality, cost, lam, mask)].mean()
    assert np.isfinite(lam) and spend <= target and spend > cheap + 0.8 * (target - cheap)


def test_an_uncalibrated_sweep_spreads_its_points_over_the_batch_spend(two_datasets):
    """The pooled router has no calibration: its sweep's points split the batch's predicted spend
    evenly, so the share of strong calls between an allowed pair climbs in even steps instead of
    jumping from none to all within a few points."""
    from router.base import Knobs

    tables, embs, _ = two_datasets
    union, _ = union_tables(tables)
    emb = np.vstack(list(embs.values()))
    router = fit_router("pooled", union, emb)
    assert router.calibration is None
    pair = ("a-strong", "b-weak")  # one model of each dataset
    pred = router.predict(union.texts, emb)
    mask = router.model_mask(Knobs(allowed_models=pair))
    strong = max(pair, key=lambda m: pred.cost[:, router.models.index(m)].mean())
    shares = [float((picks == router.models.index(strong)).mean()) for _, picks in router.sweep_picks(pred, 21, mask)]
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert np.all(np.diff(shares) >= 0) and max(np.diff(shares)) < 0.15, shares
