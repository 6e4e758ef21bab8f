"""Shared fixtures. Everything is real: the embedded broker, chDB, MiniLM and SmolLM2."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from switchyard.settings import Settings  # noqa: E402


def lean_settings(data_dir: Path, **overrides) -> Settings:
    """Every tier served in-process by the small model, short answers: fast on 2 cores."""
    settings = Settings(data_dir=data_dir)
    settings.workers.engine = "inprocess"
    settings.workers.all_tiers_small = True
    settings.workers.max_tokens_cap = 16
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A whole local stack (broker, router stream, three tier workers, sink) for a test module."""
    from switchyard.stack import Stack

    settings = lean_settings(tmp_path_factory.mktemp("stack"))
    stack = Stack(settings)
    stack.start(timeout=300)
    yield stack
    stack.stop()


def request_line(custom_id: str, prompt: str, **extra) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8},
                       **extra}).encode()


def run_job(settings: Settings, lines: list[bytes], job_id: str, timeout: float = 240, tenant: str = "tests"):
    """Publish a job's lines and wait for every answer and dead letter; returns (sub, outcome)."""
    from switchyard.jobs import JobFile, prepare, publish, wait_for

    sub, messages = prepare(JobFile(Path(f"{job_id}.jsonl"), lines), job_id, tenant)
    asyncio.run(publish(settings.kafka, sub, messages))
    outcome = asyncio.run(wait_for(settings.kafka, sub, timeout))
    assert not outcome.timed_out, f"job {job_id} timed out: {len(outcome.results)}/{len(sub.expected)}"
    return sub, outcome


def processes_with_env(marker: str) -> list[int]:
    """Pids of the processes (other than this one) whose environment mentions `marker`: a test
    puts a unique marker in a stack's environment to find every process of it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
