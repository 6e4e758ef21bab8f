"""The OpenAI Batch lifecycle on Switchyard's queue: a batch is a job whose id is the batch id.

create: the input file's lines go through the same `prepare` / `publish` as `switchyard submit`
(invalid lines are reported in the batch's `errors` and dead-lettered); a file with no valid line
fails the batch. refresh: `request_counts` come from ClickHouse (the job_status question); once
every line is answered or dead-lettered, the batch finalizes: an output file (answered lines, in
OpenAI's output format) and an error file (one line per failed, dead-lettered or cancelled
request) are written, so every input line is accounted for. cancel: the batch stops waiting,
keeps what was answered, and reports the rest as cancelled (requests already queued are still
answered by the stack, but no longer part of the batch's files).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

from switchyard.api.errors import ApiError
from switchyard.api.store import FileStore, Store, new_id
from switchyard.batch_files import dead_letter_line, error_line, output_line
from switchyard.jobs import JobFile, JobFileError, prepare, publish
from switchyard.warehouse import Warehouse

ENDPOINT = "/v1/chat/completions"
WINDOWS = {"24h": 24 * 3600}
ACTIVE = {"validating", "in_progress", "finalizing", "cancelling"}


def _now() -> int:
    return int(time.time())


def batch_object(batch_id: str, input_file_id: str, window: str, metadata: dict | None) -> dict[str, Any]:
    created = _now()
    return {"id": batch_id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": input_file_id, "completion_window": window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": created,
            "in_progress_at": None, "expires_at": created + WINDOWS[window], "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata}


class Batches:
    def __init__(self, files: FileStore, batches: Store, kafka, open_warehouse: Callable[[], Warehouse]):
        self.files = files
        self.store = batches
        self.kafka = kafka
        self.open_warehouse = open_warehouse
        self._locks: dict[str, asyncio.Lock] = {}

    async def create(self, tenant: str, input_file_id: str, endpoint: str, window: str,
                     metadata: dict | None) -> dict[str, Any]:
        if endpoint != ENDPOINT:
            raise ApiError(400, f"endpoint {endpoint!r} is not supported; only {ENDPOINT}", param="endpoint",
                           code="unsupported_endpoint")
        if window not in WINDOWS:
            raise ApiError(400, f"completion_window must be one of {', '.join(WINDOWS)}", param="completion_window")
        meta = self.files.get(input_file_id, tenant)
        content = self.files.content(input_file_id, tenant)
        if meta is None or content is None:
            raise ApiError(404, f"No such File object: {input_file_id}", param="input_file_id", type="invalid_request_error")
        batch_id = new_id("batch")
        batch = batch_object(batch_id, input_file_id, window, metadata)
        try:
            job = JobFile(Path(meta["filename"]), [ln for ln in content.splitlines() if ln.strip()])
            if not job.lines:
                raise JobFileError("the input file has no requests")
        except JobFileError as exc:
            return self._fail(batch, tenant, [{"code": "empty_file", "message": str(exc), "param": None, "line": None}])
        sub, messages = prepare(job, batch_id, tenant)
        batch["request_counts"]["total"] = len(job.lines)
        line_errors = [{"code": "invalid_request", "message": reason, "param": None, "line": number}
                       for number, reason in sub.invalid]
        if not sub.expected:
            return self._fail(batch, tenant, line_errors)
        batch["errors"] = {"object": "list", "data": line_errors} if line_errors else None
        await publish(self.kafka, sub, messages)
        batch.update(status="in_progress", in_progress_at=_now())
        return self.store.save(batch, tenant)

    def _fail(self, batch: dict, tenant: str, errors: list[dict]) -> dict[str, Any]:
        batch.update(status="failed", failed_at=_now(), errors={"object": "list", "data": errors})
        return self.store.save(batch, tenant)

    def get(self, batch_id: str, tenant: str) -> dict[str, Any]:
        batch = self.store.get(batch_id, tenant)
        if batch is None:
            raise ApiError(404, f"No such Batch object: {batch_id}", param="batch_id")
        return batch

    async def refresh(self, batch_id: str, tenant: str) -> dict[str, Any]:
        """The batch with its counts read now; finalized when every line is accounted for."""
        async with self._locks.setdefault(batch_id, asyncio.Lock()):
            batch = self.get(batch_id, tenant)
            if batch["status"] not in ACTIVE:
                return batch
            counts = await asyncio.to_thread(self._ask, "job_status", batch_id, tenant)
            counts = counts[0]
            failed = counts["errors"] + counts["dead_letters"]
            batch["request_counts"].update(completed=counts["answered"] - counts["errors"], failed=failed)
            if batch["status"] == "cancelling":
                return await self._finalize(batch, tenant, "cancelled")
            if counts["answered"] + counts["dead_letters"] >= batch["request_counts"]["total"]:
                return await self._finalize(batch, tenant, "completed")
            if _now() > batch["expires_at"]:
                return await self._finalize(batch, tenant, "expired")
            return self.store.save(batch, tenant)

    async def cancel(self, batch_id: str, tenant: str) -> dict[str, Any]:
        async with self._locks.setdefault(batch_id, asyncio.Lock()):
            batch = self.get(batch_id, tenant)
            if batch["status"] not in ACTIVE:
                raise ApiError(409, f"Cannot cancel a batch with status {batch['status']!r}", code="batch_not_cancellable")
            batch.update(status="cancelling", cancelling_at=_now())
            self.store.save(batch, tenant)
        return await self.refresh(batch_id, tenant)

    async def _finalize(self, batch: dict, tenant: str, final: str) -> dict[str, Any]:
        batch["finalizing_at"] = batch["finalizing_at"] or _now()
        results = await asyncio.to_thread(self._ask, "job_results", batch["id"], tenant)
        letters = await asyncio.to_thread(self._ask, "job_dead_letters", batch["id"], tenant)
        outputs, errors, seen = [], [], set()
        for row in results:
            seen.add(row["custom_id"])
            request_id = f"{batch['id']}:{row['custom_id']}"
            if row["status"] == "ok":
                outputs.append(output_line(request_id, row["custom_id"], json.loads(row["response"])))
            else:
                errors.append(error_line(request_id, row["custom_id"], "model_error", row["error"]))
        for letter in letters:
            line = dead_letter_line(letter["original"], letter["reason"])
            seen.add(line["custom_id"])
            errors.append(line)
        if final != "completed":
            content = self.files.content(batch["input_file_id"], tenant) or b""
            for custom_id in _custom_ids(content):
                if custom_id not in seen:
                    message = "the batch was cancelled before this request was answered" if final == "cancelled" \
                        else "the batch expired before this request was answered"
                    errors.append(error_line(f"{batch['id']}:{custom_id}", custom_id, f"batch_{final}", message))
        if outputs:
            batch["output_file_id"] = self._write(tenant, f"{batch['id']}_output.jsonl", outputs)
        if errors:
            batch["error_file_id"] = self._write(tenant, f"{batch['id']}_error.jsonl", errors)
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        batch.update(status=final, **{f"{final}_at": _now()})
        return self.store.save(batch, tenant)

    def _write(self, tenant: str, filename: str, lines: list[dict]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return self.files.create(tenant, filename, "batch_output", content)["id"]

    def _ask(self, question: str, job: str, tenant: str) -> list[dict]:
        wh = self.open_warehouse()
        try:
            return wh.ask(question, job=job, tenant=tenant)
        finally:
            wh.close()


def _custom_ids(content: bytes) -> list[str]:
    ids = []
    for line in content.splitlines():
        try:
            custom_id = json.loads(line).get("custom_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(custom_id, str):
            ids.append(custom_id)
    return ids
