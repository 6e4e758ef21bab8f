"""Per-tenant request rate limits and completion-token budgets, enforced by the router stage.

A request over either gets an error result on `results` (status "error", the reason in
`error`), never a drop: the client's `--wait` counts it as answered and the sink stores it.

- Where: the router stage is the earliest that knows the tenant and the request, and refusing
  there spends no model time. A worker could only delay a request (holding its whole batch, so
  other tenants' requests too) or refuse it after it queued.
- Why `limits` (not aiolimiter): the router's processor is synchronous (it runs in a thread) and
  must decide at once; aiolimiter's limiter is awaited, it delays rather than refuses.
  `limits`' sliding-window counter answers at once, takes a cost per hit (tokens) and reads
  limits in its usual notation ("20/second", "50000/hour").
- What a token budget counts: the only bound known before a request runs is its max_tokens
  (capped by the workers' cap, the default when unset), so each request reserves that many
  completion tokens of its tenant's window. Per window rather than per job, because a tenant
  can split its work into any number of jobs and the budget protects model time, which is
  spent over time.
- The windows live in the router process: a restart starts them afresh (a guard on shared
  capacity, not billing).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.topics import Topics
from schemas import QueryRequest, Result, encode
from streams.records import Output, RawRecord


def _check_limit(value: str | None) -> str | None:
    if value is not None:
        from limits import parse

        parse(value)  # ValueError("couldn't parse rate limit string ...") names the bad value
    return value


class TenantLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: str | None = Field(default=None, description='e.g. "20/second", "1000/hour"; None: unlimited')
    completion_tokens: str | None = Field(default=None, description='e.g. "50000/hour"; None: unlimited')

    @field_validator("requests", "completion_tokens")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return _check_limit(value)

    @property
    def limited(self) -> bool:
        return self.requests is not None or self.completion_tokens is not None


class TenantLimitSettings(BaseModel):
    """Limits per tenant; `default` applies to every tenant without an entry of its own."""

    default: TenantLimit = Field(default_factory=TenantLimit)
    tenants: dict[str, TenantLimit] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantLimit:
        return self.tenants.get(tenant, self.default)

    @property
    def active(self) -> bool:
        return self.default.limited or any(t.limited for t in self.tenants.values())


def reserved_tokens(request: QueryRequest, max_tokens_cap: int) -> int:
    """The completion tokens a request may use: what it asks (as the engines read it), capped."""
    extra = request.body.model_extra or {}
    asked = extra.get("max_completion_tokens", request.body.max_tokens)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        return max_tokens_cap
    return min(asked, max_tokens_cap)


class TenantGate:
    def __init__(self, settings: TenantLimitSettings, max_tokens_cap: int):
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import SlidingWindowCounterRateLimiter

        self.settings = settings
        self.max_tokens_cap = max_tokens_cap
        self._parse = parse
        self._windows = SlidingWindowCounterRateLimiter(MemoryStorage())

    def refusal(self, request: QueryRequest) -> str | None:
        """Why this request is over its tenant's limits, or None (and then it is counted)."""
        tenant, limit = request.tenant, self.settings.for_tenant(request.tenant)
        checks = []
        if limit.requests is not None:
            checks.append(("requests", self._parse(limit.requests), 1))
        if limit.completion_tokens is not None:
            checks.append(("completion_tokens", self._parse(limit.completion_tokens),
                           reserved_tokens(request, self.max_tokens_cap)))
        for kind, item, cost in checks:  # test all before counting any: a refusal costs nothing
            if not self._windows.test(item, kind, tenant, cost=cost):
                return self._reason(tenant, kind, item, cost)
        for kind, item, cost in checks:
            self._windows.hit(item, kind, tenant, cost=cost)
        return None

    def _reason(self, tenant: str, kind: str, item, cost: int) -> str:
        remaining = self._windows.get_window_stats(item, kind, tenant).remaining
        if kind == "requests":
            return f"tenant {tenant!r} over its request rate limit: {item} (retry later)"
        return (f"tenant {tenant!r} over its token budget: this request may use {cost} completion tokens "
                f"and {max(0, remaining)} of {item} remain")

    def refuse(self, request: QueryRequest, tier: str, model: str, router_version: str, record: RawRecord,
               topics: Topics) -> Output | None:
        """The error result for a request over its tenant's limits, or None if it is within them."""
        reason = self.refusal(request)
        if reason is None:
            return None
        result = Result(request_id=request.request_id, job_id=request.job_id, tenant=request.tenant,
                        custom_id=request.custom_id, tier=tier, model=model, status="error", error=reason,
                        router_version=router_version, submitted_at=request.submitted_at)
        return Output(topics.results, request.request_id.encode(), encode(result), origin=record,
                      job_id=request.job_id)
