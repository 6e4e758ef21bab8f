"""Evaluation harness: fit routers on train, sweep their knob on held-out queries, and score the
realised quality/cost curves beside baselines (best single, cheapest, random, oracle)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from router.data import RoutingTable
from router.learned import LearnedRouter, fit_router
from router.metrics import Reference, curve_metrics
from router.policy import lagrangian_choice, lambda_grid

DEFAULT_ROUTERS = ("switchyard", "knn", "cluster", "sw_ranking", "mf", "classifier")
# budget targets placed log-uniformly between the cheapest and the best single model's mean cost
BUDGET_POSITIONS = (0.2, 0.4, 0.6, 0.8)


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

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "n_train_queries": self.n_train,
            "n_eval_queries": self.n_eval,
            "eval_source": self.eval_source,
            "reference": self.reference.__dict__,
            "single_models": self.single_models,
            "metrics": self.metrics,
            "curves": self.curves,
            "budget_check": self.budget_check,
            "timings_s": self.timings_s,
        }


def realised(table: RoutingTable, picks: np.ndarray) -> tuple[float, float]:
    rows = np.arange(len(table))
    return float(table.costs[rows, picks].mean()), float(table.scores[rows, picks].mean())


def router_curve(router: LearnedRouter, table: RoutingTable, emb: np.ndarray, points: int) -> list[dict]:
    pred = router.predict(table.texts, emb)
    curve = []
    for alpha, setting in router.sweep_settings(points):
        cost, quality = realised(table, router.choose_setting(pred, setting))
        curve.append({"knob": alpha, "cost": cost, "quality": quality})
    return curve


def oracle_curve(table: RoutingTable) -> list[dict]:
    out = []
    for lam in lambda_grid(float(table.costs.mean(axis=0).max())):
        cost, quality = realised(table, lagrangian_choice(table.scores, table.costs, lam))
        out.append({"knob": float(lam), "cost": cost, "quality": quality})
    return out


def budget_check(router: LearnedRouter, table: RoutingTable, emb: np.ndarray, ref: Reference) -> list[dict]:
    from router.base import Knobs

    """Realised / target mean cost on the evaluation queries for budgets log-spaced between the
    cheapest and the best single model's cost: routed as one batch (the budget is met on the
    batch's predicted costs) and query by query (the λ calibrated offline, `ratio_fixed_lambda`)."""
    pred = router.predict(table.texts, emb)
    out = []
    for pos in BUDGET_POSITIONS:
        target = float(np.exp(np.log(ref.cheap_cost) + pos * (np.log(ref.best_cost) - np.log(ref.cheap_cost))))
        knobs = Knobs(budget_usd=target)
        cost, quality = realised(table, router.choose(pred, knobs))
        fixed_cost, fixed_quality = realised(table, router.choose(pred, knobs, batch_budget=False))
        out.append({"target_usd": target, "realised_usd": cost, "ratio": cost / target, "quality": quality,
                    "realised_usd_fixed_lambda": fixed_cost, "ratio_fixed_lambda": fixed_cost / target,
                    "quality_fixed_lambda": fixed_quality})
    return out


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
) -> BenchResult:
    if list(train.models) != list(evaluation.models):
        raise ValueError("train and evaluation tables must have the same models in the same order")
    mean_q = evaluation.scores.mean(axis=0)
    mean_c = evaluation.costs.mean(axis=0)
    best = int(np.lexsort((mean_c, -mean_q))[0])
    cheap = int(np.lexsort((-mean_q, mean_c))[0])
    ref = Reference(float(mean_q[best]), float(mean_c[best]), float(mean_q[cheap]), float(mean_c[cheap]))
    res = BenchResult(train.dataset, len(train), len(evaluation), eval_source, ref)
    res.single_models = {m: {"quality": float(q), "cost": float(c)} for m, q, c in zip(train.models, mean_q, mean_c)}

    def point(c, q, knob=None):
        return {"knob": knob, "cost": float(c), "quality": float(q)}

    res.curves["best_single"] = [point(mean_c[best], mean_q[best])]
    res.curves["cheapest"] = [point(mean_c[cheap], mean_q[cheap])]
    res.curves["random"] = [
        point((1 - p) * mean_c[cheap] + p * mean_c[best], (1 - p) * mean_q[cheap] + p * mean_q[best], float(p))
        for p in np.linspace(0, 1, points)
    ]
    res.curves["oracle"] = oracle_curve(evaluation)
    for name in routers:
        if on_step:
            on_step(f"fit {name}")
        t0 = time.perf_counter()
        router = fit_router(name, train, emb_train, calibrate_budget=(name == "switchyard"), seed=seed)
        t1 = time.perf_counter()
        res.curves[name] = router_curve(router, evaluation, emb_eval, points)
        res.timings_s[f"fit_{name}"] = round(t1 - t0, 2)
        res.timings_s[f"route_{name}"] = round(time.perf_counter() - t1, 2)
        if name == "switchyard":
            res.budget_check = budget_check(router, evaluation, emb_eval, ref)
    for name, curve in res.curves.items():
        res.metrics[name] = curve_metrics([(p["cost"], p["quality"]) for p in curve], ref)
    return res
