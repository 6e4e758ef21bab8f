"""The supervisor's restart limit: a stage that keeps crashing is restarted MAX_RESTARTS times,
then the stack stops with "stage X keeps crashing" instead of restarting it for ever.

The first test drives `Stack.check` over a real stage process (`switchyard stage ...`) that
exits at once. The second is the whole thing as an operator meets it: `switchyard up` on a
lean stack, a poison message on work.small with the workers' dead-letter limit at zero, so the
small tier's worker crashes on it, replays it, crashes again; `up` exits 1 with the message and
every process of the stack is gone (about 45 s here)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from switchyard.stack import MAX_RESTARTS, Stack, StackError
from switchyard.stack import Stage as StackStage

from tests.conftest import lean_settings, processes_with_env


def _check_until_it_gives_up(stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check()
        time.sleep(0.2)
    raise AssertionError(f"the supervisor was still restarting after {timeout:.0f}s")


def test_a_stage_that_keeps_crashing_stops_the_supervisor_naming_it(tmp_path):
    settings = lean_settings(tmp_path / "sy")
    (settings.data_dir / "logs").mkdir(parents=True)
    (settings.data_dir / "run").mkdir()
    stack = Stack(settings, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    stage = StackStage("worker-nope", ["worker", "--tier", "nope"])  # exits 2 at once: no such tier
    stack.stages = {stage.name: stage}
    stack._start_stage(stage)
    try:
        with pytest.raises(StackError) as info:
            _check_until_it_gives_up(stack)
    finally:
        stack.stop()
    assert str(info.value) == "stage worker-nope keeps crashing; see logs/worker-nope.log"
    assert stage.restarts == MAX_RESTARTS and stage.proc.poll() is not None
    # it was really run MAX_RESTARTS + 1 times before the supervisor gave up
    log = (settings.data_dir / "logs" / "worker-nope.log").read_text()
    assert log.count("unknown tier 'nope'") == MAX_RESTARTS + 1


def test_up_stops_the_stack_when_a_worker_keeps_crashing_on_a_poison_message(tmp_path):
    from aiokafka import AIOKafkaProducer

    data_dir = tmp_path / "sy"
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(data_dir), "SWITCHYARD_WORKERS__MAX_TOKENS_CAP": "8",
           "SWITCHYARD_RETRAIN__ENABLED": "false", "SWITCHYARD_API__ENABLED": "false",
           "SWITCHYARD_DLQ_LIMITS__WORKER__MAX_CONSECUTIVE_COUNT": "0", "SWITCHYARD_MARKER": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "COLUMNS": "500"}
    up = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "up", "--all-tiers-small", "--engine", "inprocess"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (data_dir / "run" / "worker-small.ready").exists():
            assert up.poll() is None, up.stdout.read()
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.2)
        bootstrap = json.loads((data_dir / "stack.json").read_text())["bootstrap"]

        async def poison():
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait("work.small", b"not a work item")
            finally:
                await producer.stop()

        asyncio.run(poison())
        output, _ = up.communicate(timeout=300)  # each restart reloads the model and rejoins the group
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 1, output
    assert "stack failed: stage worker-small keeps crashing; see logs/worker-small.log" in " ".join(output.split())
    assert "Traceback" not in output
    log = (data_dir / "logs" / "worker-small.log").read_text()
    assert log.count("DlqLimitExceeded") >= MAX_RESTARTS + 1  # it crashed on the poison each time
    deadline = time.monotonic() + 30
    while processes_with_env(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with_env(str(tmp_path)) == []  # the stack stopped: nothing of it is left
    assert not (data_dir / "stack.json").exists()
