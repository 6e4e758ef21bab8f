"""One registry of the models the routers know: tier (small / medium / large) and token prices.

Tiers decide which local model serves a query (SmolLM2-135M / Qwen2.5-Coder-0.5B /
Qwen2.5-Coder-1.5B in the embedded stack: README.md, `workers/models.py`). The mapping of the
public routing sets' models:

- RouterBench: small = 7–13B open models; medium = 34–70B open models and the cheap API models
  (gpt-3.5-turbo, claude-instant); large = frontier API models (gpt-4, claude-v1/v2).
- LLMRouter (dcrouter): small < 15B parameters, medium 15–60B (incl. Mixtral-8x7B's 47B),
  large > 60B.

Prices are USD per million tokens (input, output). RouterBench rows carry their real per-call
cost, so its prices here are indicative (public list prices at the time); LLMRouter's come from
its `llm_candidates` file (`llmrouter_dcrouter.prices.json`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from router.base import TIERS, Tier

OUTPUT_TOKENS_PROXY = 256
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    tier: Tier
    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def proxy_cost(self, text: str) -> float:
        """Token-price proxy for one call: input ≈ len(text)/4 tokens, output ≈ 256 tokens."""
        tokens_in = len(text) / CHARS_PER_TOKEN
        return (tokens_in * self.input_usd_per_mtok + OUTPUT_TOKENS_PROXY * self.output_usd_per_mtok) / 1e6


def _m(name: str, tier: Tier, price_in: float, price_out: float) -> ModelInfo:
    return ModelInfo(name, tier, price_in, price_out)


KNOWN_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        # RouterBench subset
        _m("mistralai/mistral-7b-chat", "small", 0.2, 0.2),
        _m("WizardLM/WizardLM-13B-V1.2", "small", 0.3, 0.3),
        _m("mistralai/mixtral-8x7b-chat", "medium", 0.6, 0.6),
        _m("zero-one-ai/Yi-34B-Chat", "medium", 0.8, 0.8),
        _m("meta/code-llama-instruct-34b-chat", "medium", 0.776, 0.776),
        _m("meta/llama-2-70b-chat", "medium", 0.9, 0.9),
        _m("gpt-3.5-turbo-1106", "medium", 1.0, 2.0),
        _m("claude-instant-v1", "medium", 0.8, 2.4),
        _m("claude-v1", "large", 8.0, 24.0),
        _m("claude-v2", "large", 8.0, 24.0),
        _m("gpt-4-1106-preview", "large", 10.0, 30.0),
        # LLMRouter (dcrouter) candidates
        _m("qwen2.5-7b-instruct", "small", 0.2, 0.2),
        _m("codegemma-7b", "small", 0.2, 0.2),
        _m("gemma-2-9b-it", "small", 0.1, 0.1),
        _m("llama-3.1-8b-instruct", "small", 0.2, 0.2),
        _m("llama3-chatqa-1.5-8b", "small", 0.2, 0.2),
        _m("mistral-7b-instruct-v0.3", "small", 0.2, 0.2),
        _m("mistral-nemo-12b-instruct", "small", 0.3, 0.3),
        _m("mixtral-8x7b-instruct-v0.1", "medium", 0.6, 0.6),
        _m("llama-3.3-nemotron-super-49b-v1", "medium", 0.9, 0.9),
        _m("llama-3.1-nemotron-51b-instruct", "medium", 0.9, 0.9),
        _m("llama3-chatqa-1.5-70b", "large", 0.9, 0.9),
        _m("llama3-70b-instruct", "large", 0.9, 0.9),
        _m("mixtral-8x22b-instruct-v0.1", "large", 1.2, 1.2),
        _m("palmyra-creative-122b", "large", 1.8, 1.8),
    ]
}


def _tier_from_size(size: str | None) -> Tier | None:
    if not size:
        return None
    try:
        billions = float(str(size).upper().rstrip("B"))
    except ValueError:
        return None
    return "small" if billions < 15 else "medium" if billions <= 60 else "large"


def load_prices(path: str | Path) -> dict[str, ModelInfo]:
    """Read a prices file ({model: {input_price_usd_per_mtok, output_price_usd_per_mtok, size?}})."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"prices file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"prices file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"prices file {path} must map model names to price records")
    out: dict[str, ModelInfo] = {}
    for name, rec in raw.items():
        try:
            price_in = float(rec["input_price_usd_per_mtok"])
            price_out = float(rec["output_price_usd_per_mtok"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"prices file {path}: model {name!r} needs numeric input_price_usd_per_mtok "
                "and output_price_usd_per_mtok"
            ) from None
        known = KNOWN_MODELS.get(name)
        tier = _tier_from_size(rec.get("size")) or (known.tier if known else "medium")
        out[name] = ModelInfo(name, tier, price_in, price_out)
    return out


def assign_tiers(models: list[str], mean_costs: Mapping[str, float]) -> dict[str, Tier]:
    """Registry tier for known models; unknown ones get a tier from their cost tercile."""
    ranked = sorted(models, key=lambda m: mean_costs.get(m, 0.0))
    tiers: dict[str, Tier] = {}
    for rank, model in enumerate(ranked):
        if model in KNOWN_MODELS:
            tiers[model] = KNOWN_MODELS[model].tier
        else:
            tiers[model] = TIERS[min(2, rank * 3 // max(1, len(ranked)))]
    return tiers
