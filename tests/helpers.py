"""Small helpers only the tests use."""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def decode(cls: type[M], raw: bytes | str) -> M:
    """A message from its JSON bytes (the stages use schemas.validation, with reasons)."""
    return cls.model_validate_json(raw)


def chat_body(prompt: str, max_tokens: int = 64, **extra: Any) -> dict:
    """A minimal chat-completions body for one user message."""
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, **extra}
