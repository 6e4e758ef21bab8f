"""The typed configuration of the tier workers and their engines. The composition root
(`switchyard.settings`) nests it in its one Settings object; nothing here reads the environment."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from schemas.common import TIERS, Tier
from workers.models import LOCAL_MODELS


class TierModel(BaseModel):
    """One tier's model: a GGUF shipped inside PyPI packages, or an OpenAI-compatible endpoint."""

    name: str
    context_tokens: int = 2048
    parallel_slots: int = 2
    threads: int = 1
    price_per_mtok_in: float
    price_per_mtok_out: float
    # An OpenAI-compatible endpoint (e.g. a Ray Serve LLM app, http://head:8000/tier-large/v1)
    # serves this tier instead of the local GGUF when set; the model id sent is `endpoint_model`.
    endpoint: str | None = None
    endpoint_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout_seconds: float = 600.0


# Prices are the list prices of comparable hosted models, used for the cost estimate.
_DEFAULT_PRICES = {"small": (0.02, 0.04), "medium": (0.10, 0.20), "large": (0.50, 1.00)}


def default_tier_models() -> dict[str, TierModel]:
    return {tier: TierModel(name=LOCAL_MODELS[tier].name, price_per_mtok_in=p_in, price_per_mtok_out=p_out)
            for tier, (p_in, p_out) in _DEFAULT_PRICES.items()}


def default_fallbacks() -> dict[Tier, list[Tier]]:
    # Up first (a bigger model answers at least as well), then down as the last resort.
    return {"small": ["medium", "large"], "medium": ["large", "small"], "large": ["medium", "small"]}


class BreakerSettings(BaseModel):
    """The circuit breaker of each tier worker (workers.breaker) and where its traffic goes while
    it is open: the worker forwards the work item to the next tier of its fallback chain."""

    enabled: bool = True
    failures_to_open: int = Field(default=5, ge=1, description="consecutive failed engine calls that open it")
    reset_timeout_seconds: float = Field(default=30.0, gt=0, description="open this long, then probe")
    engine_attempts: int = Field(default=3, ge=1, description="tries per request while it is closed")
    fallbacks: dict[Tier, list[Tier]] = Field(default_factory=default_fallbacks)

    @model_validator(mode="after")
    def _chains_name_other_tiers(self) -> BreakerSettings:
        for tier, chain in self.fallbacks.items():
            if tier in chain:
                raise ValueError(f"the fallback chain of {tier} names {tier} itself")
        return self

    def chain(self, tier: str) -> list[str]:
        return list(self.fallbacks.get(tier, [t for t in TIERS if t != tier]))


class WorkerSettings(BaseModel):
    # "serve": the tier worker calls a Ray Serve deployment; "inprocess": loads the model itself;
    # "echo": no model at all, an instant echo of the prompt (benchmarks of the pipeline itself).
    engine: Literal["serve", "inprocess", "echo"] = "serve"
    # Lean mode for tests: every tier is served by the small tier's model (and its settings).
    all_tiers_small: bool = False
    max_tokens_cap: int = 256
    # A partial override changes only what it names: SWITCHYARD_WORKERS__MODELS='{"large": {...}}'
    # keeps small and medium, and each named tier keeps the default's fields it does not set.
    models: dict[str, TierModel] = Field(default_factory=default_tier_models)
    model_dir: Path = Path.home() / ".cache" / "switchyard" / "models"
    ray_temp_dir: Path = Path("/tmp/switchyard-ray")
    ray_num_cpus: float = 2.0
    # Set by the stack for its stages: the GCS address of the Ray cluster running Serve.
    ray_address: str | None = None
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    # A tier's model fails every call while <data_dir>/run/fault.<tier> exists (workers.faults),
    # for chaos runs and tests. Off: the file is never looked at.
    fault_files: bool = True

    @field_validator("models", mode="before")
    @classmethod
    def _merge_over_the_default_tiers(cls, value):
        if not isinstance(value, dict):
            return value  # pydantic says what is wrong with it
        unknown = sorted(set(value) - set(TIERS))
        if unknown:
            raise ValueError(f"workers.models names unknown tier(s) {unknown}; the tiers are {list(TIERS)}")
        merged: dict = {tier: m.model_dump() for tier, m in default_tier_models().items()}
        for tier, given in value.items():
            if isinstance(given, TierModel):
                given = given.model_dump(exclude_unset=True)
            merged[tier] = {**merged[tier], **given} if isinstance(given, dict) else given
        return merged
