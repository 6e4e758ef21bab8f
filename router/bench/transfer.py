"""Transfer across models and tasks: route between two models on a task neither was seen on.

For each dataset, a few (strong, weak) pairs of its models (strong = its best mean quality, weak
= cheaper ones) and each of its tasks: the pairs' rows on that task are hidden, the routers are
fitted on the rest and route that task's queries between strong and weak along a knob sweep
(`LearnedRouter.sweep_picks` masked to the pair, as `router route
--sweep --allowed-models` does). The reading is the share of strong-model calls needed to reach
95 % of the strong model's quality on the task, on the curve's Pareto frontier (share, quality)
interpolated linearly as `metrics.cost_to_reach` does; a curve that never gets there reads 100 %
(the strong model alone does). Random routing reaches it at (0.95·S − W) / (S − W) exactly.

Routers:
- pooled: `PooledQuality` on the union of all datasets (missing cells NaN), with the hidden cells
  removed. hide="pair": the task's rows of the evaluated models (the strong one and every weak
  one, hidden together: one fit serves all pairs) are removed, the dataset's other models keep
  theirs, and the evaluated queries themselves are held out in `folds` query folds (the judged
  queries are new queries). hide="dataset": every model of the dataset loses the task (as when a
  task is covered only by the other dataset's models, or by nobody).
- the other kinds (default: switchyard, knn) are fitted on the pair's own dataset only, without
  the task (a complete table cannot hold the hidden cells): a router that never saw the task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from router.base import Knobs
from router.bench.metrics import Reference, cost_to_reach
from router.bench.splits import cv_folds
from router.bench.threads import single_threaded
from router.data import RoutingTable
from router.learned import LearnedRouter, fit_router

FRACTION = 0.95
MIN_TASK_QUERIES = 40
HIDE_MODES = ("pair", "dataset")


def union_tables(tables: Mapping[str, RoutingTable]) -> tuple[RoutingTable, np.ndarray]:
    """One table over the union of models (cells a dataset does not have are NaN) and the index
    of each query's dataset in `tables`."""
    models: list[str] = []
    for t in tables.values():
        models += [m for m in t.models if m not in models]
    scores, costs, source = [], [], []
    for d, t in enumerate(tables.values()):
        cols = [models.index(m) for m in t.models]
        s = np.full((len(t), len(models)), np.nan)
        c = np.full_like(s, np.nan)
        s[:, cols], c[:, cols] = t.scores, t.costs
        scores.append(s)
        costs.append(c)
        source.append(np.full(len(t), d))
    ts = list(tables.values())
    union = RoutingTable(
        ",".join(tables), [q for t in ts for q in t.query_ids], [x for t in ts for x in t.texts], models,
        np.vstack(scores), np.vstack(costs), [s for t in ts for s in t.splits], [k for t in ts for k in t.tasks],
    )
    return union, np.concatenate(source)


def pick_pairs(table: RoutingTable, n_pairs: int = 3) -> list[tuple[str, str]]:
    """(strong, weak) pairs: strong = the best mean quality; weak = among the models costing at most
    half as much (else: less), the best one, the median one and the cheapest, in that order."""
    quality, cost = table.scores.mean(axis=0), table.costs.mean(axis=0)
    strong = int(np.argmax(quality))
    cheaper = [j for j in range(len(table.models)) if cost[j] <= 0.5 * cost[strong]]
    cheaper = cheaper or [j for j in range(len(table.models)) if cost[j] < cost[strong]]
    by_quality = sorted(cheaper, key=lambda j: -quality[j])
    picks: list[int] = []
    for j in (by_quality[0], by_quality[len(by_quality) // 2], min(cheaper, key=lambda j: cost[j])) if cheaper else ():
        if j not in picks:
            picks.append(j)
    return [(table.models[strong], table.models[j]) for j in picks[:n_pairs]]


def share_to_reach(shares: Sequence[float], qualities: Sequence[float], strong_quality: float,
                   fraction: float = FRACTION) -> float:
    """Share of strong calls at which the curve's interpolated frontier reaches fraction × strong
    quality (1.0 when it never does)."""
    ref = Reference(best_quality=strong_quality, best_cost=1.0, cheap_quality=0.0, cheap_cost=0.0)
    c = cost_to_reach(list(zip(shares, qualities)), ref, fraction) / 100
    return 1.0 if np.isnan(c) else float(min(c, 1.0))


def random_share(strong_quality: float, weak_quality: float, fraction: float = FRACTION) -> float:
    """Mixing the two at random reaches fraction × S at share (fraction·S − W) / (S − W)."""
    target = fraction * strong_quality
    if weak_quality >= target:
        return 0.0
    return float((target - weak_quality) / (strong_quality - weak_quality))


def pair_curve(router: LearnedRouter, texts: Sequence[str], emb: np.ndarray, pair: tuple[str, str],
               truth: np.ndarray, points: int) -> tuple[list[float], list[float]]:
    """(share of strong calls, mean true score) per sweep point; truth = (n, 2) [strong, weak]."""
    pred = router.predict(texts, emb)
    if not (np.isfinite(pred.quality).all() and np.isfinite(pred.cost).all()):
        raise ValueError(f"router {router.name!r} predicted a non-finite quality or cost")
    mask = router.model_mask(Knobs(allowed_models=pair))
    strong = router.models.index(pair[0])
    shares, quals = [], []
    for _, picks in router.sweep_picks(pred, points, mask):
        is_strong = picks == strong
        shares.append(float(is_strong.mean()))
        quals.append(float(np.where(is_strong, truth[:, 0], truth[:, 1]).mean()))
    return shares, quals


@dataclass
class _Case:
    dataset: str
    task: str
    strong: str
    weak: str
    rows: np.ndarray  # query rows of the union table
    truth: np.ndarray  # (n, 2)
    curves: dict[str, tuple[list[float], list[float]]]


def transfer_bench(
    tables: Mapping[str, RoutingTable],
    embeddings: Mapping[str, np.ndarray],
    routers: Sequence[str] = ("pooled", "switchyard", "knn"),
    n_pairs: int = 3,
    points: int = 41,
    hide: str = "pair",
    folds: int = 2,
    tasks: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> dict:
    """The transfer protocol (module docstring) over every dataset of `tables` (complete tables,
    one per dataset, with their `tasks`); `tasks` limits the tasks per dataset. Returns a JSON-able
    dict: per-case readings and per-dataset / overall aggregates."""
    if hide not in HIDE_MODES:
        raise ValueError(f"hide must be one of {HIDE_MODES}, not {hide!r}")
    union, source = union_tables(tables)
    emb_all = np.vstack([np.asarray(embeddings[name], dtype=np.float32) for name in tables])
    names = list(tables)
    cases: list[_Case] = []
    for d, (name, table) in enumerate(tables.items()):
        pairs = pick_pairs(table, n_pairs)
        hidden_models = [union.models.index(m) for m in dict.fromkeys(m for p in pairs for m in p)]
        if hide == "dataset":
            hidden_models = [union.models.index(m) for m in table.models]
        task_names = sorted({t for t in table.tasks if t})
        if tasks is not None and name in tasks:
            task_names = [t for t in task_names if t in tasks[name]]
        for task in task_names:
            in_task = np.array([t == task for t in table.tasks])
            if in_task.sum() < MIN_TASK_QUERIES:
                continue
            rows = np.flatnonzero(source == d)[in_task]
            new = [_Case(name, task, s, w, rows, union.scores[rows][:, [union.models.index(s), union.models.index(w)]], {})
                   for s, w in pairs]
            others = [r for r in routers if r != "pooled"]
            if others:
                own = table.subset(np.flatnonzero(~in_task))
                own_emb = np.asarray(embeddings[name])[~in_task]
                for kind in others:
                    with single_threaded():
                        router = fit_router(kind, own, own_emb)
                    texts = [union.texts[i] for i in rows]
                    for c in new:
                        c.curves[kind] = pair_curve(router, texts, emb_all[rows], (c.strong, c.weak), c.truth, points)
                    if on_step:
                        on_step(f"{name}/{task}: {kind}")
            if "pooled" in routers:
                curves = _pooled_curves(union, emb_all, rows, hidden_models, new, hide, folds, points, seed)
                for c, curve in zip(new, curves):
                    c.curves["pooled"] = curve
                if on_step:
                    on_step(f"{name}/{task}: pooled")
            cases += new
    return _summary(cases, list(routers), names, hide, folds, points)


def _pooled_curves(union: RoutingTable, emb: np.ndarray, rows: np.ndarray, hidden_models: list[int],
                   cases: list[_Case], hide: str, folds: int, points: int, seed: int):
    """The pooled router's curve per case, its picks pooled over the query folds of `rows`."""
    fold_of = np.zeros(len(rows), dtype=int) if hide == "dataset" or folds < 2 else \
        cv_folds([union.query_ids[i] for i in rows], folds, seed)
    strong_calls = [np.zeros((points, len(rows)), dtype=bool) for _ in cases]  # per case: point × query
    for k in np.unique(fold_of):
        held = rows[fold_of == k]
        keep = np.isin(np.arange(len(union)), held, invert=True)
        train = union.subset(np.flatnonzero(keep))
        hide_rows = np.isin(np.flatnonzero(keep), rows)
        for j in hidden_models:
            train.scores[hide_rows, j] = np.nan
            train.costs[hide_rows, j] = np.nan
        observed = ~np.isnan(train.scores).all(axis=1)
        train = train.subset(np.flatnonzero(observed))
        with single_threaded():
            router = fit_router("pooled", train, emb[keep][observed], calibrate_budget=False)
        pred = router.predict([union.texts[i] for i in held], emb[held])
        if not (np.isfinite(pred.quality).all() and np.isfinite(pred.cost).all()):
            raise ValueError("the pooled router predicted a non-finite quality or cost")
        for c, calls in zip(cases, strong_calls):
            mask = router.model_mask(Knobs(allowed_models=(c.strong, c.weak)))
            s = router.models.index(c.strong)
            for p, (_, picks) in enumerate(router.sweep_picks(pred, points, mask)):
                calls[p, fold_of == k] = picks == s
    out = []
    for c, calls in zip(cases, strong_calls):
        quals = np.where(calls, c.truth[:, 0], c.truth[:, 1]).mean(axis=1)
        out.append((calls.mean(axis=1).tolist(), quals.tolist()))
    return out


def _summary(cases: list[_Case], routers: list[str], datasets: list[str], hide: str, folds: int, points: int) -> dict:
    readings = []
    for c in cases:
        s_q, w_q = float(c.truth[:, 0].mean()), float(c.truth[:, 1].mean())
        shares = {r: share_to_reach(*c.curves[r], s_q) for r in routers}
        shares["random"] = random_share(s_q, w_q)
        readings.append({
            "dataset": c.dataset, "task": c.task, "strong": c.strong, "weak": c.weak, "n_queries": len(c.rows),
            "strong_quality": round(s_q, 4), "weak_quality": round(w_q, 4),
            "share_to_95": {k: round(v, 4) for k, v in shares.items()},
            "curves": {r: {"share": [round(x, 4) for x in c.curves[r][0]],
                           "quality": [round(x, 4) for x in c.curves[r][1]]} for r in routers},
        })

    def aggregate(rs: list[dict]) -> dict:
        # trivial cases (the weak model alone reaches 95 %) read 0 for everyone: left out
        live = [r for r in rs if r["share_to_95"]["random"] > 0]
        out: dict = {"n_cases": len(rs), "n_nontrivial": len(live)}
        for name in routers + ["random"]:
            v = np.array([r["share_to_95"][name] for r in live])
            rnd = np.array([r["share_to_95"]["random"] for r in live])
            out[name] = {
                "mean_share": round(float(v.mean()), 4) if len(v) else None,
                "mean_minus_random": round(float((v - rnd).mean()), 4) if len(v) else None,
                "wins_vs_random": int((v < rnd - 1e-9).sum()),
            }
        return out

    return {
        "protocol": {"fraction": FRACTION, "points": points, "hide": hide, "folds": folds},
        "cases": readings,
        "by_dataset": {d: aggregate([r for r in readings if r["dataset"] == d]) for d in datasets},
        "overall": aggregate(readings),
    }
