"""The learning experiment's machinery on the lean stack (every tier served by SmolLM2): rounds of
graded traffic, grading, retraining between rounds, verdicts recorded. The real measurement, with
the three local models, is `make experiment` (docs/learning.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from switchyard.graded import DEFAULT_GRADED

pytestmark = pytest.mark.experiment

GRADED = (Path(__file__).resolve().parents[1] / DEFAULT_GRADED).resolve()


@pytest.mark.skipif(not GRADED.exists(), reason=f"needs the shared graded queries at {GRADED}")
def test_learning_experiment_runs_rounds_and_retrains_between_them(tmp_path):
    from switchyard.experiments import learning_experiment
    from tests.conftest import lean_settings

    settings = lean_settings(tmp_path / "stack")
    settings.workers.max_tokens_cap = 32
    report = learning_experiment(settings, GRADED, 28, 2, 0.5, Console(stderr=True))
    first, second = report["rounds"]
    assert first["answered"] == first["expected"] == 28 and second["answered"] == 28
    assert first["quality"] is not None and set(first["tier_mix_per_task"]) and first["router_versions"]
    verdict = first["retrain"]
    assert verdict["verdict"] in ("published", "refused", "no candidate"), verdict
    recorded = {v["version"]: v for v in report["router_versions"]}
    if verdict["verdict"] in ("published", "refused"):
        assert recorded[verdict["version"]]["verdict"] == verdict["verdict"]
        assert recorded[verdict["version"]]["reason"] == verdict["reason"]
    if verdict["verdict"] == "published":  # the second round was routed by it
        assert set(second["router_versions"]) == {verdict["version"]}
