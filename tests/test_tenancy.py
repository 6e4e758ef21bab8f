"""Tenancy through the CLI on the real lean stack: a request's tenant is its submitter's, and no
CLI command lets one tenant read, grade or give feedback on another tenant's job."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import request_line


def _cli(stack, *args, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(stack.settings.data_dir)}
    env.pop("SWITCHYARD_API_KEY", None)
    if key is not None:
        env["SWITCHYARD_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def keys(stack):
    made = {}
    for tenant in ("acme", "globex"):
        run = _cli(stack, "keys", "create", "--tenant", tenant)
        assert run.returncode == 0, run.stderr
        made[tenant] = run.stdout.strip()
    return made


def test_a_job_belongs_to_its_submitter_and_no_one_else_reads_it(stack, keys, tmp_path):
    job = tmp_path / "job.jsonl"
    # the second line claims another tenant: the submitter's key decides
    job.write_bytes(request_line("a", "Say yes.") + b"\n" + request_line("b", "Say no.", tenant="globex") + b"\n")
    sub = _cli(stack, "submit", str(job), "--wait", "--json", "--job-id", "acme-job", key=keys["acme"])
    assert sub.returncode == 0, sub.stderr
    assert json.loads(sub.stdout)["answered"] == 2

    refused = _cli(stack, "submit", str(job), "--tenant", "globex", key=keys["acme"])
    assert refused.returncode == 2 and "cannot submit for 'globex'" in refused.stderr

    own = _cli(stack, "results", "acme-job", "--json", key=keys["acme"])
    assert own.returncode == 0, own.stderr
    assert sorted(json.loads(ln)["custom_id"] for ln in own.stdout.splitlines()) == ["a", "b"]
    acme_report = json.loads(_cli(stack, "report", "--by", "tenant", "--json", key=keys["acme"]).stdout)["rows"]
    assert [r["tenant"] for r in acme_report] == ["acme"], "both lines are acme's, whatever the line said"

    other = keys["globex"]
    results = _cli(stack, "results", "acme-job", "--json", key=other)
    assert results.returncode == 1 and "no results" in results.stderr and "Say" not in results.stdout
    status = _cli(stack, "status", "acme-job", "--json", key=other)
    assert status.returncode == 1 and json.loads(status.stdout)["requests"] == 0
    assert "no job acme-job" in _cli(stack, "status", "acme-job", key=other).stderr
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"custom_id": "a", "metric": "em", "ground_truth": "yes"}\n')
    assert _cli(stack, "grade", "acme-job", "--references", str(refs), key=other).returncode == 1
    fb = tmp_path / "fb.jsonl"
    fb.write_text('{"custom_id": "a", "score": 0}\n')
    assert _cli(stack, "feedback", "acme-job", "--file", str(fb), key=other).returncode == 1
    globex_report = json.loads(_cli(stack, "report", "--by", "tenant", "--json", key=other).stdout)["rows"]
    assert globex_report == []
    spoofed = json.loads(_cli(stack, "report", "--by", "tenant", "--tenant", "acme", "--json", key=other).stdout)["rows"]
    assert spoofed == [], "a tenant's key reads its own tenant, whatever --tenant says"
    assert _cli(stack, "retrain", "--dry-run", key=other).returncode == 2

    operator = json.loads(_cli(stack, "report", "--by", "tenant", "--json").stdout)["rows"]
    assert "acme" in {r["tenant"] for r in operator}
    forged = _cli(stack, "results", "acme-job", key="sy-forged")
    assert forged.returncode == 2 and "unknown token" in forged.stderr
