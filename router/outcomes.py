"""Learning from the router's own traffic: logged outcomes → a routing table, and off-policy
estimates of how another router would have done on the same traffic.

Live traffic is bandit feedback: each request was answered by one tier, chosen by the logging
policy with a known propensity (1 for the policy's own pick without exploration, less for
exploration). Two corrections follow from it:

- *fitting*: a query's unobserved tiers are imputed by a per-tier kNN over the queries where
  that tier was observed (similarity over the embedding and the prompt's form, as
  `router.quality.FormatKnnQuality` sees it), each neighbour weighted by similarity × 1 / propensity (inverse
  propensity weighting), shrunk toward the tier's IPW mean; observed cells keep their outcome.
  The completed table is fitted with the same code as offline data (`fit_router`).
- *evaluation*: a router's value on held-back rows is the self-normalised IPS estimate
  (SNIPS): the rows whose logged tier the router would pick, weighted by 1 / propensity.
  Queries answered by every tier (pinned collections) make the estimate exact.

Pure: arrays and dataclasses in, arrays out.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from router.base import TIERS, Tier
from router.data import RoutingTable
from router.features import text_features
from router.quality import FORMAT_WEIGHT, Standardizer, format_vectors

NEIGHBOURS = 10
PRIOR_STRENGTH = 2.0  # pseudo-observations of the tier mean in each imputed cell


@dataclass(frozen=True)
class Outcome:
    """One answered, graded request as logged."""

    text: str
    tier: Tier
    score: float
    cost_usd: float
    propensity: float = 1.0
    explored: bool = False
    at: float = 0.0  # when the feedback came (seconds since the epoch); orders "recent"

    @property
    def query_id(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


class OutcomeError(ValueError):
    """Outcomes that cannot be learned from (too few, or a tier never observed)."""


def tier_models(served: dict[str, str]) -> dict[str, str]:
    """Column name per tier: the served model's name, made unique when one model serves several
    tiers (the lean stack serves every tier with the small model)."""
    names = list(served.values())
    return {t: (m if names.count(m) == 1 else f"{m}@{t}") for t, m in served.items()}


def outcome_table(outcomes: Sequence[Outcome], embeddings: np.ndarray, columns: dict[str, str],
                  dataset: str = "outcomes") -> tuple[RoutingTable, np.ndarray, np.ndarray]:
    """Queries × tiers from logged outcomes. Returns the completed table (columns in `columns`'
    tier order), the per-query embeddings, and the mask of cells that were observed."""
    tiers = [t for t in TIERS if t in columns]
    if not outcomes:
        raise OutcomeError("no graded outcomes to learn from")
    emb = np.asarray(embeddings, dtype=np.float32)
    index: dict[str, int] = {}
    texts: list[str] = []
    rows_emb: list[np.ndarray] = []
    for o, e in zip(outcomes, emb):
        if o.query_id not in index:
            index[o.query_id] = len(texts)
            texts.append(o.text)
            rows_emb.append(e)
    n, m = len(texts), len(tiers)
    w_sum = np.zeros((n, m))
    s_sum = np.zeros((n, m))
    c_sum = np.zeros((n, m))
    for o in outcomes:
        if o.tier not in tiers:
            continue
        i, j = index[o.query_id], tiers.index(o.tier)
        w = 1.0 / max(o.propensity, 1e-3)
        w_sum[i, j] += w
        s_sum[i, j] += w * o.score
        c_sum[i, j] += w * o.cost_usd
    observed = w_sum > 0
    missing = [t for j, t in enumerate(tiers) if not observed[:, j].any()]
    if missing:
        raise OutcomeError(f"no graded outcome of tier(s) {', '.join(missing)} yet: explore or pin some traffic")
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(observed, s_sum / w_sum, np.nan)
        costs = np.where(observed, c_sum / w_sum, np.nan)
    q_emb = np.vstack(rows_emb)
    feats = text_features(texts)
    near = format_vectors(q_emb, feats, Standardizer.fit(feats), FORMAT_WEIGHT)  # form as well as topic
    for j in range(m):
        obs = np.flatnonzero(observed[:, j])
        todo = np.flatnonzero(~observed[:, j])
        if not len(todo):
            continue
        weight = w_sum[obs, j]
        prior_s = float(np.average(scores[obs, j], weights=weight))
        prior_c = float(np.average(costs[obs, j], weights=weight))
        sim = near[todo] @ near[obs].T  # cosine: unit vectors
        k = min(NEIGHBOURS, len(obs))
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r, (row, cols) in enumerate(zip(todo, nearest)):
            nw = np.clip(sim[r, cols], 0, None) * weight[cols]
            total = nw.sum() + PRIOR_STRENGTH
            scores[row, j] = (nw @ scores[obs[cols], j] + PRIOR_STRENGTH * prior_s) / total
            costs[row, j] = (nw @ costs[obs[cols], j] + PRIOR_STRENGTH * prior_c) / total
    ids = list(index)
    table = RoutingTable(dataset, ids, texts, [columns[t] for t in tiers], scores, costs, ["train"] * n)
    return table, q_emb, observed


def merge_tables(first: RoutingTable, emb_first: np.ndarray, second: RoutingTable,
                 emb_second: np.ndarray) -> tuple[RoutingTable, np.ndarray]:
    """Rows of both tables over the same columns (a prior and the traffic's own outcomes)."""
    if first.models != second.models:
        raise OutcomeError(f"cannot merge tables over {first.models} and {second.models}")
    table = RoutingTable(first.dataset, first.query_ids + second.query_ids, first.texts + second.texts,
                         list(first.models), np.vstack([first.scores, second.scores]),
                         np.vstack([first.costs, second.costs]), first.splits + second.splits,
                         first.tasks + second.tasks)
    return table, np.vstack([emb_first, emb_second])


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Estimate:
    quality: float
    cost_usd: float
    matched: int  # held-back rows whose logged tier the router picks
    rows: int

    def as_dict(self) -> dict:
        return {"quality": self.quality, "cost_usd": self.cost_usd, "matched": self.matched, "rows": self.rows}


def snips(picked: Sequence[str], outcomes: Sequence[Outcome]) -> Estimate:
    """Self-normalised IPS value of picking `picked[i]` for the query of `outcomes[i]`."""
    match = np.array([p == o.tier for p, o in zip(picked, outcomes)])
    w = np.array([1.0 / max(o.propensity, 1e-3) for o in outcomes]) * match
    if w.sum() == 0:
        return Estimate(float("nan"), float("nan"), 0, len(outcomes))
    score = np.array([o.score for o in outcomes])
    cost = np.array([o.cost_usd for o in outcomes])
    return Estimate(float(w @ score / w.sum()), float(w @ cost / w.sum()), int(match.sum()), len(outcomes))


def fixed_tier_estimates(outcomes: Sequence[Outcome]) -> dict[str, Estimate]:
    """What always-small / always-medium / always-large would have scored on the same rows."""
    return {t: snips([t] * len(outcomes), outcomes) for t in TIERS}


@dataclass(frozen=True)
class GateRules:
    """When a candidate replaces the current version, judged on held-back rows: the candidate's
    default operating point must beat what the current version reaches at the same cost (its
    α-sweep curve, read like the bench reads curves), or match its quality for clearly less."""

    min_matched: int = 10
    quality_gain: float = 0.01
    quality_slack: float = 0.005
    cost_saving: float = 0.10


def gate(candidate: Estimate, current: Estimate, current_curve: Sequence[tuple[float, float]] = (),
         rules: GateRules = GateRules()) -> tuple[bool, str]:
    """(publish?, why) — the reason is recorded with the version either way. `current_curve` is
    the current version's (cost, quality) points on the same rows; its default point if empty."""
    from router.bench.metrics import envelope

    if candidate.matched < rules.min_matched:
        return False, (f"too little held-back evidence: the candidate's picks match {candidate.matched} of "
                       f"{candidate.rows} held-back rows (need {rules.min_matched})")
    if not np.isfinite(current.quality) or current.matched < rules.min_matched:
        return True, (f"no held-back evidence on the current version ({current.matched} matched rows); "
                      f"candidate quality {candidate.quality:.3f} at ${candidate.cost_usd:.3g}/request")
    curve = list(current_curve) or [(current.cost_usd, current.quality)]
    reach = float(envelope(curve, candidate.cost_usd)[0])
    if not np.isfinite(reach):  # cheaper than any point of the current: compare with its cheapest
        reach = float(min(curve)[1])
    summary = (f"candidate quality {candidate.quality:.3f} at ${candidate.cost_usd:.3g}/request; current "
               f"{current.quality:.3f} at ${current.cost_usd:.3g}, reaching {reach:.3f} at the candidate's cost")
    if candidate.quality >= reach + rules.quality_gain:
        return True, f"better quality than the current version reaches at this cost: {summary}"
    if (candidate.quality >= current.quality - rules.quality_slack
            and candidate.cost_usd <= (1 - rules.cost_saving) * current.cost_usd):
        return True, f"same quality for less: {summary}"
    return False, f"not better: {summary}"


# --------------------------------------------------------------------------- fit and judge

DEFAULT_QUALITY_SHARE = 0.95


OUTCOME_KINDS = ("format_knn", "switchyard")  # simplest first
SELECTION_SEEDS = (1, 2, 3)
AUTO = "auto"


def curve_score(cal, lo: float, hi: float, points: int = 21) -> float:
    """Mean, over budgets log-spaced from `lo` to `hi` USD/request, of the best quality a
    calibration's operating points reach within the budget (0 where none fits): the area under
    its quality/cost curve, read like the bench reads curves."""
    budgets = np.geomspace(max(lo, 1e-12), max(hi, lo * (1 + 1e-9), 1e-12), points)
    best = [float(cal.mean_quality[cal.mean_cost <= b * (1 + 1e-9)].max(initial=0.0)) for b in budgets]
    return float(np.mean(best))


def fit_on_outcomes(table: RoutingTable, embeddings: np.ndarray, tiers: dict[str, Tier],
                    quality_share: float = DEFAULT_QUALITY_SHARE, kind: str = AUTO):
    """The same fit as `switchyard router fit`, over the served tiers; the default operating point
    is the cheapest one that keeps `quality_share` of the best quality it reaches out of fold.

    kind "auto" fits the simplest of OUTCOME_KINDS unless a more complex one has the higher
    held-out quality/cost curve (`curve_score` of `held_out_calibration`, each kind's whole fit
    redone without the fold) under every one of SELECTION_SEEDS fold splits: on a router's own
    traffic (tens to hundreds of rows) the stack and a kNN that sees the prompt's form are level
    within the noise, and the kNN sends fewer of the questions no tier answers to a bigger one."""
    from router.learned import choose_default_alpha, fit_router, held_out_calibration

    if kind == AUTO:
        mean_cost = np.nanmean(table.costs, axis=0)
        lo, hi = float(np.nanmin(mean_cost)), float(np.nanmax(mean_cost))
        scores = np.array([[curve_score(held_out_calibration(k, table, embeddings, seed=seed), lo, hi)
                            for seed in SELECTION_SEEDS] for k in OUTCOME_KINDS])
        kind = OUTCOME_KINDS[0]
        for i in range(1, len(OUTCOME_KINDS)):
            if (scores[i] > scores[OUTCOME_KINDS.index(kind)]).all():
                kind = OUTCOME_KINDS[i]
        router = fit_router(kind, table, embeddings, tiers=tiers)
        router.meta["kind_selection"] = {k: [round(float(x), 4) for x in row] for k, row in zip(OUTCOME_KINDS, scores)}
    else:
        router = fit_router(kind, table, embeddings, tiers=tiers)
    router.meta["default_alpha"] = choose_default_alpha(router, quality_share)
    router.meta["default_quality_share"] = quality_share
    return router


def picked_tiers(router, texts: Sequence[str], embeddings: np.ndarray, alpha: float | None = None) -> list[str]:
    from router.base import Knobs

    knobs = [Knobs(alpha=alpha)] * len(texts)
    return [c.tier for c in router.route(list(texts), embeddings, knobs)]


CURVE_MIN_MATCHED = 5  # a sweep point estimated from fewer matched rows is noise, not evidence


def judge(router, outcomes: Sequence[Outcome], embeddings: np.ndarray, sweep: int = 11) -> dict:
    """Off-policy metrics of a router on held-back outcomes: its default operating point, the
    fixed tiers on the same rows, and the bench's curve metrics over an α sweep (points with fewer
    than CURVE_MIN_MATCHED matched rows left out)."""
    from router.bench.metrics import Reference, curve_metrics

    texts = [o.text for o in outcomes]
    default = snips(picked_tiers(router, texts, embeddings), outcomes)
    fixed = fixed_tier_estimates(outcomes)
    points = []
    for alpha in np.linspace(0, 1, sweep):
        e = snips(picked_tiers(router, texts, embeddings, float(alpha)), outcomes)
        if np.isfinite(e.quality) and e.matched >= CURVE_MIN_MATCHED:
            points.append((e.cost_usd, e.quality))
    known = {t: e for t, e in fixed.items() if np.isfinite(e.quality)}
    metrics: dict = {"default": default.as_dict(), "fixed_tiers": {t: e.as_dict() for t, e in fixed.items()},
                     "curve_points": points}
    if len(known) >= 2 and points:
        best = max(known.values(), key=lambda e: e.quality)
        cheap = min(known.values(), key=lambda e: e.cost_usd)
        ref = Reference(best.quality, best.cost_usd, cheap.quality, cheap.cost_usd)
        metrics["curve"] = {k: (None if not np.isfinite(v) else round(float(v), 4))
                            for k, v in curve_metrics(points, ref).items()}
    return metrics
