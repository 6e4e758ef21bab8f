"""Evaluation harness: fit routers, sweep their knob on queries they never saw, and score the
realised quality/cost curves beside baselines (best single, cheapest, random, oracle).

Two protocols, one scorer:
- `bench`: fit on one table, score another (a test split, or a seeded validation split).
- `bench_cv`: K-fold cross-validation over one table, folds split by `query_id`. Every router is
  fitted on K−1 folds and routes the held-out fold; the K held-out folds' picks are **pooled**, so
  every query is scored exactly once by a model that never saw it, and one curve is read over all
  queries. (Pooling rather than averaging per-fold metrics: the metrics are non-linear in the curve
  — Pareto frontier, interpolation at 5 % cost, "cost to reach parity" is undefined on a fold that
  never reaches it — so a mean of K noisy small-sample readings is both noisier and biased; the
  knob α means the same operating point in every fold because each fold's router calibrates it on
  its own out-of-fold training predictions.) Per-fold metrics are still kept (`fold_metrics`) as a
  spread.

Uncertainty: a query bootstrap over the scored queries (B resamples of the per-query realised
cost / quality at every knob point, the best single model and the cheapest recomputed on the same
resample) gives a 95 % percentile interval per metric, and a *paired* interval for the difference
between the default router and each baseline (same resample for both, so the shared query noise
cancels). An interval for a difference that straddles 0 is a tie.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from router.bench.metrics import Reference, curve_metrics
from router.bench.threads import single_threaded
from router.data import RoutingTable
from router.learned import LearnedRouter, fit_router
from router.policy import lagrangian_choice, lambda_grid

DEFAULT_ROUTERS = ("switchyard", "knn", "cluster", "sw_ranking", "mf", "classifier")
# the baselines the default is judged against (docs/routing.md, issue 4 point 1)
PAIRED_BASELINES = ("knn", "cluster")
# budget targets placed log-uniformly between the cheapest and the best single model's mean cost
BUDGET_POSITIONS = (0.2, 0.4, 0.6, 0.8)
# metrics where lower is better (costs); the others are qualities / areas
LOWER_IS_BETTER = {"cost_parity", "cost_95pct", "cpt50", "cpt80"}
NON_ROUTERS = ("best_single", "cheapest", "random", "oracle")


@dataclass
class BenchResult:
    dataset: str
    n_train: int
    n_eval: int
    eval_source: str
    reference: Reference
    curves: dict[str, list[dict]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    budget_check: list[dict] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    single_models: dict[str, dict[str, float]] = field(default_factory=dict)
    intervals: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # 95 % bootstrap
    paired: dict[str, dict[str, dict]] = field(default_factory=dict)  # default − baseline
    default: str = "switchyard"
    fold_metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # per-fold mean / std
    n_folds: int = 1
    n_bootstrap: int = 0
    protocol: str = "cv"  # cv (folds by query) | leave_tasks_out | task_mixes
    n_task_mixes: int = 0
    mix_concentration: float | None = None
    task_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # task → router → metrics
    per_query: dict = field(default_factory=dict, repr=False)  # router → realised cost/quality per query (not saved)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "n_train_queries": self.n_train,
            "n_eval_queries": self.n_eval,
            "eval_source": self.eval_source,
            "n_folds": self.n_folds,
            "n_bootstrap": self.n_bootstrap,
            "protocol": self.protocol,
            "n_task_mixes": self.n_task_mixes,
            "mix_concentration": self.mix_concentration,
            "task_metrics": self.task_metrics,
            "reference": self.reference.__dict__,
            "single_models": self.single_models,
            "metrics": self.metrics,
            "intervals_95": self.intervals,
            "paired_vs_baselines": self.paired,
            "paired_default": self.default,
            "fold_metrics": self.fold_metrics,
            "curves": self.curves,
            "budget_check": self.budget_check,
            "timings_s": self.timings_s,
        }


def realised(table: RoutingTable, picks: np.ndarray) -> tuple[float, float]:
    rows = np.arange(len(table))
    return float(table.costs[rows, picks].mean()), float(table.scores[rows, picks].mean())


def reference_of(scores: np.ndarray, costs: np.ndarray) -> tuple[Reference, int, int]:
    """Best single model (highest mean quality, cheaper on ties) and cheapest model."""
    mean_q, mean_c = scores.mean(axis=0), costs.mean(axis=0)
    best = int(np.lexsort((mean_c, -mean_q))[0])
    cheap = int(np.lexsort((-mean_q, mean_c))[0])
    return Reference(float(mean_q[best]), float(mean_c[best]), float(mean_q[cheap]), float(mean_c[cheap])), best, cheap


# ------------------------------------------------------------------ picks per knob point


def router_picks(router: LearnedRouter, texts, emb: np.ndarray, points: int) -> tuple[list[float], np.ndarray]:
    """Knob values and the model index per (knob point, query)."""
    pred = router.predict(texts, emb)
    knobs, picks = [], []
    for alpha, setting in router.sweep_settings(points):
        knobs.append(alpha)
        picks.append(router.choose_setting(pred, setting))
    return knobs, np.array(picks)


def router_curve(router: LearnedRouter, table: RoutingTable, emb: np.ndarray, points: int) -> list[dict]:
    knobs, picks = router_picks(router, table.texts, emb, points)
    return [dict(zip(("knob", "cost", "quality"), (k, *realised(table, p)))) for k, p in zip(knobs, picks)]


def oracle_picks(table: RoutingTable) -> tuple[list[float], np.ndarray]:
    grid = lambda_grid(float(table.costs.mean(axis=0).max()))
    return [float(g) for g in grid], np.array([lagrangian_choice(table.scores, table.costs, lam) for lam in grid])


def oracle_curve(table: RoutingTable) -> list[dict]:
    knobs, picks = oracle_picks(table)
    return [{"knob": k, **dict(zip(("cost", "quality"), realised(table, p)))} for k, p in zip(knobs, picks)]


def budget_picks(router: LearnedRouter, texts, emb: np.ndarray, targets: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per budget target: picks when the queries are routed as one batch (the budget is met on the
    batch's predicted costs) and query by query (the λ calibrated offline)."""
    from router.base import Knobs

    pred = router.predict(texts, emb)
    return [(router.choose(pred, Knobs(budget_usd=t)), router.choose(pred, Knobs(budget_usd=t), batch_budget=False))
            for t in targets]


def budget_targets(ref: Reference) -> list[float]:
    lo, hi = np.log(ref.cheap_cost), np.log(ref.best_cost)
    return [float(np.exp(lo + pos * (hi - lo))) for pos in BUDGET_POSITIONS]


def budget_check(router: LearnedRouter, table: RoutingTable, emb: np.ndarray, ref: Reference) -> list[dict]:
    """Realised / target mean cost on the evaluation queries for budgets log-spaced between the
    cheapest and the best single model's cost."""
    out = []
    for target, (batch, fixed) in zip(budget_targets(ref), budget_picks(router, table.texts, emb, budget_targets(ref))):
        cost, quality = realised(table, batch)
        fcost, fquality = realised(table, fixed)
        out.append({"target_usd": target, "realised_usd": cost, "ratio": cost / target, "quality": quality,
                    "realised_usd_fixed_lambda": fcost, "ratio_fixed_lambda": fcost / target,
                    "quality_fixed_lambda": fquality})
    return out


# ------------------------------------------------------------------ scoring


@dataclass
class _Curve:
    knobs: list
    cost: np.ndarray  # (points, n) realised per query
    quality: np.ndarray


def _from_picks(table: RoutingTable, knobs, picks: np.ndarray) -> _Curve:
    rows = np.arange(len(table))[None, :]
    return _Curve(list(knobs), table.costs[rows, picks], table.scores[rows, picks])


def _baseline_curves(table: RoutingTable, best: int, cheap: int, points: int) -> dict[str, _Curve]:
    c_b, q_b, c_c, q_c = table.costs[:, best], table.scores[:, best], table.costs[:, cheap], table.scores[:, cheap]
    ps = np.linspace(0, 1, points)
    ok, op = oracle_picks(table)
    return {
        "best_single": _Curve([None], c_b[None], q_b[None]),
        "cheapest": _Curve([None], c_c[None], q_c[None]),
        "random": _Curve([float(p) for p in ps], (1 - ps)[:, None] * c_c + ps[:, None] * c_b,
                         (1 - ps)[:, None] * q_c + ps[:, None] * q_b),
        "oracle": _from_picks(table, ok, op),
    }


def _metrics_on(curves: dict[str, _Curve], rows: np.ndarray, ref: Reference) -> dict[str, dict[str, float]]:
    out = {}
    for name, c in curves.items():
        pts = list(zip(c.cost[:, rows].mean(axis=1), c.quality[:, rows].mean(axis=1)))
        out[name] = curve_metrics(pts, ref)
    return out


def _resampled(curves: dict[str, _Curve], table: RoutingTable, best: int, cheap: int, w: np.ndarray,
               per_column_reference: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Every router's metrics under each column of query weights `w` (n, B), columns summing to 1:
    bootstrap resamples or re-weighted task mixes. The best single model and the cheapest are the
    fixed ones of the unweighted data unless `per_column_reference` (a new task mix may crown
    another model)."""
    n_boot = w.shape[1]
    if per_column_reference:
        mean_q, mean_c = table.scores.T @ w, table.costs.T @ w  # (m, B)
        refs = []
        for b in range(n_boot):
            bi = int(np.lexsort((mean_c[:, b], -mean_q[:, b]))[0])
            ci = int(np.lexsort((-mean_q[:, b], mean_c[:, b]))[0])
            refs.append(Reference(float(mean_q[bi, b]), float(mean_c[bi, b]), float(mean_q[ci, b]), float(mean_c[ci, b])))
    else:
        refq, refc = table.scores[:, best] @ w, table.costs[:, best] @ w
        chq, chc = table.scores[:, cheap] @ w, table.costs[:, cheap] @ w
        refs = [Reference(float(refq[b]), float(refc[b]), float(chq[b]), float(chc[b])) for b in range(n_boot)]
    routers = [r for r in curves if r not in NON_ROUTERS or r == "random"]
    boot: dict[str, dict[str, np.ndarray]] = {}
    for name in routers:
        cost, qual = curves[name].cost @ w, curves[name].quality @ w  # (points, B)
        vals: dict[str, list[float]] = {}
        for b in range(n_boot):
            for k, v in curve_metrics(list(zip(cost[:, b], qual[:, b])), refs[b]).items():
                vals.setdefault(k, []).append(v)
        boot[name] = {k: np.asarray(v) for k, v in vals.items()}
    return boot


def _interval(x: np.ndarray) -> list[float]:
    ok = np.isfinite(x)
    if ok.mean() < 0.5:  # undefined (e.g. parity never reached) on most resamples
        return [float("nan"), float("nan"), float(ok.mean())]
    lo, hi = np.percentile(x[ok], [2.5, 97.5])
    return [float(lo), float(hi), float(ok.mean())]


def _summarise(boot: dict[str, dict[str, np.ndarray]], default: str, baselines: Sequence[str]):
    """95 % percentile intervals per (router, metric) and paired intervals of default − baseline."""
    intervals = {name: {k: _interval(v) for k, v in m.items()} for name, m in boot.items()}
    paired: dict[str, dict] = {}
    if default in boot:
        for base in baselines:
            if base not in boot or base == default:
                continue
            paired[base] = {}
            for k in boot[default]:
                d = boot[default][k] - boot[base][k]
                better = -d if k in LOWER_IS_BETTER else d
                ok = np.isfinite(d)
                paired[base][k] = {
                    "diff_95": _interval(d)[:2],
                    "p_default_better": float((better[ok] > 0).mean()) if ok.any() else float("nan"),
                    "defined_share": float(ok.mean()),
                }
    return intervals, paired


def _bootstrap(curves: dict[str, _Curve], table: RoutingTable, best: int, cheap: int, n_boot: int, seed: int,
               default: str, baselines: Sequence[str]):
    """Query bootstrap: 95 % intervals per (router, metric) and paired intervals of default − baseline."""
    n = len(table)
    rng = np.random.default_rng(seed + 7919)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T.astype(np.float64) / n  # (n, B)
    return _summarise(_resampled(curves, table, best, cheap, w), default, baselines)


def _score(res: BenchResult, table: RoutingTable, curves: dict[str, _Curve], best: int, cheap: int,
           n_boot: int, seed: int, folds: np.ndarray | None = None, default: str = "switchyard") -> None:
    res.per_query = curves
    res.default = default
    res.curves = {
        name: [{"knob": k, "cost": float(c), "quality": float(q)}
               for k, c, q in zip(cv.knobs, cv.cost.mean(axis=1), cv.quality.mean(axis=1))]
        for name, cv in curves.items()
    }
    res.metrics = _metrics_on(curves, np.arange(len(table)), res.reference)
    res.task_metrics = _per_task(table, {k: v for k, v in curves.items() if k not in NON_ROUTERS or k == "random"})
    if n_boot > 0:
        t0 = time.perf_counter()
        res.intervals, res.paired = _bootstrap(curves, table, best, cheap, n_boot, seed, default, PAIRED_BASELINES)
        res.n_bootstrap = n_boot
        res.default = default
        res.timings_s["bootstrap"] = round(time.perf_counter() - t0, 2)
    if folds is not None:
        per_fold: dict[str, dict[str, list[float]]] = {}
        for f in np.unique(folds):
            rows = np.flatnonzero(folds == f)
            ref = Reference(float(table.scores[rows, best].mean()), float(table.costs[rows, best].mean()),
                            float(table.scores[rows, cheap].mean()), float(table.costs[rows, cheap].mean()))
            for name, m in _metrics_on({k: v for k, v in curves.items() if k not in NON_ROUTERS}, rows, ref).items():
                for k, v in m.items():
                    per_fold.setdefault(name, {}).setdefault(k, []).append(v)
        res.fold_metrics = {
            name: {k: {"mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                       "std": float(np.nanstd(v)) if np.isfinite(v).any() else float("nan"),
                       "values": [float(x) for x in v]} for k, v in m.items()}
            for name, m in per_fold.items()
        }


def _per_task(table: RoutingTable, curves: dict[str, _Curve]) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics within each task, against that task's own best single and cheapest model."""
    tasks = np.asarray(table.tasks)
    if len(set(table.tasks)) < 2:
        return {}
    out = {}
    for t in sorted(set(table.tasks)):
        rows = np.flatnonzero(tasks == t)
        ref, _, _ = reference_of(table.scores[rows], table.costs[rows])
        out[t] = {"n_queries": len(rows), **_metrics_on(curves, rows, ref)}
    return out


def task_mixes(res: BenchResult, table: RoutingTable, n_draws: int = 1000, concentration: float = 10.0,
               seed: int = 0) -> BenchResult:
    """The same out-of-sample picks as `res` (a `bench_cv` over `table`), read under `n_draws` task
    mixes drawn from a Dirichlet around the data's own mix (`splits.task_mix_weights`): the routers
    were fitted on one mix and are scored on another, as when a tenant's traffic drifts. Point
    values are the mean over mixes, intervals the 2.5–97.5 percentiles over mixes, and the paired
    rows the default minus each baseline on the same mix; the best single model is recomputed per
    mix."""
    from router.bench.splits import task_mix_weights

    if not res.per_query:
        raise ValueError("task_mixes needs a result scored in this process (per-query curves are not saved)")
    w = task_mix_weights(table.tasks, n_draws, concentration, seed)
    ref, best, cheap = reference_of(table.scores, table.costs)
    boot = _resampled(res.per_query, table, best, cheap, w, per_column_reference=True)
    out = BenchResult(res.dataset, res.n_train, res.n_eval,
                      f"{res.eval_source}, re-weighted: {n_draws} task mixes ~ Dirichlet(concentration "
                      f"{concentration:g} × the data's task shares)", ref)
    out.protocol, out.n_folds, out.n_task_mixes, out.mix_concentration = "task_mixes", res.n_folds, n_draws, concentration
    out.single_models, out.curves, out.default = res.single_models, res.curves, res.default
    out.metrics = {name: {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in m.items()}
                   for name, m in boot.items()}
    out.intervals, out.paired = _summarise(boot, res.default, PAIRED_BASELINES)
    return out


def _new_result(table: RoutingTable, n_train: int, eval_source: str) -> tuple[BenchResult, int, int]:
    ref, best, cheap = reference_of(table.scores, table.costs)
    res = BenchResult(table.dataset, n_train, len(table), eval_source, ref)
    res.single_models = {m: {"quality": float(q), "cost": float(c)}
                         for m, q, c in zip(table.models, table.scores.mean(axis=0), table.costs.mean(axis=0))}
    return res, best, cheap


def _budget_summary(table: RoutingTable, targets, batch_picks, fixed_picks, folds=None) -> list[dict]:
    out = []
    for t, bp, fp in zip(targets, batch_picks, fixed_picks):
        cost, quality = realised(table, bp)
        fcost, fquality = realised(table, fp)
        row = {"target_usd": t, "realised_usd": cost, "ratio": cost / t, "quality": quality,
               "realised_usd_fixed_lambda": fcost, "ratio_fixed_lambda": fcost / t, "quality_fixed_lambda": fquality}
        if folds is not None:
            rows = np.arange(len(table))
            per = [(table.costs[rows, bp][folds == f].mean() / t, table.costs[rows, fp][folds == f].mean() / t)
                   for f in np.unique(folds)]
            row["fold_ratio_range"] = [float(min(p[0] for p in per)), float(max(p[0] for p in per))]
            row["fold_ratio_fixed_lambda_range"] = [float(min(p[1] for p in per)), float(max(p[1] for p in per))]
        out.append(row)
    return out


# ------------------------------------------------------------------ protocols


def bench(
    train: RoutingTable,
    evaluation: RoutingTable,
    emb_train: np.ndarray,
    emb_eval: np.ndarray,
    routers: Sequence[str] = DEFAULT_ROUTERS,
    points: int = 21,
    eval_source: str = "validation",
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    n_bootstrap: int = 0,
    default: str = "switchyard",
) -> BenchResult:
    """Fit on `train`, score on `evaluation` (a test split or one validation split)."""
    if list(train.models) != list(evaluation.models):
        raise ValueError("train and evaluation tables must have the same models in the same order")
    res, best, cheap = _new_result(evaluation, len(train), eval_source)
    curves = _baseline_curves(evaluation, best, cheap, points)
    targets = budget_targets(res.reference)
    for name in routers:
        if on_step:
            on_step(f"fit {name}")
        t0 = time.perf_counter()
        with single_threaded():
            router = fit_router(name, train, emb_train, calibrate_budget=(name == "switchyard"), seed=seed)
        t1 = time.perf_counter()
        knobs, picks = router_picks(router, evaluation.texts, emb_eval, points)
        curves[name] = _from_picks(evaluation, knobs, picks)
        res.timings_s[f"fit_{name}"] = round(t1 - t0, 2)
        res.timings_s[f"route_{name}"] = round(time.perf_counter() - t1, 2)
        if name == "switchyard":
            bp = budget_picks(router, evaluation.texts, emb_eval, targets)
            res.budget_check = _budget_summary(evaluation, targets, [b for b, _ in bp], [f for _, f in bp])
    _score(res, evaluation, curves, best, cheap, n_bootstrap, seed, default=default)
    return res


def _fold_job(name: str, train: RoutingTable, emb_train: np.ndarray, texts, emb_test: np.ndarray, points: int,
              targets: Sequence[float], seed: int, with_budget: bool):
    """Fit one router on one fold's training part and route its held-out part, with one BLAS /
    torch thread (in a worker process when jobs > 1). Single-threaded fits are reproducible
    whatever `jobs` is, and on 2 cores they are also faster than threaded ones."""
    with single_threaded():
        t0 = time.perf_counter()
        router = fit_router(name, train, emb_train, calibrate_budget=with_budget, seed=seed)
        t1 = time.perf_counter()
        kn, p = router_picks(router, texts, emb_test, points)
        bp = budget_picks(router, texts, emb_test, targets) if with_budget else []
    return kn, p, bp, t1 - t0, time.perf_counter() - t1


def bench_cv(
    table: RoutingTable,
    emb: np.ndarray,
    folds: np.ndarray,
    routers: Sequence[str] = DEFAULT_ROUTERS,
    points: int = 21,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    n_bootstrap: int = 1000,
    default: str = "switchyard",
    jobs: int = 1,
    eval_source: str | None = None,
    protocol: str = "cv",
) -> BenchResult:
    """K-fold cross-validation: fold f is routed by routers fitted on the other folds; the picks of
    all folds are pooled and scored as one curve over every query (see the module docstring).
    jobs > 1 fits (router, fold) pairs in that many worker processes; every fit runs with one
    BLAS / torch thread either way, so the results do not depend on `jobs`."""
    folds = np.asarray(folds)
    ids = np.unique(folds)
    k = len(ids)
    n_train = int(round(np.mean([(folds != f).sum() for f in ids])))
    res, best, cheap = _new_result(table, n_train, eval_source or
                                   f"{k}-fold cross-validation (seed {seed}, folds by query_id; pooled out-of-fold)")
    res.n_folds = k
    res.protocol = protocol
    curves = _baseline_curves(table, best, cheap, points)
    targets = budget_targets(res.reference)
    picks: dict[str, np.ndarray] = {}
    knobs: dict[str, list] = {}
    batch_p = [np.zeros(len(table), int) for _ in targets]
    fixed_p = [np.zeros(len(table), int) for _ in targets]
    t_fit = {name: 0.0 for name in routers}
    t_route = {name: 0.0 for name in routers}
    tasks = []
    for name in routers:
        for f in ids:
            test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
            tasks.append((name, f, test, (name, table.subset(train), emb[train], [table.texts[i] for i in test],
                                          emb[test], points, targets, seed, name == "switchyard")))

    def collect(name, f, test, out):
        kn, p, bp, tf, tr = out
        if name not in picks:
            picks[name] = np.zeros((len(kn), len(table)), dtype=int)
            knobs[name] = kn
        picks[name][:, test] = p
        for i, (b, fx) in enumerate(bp):
            batch_p[i][test], fixed_p[i][test] = b, fx
        t_fit[name] += tf
        t_route[name] += tr
        if on_step:
            on_step(f"fold {int(f) + 1}/{k} {name}")

    t_start = time.perf_counter()
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [(name, f, test, pool.submit(_fold_job, *args)) for name, f, test, args in tasks]
            for name, f, test, fut in futures:
                collect(name, f, test, fut.result())
    else:
        for name, f, test, args in tasks:
            collect(name, f, test, _fold_job(*args))
    res.timings_s["fit_and_route_wall"] = round(time.perf_counter() - t_start, 2)
    for name in routers:
        curves[name] = _from_picks(table, knobs[name], picks[name])
        res.timings_s[f"fit_{name}"] = round(t_fit[name], 2)
        res.timings_s[f"route_{name}"] = round(t_route[name], 2)
    if "switchyard" in routers:
        res.budget_check = _budget_summary(table, targets, batch_p, fixed_p, folds)
    _score(res, table, curves, best, cheap, n_bootstrap, seed, folds, default=default)
    return res
