"""Per-tenant rate limits and token budgets in the router stage, with real MiniLM embeddings."""
import json

import pytest
from pydantic import ValidationError

from router.embeddings import embed, load_encoder
from router.heuristic import HeuristicRouter
from schemas import Result, WorkItem
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from streams.limits import TenantGate, TenantLimit, TenantLimitSettings
from streams.records import RawRecord
from streams.routing import RouterProcessor
from switchyard.settings import Settings
from switchyard.stages import tenant_gate

from tests.helpers import decode

SERVED = {"small": "s-model", "medium": "m-model", "large": "l-model"}
CAP = 16


@pytest.fixture(scope="module")
def embed_fn():
    encoder = load_encoder()
    return lambda texts: embed(texts, encoder=encoder, use_cache=False)


def _processor(embed_fn, **tenants):
    limits = TenantLimitSettings(tenants={t: TenantLimit(**lim) for t, lim in tenants.items()})
    return RouterProcessor(HeuristicRouter(), embed_fn, SERVED, limits=TenantGate(limits, CAP))


def _rec(tenant: str, cid: str, max_tokens: int | None = 8, offset: int = 0) -> RawRecord:
    body = {"messages": [{"role": "user", "content": f"Name a colour ({cid})."}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return RawRecord(value=json.dumps({"custom_id": cid, "body": body}).encode(), topic="queries", partition=0,
                     offset=offset, headers={HEADER_JOB_ID: f"job-{tenant}".encode(), HEADER_TENANT: tenant.encode()})


def _outcomes(outputs) -> dict[str, str]:
    """custom_id -> "work" or the error of its result."""
    seen = {}
    for out in outputs:
        if out.topic.startswith("work."):
            seen[decode(WorkItem, out.value).custom_id] = "work"
        elif out.topic == "results":
            result = decode(Result, out.value)
            assert result.status == "error" and out.key == result.request_id.encode()
            seen[result.custom_id] = result.error
    return seen


def test_a_tenant_over_its_token_budget_gets_error_results_and_others_are_unaffected(embed_fn):
    processor = _processor(embed_fn, greedy={"completion_tokens": "20/hour"})
    records = [_rec("greedy", f"g{i}", offset=i) for i in range(3)] + \
              [_rec("polite", f"p{i}", max_tokens=None, offset=10 + i) for i in range(5)]
    outputs = processor.process(records)
    seen = _outcomes(outputs)
    assert seen["g0"] == seen["g1"] == "work"  # 8 + 8 of 20 tokens
    assert seen["g2"] == ("tenant 'greedy' over its token budget: this request may use 8 completion tokens "
                          "and 4 of 20 per 1 hour remain")
    assert all(seen[f"p{i}"] == "work" for i in range(5))
    # A refused request is not routed (no decision claims it) and used none of the budget.
    decided = {o.key for o in outputs if o.topic == "decisions"}
    assert b"job-greedy:g2" not in decided and len(decided) == 7
    assert _outcomes(processor.process([_rec("greedy", "g3", max_tokens=4)])) == {"g3": "work"}


def test_an_unset_max_tokens_reserves_the_cap(embed_fn):
    processor = _processor(embed_fn, t={"completion_tokens": f"{CAP + 1}/hour"})
    seen = _outcomes(processor.process([_rec("t", "a", max_tokens=None), _rec("t", "b", max_tokens=1000, offset=1),
                                        _rec("t", "c", max_tokens=1, offset=2)]))
    assert seen["a"] == "work" and "may use 16 completion tokens and 1 of 17" in seen["b"] and seen["c"] == "work"


def test_a_tenant_over_its_request_rate_gets_error_results(embed_fn):
    processor = _processor(embed_fn, busy={"requests": "2/hour"})
    seen = _outcomes(processor.process([_rec("busy", f"b{i}", offset=i) for i in range(4)] +
                                       [_rec("calm", "c", offset=9)]))
    assert [seen[f"b{i}"] for i in range(2)] == ["work", "work"]
    assert all(seen[f"b{i}"] == "tenant 'busy' over its request rate limit: 2 per 1 hour (retry later)"
               for i in (2, 3))
    assert seen["c"] == "work"


def test_the_default_limit_applies_to_tenants_without_their_own():
    limits = TenantLimitSettings(default=TenantLimit(requests="1/hour"), tenants={"vip": TenantLimit()})
    assert limits.for_tenant("anyone").requests == "1/hour" and limits.for_tenant("vip").requests is None


def test_no_limits_by_default_and_bad_limits_are_refused_at_startup(tmp_path):
    assert tenant_gate(Settings(data_dir=tmp_path)) is None
    with pytest.raises(ValidationError, match="couldn't parse rate limit string 'lots'"):
        Settings(data_dir=tmp_path, tenant_limits={"tenants": {"a": {"requests": "lots"}}})
    configured = Settings(data_dir=tmp_path, tenant_limits={"tenants": {"a": {"completion_tokens": "100/minute"}}})
    assert isinstance(tenant_gate(configured), TenantGate)
