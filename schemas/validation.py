"""Turning raw bytes into messages, with reasons a person can read when that fails.

Parsing is bounded: a message's size is checked before it is parsed and its nesting depth while
it is (orjson, a C parser with its own depth cap, never raises RecursionError), so no input can
exhaust a stage's stack or memory. Every stage parses through `parse_message` / `parse_query`.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.common import HEADER_JOB_ID, HEADER_TENANT, SCHEMA_VERSION
from schemas.messages import QueryRequest, RouterVersion

M = TypeVar("M", bound=BaseModel)

MAX_QUERY_BYTES = 1 << 20  # one request on `queries`
# Any other message between stages: a work item carries a whole request and its ids.
MAX_MESSAGE_BYTES = 4 << 20
MAX_ARTIFACT_BYTES = 64 << 20  # router.models carries whole router artifacts
MAX_JSON_DEPTH = 64
MAX_REASON_ERRORS = 10  # a reason names the first few validation errors, not thousands


class InvalidMessage(ValueError):
    """Raised for input that can never be processed; the caller dead-letters it."""

    def __init__(self, reason: str, job_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


def describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for err in errors[:MAX_REASON_ERRORS]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    if len(errors) > MAX_REASON_ERRORS:
        parts.append(f"and {len(errors) - MAX_REASON_ERRORS} more errors")
    return "; ".join(parts)


def default_max_bytes(cls: type[BaseModel]) -> int:
    if issubclass(cls, QueryRequest):
        return MAX_QUERY_BYTES
    if issubclass(cls, RouterVersion):
        return MAX_ARTIFACT_BYTES
    return MAX_MESSAGE_BYTES


def check_size(raw: bytes, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise InvalidMessage(f"message is {len(raw):,} bytes; the limit is {max_bytes:,}")


def too_deep(data: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than `max_depth` (iterative: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json_object(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES,
                      max_depth: int = MAX_JSON_DEPTH) -> dict:
    check_size(raw, max_bytes)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc).lower():
            raise InvalidMessage(f"JSON nested deeper than {max_depth} levels") from None
        raise InvalidMessage(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(data).__name__}")
    # Each level of nesting opens a bracket, so a message with no more brackets than the limit
    # (counted in C, strings included: conservative) cannot be too deep: the common case skips
    # the walk, which was 40 % of the sink's parsing time.
    brace, bracket = ("{", "[") if isinstance(raw, str) else (b"{", b"[")
    if raw.count(brace) + raw.count(bracket) > max_depth and too_deep(data, max_depth):
        raise InvalidMessage(f"JSON nested deeper than {max_depth} levels")
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidMessage(f"schema_version {repr(version)[:40]} is not supported "
                             f"(this version reads {SCHEMA_VERSION})")
    return data


def parse_message(cls: type[M], raw: bytes, *, max_bytes: int | None = None,
                  max_depth: int = MAX_JSON_DEPTH) -> M:
    data = parse_json_object(raw, max_bytes=max_bytes or default_max_bytes(cls), max_depth=max_depth)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {cls.__name__}: {describe(exc)}") from None


def parse_query(raw: bytes, headers: Mapping[str, bytes] | None = None, *,
                max_bytes: int = MAX_QUERY_BYTES, max_depth: int = MAX_JSON_DEPTH) -> QueryRequest:
    """A request from the queries topic. job_id may come from a header instead; the tenant
    header, set by a trusted producer (the CLI's --tenant), overrides the line's own tenant."""
    headers = headers or {}
    header_job = headers.get(HEADER_JOB_ID, b"").decode(errors="replace") or None
    header_tenant = headers.get(HEADER_TENANT, b"").decode(errors="replace") or None
    try:
        data = parse_json_object(raw, max_bytes=max_bytes, max_depth=max_depth)
    except InvalidMessage as exc:
        exc.job_id = header_job
        raise
    data.setdefault("job_id", header_job or "default")
    if header_tenant:
        data["tenant"] = header_tenant
    try:
        return QueryRequest.model_validate(data)
    except ValidationError as exc:
        job = data.get("job_id") if isinstance(data.get("job_id"), str) else header_job
        raise InvalidMessage(f"invalid request: {describe(exc)}", job_id=job) from None
