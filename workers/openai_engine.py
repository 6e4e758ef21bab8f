"""An engine for any OpenAI-compatible chat-completions endpoint (Ray Serve LLM, vLLM, a vendor).

Production tiers run on GPUs behind such endpoints; the tier worker is the same either way.
"""
from __future__ import annotations

import os

import httpx

from workers.engine import EngineError, prepare_body


class OpenAIEngine:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout_seconds: float = 600.0, max_tokens_cap: int = 256):
        self.name = model
        self.max_tokens_cap = max_tokens_cap
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                         timeout=timeout_seconds)

    @classmethod
    def for_tier(cls, tier_model, max_tokens_cap: int) -> OpenAIEngine:
        return cls(tier_model.endpoint, tier_model.endpoint_model or tier_model.name,
                   api_key=os.environ.get(tier_model.api_key_env),
                   timeout_seconds=tier_model.request_timeout_seconds, max_tokens_cap=max_tokens_cap)

    async def chat(self, body: dict) -> dict:
        request = {**prepare_body(body, self.max_tokens_cap), "model": self.name}
        try:
            response = await self._client.post("/chat/completions", json=request)
        except httpx.HTTPError as exc:  # connection refused, timeout: worth a retry
            raise EngineError(f"{type(exc).__name__}: {exc}", status=503, type="unavailable") from exc
        if response.status_code != 200:
            try:
                error = response.json().get("error") or {}
            except ValueError:
                error = {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise EngineError(message or response.text[:500], status=response.status_code,
                              type=(error.get("type") if isinstance(error, dict) else None) or "http_error")
        data = response.json()
        if not data.get("choices"):
            raise EngineError("endpoint response lacks choices", details=data)
        return data

    async def close(self) -> None:
        await self._client.aclose()
