"""Saving and loading fitted routers: `router.json` (metadata, params, tiers) + `arrays.npz`
(numpy arrays only, loaded with allow_pickle=False). `version` is a content hash of both."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from router.costs import CostModel
from router.features import FEATURE_NAMES
from router.learned import LearnedRouter, content_version
from router.policy import Calibration
from router.quality import ESTIMATORS
import router.stacking  # noqa: F401  (registers the stacked estimator)

FORMAT = "switchyard-router/1"
ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
# The live stream's default: fitted on outcomes of the three local models that serve the tiers
# (`make default-router`; data in switchyard/data/local_outcomes.jsonl.gz).
DEFAULT_DIR = ARTIFACTS_DIR / "default"
# Fitted on all train rows of LLMRouter's dcrouter set (open 7B–70B models tiered by size): the
# learning experiment's starting point, a router that knows nothing of the local models.
DCROUTER_DIR = ARTIFACTS_DIR / "dcrouter"
# The same router fitted on the RouterBench subset (API + open models, real per-call costs).
ROUTERBENCH_DIR = ARTIFACTS_DIR / "routerbench"


class ArtifactError(ValueError):
    """A router directory that cannot be loaded; the message says why."""


def _router_arrays(router: LearnedRouter) -> tuple[dict, dict[str, np.ndarray]]:
    params, arrays = router.quality_model.state()
    arrays = {f"quality.{k}": np.asarray(v) for k, v in arrays.items()}
    arrays.update(router.cost_model.arrays())
    if router.calibration is not None:
        arrays.update(router.calibration.arrays())
    return params, arrays


def _dedupe(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Store identical arrays once (several estimators keep the same training embeddings)."""
    seen: dict[tuple, str] = {}
    unique: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        key = (a.dtype.str, a.shape, hashlib.sha256(a.tobytes()).hexdigest())
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = a
    return unique, aliases


def save_router(router: LearnedRouter, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params, arrays = _router_arrays(router)
    meta = {
        "format": FORMAT,
        "name": router.name,
        "models": router.models,
        "tiers": router.tiers,
        "policy": router.policy,
        "quality_kind": router.quality_model.kind,
        "quality_params": params,
        "calibrated": router.calibration is not None,
        "features": list(FEATURE_NAMES),
        "meta": router.meta,
    }
    router.version = content_version(arrays, {k: json.dumps(v, sort_keys=True) for k, v in meta.items() if k != "meta"})
    meta["version"] = router.version
    unique, aliases = _dedupe(arrays)
    meta["array_aliases"] = aliases
    tmp = directory / f".arrays-{os.getpid()}.npz"
    np.savez_compressed(tmp, **unique)
    os.replace(tmp, directory / "arrays.npz")
    (directory / "router.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return directory


def load_router(directory: str | Path) -> LearnedRouter:
    directory = Path(directory)
    meta_path, arrays_path = directory / "router.json", directory / "arrays.npz"
    if not meta_path.exists() or not arrays_path.exists():
        raise ArtifactError(f"{directory} is not a router directory (needs router.json and arrays.npz)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path}: invalid JSON ({exc.msg})") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{meta_path}: unsupported format {meta.get('format')!r} (expected {FORMAT})")
    if meta.get("features") != list(FEATURE_NAMES):
        raise ArtifactError(
            f"{meta_path}: fitted with text features {meta.get('features')}, but this version computes "
            f"{list(FEATURE_NAMES)}; refit it with `switchyard router fit`"
        )
    with np.load(arrays_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for alias, canonical in meta.get("array_aliases", {}).items():
        arrays[alias] = arrays[canonical]
    kind = meta["quality_kind"]
    if kind not in ESTIMATORS:
        raise ArtifactError(f"{meta_path}: unknown quality model {kind!r}")
    quality_arrays = {k[len("quality."):]: v for k, v in arrays.items() if k.startswith("quality.")}
    quality = ESTIMATORS[kind].from_state(meta["quality_params"], quality_arrays)
    calibration = Calibration.from_arrays(arrays) if meta.get("calibrated") else None
    return LearnedRouter(
        name=meta["name"],
        models=list(meta["models"]),
        tiers=dict(meta["tiers"]),
        quality_model=quality,
        cost_model=CostModel.from_arrays(arrays),
        policy=meta["policy"],
        calibration=calibration,
        version=meta["version"],
        meta=meta.get("meta", {}),
    )


def load_default() -> LearnedRouter:
    """The shipped default router (fitted on outcomes of the local models)."""
    return load_router(DEFAULT_DIR)


def to_bytes(router: LearnedRouter) -> bytes:
    """The artifact as one zip (router.json + arrays.npz), for a Kafka message or a table cell."""
    import io
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        save_router(router, tmp)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # arrays.npz is compressed already
            for name in ("router.json", "arrays.npz"):
                z.write(Path(tmp) / name, name)
    return buf.getvalue()


def from_bytes(data: bytes) -> LearnedRouter:
    import io
    import tempfile
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"not a router artifact: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp, archive:
        for name in ("router.json", "arrays.npz"):
            if name not in archive.namelist():
                raise ArtifactError(f"router artifact lacks {name}")
            (Path(tmp) / name).write_bytes(archive.read(name))
        return load_router(tmp)
