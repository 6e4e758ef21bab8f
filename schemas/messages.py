from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.common import SCHEMA_VERSION, Tier, request_id_for, utcnow


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


# A time without a zone is read as UTC (what ClickHouse hands back), so no stage ever has to
# compare a naive time with an aware one.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _Message(BaseModel):
    schema_version: int = SCHEMA_VERSION


# --- the request, as a client writes it (OpenAI Batch compatible) --------------------------


class ContentPart(BaseModel):
    """One part of a message's content, as current OpenAI SDKs send it. Text only for now."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str = ""

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type != "text":
            raise ValueError(f"content parts of type {self.type!r} are not supported yet (text parts only)")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    # A string, a list of parts, or null for an assistant turn that only called tools.
    content: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and getattr(self, "tool_calls", None)):
            raise ValueError("content may be null only for an assistant message with tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatCompletionBody(BaseModel):
    """The `body` of a /v1/chat/completions request. Unknown OpenAI fields pass through."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def last_user_text(self) -> str:
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].text()


class RoutingPolicy(BaseModel):
    """What a tenant may say about the quality/cost trade-off of a request."""

    model_config = ConfigDict(extra="forbid")

    alpha: float | None = Field(default=None, ge=0, le=1)
    budget_usd: float | None = Field(default=None, gt=0)
    quality_floor: float | None = Field(default=None, ge=0, le=1)
    allowed_models: list[str] | None = None
    pinned_tier: Tier | None = None
    cache: bool | None = Field(default=None, description="false: neither answered from nor stored in the "
                               "semantic cache; None: the stack's setting")


class BatchRequestLine(_Message):
    """One line of an OpenAI Batch input file, plus Switchyard's own optional fields."""

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    body: ChatCompletionBody
    tenant: str = Field(default="default", min_length=1)
    job_id: str | None = None
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)


class QueryRequest(BatchRequestLine):
    """A request on the `queries` topic: a batch line whose job is known."""

    job_id: str = Field(min_length=1, max_length=256)
    submitted_at: UtcDatetime = Field(default_factory=utcnow)

    @property
    def request_id(self) -> str:
        return request_id_for(self.job_id, self.custom_id)


# --- routing ---------------------------------------------------------------------------------


class _RequestRef(_Message):
    request_id: str
    job_id: str
    tenant: str
    custom_id: str


class RoutingDecision(_RequestRef):
    tier: Tier
    cluster: int
    router_model: str = Field(description="the model the router picked from its candidate set")
    served_model: str = Field(description="the local model that serves the tier")
    router_version: str
    predicted_quality: float
    predicted_cost_usd: float
    scores: dict[str, float] = Field(default_factory=dict)
    policy: RoutingPolicy = Field(default_factory=RoutingPolicy)
    prompt_chars: int
    explored: bool = Field(default=False, description="an exploration pick, off the router's policy")
    propensity: float = Field(default=1.0, gt=0, le=1,
                              description="the probability that the logging policy picked this tier")
    submitted_at: UtcDatetime
    decided_at: UtcDatetime = Field(default_factory=utcnow)


class WorkItem(_RequestRef):
    """What a tier worker consumes from work.<tier>."""

    tier: Tier
    body: ChatCompletionBody
    router_version: str
    submitted_at: UtcDatetime
    decided_at: UtcDatetime
    fallback_from: list[Tier] = Field(default_factory=list,
                                      description="tiers that failed it, in order, before this one")

    @model_validator(mode="after")
    def _ids_agree(self) -> WorkItem:
        if self.request_id != request_id_for(self.job_id, self.custom_id):
            raise ValueError("request_id does not match job_id and custom_id")
        return self


# --- results and feedback ----------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Result(_RequestRef):
    tier: Tier
    model: str
    status: Literal["ok", "error"]
    response: dict[str, Any] | None = Field(default=None, description="OpenAI chat.completion")
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    model_latency_ms: float = 0.0
    end_to_end_ms: float = 0.0
    router_version: str
    submitted_at: UtcDatetime
    finished_at: UtcDatetime = Field(default_factory=utcnow)
    warnings: list[str] = Field(default_factory=list,
                                description="what was not done as asked (a capped max_tokens, another model)")
    fallback_from: list[Tier] = Field(default_factory=list,
                                      description="tiers whose model failed it before `tier` answered")
    # Answered by the semantic cache (docs/cache.md): `tier`, `model` and `router_version` are the
    # source answer's; no tokens, no cost.
    cache_hit: bool = False
    cache_source_request_id: str | None = Field(default=None, description="the request whose answer this is")
    cache_similarity: float | None = Field(default=None, ge=-1, le=1,
                                           description="cosine of the two queries' embeddings (1 for an exact hit)")
    cache_match: Literal["exact", "similar"] | None = None

    @model_validator(mode="after")
    def _hit_has_source(self) -> Result:
        if self.cache_hit and not (self.cache_source_request_id and self.cache_match):
            raise ValueError("a cache hit names its source request and how it matched")
        return self

    def answer_text(self) -> str:
        if not self.response:
            return ""
        choices = self.response.get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content") or ""

    def to_batch_output_line(self) -> dict[str, Any]:
        """The OpenAI Batch output format, so existing batch consumers read our files."""
        ok = self.status == "ok"
        return {
            "id": f"batch_req_{self.request_id}",
            "custom_id": self.custom_id,
            "response": (
                {"status_code": 200, "request_id": self.request_id, "body": self.response}
                if ok
                else None
            ),
            "error": None if ok else {"code": "model_error", "message": self.error},
        }


class Feedback(_Message):
    request_id: str
    job_id: str
    source: Literal["label", "rating", "auto_grade", "judge"]  # judge: the LLM judge (switchyard judge)
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    metric: str | None = None
    comment: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)


class RouterVersion(_Message):
    """A retrained router candidate and the gate's verdict, on `router.models` (keyed by version).

    Published versions carry the artifact (a zip of router.json and arrays.npz, base64); the
    router stream swaps to the latest published one. Refused ones carry the reason, no artifact."""

    version: str = Field(min_length=1)
    parent_version: str = ""
    verdict: Literal["published", "refused"]
    reason: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    n_outcomes: int = 0
    artifact_base64: str = ""
    training_mix: list[float] = Field(default_factory=list,
                                      description="share of its training queries per cluster (drift is measured against it)")
    created_at: UtcDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _published_has_artifact(self) -> RouterVersion:
        if self.verdict == "published" and not self.artifact_base64:
            raise ValueError("a published version needs its artifact")
        return self


# --- dead letters ------------------------------------------------------------------------------


class DeadLetter(_Message):
    stage: str
    reason: str
    original: str = Field(description="the original bytes, decoded as UTF-8 with replacement")
    original_base64: str = Field(default="", description="the original bytes, exactly")
    topic: str
    # Kafka's own ranges (-1: not from a Kafka partition), which the dead_letters columns hold.
    partition: int = Field(ge=-1, le=2**31 - 1)
    offset: int = Field(ge=-1, le=2**63 - 1)
    job_id: str | None = None
    tenant: str | None = Field(default=None, description="the submitter's tenant, from the Kafka header")
    key: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)

    @classmethod
    def of(cls, stage: str, reason: str, raw: bytes, topic: str, partition: int, offset: int,
           job_id: str | None = None, key: bytes | None = None, tenant: str | None = None) -> DeadLetter:
        return cls(stage=stage, reason=reason, original=raw.decode("utf-8", errors="replace"),
                   original_base64=base64.b64encode(raw).decode(), topic=topic, partition=partition,
                   offset=offset, job_id=job_id, tenant=tenant,
                   key=key.decode("utf-8", errors="replace") if key else None)

    @field_validator("reason")
    @classmethod
    def _reason_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a dead letter needs a human-readable reason")
        return v
