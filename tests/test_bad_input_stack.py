"""Bad input on the real lean stack (embedded broker, faust router stream, tier workers, chDB
sink): a depth-10,000 message and a 10 MB one between good requests on `queries`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import request_line, run_job


def _capped_line(custom_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "body": {
        "model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Name a colour."}]}}).encode()


def test_deep_and_huge_messages_are_dead_lettered_and_the_good_ones_answered_with_no_restart(stack):
    pids = {name: stage.proc.pid for name, stage in stack.stages.items()}
    deep = b'{"custom_id": "deep", "body": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    huge = request_line("huge", "x" * (10 << 20))
    good = [request_line(f"g{i}", f"What is {i} + 1?") for i in range(8)]
    lines = good[:3] + [deep] + good[3:5] + [huge, _capped_line("capped")] + good[5:]

    sub, outcome = run_job(stack.settings, lines, "bad-input")

    assert set(outcome.results) == {f"g{i}" for i in range(8)} | {"capped"}
    assert all(r.status == "ok" for r in outcome.results.values())
    reasons = sorted(d.reason for d in outcome.dead_letters)
    assert [d.stage for d in outcome.dead_letters] == ["router", "router"]
    assert reasons[0] == "JSON nested deeper than 64 levels"
    assert reasons[1].startswith(f"message is {len(huge):,} bytes; the limit is 1,048,576")
    cap = stack.settings.workers.max_tokens_cap
    assert outcome.results["capped"].warnings == [
        f"max_tokens 100 capped at {cap}", "model 'gpt-4o' is not served here; smollm2-135m answered"]
    for name, stage in stack.stages.items():  # no stage crashed or was restarted
        assert stage.proc.poll() is None and stage.proc.pid == pids[name] and stage.restarts == 0, name
    router_log = (stack.settings.data_dir / "logs" / "router.log").read_text()
    assert "Traceback" not in router_log and "MessageSizeTooLarge" not in router_log
    for log in ("router.log", "sink.log"):
        assert "RecursionError" not in (stack.settings.data_dir / "logs" / log).read_text()


def test_submit_reports_bad_lines_by_number_without_a_traceback(stack, tmp_path):
    job = tmp_path / "bad.jsonl"
    job.write_bytes(b"\n".join([request_line("a", "Name a fruit.", tenant="other"), b"[" * 10_000,
                                request_line("a", "Name a planet."), _capped_line("c")]))
    env = {**os.environ, "SWITCHYARD_KAFKA__BOOTSTRAP": stack.settings.kafka.bootstrap,
           "SWITCHYARD_DATA_DIR": str(tmp_path / "client"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "switchyard.cli", "submit", str(job), "--wait", "--json",
                           "--tenant", "acme", "--timeout", "240"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    err = " ".join(done.stderr.split())  # rich wraps long lines
    assert "line 1: tenant 'other' in the line is ignored; submitted as 'acme'" in err
    assert "line 2: JSON nested deeper than 64 levels (sent; it will be dead-lettered)" in err
    assert "line 3: custom_id 'a' repeats line 1; refused (dead-lettered at submit)" in err
    assert f"1 answer was capped at {stack.settings.workers.max_tokens_cap} tokens" in err
    summary = json.loads(done.stdout)
    assert (summary["valid"], summary["invalid"], summary["answered"], summary["dead_letters"]) == (2, 2, 2, 2)
