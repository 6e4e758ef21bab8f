"""A fitted router: quality estimator + cost model + policy + calibration, behind `Router`."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from router.base import TIERS, Knobs, RouteChoice, RoutingError, Tier
from router.costs import CostModel
from router.data import RoutingTable
from router.features import text_features
from router.policy import (
    NORMALIZED,
    UTILITY,
    Calibration,
    calibrate,
    floor_choice,
    lagrangian_choice,
    normalize_rows,
    normalized_choice,
    budget_lambda,
    cost_is_flat,
    setting_for_alpha,
    setting_for_cost,
)
from router.irt import PooledQuality
from router.quality import ClusterQuality, FormatKnnQuality, KnnQuality, QualityModel
from router.registry import assign_tiers
from router.stacking import StackedQuality, out_of_fold

DEFAULT_ALPHA = 0.5
# A budget shared by at least this many queries of one call is met on the batch's own predicted
# costs (see policy.budget_lambda); smaller groups use the λ calibrated offline.
BATCH_BUDGET_MIN = 100


class KnobError(RoutingError):
    """Knobs the router cannot honour (e.g. an allowed-model list with no model it knows)."""


@dataclass
class Prediction:
    quality: np.ndarray  # (n, m) expected score
    cost: np.ndarray  # (n, m) expected USD per call
    cluster: np.ndarray  # (n,)
    util_q: np.ndarray
    util_c: np.ndarray


@dataclass
class LearnedRouter:
    name: str
    models: list[str]
    tiers: dict[str, Tier]
    quality_model: QualityModel
    cost_model: CostModel
    policy: str = UTILITY
    calibration: Calibration | None = None
    version: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def training_mix(self) -> list[float] | None:
        """Share of the training queries in each semantic cluster (index = the `cluster` a
        decision records), or None for a router fitted before it was recorded."""
        mix = self.meta.get("training_mix")
        return [float(x) for x in mix] if mix else None

    @property
    def default_alpha(self) -> float:
        """The knob a request without one gets: fitted per router when its fit chose an operating
        point (see `choose_default_alpha`), else DEFAULT_ALPHA."""
        return float(self.meta.get("default_alpha", DEFAULT_ALPHA))

    # ---------------------------------------------------------------- predictions
    def predict(self, texts: Sequence[str], embeddings: np.ndarray) -> Prediction:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(texts):
            raise ValueError(f"embeddings must be (len(texts), dim); got {emb.shape} for {len(texts)} texts")
        feats = text_features(texts)
        qp = self.quality_model.predict(emb, feats)
        cost = self.cost_model.predict(texts, emb, feats)
        if qp.util_q is not None:
            uq, uc = qp.util_q, qp.util_c
        else:
            uq, uc = normalize_rows(qp.quality), normalize_rows(cost)
        return Prediction(qp.quality, cost, qp.cluster, uq, uc)

    # ---------------------------------------------------------------- knobs → choices
    def setting(self, alpha: float | None = None, budget_usd: float | None = None) -> float:
        """The policy's internal setting (λ or α) for a knob value."""
        if alpha is not None and not (np.isfinite(alpha) and 0.0 <= float(alpha) <= 1.0):
            raise KnobError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if budget_usd is not None:
            if not (np.isfinite(budget_usd) and float(budget_usd) >= 0):
                raise KnobError(f"budget_usd must be a non-negative number, got {budget_usd!r}")
            if self.calibration is None:
                raise KnobError(f"router {self.name!r} has no budget calibration")
            return setting_for_cost(self.calibration, self.policy, float(budget_usd))
        a = self.default_alpha if alpha is None else float(alpha)
        if self.calibration is None:
            return a if self.policy == NORMALIZED else _uncalibrated_lambda(a, self.cost_model)
        return setting_for_alpha(self.calibration, self.policy, a)

    def choose_setting(self, pred: Prediction, setting: float, mask: np.ndarray | None = None) -> np.ndarray:
        if self.policy == UTILITY:
            return lagrangian_choice(pred.quality, pred.cost, setting, mask)
        return normalized_choice(pred.util_q, pred.util_c, setting, mask)

    def model_mask(self, knobs: Knobs) -> np.ndarray | None:
        mask = None
        if knobs.allowed_models is not None:
            unknown = [m for m in knobs.allowed_models if m not in self.models]
            allowed = [m for m in knobs.allowed_models if m in self.models]
            if not allowed:
                raise KnobError(
                    f"none of the allowed models {list(knobs.allowed_models)} is known to router "
                    f"{self.name!r} (it knows: {', '.join(self.models)})"
                )
            mask = np.isin(self.models, allowed)
            if unknown:
                self.meta.setdefault("ignored_unknown_models", sorted(set(unknown)))
        if knobs.pinned_tier is not None:
            if knobs.pinned_tier not in TIERS:
                raise KnobError(f"unknown tier {knobs.pinned_tier!r}; use one of {', '.join(TIERS)}")
            tier_mask = np.array([self.tiers[m] == knobs.pinned_tier for m in self.models])
            base = mask if mask is not None else np.ones(len(self.models), bool)
            if (tier_mask & base).any():
                mask = tier_mask & base
        return mask

    def choose(
        self, pred: Prediction, knobs: Knobs, rows: np.ndarray | None = None, batch_budget: bool = True
    ) -> np.ndarray:
        """Model index per row under one set of knobs. A budget shared by ≥ BATCH_BUDGET_MIN rows
        is solved on their predicted costs (batch_budget=False: always the calibrated λ)."""
        rows = np.arange(len(pred.quality)) if rows is None else rows
        sub = Prediction(pred.quality[rows], pred.cost[rows], pred.cluster[rows], pred.util_q[rows], pred.util_c[rows])
        mask = self.model_mask(knobs)
        if knobs.quality_floor is not None:
            return floor_choice(sub.quality, sub.cost, float(knobs.quality_floor), mask)
        if (
            knobs.budget_usd is not None
            and batch_budget
            and self.policy == UTILITY
            and len(rows) >= BATCH_BUDGET_MIN
        ):
            if not np.isfinite(knobs.budget_usd) or knobs.budget_usd < 0:
                raise KnobError(f"budget_usd must be a non-negative number, got {knobs.budget_usd!r}")
            lam = budget_lambda(sub.quality, sub.cost, float(knobs.budget_usd), mask)
            return lagrangian_choice(sub.quality, sub.cost, lam, mask)
        return self.choose_setting(sub, self.setting(knobs.alpha, knobs.budget_usd), mask)

    def route(self, texts: Sequence[str], embeddings: np.ndarray, knobs: Sequence[Knobs]) -> list[RouteChoice]:
        if len(knobs) != len(texts):
            raise ValueError(f"need one Knobs per text ({len(texts)} texts, {len(knobs)} knobs)")
        if not len(texts):
            return []
        pred = self.predict(texts, embeddings)
        picks = np.zeros(len(texts), dtype=int)
        groups: dict[Knobs, list[int]] = {}
        for i, k in enumerate(knobs):
            groups.setdefault(k, []).append(i)
        for k, idx in groups.items():
            rows = np.asarray(idx)
            picks[rows] = self.choose(pred, k, rows)
        out = []
        tier_cols = {t: [j for j, m in enumerate(self.models) if self.tiers[m] == t] for t in TIERS}
        for i, j in enumerate(picks):
            model = self.models[j]
            tier = knobs[i].pinned_tier or self.tiers[model]
            out.append(
                RouteChoice(
                    model=model,
                    tier=tier,
                    cluster=int(pred.cluster[i]),
                    predicted_quality=float(pred.quality[i, j]),
                    predicted_cost_usd=float(pred.cost[i, j]),
                    scores={m: round(float(q), 4) for m, q in zip(self.models, pred.quality[i])},
                    tier_costs={t: float(pred.cost[i, cols].min()) for t, cols in tier_cols.items() if cols},
                )
            )
        return out

    def sweep_picks(self, pred: Prediction, points: int, mask: np.ndarray | None = None
                    ) -> list[tuple[float, np.ndarray]]:
        """(knob, picks) at `points` knob values. A calibrated router uses its calibrated knob. An
        uncalibrated utility router (the pooled one: its table has no realised cost of every model
        to calibrate on) spreads the points evenly over this batch's own predicted mean cost, from
        its cheapest picks to its best-quality ones: its uncalibrated λ ladder bunches the switch
        between two allowed models into a few points, which leaves most of the curve to straight
        lines between distant points."""
        n = len(pred.quality)
        if self.calibration is not None or self.policy != UTILITY or n < 2 or points < 2:
            return [(a, self.choose_setting(pred, s, mask)) for a, s in self.sweep_settings(points)]
        rows = np.arange(n)
        cheapest, best = (self.choose_setting(pred, lam, mask) for lam in (float("inf"), 0.0))
        lo, hi = float(pred.cost[rows, cheapest].mean()), float(pred.cost[rows, best].mean())
        out = []
        for a in np.linspace(0.0, 1.0, points):
            lam = budget_lambda(pred.quality, pred.cost, lo + float(a) * (hi - lo), mask)
            out.append((float(a), self.choose_setting(pred, lam, mask)))
        return out

    def sweep_settings(self, points: int) -> list[tuple[float, float]]:
        """(alpha, setting) for `points` knob values from cheapest (α=0) to best (α=1)."""
        alphas = np.linspace(0.0, 1.0, points) if points > 1 else np.array([1.0])
        return [(float(a), self.setting(alpha=float(a))) for a in alphas]


def choose_default_alpha(router: LearnedRouter, quality_share: float) -> float:
    """The smallest α (on a grid of 0.01) whose operating point keeps `quality_share` of the best
    out-of-fold quality any operating point reaches: the knob requests without one get.

    Searched through the same α → λ mapping requests use rather than inverted from a cost: when
    tiers differ in price by less than their answers differ in length, the cheapest good operating
    point can cost less than routing everything to the cheapest tier, and inverting that cost gave
    α = 0, which routes everything to the cheapest tier."""
    cal = router.calibration
    if cal is None or router.policy != UTILITY:
        raise ValueError("choosing a default operating point needs a calibrated utility router")
    mono = cal.monotone_cost(rising=False)
    if cost_is_flat(max(mono[-1], 1e-12), max(mono[0], 1e-12)):
        return 1.0  # no operating point is cheaper than another: spend nothing on cost
    target = quality_share * float(cal.mean_quality.max())
    last = len(cal.settings) - 1
    for alpha in np.linspace(0.0, 1.0, 101):
        lam = setting_for_alpha(cal, UTILITY, float(alpha))
        i = min(int(np.searchsorted(cal.settings, lam, side="left")), last)
        if cal.mean_quality[i] >= target:
            return float(round(alpha, 2))
    return 1.0


def _uncalibrated_lambda(alpha: float, cost_model: CostModel) -> float:
    if alpha >= 1:
        return 0.0
    if alpha <= 0:
        return float("inf")
    scale = float(np.maximum(cost_model.intercept + cost_model.slope * 1000, cost_model.floor).max())
    return (1 - alpha) / alpha / scale


# -------------------------------------------------------------------- fitting

ROUTER_KINDS: dict[str, tuple[Callable[[], QualityModel], str]] = {
    "switchyard": (StackedQuality, UTILITY),
    "knn": (lambda: KnnQuality(k=20), NORMALIZED),
    "format_knn": (FormatKnnQuality, UTILITY),  # the local models' outcomes (router.outcomes)
    "cluster": (lambda: ClusterQuality(n_clusters=60, top_k=3), NORMALIZED),
    "pooled": (PooledQuality, UTILITY),  # for tables with missing cells (several datasets)
}


def _register_routellm():
    from router.quality import ClassifierQuality, MatrixFactorizationQuality, SimilarityWeightedQuality

    ROUTER_KINDS.update(
        {
            "sw_ranking": (SimilarityWeightedQuality, UTILITY),
            "mf": (MatrixFactorizationQuality, UTILITY),
            "classifier": (ClassifierQuality, UTILITY),
        }
    )


_register_routellm()


def fit_router(
    kind: str,
    table: RoutingTable,
    embeddings: np.ndarray,
    calibrate_budget: bool = True,
    n_folds: int = 5,
    seed: int = 0,
    tiers: dict[str, Tier] | None = None,
) -> LearnedRouter:
    """Fit one router kind on a routing table (all its rows are training rows). `tiers` maps
    each model to the tier that serves it (default: the registry, else cost terciles)."""
    if kind not in ROUTER_KINDS:
        raise ValueError(f"unknown router kind {kind!r}; known: {', '.join(ROUTER_KINDS)}")
    make, policy = ROUTER_KINDS[kind]
    emb = np.asarray(embeddings, dtype=np.float32)
    feats = text_features(table.texts)
    quality = make().fit(emb, feats, table.scores, table.costs)
    cost_model = CostModel.fit(table.texts, table.costs, emb, feats)
    calibration = None
    incomplete = bool(np.isnan(table.scores).any())  # missing cells: no realised cost to calibrate on
    if calibrate_budget and not incomplete:
        if isinstance(quality, StackedQuality):
            oof_q = quality.oof_quality
        else:
            oof_q = out_of_fold(make, emb, feats, table.scores, table.costs, n_folds, seed)
        oof_cost = _oof_costs(table, emb, feats, n_folds, seed)
        uq = uc = None
        if policy == NORMALIZED:
            if isinstance(quality, ClusterQuality):  # cluster terms from fold models
                uq, uc = _oof_cluster_terms(make, emb, feats, table, n_folds, seed)
            else:
                uq, uc = normalize_rows(oof_q), normalize_rows(oof_cost)
        calibration = calibrate(policy, oof_q, oof_cost, table.scores, table.costs, uq, uc)
    tiers = tiers or assign_tiers(table.models, dict(zip(table.models, np.nanmean(table.costs, axis=0))))
    router = LearnedRouter(kind, list(table.models), dict(tiers), quality, cost_model, policy, calibration)
    router.meta = {
        "dataset": table.dataset,
        "n_train_queries": len(table),
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mix = cluster_mix(quality.predict(emb, feats).cluster)
    if mix:
        router.meta["training_mix"] = mix
    return router


def cluster_mix(clusters: np.ndarray) -> list[float]:
    """Share of queries per cluster id (0 … max); [] when the router assigns no clusters (−1)."""
    clusters = np.asarray(clusters)
    if not len(clusters) or (clusters < 0).any():
        return []
    counts = np.bincount(clusters)
    return [round(float(x), 6) for x in counts / counts.sum()]


def mix_drift(live: Sequence[float], training: Sequence[float]) -> float:
    """Total variation distance between two cluster mixes: 0 = the same mix, 1 = no cluster in
    common. (The same formula as the analytics.mix_drift view: 1 − Σ min(p, q).)"""
    n = max(len(live), len(training))
    p, q = np.zeros(n), np.zeros(n)
    p[: len(live)], q[: len(training)] = live, training
    return float(1.0 - np.minimum(p, q).sum())


def held_out_calibration(kind: str, table: RoutingTable, embeddings: np.ndarray, n_folds: int = 5,
                         seed: int = 1) -> Calibration:
    """The λ sweep's realised mean cost and quality when every row is predicted by a model of
    `kind` fitted without it (the whole fit, a stack's inner folds included), for comparing
    kinds on equal terms. Utility kinds only."""
    make, policy = ROUTER_KINDS[kind]
    if policy != UTILITY:
        raise ValueError(f"router kind {kind!r} is not a utility router")
    emb = np.asarray(embeddings, dtype=np.float32)
    feats = text_features(table.texts)
    oof_q = out_of_fold(make, emb, feats, table.scores, table.costs, n_folds, seed)
    return calibrate(UTILITY, oof_q, _oof_costs(table, emb, feats, n_folds, seed), table.scores, table.costs)


def _oof_costs(table: RoutingTable, emb: np.ndarray, feats: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    from router.stacking import kfold_indices

    out = np.zeros_like(table.costs)
    for test in kfold_indices(len(table), n_folds, seed):
        train = np.setdiff1d(np.arange(len(table)), test)
        cm = CostModel.fit([table.texts[i] for i in train], table.costs[train], emb[train], feats[train])
        out[test] = cm.predict([table.texts[i] for i in test], emb[test], feats[test])
    return out


def _oof_cluster_terms(make, emb, feats, table, n_folds, seed):
    from router.stacking import kfold_indices

    uq = np.zeros_like(table.scores, dtype=float)
    uc = np.zeros_like(uq)
    for test in kfold_indices(len(table), n_folds, seed):
        train = np.setdiff1d(np.arange(len(table)), test)
        p = make().fit(emb[train], feats[train], table.scores[train], table.costs[train]).predict(emb[test], feats[test])
        uq[test], uc[test] = p.util_q, p.util_c
    return uq, uc


def content_version(arrays: dict[str, np.ndarray], meta: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    h.update(repr(sorted(meta.items())).encode())
    return h.hexdigest()[:12]
