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


def task_folds(tasks: Sequence[str], n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id per query with every task in exactly one fold (leave-tasks-out): a router is judged
    on tasks it never saw. Tasks are dealt largest first to the fold with the fewest queries so
    far (ties by a seeded hash of the task name); with fewer tasks than `n_folds`, one fold per task."""
    names = sorted(set(tasks))
    if any(not t for t in names):
        raise RoutingDataError("leave-tasks-out folds need a task for every query (the rows' `task` field)")
    if len(names) < 2:
        raise RoutingDataError(f"leave-tasks-out folds need at least 2 tasks, the data has {len(names)}")
    k = min(n_folds, len(names))
    sizes = {t: 0 for t in names}
    for t in tasks:
        sizes[t] += 1
    load = np.zeros(k)
    fold_of: dict[str, int] = {}
    for t in sorted(names, key=lambda t: (-sizes[t], _unit_hash(t, seed))):
        f = int(np.argmin(load))
        fold_of[t] = f
        load[f] += sizes[t]
    return np.array([fold_of[t] for t in tasks], dtype=int)


def task_mix_weights(tasks: Sequence[str], n_draws: int, concentration: float, seed: int = 0) -> np.ndarray:
    """(n_queries, n_draws) weights, each column a task mix drawn from a Dirichlet around the
    data's own mix (mean = the observed task shares, Σα = concentration) spread evenly over the
    task's queries: column b weighs query i by π_b[task i] / n[task i]. A smaller concentration
    shifts further from the training mix."""
    names = sorted(set(tasks))
    idx = np.array([names.index(t) for t in tasks])
    counts = np.bincount(idx, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed + 104729)
    mixes = rng.dirichlet(concentration * counts / counts.sum(), size=n_draws)  # (B, tasks)
    return (mixes[:, idx] / counts[idx]).T
