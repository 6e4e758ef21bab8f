"""What `submit` confirms and says about a job's durability.

The embedded broker keeps messages in memory only, so a request the broker acknowledged is not
safe yet: it is once the sink has stored it in ClickHouse, the copy `switchyard replay` works
from. So `submit` waits (briefly: the sink flushes every second) until ClickHouse holds every
request of the job, and when it cannot confirm that, it says to keep the job file (re-submitting
it is idempotent). Chosen over keeping a client-side copy of the job: ClickHouse is already the
system of record, and the file the user has is that copy.
"""
from __future__ import annotations

from pathlib import Path

from switchyard.jobs import JobOutcome, Submission
from switchyard.settings import Settings
from switchyard.warehouse import Warehouse, WarehouseError


class StoredCounter:
    """Counts a job's requests in ClickHouse, as the submitter may see them (its tenant's)."""

    def __init__(self, wh: Warehouse):
        self.wh = wh

    def __call__(self, job_id: str) -> int:
        try:
            return int(self.wh.ask("job_status", job=job_id)[0]["requests"])
        except (WarehouseError, OSError):  # e.g. the sink restarting: not stored yet, ask again
            return 0

    def close(self) -> None:
        self.wh.close()


def stored_counter(settings: Settings) -> StoredCounter | None:
    """None when no ClickHouse the stack writes to can be reached: a running local stack's sink,
    or a ClickHouse server (DSN). Opening the embedded directory with no stack would only ever
    show what an earlier stack stored."""
    from switchyard.stack import running_stack

    if settings.clickhouse.dsn is None and running_stack(settings) is None:
        return None
    try:
        return StoredCounter(Warehouse.open(settings))
    except WarehouseError:
        return None


def unstored_line(sub: Submission, file: Path) -> str:
    if sub.stored is None:
        return (f"could not confirm that ClickHouse stored job {sub.job_id}'s requests: keep {file} "
                f"(re-submitting it is idempotent)")
    return (f"only {sub.stored} of {len(sub.expected)} requests of job {sub.job_id} are stored in "
            f"ClickHouse so far: keep {file} until `switchyard status {sub.job_id}` shows them all "
            f"(re-submitting it is idempotent)")


def broker_lost_line(sub: Submission, outcome: JobOutcome, out_file: Path | None) -> str:
    wrote = f"wrote what it has to {out_file}" if out_file else "pass --out to keep what arrived"
    return (f"lost the broker while waiting for job {sub.job_id}; {len(outcome.results)} of "
            f"{len(sub.expected)} answered; {wrote}; run `switchyard replay {sub.job_id}` once the "
            f"stack is back")
