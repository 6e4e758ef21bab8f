"""Which router the live stream loads when an artifact is broken or missing: a configured one
that cannot be loaded fails loudly, naming its directory; a missing shipped default falls back
to the heuristic router, with a warning. Real artifacts (copies of the shipped default)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

import router.artifact
from router.artifact import DEFAULT_DIR, ArtifactError
from router.heuristic import HeuristicRouter
from switchyard.live_router import load_router

from tests.conftest import lean_settings


def _broken_copy(tmp_path, how: str):
    directory = tmp_path / f"router-{how}"
    shutil.copytree(DEFAULT_DIR, directory)
    meta_path = directory / "router.json"
    if how == "no-arrays":
        (directory / "arrays.npz").unlink()
    elif how == "bad-json":
        meta_path.write_text("{not json")
    elif how == "corrupt-arrays":
        (directory / "arrays.npz").write_bytes(b"this is not an npz archive")
    elif how == "missing-field":
        meta = json.loads(meta_path.read_text())
        del meta["quality_kind"]
        meta_path.write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("how", ["no-arrays", "bad-json", "corrupt-arrays", "missing-field"])
def test_a_broken_configured_artifact_fails_loudly_naming_its_directory(tmp_path, how, caplog):
    settings = lean_settings(tmp_path)
    settings.router.artifact_dir = _broken_copy(tmp_path, how)
    with caplog.at_level(logging.WARNING), pytest.raises(ArtifactError) as info:
        load_router(settings)
    assert str(settings.router.artifact_dir) in str(info.value)
    # never quietly replaced by the shipped default or the heuristic
    assert "heuristic" not in caplog.text


def test_the_router_stage_exits_nonzero_on_a_broken_configured_artifact(tmp_path):
    """The process the stack starts: it exits (the stack reports the stage's exit and log tail)
    instead of routing with some other router."""
    directory = _broken_copy(tmp_path, "corrupt-arrays")
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(tmp_path / "sy"), "HF_HUB_OFFLINE": "1",
           "SWITCHYARD_ROUTER__ARTIFACT_DIR": str(directory), "SWITCHYARD_KAFKA__BOOTSTRAP": "127.0.0.1:1",
           "COLUMNS": "2000"}  # rich wraps the error at 80 columns otherwise
    proc = subprocess.run([sys.executable, "-m", "switchyard.cli", "stage", "router"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    said = " ".join((proc.stderr + proc.stdout).split())
    assert f"configured router artifact {directory} cannot be loaded" in said
    assert not (tmp_path / "sy" / "run" / "router.ready").exists()


def test_a_missing_shipped_default_falls_back_to_the_heuristic_with_a_warning(tmp_path, monkeypatch, caplog):
    missing = tmp_path / "no-such-default"
    monkeypatch.setattr(router.artifact, "DEFAULT_DIR", missing)
    settings = lean_settings(tmp_path)
    assert settings.router.artifact_dir is None
    with caplog.at_level(logging.WARNING, logger="switchyard.live_router"):
        chosen = load_router(settings)
    assert isinstance(chosen, HeuristicRouter)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "switchyard.live_router"]
    assert len(warnings) == 1 and "heuristic" in warnings[0].getMessage()
    assert str(missing) in warnings[0].getMessage()


@pytest.mark.parametrize("how", ["bad-json", "corrupt-arrays", "missing-field"])
def test_a_corrupt_shipped_default_fails_loudly_instead_of_routing_with_the_heuristic(tmp_path, monkeypatch,
                                                                                   how, caplog):
    """Missing is a slim install (the heuristic, with a warning); present but unreadable is a
    broken one: the stage must not start routing with some other router."""
    broken = _broken_copy(tmp_path, how)
    monkeypatch.setattr(router.artifact, "DEFAULT_DIR", broken)
    with caplog.at_level(logging.WARNING), pytest.raises(ArtifactError) as info:
        load_router(lean_settings(tmp_path))
    assert "shipped router artifact" in str(info.value) and "reinstall" in str(info.value)
    assert str(broken) in str(info.value)
    assert "heuristic" not in caplog.text


def test_a_configured_artifact_is_never_replaced_by_the_heuristic(tmp_path, monkeypatch):
    """Even with the shipped default missing, a configured directory that is gone is an error."""
    monkeypatch.setattr(router.artifact, "DEFAULT_DIR", tmp_path / "no-such-default")
    settings = lean_settings(tmp_path)
    settings.router.artifact_dir = tmp_path / "configured-but-gone"
    with pytest.raises(ArtifactError, match="configured-but-gone"):
        load_router(settings)
