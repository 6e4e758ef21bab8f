"""Cross-validated bench: folds by query_id, every query scored once out of fold, bootstrap intervals."""
import json

import numpy as np
import pytest

from router.bench.evaluate import bench_cv
from router.bench.splits import cv_folds
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


@pytest.fixture(scope="module")
def cv_result():
    table, emb = make_table(n=300)
    folds = cv_folds(table.query_ids, 3, seed=0)
    res = bench_cv(table, emb, folds, routers=("classifier", "knn", "cluster"), points=11, n_bootstrap=200,
                   default="classifier")
    return table, emb, folds, res


def test_cv_pools_out_of_fold_picks_over_every_query(cv_result):
    table, emb, folds, res = cv_result
    assert res.n_eval == len(table) and res.n_folds == 3
    # the pooled knn curve equals refitting per fold by hand and routing only the held-out fold
    cost = np.zeros(len(table))
    for f in range(3):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        r = fit_router("knn", table.subset(tr), emb[tr], calibrate_budget=False)
        pred = r.predict([table.texts[i] for i in te], emb[te])
        cost[te] = table.costs[te, r.choose_setting(pred, 1.0)]
    assert res.curves["knn"][-1]["cost"] == pytest.approx(cost.mean())
    assert len(res.curves["knn"]) == 11


def test_cv_reports_intervals_paired_differences_and_fold_spread(cv_result):
    _, _, _, res = cv_result
    for name in ("classifier", "knn", "cluster", "random"):
        lo, hi, share = res.intervals[name]["auc"]
        assert lo <= res.metrics[name]["auc"] <= hi and share == 1.0
    for base in ("knn", "cluster"):
        d = res.paired[base]["auc"]
        lo, hi = d["diff_95"]
        assert lo <= res.metrics["classifier"]["auc"] - res.metrics[base]["auc"] <= hi
        assert 0.0 <= d["p_default_better"] <= 1.0
    spread = res.fold_metrics["knn"]["auc"]
    assert len(spread["values"]) == 3 and spread["std"] >= 0
    json.dumps(res.to_json())  # serialisable (NaN allowed)


def test_cv_results_do_not_depend_on_worker_processes():
    table, emb = make_table(n=200, seed=3)
    folds = cv_folds(table.query_ids, 3, seed=0)
    kw = dict(routers=("knn", "cluster"), points=6, n_bootstrap=0)
    a = bench_cv(table, emb, folds, jobs=1, **kw)
    b = bench_cv(table, emb, folds, jobs=2, **kw)
    assert a.curves == b.curves
