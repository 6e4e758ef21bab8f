"""What a stage sees of a Kafka message and what it asks to be produced."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from schemas import DeadLetter, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT


@dataclass(frozen=True)
class RawRecord:
    value: bytes
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_kafka(cls, msg) -> RawRecord:
        """From an aiokafka ConsumerRecord or a faust Message (same attribute names)."""
        headers = msg.headers or []
        if isinstance(headers, dict):
            headers = headers.items()
        return cls(
            value=msg.value if msg.value is not None else b"",
            topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
            headers={k: bytes(v) for k, v in headers if v is not None},
        )


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    dead_letter: bool = False  # this output dead-letters an input the stage found invalid
    reason: str = ""  # why, for a dead-lettering output (the letter's own reason)
    # The input this output answers, and its job: what to dead-letter if it cannot be produced.
    origin: RawRecord | None = None
    job_id: str | None = None


# A letter keeps this much of its original, its reason and its ids, so that the letter itself
# always fits on the dlq topic, however large the message it dead-letters.
MAX_LETTER_ORIGINAL_BYTES = 64 * 1024
MAX_LETTER_REASON_CHARS = 2000
MAX_LETTER_ID_CHARS = 512


def letter_for(stage: str, reason: str, record: RawRecord, job_id: str | None = None) -> DeadLetter:
    """A dead letter for a record; the job comes from the caller or the record's header, the
    tenant from the header (set by the trusted producer that submitted it)."""
    job_id = job_id or (record.headers.get(HEADER_JOB_ID, b"").decode(errors="replace") or None)
    tenant = record.headers.get(HEADER_TENANT, b"").decode(errors="replace") or None
    reason, raw = reason[:MAX_LETTER_REASON_CHARS], record.value
    if len(raw) > MAX_LETTER_ORIGINAL_BYTES:  # the letter must fit on the dlq topic itself
        reason += f" (the letter keeps the first {MAX_LETTER_ORIGINAL_BYTES:,} of its {len(raw):,} bytes)"
        raw = raw[:MAX_LETTER_ORIGINAL_BYTES]
    return DeadLetter.of(stage, reason, raw, record.topic, record.partition, record.offset,
                         _clip(job_id), record.key[:MAX_LETTER_ID_CHARS] if record.key else None,
                         _clip(tenant))


def _clip(text: str | None) -> str | None:
    return text[:MAX_LETTER_ID_CHARS] if text else None


def dead_letter(stage: str, reason: str, record: RawRecord, dlq_topic: str, job_id: str | None = None) -> Output:
    return Output(dlq_topic, record.key, encode(letter_for(stage, reason, record, job_id)), dead_letter=True,
                  reason=reason)


def reason_kind(reason: str) -> str:
    """A dead letter's reason reduced to its kind, for a metric label (bounded: no ids, no
    numbers, no quoted input): the text before its first ':' or ';', quoted parts and numbers
    dropped, at most 60 characters. "message is 1,234 bytes; the limit is …" → "message is N
    bytes"; "unknown request id 'job:x'" → "unknown request id"."""
    head = re.sub(r"'[^']*'|\"[^\"]*\"", "", reason)
    head = re.split(r"[:;]", head, maxsplit=1)[0]
    head = re.sub(r"\d[\d,._]*", "N", head)
    return " ".join(head.split())[:60] or "unspecified"
