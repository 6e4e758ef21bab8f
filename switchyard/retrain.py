"""`switchyard retrain`: outcomes from ClickHouse → a candidate router → the gate → `router.models`.

1. read the graded outcomes of the served tiers (`training_outcomes`), plus an optional prior:
   full-information outcomes of the same models (the shipped file, regenerable with
   `switchyard experiment outcomes`);
2. hold back the most recent share of queries; fit the candidate on the rest with the same code
   as offline fitting (`router.outcomes.fit_on_outcomes`), unobserved tiers imputed with inverse
   propensity weights;
3. judge candidate and current version on the held-back rows (off-policy, SNIPS, bench metrics)
   and let the gate decide;
4. publish the verdict on `router.models` (published versions with their artifact); the sink
   records every verdict in `router_versions`, the router stream swaps to published ones.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from router.outcomes import (AUTO, DEFAULT_QUALITY_SHARE, Estimate, GateRules, Outcome, OutcomeError, fit_on_outcomes, gate, judge,
                             merge_tables, outcome_table, tier_models)
from schemas import ChatCompletionBody, RouterVersion, encode
from streams.config import KafkaSettings
from streams.kafka import produce_all, producing
from streams.records import Output

log = logging.getLogger(__name__)

# The local models' full-information outcomes the shipped default was fitted on (see
# docs/learning.md); also the default prior of retraining when the stack serves those models.
SHIPPED_OUTCOMES = Path(__file__).parent / "data" / "local_outcomes.jsonl.gz"

TRAINING_ROWS = """
SELECT body, tier, served_model, score, cost_usd, propensity, explored,
       toUnixTimestamp64Milli(feedback_at) / 1000 AS at
FROM training_outcomes
ORDER BY feedback_at, request_id
"""
# New feedback since the last verdict, and how long ago that was (None: never retrained).
SINCE_LAST_RETRAIN = """
SELECT (SELECT count() FROM feedback FINAL
        WHERE created_at > (SELECT max(created_at) FROM router_versions)) AS new_feedback,
       (SELECT if(count() = 0, NULL, dateDiff('second', max(created_at), now64(3)))
        FROM router_versions) AS seconds_since
"""

# The live router's mix drift over the decisions since the last verdict (analytics.mix_drift's
# formula, over that window instead of per job): the drift trigger of the schedule.
DRIFT_SINCE_LAST_RETRAIN = """
WITH (SELECT max(created_at) FROM router_versions) AS last_at,
     (SELECT argMax(router_version, decided_at) FROM decisions) AS live_version,
live AS (
    SELECT cluster, count() AS n, sum(count()) OVER () AS total
    FROM decisions FINAL WHERE decided_at > last_at AND router_version = live_version GROUP BY cluster
), train AS (
    SELECT toInt32(i - 1) AS cluster, share FROM analytics.training_mix
    ARRAY JOIN shares AS share, arrayEnumerate(shares) AS i WHERE router_version = live_version
)
SELECT any(live_version) AS router_version, ifNull(any(l.total), 0) AS requests,
       if((SELECT count() FROM train) = 0, NULL, greatest(0, 1 - sum(least(l.n / l.total, t.share)))) AS drift
FROM live AS l LEFT JOIN train AS t ON t.cluster = l.cluster
"""


class RetrainError(RuntimeError):
    """Retraining could not produce a candidate (too few outcomes, a tier never seen)."""


@dataclass
class RetrainOptions:
    holdout_share: float = 0.25
    min_outcomes: int = 40
    prior: Path | None = None
    quality_share: float = DEFAULT_QUALITY_SHARE
    rules: GateRules = field(default_factory=GateRules)
    force: bool = False  # publish whatever the gate says (recorded as such)
    kind: str = AUTO  # the router kind fitted: "auto" picks by out-of-fold curve (router.outcomes)


def query_text(body: str) -> str:
    return ChatCompletionBody.model_validate_json(body).last_user_text()


def outcomes_from_rows(rows: list[dict]) -> list[Outcome]:
    out = []
    for r in rows:
        if r["score"] is None:
            continue
        out.append(Outcome(text=query_text(r["body"]), tier=r["tier"], score=float(r["score"]),
                           cost_usd=float(r["cost_usd"]), propensity=float(r["propensity"] or 1.0),
                           explored=bool(r["explored"]), at=float(r["at"] or 0)))
    return out


def split_recent(outcomes: list[Outcome], share: float) -> tuple[list[Outcome], list[Outcome]]:
    """(train, held back): the queries whose latest feedback is the most recent `share` are held
    back whole, so no held-back query is also a training query."""
    latest: dict[str, float] = {}
    for o in outcomes:
        latest[o.query_id] = max(latest.get(o.query_id, 0.0), o.at)
    order = sorted(latest, key=lambda q: (latest[q], q))
    held = set(order[len(order) - int(round(share * len(order))):]) if share > 0 else set()
    return [o for o in outcomes if o.query_id not in held], [o for o in outcomes if o.query_id in held]


def load_prior(path: Path, columns: dict[str, str], embed: Callable):
    from router.data import build_table, load_rows

    table = build_table(load_rows([path]))
    wanted = [columns[t] for t in columns]
    if sorted(table.models) != sorted(wanted):
        log.warning("prior %s covers %s, the stack serves %s: prior not used", path, table.models, wanted)
        return None
    order = [table.models.index(m) for m in wanted]
    table.models, table.scores, table.costs = wanted, table.scores[:, order], table.costs[:, order]
    return table, embed(table.texts)


@dataclass
class RetrainResult:
    verdict: RouterVersion
    metrics: dict

    def summary(self) -> dict:
        v = self.verdict
        return {"version": v.version, "parent_version": v.parent_version, "verdict": v.verdict,
                "reason": v.reason, "n_outcomes": v.n_outcomes, "metrics": self.metrics}


def retrain(outcomes: list[Outcome], current, served: dict[str, str], embed: Callable,
            options: RetrainOptions = RetrainOptions(), step: Callable[[str], None] = lambda s: None) -> RetrainResult:
    """Fit a candidate on the outcomes, judge it against `current`, return the verdict (not yet
    published). Pure of Kafka and ClickHouse: the callers bring outcomes and take the verdict."""
    if len(outcomes) < options.min_outcomes:
        raise RetrainError(f"{len(outcomes)} graded outcomes; retraining needs at least {options.min_outcomes}")
    columns = tier_models(served)
    tiers = {m: t for t, m in columns.items()}
    train, held = split_recent(outcomes, options.holdout_share)
    step(f"embedding {len(outcomes)} outcomes")
    emb_train = embed([o.text for o in train])
    emb_held = embed([o.text for o in held])
    step(f"fitting on {len(train)} outcomes ({len(held)} held back)")
    try:
        table, q_emb, observed = outcome_table(train, emb_train, columns)
    except OutcomeError as exc:
        raise RetrainError(str(exc)) from None
    n_prior = 0
    if options.prior is not None:
        prior = load_prior(options.prior, columns, embed)
        if prior is not None:
            n_prior = len(prior[0])
            table, q_emb = merge_tables(prior[0], prior[1], table, q_emb)
    candidate = fit_on_outcomes(table, q_emb, tiers, options.quality_share, options.kind)
    candidate.meta.update(dataset="outcomes", n_prior_queries=n_prior, observed_share=float(observed.mean()))
    artifact = _artifact(candidate)  # saving names the version (a content hash)
    step("judging candidate and current on held-back outcomes")
    metrics = {"n_train_outcomes": len(train), "n_heldback_outcomes": len(held), "n_prior_queries": n_prior,
               "candidate": judge(candidate, held, emb_held) if held else {},
               "current": judge(current, held, emb_held) if held else {}}
    if held:
        cand, cur = (Estimate(**metrics[k]["default"]) for k in ("candidate", "current"))
        ok, reason = gate(cand, cur, metrics["current"]["curve_points"], options.rules)
    else:
        ok, reason = False, "nothing held back to judge the candidate on"
    if options.force and not ok:
        ok, reason = True, f"forced past the gate ({reason})"
    verdict = RouterVersion(
        version=candidate.version, parent_version=getattr(current, "version", ""),
        verdict="published" if ok else "refused", reason=reason, metrics=metrics, n_outcomes=len(outcomes),
        artifact_base64=artifact if ok else "", training_mix=candidate.training_mix or [])
    return RetrainResult(verdict, metrics)


def _artifact(router) -> str:
    from router.artifact import to_bytes

    return base64.b64encode(to_bytes(router)).decode()


async def publish_version(kafka: KafkaSettings, version: RouterVersion) -> None:
    async with producing(kafka) as producer:
        await produce_all(producer, [Output(kafka.topics.router_models, version.version.encode(), encode(version))])


def dump_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --- against a running stack ------------------------------------------------------------------


def retrain_options(settings, **overrides) -> RetrainOptions:
    r = settings.retrain
    prior = (r.prior_path or SHIPPED_OUTCOMES) if r.use_prior else None
    options = RetrainOptions(holdout_share=r.holdout_share, min_outcomes=r.min_outcomes, prior=prior,
                             quality_share=r.quality_share)
    for key, value in overrides.items():
        if value is not None:
            setattr(options, key, value)
    return options


def retrain_once(settings, options: RetrainOptions, kafka: KafkaSettings | None = None,
                 step: Callable[[str], None] = lambda s: None) -> dict:
    """One retrain on the stack's ClickHouse; publishes the verdict when `kafka` is given."""
    from router.embeddings import embed
    from switchyard.live_router import current_router
    from switchyard.warehouse import Warehouse
    from workers.tiers import served_models

    step("reading outcomes from ClickHouse")
    wh = Warehouse.open(settings)
    try:
        outcomes = outcomes_from_rows(wh.rows(TRAINING_ROWS))
        current = current_router(settings, wh)
    finally:
        wh.close()
    result = retrain(outcomes, current, served_models(settings.workers), embed, options, step)
    if kafka is not None:
        step(f"publishing the verdict ({result.verdict.verdict}) on router.models")
        asyncio.run(publish_version(kafka, result.verdict))
    return result.summary()
