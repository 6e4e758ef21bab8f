"""Every message Switchyard reads or writes is defined here, and only here."""
from schemas.common import SCHEMA_VERSION, TIERS, Tier, encode, request_id_for
from schemas.messages import (
    BatchRequestLine,
    ChatCompletionBody,
    ChatMessage,
    DeadLetter,
    Feedback,
    QueryRequest,
    Result,
    RoutingDecision,
    RouterVersion,
    RoutingPolicy,
    Usage,
    WorkItem,
)

__all__ = [
    "SCHEMA_VERSION", "TIERS", "Tier", "encode", "request_id_for",
    "BatchRequestLine", "ChatCompletionBody", "ChatMessage", "DeadLetter", "Feedback",
    "QueryRequest", "Result", "RouterVersion", "RoutingDecision", "RoutingPolicy", "Usage", "WorkItem",
]
