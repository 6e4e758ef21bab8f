"""Cross-validated bench: folds by query_id, every query scored once out of fold, bootstrap intervals."""
import json

import numpy as np
import pytest

from router.bench.evaluate import LOWER_IS_BETTER, bench_cv
from router.bench.metrics import Reference, curve_metrics
from router.bench.splits import cv_folds
from router.bench.threads import single_threaded
from router.data import RoutingDataError
from router.learned import fit_router
from tests.synthetic import make_table


def test_cv_folds_are_seeded_balanced_and_by_query_id():
    ids = [f"q{i}" for i in range(1003)]
    a = cv_folds(ids, 5, seed=0)
    assert (a == cv_folds(ids, 5, seed=0)).all()
    assert sorted(np.bincount(a)) == [200, 200, 201, 201, 201]
    assert (cv_folds(ids, 5, seed=1) != a).any()
    # a query's fold depends on its id only, not on row order
    perm = np.random.default_rng(0).permutation(len(ids))
    b = cv_folds([ids[i] for i in perm], 5, seed=0)
    assert np.bincount(b).tolist() == np.bincount(a).tolist()
    with pytest.raises(RoutingDataError):
        cv_folds(ids[:3], 5)


POINTS = 11


@pytest.fixture(scope="module")
def cv_result():
    table, emb = make_table(n=300)
    folds = cv_folds(table.query_ids, 3, seed=0)
    res = bench_cv(table, emb, folds, routers=("classifier", "knn", "cluster"), points=POINTS, n_bootstrap=200,
                   default="classifier")
    return table, emb, folds, res


def _by_hand(table, emb, folds, name):
    """Refit `name` per fold by hand and route only the held-out fold at every knob point: the
    knob values and the realised (points, queries) cost and quality, every query scored once."""
    cost, quality, knobs = np.full((POINTS, len(table)), np.nan), np.full((POINTS, len(table)), np.nan), None
    for f in np.unique(folds):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        with single_threaded():
            r = fit_router(name, table.subset(tr), emb[tr], calibrate_budget=False, seed=0)
            pred = r.predict([table.texts[i] for i in te], emb[te])
        settings = r.sweep_settings(POINTS)
        knobs = [a for a, _ in settings]
        for j, (_, setting) in enumerate(settings):
            pick = r.choose_setting(pred, setting)
            cost[j, te], quality[j, te] = table.costs[te, pick], table.scores[te, pick]
    assert not np.isnan(cost).any()
    return knobs, cost, quality


def _fixed_references(table):
    """The best single model (highest mean quality, cheaper on ties) and the cheapest one."""
    q, c = table.scores.mean(axis=0), table.costs.mean(axis=0)
    return int(np.lexsort((c, -q))[0]), int(np.lexsort((-q, c))[0])


def _reference(table, rows, best, cheap):
    return Reference(float(table.scores[rows, best].mean()), float(table.costs[rows, best].mean()),
                     float(table.scores[rows, cheap].mean()), float(table.costs[rows, cheap].mean()))


def _curve(cost, quality, rows):
    return list(zip(cost[:, rows].mean(axis=1), quality[:, rows].mean(axis=1)))


def _same(a: dict, b: dict) -> bool:
    return all(a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12, nan_ok=True) for k in a) and set(a) == set(b)


def test_cv_pools_out_of_fold_picks_over_every_query(cv_result):
    table, emb, folds, res = cv_result
    assert res.n_eval == len(table) and res.n_folds == 3
    best, cheap = _fixed_references(table)
    for name in ("knn", "classifier"):
        # every knob point of the pooled curve equals refitting per fold by hand and routing only
        # the held-out fold at that point
        knobs, cost, quality = _by_hand(table, emb, folds, name)
        curve = res.curves[name]
        assert [p["knob"] for p in curve] == pytest.approx(knobs) and len(curve) == POINTS
        assert [p["cost"] for p in curve] == pytest.approx(cost.mean(axis=1).tolist(), rel=1e-12)
        assert [p["quality"] for p in curve] == pytest.approx(quality.mean(axis=1).tolist(), rel=1e-12)
        # the pooled metrics are read off that curve against the best single / cheapest model
        assert _same(res.metrics[name], curve_metrics(_curve(cost, quality, np.arange(len(table))),
                                                      _reference(table, np.arange(len(table)), best, cheap)))
        # the fold spread: each fold's metrics on its own queries, against its own references
        by_fold = [curve_metrics(_curve(cost, quality, rows := np.flatnonzero(folds == f)),
                                 _reference(table, rows, best, cheap)) for f in range(3)]
        for metric, spread in res.fold_metrics[name].items():
            values = [m[metric] for m in by_fold]
            assert spread["values"] == pytest.approx(values, nan_ok=True), (name, metric)
            if np.isfinite(values).any():
                assert spread["mean"] == pytest.approx(np.nanmean(values))
                assert spread["std"] == pytest.approx(np.nanstd(values), abs=1e-12)
    # the curves really differ by knob: cost rises from α = 0 to α = 1
    assert res.curves["knn"][-1]["cost"] > res.curves["knn"][0]["cost"]


def test_cv_reports_intervals_paired_differences_and_fold_spread(cv_result):
    table, emb, folds, res = cv_result
    for name in ("classifier", "knn", "cluster", "random"):
        lo, hi, share = res.intervals[name]["auc"]
        assert lo <= res.metrics[name]["auc"] <= hi and share == 1.0 and lo < hi
    # An independent paired bootstrap (own resampling of query indices, own seed, 1000 draws) on
    # the per-query outcomes refitted by hand: P(default better) and the share of resamples where
    # the metric is defined must agree with the bench's (200 draws) within sampling noise.
    hand = {name: _by_hand(table, emb, folds, name)[1:] for name in ("classifier", "knn", "cluster")}
    best, cheap = _fixed_references(table)
    rng = np.random.default_rng(12345)
    draws = {name: [] for name in hand}
    for _ in range(1000):
        rows = rng.integers(0, len(table), len(table))
        ref = _reference(table, rows, best, cheap)
        for name, (cost, quality) in hand.items():
            draws[name].append(curve_metrics(_curve(cost, quality, rows), ref))
    checked = 0
    for base in ("knn", "cluster"):
        assert set(res.paired[base]) == set(res.metrics["classifier"])
        point = {k: res.metrics["classifier"][k] - res.metrics[base][k] for k in res.paired[base]}
        for metric, d in res.paired[base].items():
            diff = np.array([a[metric] - b[metric] for a, b in zip(draws["classifier"], draws[base])])
            ok = np.isfinite(diff)
            assert d["defined_share"] == pytest.approx(ok.mean(), abs=0.1), (base, metric)
            if ok.mean() < 0.5:
                continue
            better = -diff[ok] if metric in LOWER_IS_BETTER else diff[ok]
            assert d["p_default_better"] == pytest.approx((better > 0).mean(), abs=0.08), (base, metric)
            lo, hi = d["diff_95"]
            assert lo <= point[metric] <= hi, (base, metric)
            # the interval and P agree on who is ahead (costs: lower is better); the percentiles
            # interpolate, hence one draw's slack
            ahead, behind = (hi < 0, lo > 0) if metric in LOWER_IS_BETTER else (lo > 0, hi < 0)
            slack = 1 / (d["defined_share"] * res.n_bootstrap)
            if ahead:
                assert d["p_default_better"] >= 0.975 - slack, (base, metric)
            if behind:
                assert d["p_default_better"] <= 0.025 + slack, (base, metric)
            checked += 1
    assert checked >= 12
    json.dumps(res.to_json())  # serialisable (NaN allowed)


def test_cv_results_do_not_depend_on_worker_processes():
    """The default stack, MF and the bootstrap included: every figure but the timings is the same
    with one process and with two (docs/routing.md says so)."""
    table, emb = make_table(n=120, seed=3)
    folds = cv_folds(table.query_ids, 3, seed=0)
    kw = dict(routers=("switchyard", "knn", "cluster", "mf"), points=6, n_bootstrap=200)
    a = bench_cv(table, emb, folds, jobs=1, **kw).to_json()
    b = bench_cv(table, emb, folds, jobs=2, **kw).to_json()
    for res in (a, b):
        res.pop("timings_s")
    assert a["paired_default"] == "switchyard" and set(a["paired_vs_baselines"]) == {"knn", "cluster"}
    assert a["budget_check"] and {"switchyard", "mf"} <= set(a["intervals_95"])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here
