"""What a stage sees of a Kafka message and what it asks to be produced."""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas import DeadLetter, encode
from schemas.common import HEADER_JOB_ID


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


def letter_for(stage: str, reason: str, record: RawRecord, job_id: str | None = None) -> DeadLetter:
    """A dead letter for a record; the job comes from the caller or the record's header."""
    job_id = job_id or (record.headers.get(HEADER_JOB_ID, b"").decode(errors="replace") or None)
    return DeadLetter.of(stage, reason, record.value, record.topic, record.partition, record.offset,
                         job_id, record.key)


def dead_letter(stage: str, reason: str, record: RawRecord, dlq_topic: str, job_id: str | None = None) -> Output:
    return Output(dlq_topic, record.key, encode(letter_for(stage, reason, record, job_id)), dead_letter=True)
