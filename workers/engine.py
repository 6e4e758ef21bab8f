"""Engines: something that answers an OpenAI chat-completions body with a chat.completion dict.

- :class:`XllamacppEngine` runs a GGUF in-process with xllamacpp (llama.cpp server, continuous
  batching over ``n_parallel`` slots; calls release the GIL and run in a thread).
- :class:`workers.serve.ServeEngine` calls a Ray Serve deployment that wraps one of those.
- :class:`EchoEngine` answers at once with the prompt, no model: for benchmarks of the pipeline.

``workers.tiers.build_engine(tier, workers)`` picks one for a tier.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from schemas.messages import ChatCompletionBody

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A request the engine refused or failed. ``status`` follows HTTP (400: bad request,
    500/503: engine fault); ``type`` is the OpenAI-style error type."""

    def __init__(self, message: str, *, status: int = 500, type: str = "engine_error",
                 details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.details = details or {}

    @property
    def retryable(self) -> bool:
        # 429: rate limited (a remote endpoint's "retry later"), not a fault of the request
        return self.status >= 500 or self.status == 429

    def __reduce__(self):  # survive pickling across Ray processes with its fields
        return (_rebuild_engine_error, (str(self), self.status, self.type, self.details))


def _rebuild_engine_error(message, status, type, details):
    return EngineError(message, status=status, type=type, details=details)


@runtime_checkable
class Engine(Protocol):
    name: str

    async def chat(self, body: dict) -> dict:
        """OpenAI chat-completions request body → OpenAI chat.completion dict (with usage)."""
        ...


# Request fields a local engine accepts; the rest (model, user, metadata, n, ...) are dropped.
_PASS_FIELDS = {
    "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed",
    "presence_penalty", "frequency_penalty", "repeat_penalty", "logit_bias", "response_format",
    "tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "grammar",
    "json_schema", "chat_template_kwargs",
}


def prepare_body(body: dict, max_tokens_cap: int) -> dict:
    """Validate the basics and cap ``max_tokens`` (also honours ``max_completion_tokens``).

    Raises EngineError(400) for malformed bodies. Streaming is not supported."""
    if not isinstance(body, dict):
        raise EngineError("request body must be a JSON object", status=400,
                          type="invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EngineError("'messages' must be a non-empty array", status=400,
                          type="invalid_request_error")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise EngineError(f"messages[{i}] must be an object with a 'role'", status=400,
                              type="invalid_request_error")
    if body.get("stream"):
        raise EngineError("streaming is not supported", status=400, type="invalid_request_error")
    if body.get("n", 1) not in (1, None):
        raise EngineError("only n=1 is supported", status=400, type="invalid_request_error")
    out = {k: v for k, v in body.items() if k in _PASS_FIELDS}
    requested = requested_max_tokens(body)
    if requested is None:
        requested = max_tokens_cap
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise EngineError(f"max_tokens must be a positive integer, got {requested!r}", status=400,
                          type="invalid_request_error")
    out["max_tokens"] = min(requested, max_tokens_cap)
    return out


def requested_max_tokens(body: dict):
    return body.get("max_completion_tokens", body.get("max_tokens"))


def body_warnings(body: dict, max_tokens_cap: int, served_model: str) -> list[str]:
    """What will not be done as the body asks, to be said on the result rather than silently:
    a max_tokens above the cap (prepare_body caps it) and a `model` other than the one serving."""
    warnings = []
    requested = requested_max_tokens(body)
    if isinstance(requested, int) and not isinstance(requested, bool) and requested > max_tokens_cap:
        warnings.append(f"max_tokens {requested} capped at {max_tokens_cap}")
    model = body.get("model")
    if model and model != served_model:
        warnings.append(f"model {str(model)[:200]!r} is not served here; {served_model} answered")
    return warnings


class XllamacppEngine:
    """A GGUF served in-process by xllamacpp.

    ``n_ctx`` is the context of ONE request; llama.cpp splits its context across the
    ``n_parallel`` slots, so the server gets ``n_ctx * n_parallel``."""

    def __init__(self, gguf_path: str | Path, model_name: str, n_ctx: int = 2048,
                 n_parallel: int = 2, threads: int = 1, *, max_tokens_cap: int = 256,
                 verbosity: int = 0, metrics: bool = False):
        import xllamacpp

        path = Path(gguf_path)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist", status=503, type="model_missing")
        self.name = model_name
        self.gguf_path = path
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.max_tokens_cap = max_tokens_cap
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = n_ctx * n_parallel
        p.n_parallel = n_parallel
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.endpoint_metrics = metrics  # llama.cpp's own counters, for server_metrics()
        p.verbosity = verbosity  # 0: quiet (llama.cpp logs each slot at the default 3)
        # llama.cpp also listens on a loopback port; we call it in-process only, so that port
        # gets a random key nobody knows (401 for every other local caller but /health).
        p.api_keys = [secrets.token_urlsafe(32)]
        t0 = time.perf_counter()
        try:
            self._server = xllamacpp.Server(p)
        except Exception as e:  # noqa: BLE001 - xllamacpp raises plain RuntimeError/ValueError
            raise EngineError(f"could not load {path.name}: {e}", status=503,
                              type="model_load_error") from e
        self.load_seconds = time.perf_counter() - t0
        log.info("loaded %s (%s) in %.2fs", model_name, path.name, self.load_seconds)

    def chat_sync(self, body: dict) -> dict:
        req = prepare_body(body, self.max_tokens_cap)
        try:
            resp = self._server.handle_chat_completions(req)
        except ValueError as e:  # xllamacpp raises ValueError for schema errors
            raise EngineError(str(e), status=400, type="invalid_request_error") from e
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"{type(e).__name__}: {e}", status=500) from e
        if not isinstance(resp, dict):
            raise EngineError(f"unexpected engine response of type {type(resp).__name__}")
        if "error" in resp:  # llama.cpp server errors come back as {"error": {...}}
            err = resp["error"] if isinstance(resp["error"], dict) else {"message": str(resp["error"])}
            raise EngineError(str(err.get("message", err)), status=int(err.get("code", 500) or 500),
                              type=str(err.get("type", "engine_error")), details=err)
        if not resp.get("choices") or "usage" not in resp:
            raise EngineError("engine response lacks choices or usage", details=resp)
        resp["model"] = self.name  # llama.cpp reports the file path
        return resp

    async def chat(self, body: dict) -> dict:
        return await asyncio.to_thread(self.chat_sync, body)

    def server_metrics(self) -> dict[str, float]:
        """llama.cpp's counters by name without the ``llamacpp:`` prefix (the engine must be built
        with ``metrics=True``), e.g. ``n_busy_slots_per_decode``: above 1 once two requests have
        shared a decode step, i.e. ran in parallel slots."""
        text = self._server.handle_metrics()
        if text.lstrip().startswith("{"):
            raise EngineError(f"no metrics: {text[:200]}", status=501, type="not_supported_error")
        return {name.removeprefix("llamacpp:"): float(value)
                for name, value in (line.split() for line in text.splitlines()
                                    if line and not line.startswith("#"))}

    def close(self) -> None:
        server = getattr(self, "_server", None)
        self._server = None
        del server  # ~Server joins llama.cpp's loop

    def __repr__(self) -> str:
        return f"XllamacppEngine({self.name!r}, {self.gguf_path.name}, slots={self.n_parallel})"


class EchoEngine:
    """For benchmarks only: answers every request at once, with no model, by echoing the last
    user message (truncated to ``max_chars``), so that what a request spends in the stack is the
    pipeline's own overhead (broker, router, worker) and not a model's. ``switchyard bench
    pipeline`` runs the stack with it (``settings.workers.engine = "echo"``). Usage counts the
    prompt's words as its tokens and one completion token."""

    name = "echo"

    def __init__(self, max_chars: int = 64, max_tokens_cap: int = 256):
        self.max_chars = max_chars
        self.max_tokens_cap = max_tokens_cap

    async def chat(self, body: dict) -> dict:
        prepare_body(body, self.max_tokens_cap)  # the same 400s as a real engine
        try:
            parsed = ChatCompletionBody.model_validate(body)
        except ValidationError as e:
            raise EngineError(str(e), status=400, type="invalid_request_error") from e
        words = len(parsed.prompt_text().split())
        return {
            "id": f"chatcmpl-echo-{secrets.token_hex(6)}", "object": "chat.completion",
            "created": int(time.time()), "model": self.name,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": parsed.last_user_text()[: self.max_chars]}}],
            "usage": {"prompt_tokens": words, "completion_tokens": 1, "total_tokens": words + 1},
        }

    def __repr__(self) -> str:
        return "EchoEngine()"
