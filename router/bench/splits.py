"""Seeded splits of queries by `query_id`: a validation mask and K cross-validation folds.

Both hash the query id, so a query lands in the same split whatever the row order or data size.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from router.data import RoutingDataError


def _unit_hash(qid: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def validation_split(query_ids: Sequence[str], fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of validation queries: a seeded hash of query_id (stable across runs)."""
    return np.array([_unit_hash(q, seed) < fraction for q in query_ids], dtype=bool)


def cv_folds(query_ids: Sequence[str], n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0 … n_folds−1) per query: the rank of a seeded hash of its query_id, dealt round
    robin, so folds are equal-sized (±1), stable across runs and independent of row order."""
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if len(query_ids) < n_folds:
        raise RoutingDataError(f"{len(query_ids)} queries cannot be split into {n_folds} folds")
    order = np.argsort([_unit_hash(str(q), seed) for q in query_ids], kind="stable")
    folds = np.empty(len(query_ids), dtype=int)
    folds[order] = np.arange(len(query_ids)) % n_folds
    return folds
