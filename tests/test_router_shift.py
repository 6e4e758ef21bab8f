"""The router under shift: leave-tasks-out folds, re-weighted task mixes, and the CLI's shift protocol."""
import json

import numpy as np
import pytest

from router.bench.evaluate import _from_picks, bench_cv, task_mixes
from router.bench.metrics import Reference, curve_metrics
from router.bench.splits import task_folds, task_mix_weights
from router.data import RoutingDataError
from tests.synthetic import make_table
from tests.test_router_cli import rows, run, write_jsonl


def _with_tasks(n=300):
    table, emb = make_table(n=n)
    table.tasks = [t.split(" ")[1] for t in table.texts]  # "task {t} question …": the task the data was drawn from
    return table, emb


def test_task_folds_keep_every_task_whole_and_balance_the_folds():
    tasks = ["a"] * 50 + ["b"] * 40 + ["c"] * 30 + ["d"] * 20 + ["e"] * 10
    folds = task_folds(tasks, 3)
    by_task = {t: set(folds[[i for i, x in enumerate(tasks) if x == t]]) for t in set(tasks)}
    assert all(len(f) == 1 for f in by_task.values())  # no task split across folds
    assert sorted(np.bincount(folds)) == [50, 50, 50]  # a | b + e | c + d, largest first into the lightest
    assert len(np.unique(task_folds(tasks[:90], 5))) == 2  # fewer tasks than folds: one fold per task
    with pytest.raises(RoutingDataError, match="task"):
        task_folds(["a", "", "b"], 2)
    with pytest.raises(RoutingDataError, match="at least 2 tasks"):
        task_folds(["a"] * 10, 2)


def test_task_mixes_are_dirichlet_around_the_data_mix_spread_evenly_within_a_task():
    tasks = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    w = task_mix_weights(tasks, 4000, concentration=10, seed=0)
    assert w.shape == (100, 4000) and np.allclose(w.sum(axis=0), 1)
    share_a = w[:60].sum(axis=0)
    assert np.allclose(w[:60], w[:1])  # the same weight for every query of a task in a mix
    assert abs(share_a.mean() - 0.6) < 0.01  # centred on the data's own mix
    wide = task_mix_weights(tasks, 4000, concentration=1, seed=0)[:60].sum(axis=0)
    assert wide.std() > 2 * share_a.std()  # a smaller concentration shifts further


def test_reweighted_scores_equal_the_curve_metrics_recomputed_on_each_mix():
    table, emb = _with_tasks()
    res = bench_cv(table, emb, np.arange(len(table)) % 3, routers=("knn", "cluster"), points=7, n_bootstrap=0,
                   default="knn")
    mixed = task_mixes(res, table, n_draws=40, concentration=2.0, seed=3)
    w = task_mix_weights(table.tasks, 40, 2.0, seed=3)
    by_hand = []
    curve = res.per_query["knn"]
    cost, quality = curve.cost @ w, curve.quality @ w  # (knob points, mixes)
    for b in range(40):
        q, c = table.scores.T @ w[:, b], table.costs.T @ w[:, b]  # each model's quality and cost under mix b
        best, cheap = np.lexsort((c, -q))[0], np.lexsort((-q, c))[0]
        ref = Reference(q[best], c[best], q[cheap], c[cheap])
        by_hand.append(curve_metrics(list(zip(cost[:, b], quality[:, b])), ref)["auc"])
    assert mixed.metrics["knn"]["auc"] == pytest.approx(np.mean(by_hand), rel=1e-9)
    assert mixed.protocol == "task_mixes" and mixed.n_task_mixes == 40
    lo, hi, _ = mixed.intervals["knn"]["auc"]
    assert lo == pytest.approx(np.percentile(by_hand, 2.5)) and hi == pytest.approx(np.percentile(by_hand, 97.5))
    assert set(mixed.paired) == {"cluster"}  # the default (knn) against the other baseline


def test_leave_tasks_out_routes_each_task_with_a_router_that_never_saw_it():
    """On the synthetic table each mid model is strong on one task only: a router that has seen the
    task sends it to that model, one that has not cannot know. So with tasks left out the curve
    drops, and each fold's picks equal a router fitted on the other tasks by hand."""
    from router.learned import fit_router

    table, emb = _with_tasks()
    folds = task_folds(table.tasks, 3)
    lto = bench_cv(table, emb, folds, routers=("knn",), points=5, n_bootstrap=0, protocol="leave_tasks_out")
    cv = bench_cv(table, emb, np.arange(len(table)) % 3, routers=("knn",), points=5, n_bootstrap=0)
    assert lto.metrics["knn"]["auc"] < cv.metrics["knn"]["auc"] - 3
    test = np.flatnonzero(folds == 0)
    train = np.flatnonzero(folds != 0)
    assert not set(table.tasks[i] for i in test) & set(table.tasks[i] for i in train)
    r = fit_router("knn", table.subset(train), emb[train], calibrate_budget=False)
    pred = r.predict([table.texts[i] for i in test], emb[test])
    picks = np.array([r.choose_setting(pred, s) for _, s in r.sweep_settings(5)])
    want = _from_picks(table.subset(test), lto.curves["knn"], picks)
    assert np.allclose(lto.per_query["knn"].quality[:, test], want.quality)


def test_bench_routing_shift_protocol_reports_both_protocols_side_by_side(tmp_path):
    data = rows(n=48)
    for r in data:
        r["task"] = "code" if "python" in r["query_text"] else "geo" if int(r["query_id"][1:]) % 4 else "capital"
    path = write_jsonl(tmp_path / "d.jsonl", data)
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    r = run("bench", "routing", "--data", path, "--json", out, "--routers", "knn,cluster", "--folds", 3,
            "--bootstrap", 30, "--sweep", 5, "--jobs", 1, "--embed-cache", tmp_path / "cache", "--markdown", md,
            "--protocol", "shift", "--mixes", 20, "--mix-concentration", 3)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert set(res) == {"toy", "toy/leave_tasks_out", "toy/task_mixes"}
    assert res["toy/leave_tasks_out"]["n_folds"] == 3 and res["toy/task_mixes"]["n_task_mixes"] == 20
    assert {res[k]["protocol"] for k in res} == {"cv", "leave_tasks_out", "task_mixes"}
    text = md.read_text()
    assert "the same routers in distribution and under shift" in text
    (line,) = [ln for ln in text.split("under shift", 1)[1].splitlines() if ln.startswith("| cluster |")]
    assert f"| {res['toy/leave_tasks_out']['metrics']['cluster']['auc']:.1f} |" in line
    bad = run("bench", "routing", "--data", write_jsonl(tmp_path / "n.jsonl", rows(n=48)), "--json", out,
              "--routers", "knn", "--folds", 3, "--embed-cache", tmp_path / "cache", "--protocol", "shift")
    assert bad.exit_code == 2 and "task" in bad.output
