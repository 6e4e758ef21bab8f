"""The router stage's processor: raw query records in, decisions, work items and dead letters out.

No Kafka here: the faust agent in `streams.router_app` feeds it micro-batches, so the same code
is tested directly and runs offline.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from infra.topics import Topics
from router.base import Knobs, Router, RoutingError
from router.explore import affordable_tiers, explore
from schemas import QueryRequest, RoutingDecision, WorkItem, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, utcnow
from schemas.validation import MAX_MESSAGE_BYTES, InvalidMessage, parse_query
from streams.cache import SemanticCache
from streams.limits import TenantGate
from streams.records import Output, RawRecord, dead_letter

log = logging.getLogger(__name__)

STAGE = "router"
EmbedFn = Callable[[Sequence[str]], np.ndarray]


def knobs_for(request: QueryRequest) -> Knobs:
    p = request.routing
    return Knobs(
        alpha=p.alpha, budget_usd=p.budget_usd, quality_floor=p.quality_floor,
        allowed_models=tuple(p.allowed_models) if p.allowed_models else None,
        pinned_tier=p.pinned_tier,
    )


def explorable(knobs: Knobs) -> bool:
    """Exploration never overrides what a request asked for: a pinned tier or a model list."""
    return knobs.pinned_tier is None and knobs.allowed_models is None


class RouterProcessor:
    def __init__(self, router: Router, embed: EmbedFn, served_models: dict[str, str],
                 topics: Topics = Topics(), explore_rate: float = 0.0, limits: TenantGate | None = None,
                 cache: SemanticCache | None = None):
        self.router = router
        self.cache = cache  # the semantic cache (streams.cache); None: off
        self.limits = limits  # per-tenant rate limits and token budgets; None: unlimited
        self.embed = embed
        self.served_models = served_models  # tier -> the model that serves it
        self.topics = topics
        self.explore_rate = explore_rate

    def swap(self, router: Router) -> None:
        """Use `router` from the next micro-batch on (a batch in flight keeps the one it started with)."""
        log.info("router swapped: %s -> %s", self.router.version, router.version)
        self.router = router

    def process(self, records: Sequence[RawRecord]) -> list[Output]:
        router = self.router  # one version per micro-batch, whatever `swap` does meanwhile
        outputs: list[Output] = []
        valid: list[tuple[RawRecord, QueryRequest]] = []
        for record in records:
            try:
                valid.append((record, parse_query(record.value, record.headers)))
            except InvalidMessage as exc:
                outputs.append(dead_letter(STAGE, exc.reason, record, self.topics.dlq, exc.job_id))
        if not valid:
            return outputs
        texts = [req.body.last_user_text() for _, req in valid]
        embeddings = self.embed(texts)
        if self.cache is not None:  # hits are answered here: no routing, no decision, no limits
            hits, keep = self.cache.answer(valid, embeddings)
            outputs += hits
            if not keep:
                return outputs
            valid, texts, embeddings = [valid[i] for i in keep], [texts[i] for i in keep], embeddings[keep]
        knobs = [knobs_for(req) for _, req in valid]
        try:
            choices = router.route(texts, embeddings, knobs)
        except RoutingError:
            # One request's knobs can't be honoured (e.g. an allowed-model list naming no model
            # the router knows): route one by one so only that request is dead-lettered. Any
            # other exception is a bug: it crashes the stage and the supervisor restarts it.
            choices = []
            for i, (record, req) in enumerate(valid):
                try:
                    choices.append(router.route([texts[i]], embeddings[i : i + 1], [knobs[i]])[0])
                except RoutingError as exc:
                    choices.append(None)
                    outputs.append(dead_letter(STAGE, f"cannot route: {exc}", record, self.topics.dlq,
                                               req.job_id))
        decided_at = utcnow()
        for i, ((record, req), choice) in enumerate(zip(valid, choices)):
            if choice is None:
                continue
            explored, propensity = False, 1.0
            if explorable(knobs[i]):
                tiers = affordable_tiers(choice.tier_costs, knobs[i].budget_usd, choice.tier)
                pick = explore(req.request_id, choice.tier, self.explore_rate, tiers)
                explored, propensity = pick.explored, pick.propensity
                if pick.tier != choice.tier:
                    choice = router.route([texts[i]], embeddings[i : i + 1],
                                          [Knobs(pinned_tier=pick.tier)])[0]
            key = req.request_id.encode()
            ref = dict(request_id=req.request_id, job_id=req.job_id, tenant=req.tenant,
                       custom_id=req.custom_id)
            refused = self.limits and self.limits.refuse(req, choice.tier, self.served_models[choice.tier],
                                                         router.version, record, self.topics)
            if refused:  # over its tenant's limits: an error result instead of work
                outputs.append(refused)
                continue
            decision = RoutingDecision(
                **ref, tier=choice.tier, cluster=choice.cluster, router_model=choice.model,
                served_model=self.served_models[choice.tier], router_version=router.version,
                predicted_quality=choice.predicted_quality,
                predicted_cost_usd=choice.predicted_cost_usd, scores=choice.scores,
                policy=req.routing, prompt_chars=len(req.body.prompt_text()),
                explored=explored, propensity=propensity, submitted_at=req.submitted_at, decided_at=decided_at,
            )
            work = WorkItem(
                **ref, tier=choice.tier, body=req.body, router_version=router.version,
                submitted_at=req.submitted_at, decided_at=decided_at,
            )
            work_bytes = encode(work)
            if len(work_bytes) > MAX_MESSAGE_BYTES:  # refused here, before any output exists for it
                outputs.append(dead_letter(STAGE, f"the work item would be {len(work_bytes):,} bytes; "
                                           f"the limit is {MAX_MESSAGE_BYTES:,}", record, self.topics.dlq,
                                           req.job_id))
                continue
            # Work first: a decision without work would claim routing that never happened. Each
            # output names its input, so one the broker refuses is dead-lettered by the effect.
            # The ids ride along as headers too, so a later stage can attribute even an output
            # it cannot parse to its job and tenant.
            mine = dict(origin=record, job_id=req.job_id,
                        headers=((HEADER_JOB_ID, req.job_id.encode()), (HEADER_TENANT, req.tenant.encode())))
            outputs.append(Output(self.topics.work(choice.tier), key, work_bytes, **mine))
            outputs.append(Output(self.topics.decisions, key, encode(decision), **mine))
        return outputs
