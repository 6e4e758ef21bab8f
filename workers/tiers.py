"""Which model serves a tier, and the engine that runs it. The one place that answers it: the
router stream (the decision's served model), the tier workers (prices, in-flight bound), the
engines and Ray Serve all ask `served_tier`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from schemas.common import TIERS, Tier
from workers.config import TierModel, WorkerSettings
from workers.engine import EchoEngine, Engine, XllamacppEngine
from workers.models import ModelSpec, ensure_model, get_spec

EngineKind = Literal["endpoint", "inprocess", "serve", "echo"]


@dataclass(frozen=True)
class ServedTier:
    tier: str
    model: TierModel  # name, slots, threads, prices, endpoint
    spec: ModelSpec | None  # the local GGUF; None when an endpoint (or the echo engine) serves the tier
    engine: EngineKind
    max_tokens_cap: int = 256  # the engines cap max_tokens at this (settings.workers.max_tokens_cap)

    @property
    def name(self) -> str:
        """The model name recorded on decisions and results."""
        if self.engine == "echo":
            return EchoEngine.name
        if self.spec is not None:
            return self.spec.name
        return self.model.endpoint_model or self.model.name

    @property
    def max_in_flight(self) -> int:
        # Twice the engine's slots: one request decoding per slot, one queued behind it.
        return max(1, self.model.parallel_slots * 2)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        m = self.model
        return (prompt_tokens * m.price_per_mtok_in + completion_tokens * m.price_per_mtok_out) / 1e6


def served_tier(tier: str, workers: WorkerSettings) -> ServedTier:
    """The model serving `tier`: its own TierModel, or the small tier's under all_tiers_small.
    Under the echo engine (benchmarks) no model serves any tier: no spec, no file to ensure."""
    key = "small" if workers.all_tiers_small else tier
    model = workers.models.get(key)
    if model is None:
        raise KeyError(f"no model configured for tier {key!r} (settings.workers.models)")
    if workers.engine == "echo":
        return ServedTier(tier, model, None, "echo", workers.max_tokens_cap)
    if model.endpoint:
        return ServedTier(tier, model, None, "endpoint", workers.max_tokens_cap)
    return ServedTier(tier, model, get_spec(model.name), workers.engine, workers.max_tokens_cap)


def served_models(workers: WorkerSettings, tiers: Iterable[str] = TIERS) -> dict[str, str]:
    """tier -> the name of the model that serves it."""
    return {tier: served_tier(tier, workers).name for tier in tiers}


def price_table(workers: WorkerSettings, tiers: Iterable[str] = TIERS) -> dict[str, tuple[str, float, float]]:
    """tier -> (served model, USD per million input tokens, per million output tokens)."""
    return {t: (s.name, s.model.price_per_mtok_in, s.model.price_per_mtok_out)
            for t in tiers for s in [served_tier(t, workers)]}


def engine_kwargs(served: ServedTier, workers: WorkerSettings) -> dict[str, Any]:
    """XllamacppEngine's constructor arguments for a locally served tier (model ensured on disk)."""
    if served.spec is None:
        raise ValueError(f"tier {served.tier} is served by {served.engine}, not a local model")
    m = served.model
    return dict(gguf_path=str(ensure_model(served.spec, workers.model_dir)), model_name=served.name,
                n_ctx=m.context_tokens, n_parallel=m.parallel_slots, threads=m.threads,
                max_tokens_cap=workers.max_tokens_cap)


def build_engine(tier: str, workers: WorkerSettings) -> Engine:
    """The engine for `tier`: an OpenAI-compatible endpoint, xllamacpp in-process, a handle
    to the tier's Ray Serve deployment, or the echo engine (benchmarks)."""
    served = served_tier(tier, workers)
    if served.engine == "echo":
        return EchoEngine(max_tokens_cap=workers.max_tokens_cap)
    if served.engine == "endpoint":
        from workers.openai_engine import OpenAIEngine

        return OpenAIEngine.for_tier(served.model, workers.max_tokens_cap)
    if served.engine == "inprocess":
        return XllamacppEngine(**engine_kwargs(served, workers))
    from workers.serve import ServeEngine

    return ServeEngine(tier, name=served.name, ray_address=workers.ray_address,
                       address_file=address_file(workers))


def address_file(workers: WorkerSettings) -> Path:
    from workers.serve import ADDRESS_FILE

    return Path(workers.ray_temp_dir) / ADDRESS_FILE


def serve_tiers(workers: WorkerSettings, tiers: Iterable[Tier] = TIERS):
    """Start Ray Serve with one deployment per tier it serves (see workers.serve); a tier served
    by an endpoint or the echo engine has none."""
    from workers.serve import start_serve

    served = [served_tier(t, workers) for t in tiers]
    kwargs = {s.tier: engine_kwargs(s, workers) for s in served if s.engine == "serve"}  # ensures the models
    return start_serve(kwargs, ray_temp_dir=workers.ray_temp_dir, ray_num_cpus=workers.ray_num_cpus)


def ensure_all(workers: WorkerSettings, tiers: Iterable[str] | None = None, *,
               progress: bool | None = None) -> dict[str, Path]:
    """Ensure every locally served tier's model file; returns {tier: gguf path}."""
    out: dict[str, Path] = {}
    done: dict[str, Path] = {}
    for tier in tiers if tiers is not None else workers.models:
        spec = served_tier(tier, workers).spec
        if spec is None:
            continue
        if spec.name not in done:
            done[spec.name] = ensure_model(spec, workers.model_dir, progress=progress)
        out[tier] = done[spec.name]
    return out
