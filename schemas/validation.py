"""Turning raw bytes into messages, with reasons a person can read when that fails."""
from __future__ import annotations

import json
from typing import Mapping, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from schemas.messages import QueryRequest

M = TypeVar("M", bound=BaseModel)


class InvalidMessage(ValueError):
    """Raised for input that can never be processed; the caller dead-letters it."""

    def __init__(self, reason: str, job_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_json_object(raw: bytes) -> dict:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_message(cls: type[M], raw: bytes) -> M:
    data = parse_json_object(raw)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {cls.__name__}: {describe(exc)}") from None


def parse_query(raw: bytes, headers: Mapping[str, bytes] | None = None) -> QueryRequest:
    """A request from the queries topic. job_id and tenant may come from headers instead."""
    headers = headers or {}
    header_job = headers.get(HEADER_JOB_ID, b"").decode(errors="replace") or None
    header_tenant = headers.get(HEADER_TENANT, b"").decode(errors="replace") or None
    try:
        data = parse_json_object(raw)
    except InvalidMessage as exc:
        exc.job_id = header_job
        raise
    data.setdefault("job_id", header_job or "default")
    if header_tenant:
        data.setdefault("tenant", header_tenant)
    try:
        return QueryRequest.model_validate(data)
    except ValidationError as exc:
        job = data.get("job_id") if isinstance(data.get("job_id"), str) else header_job
        raise InvalidMessage(f"invalid request: {describe(exc)}", job_id=job) from None
