"""How far can a router get on a routing dataset with a given kind of knowledge?

Upper bounds read with the bench's own curve metrics (`router.bench.metrics`), on the same pooled
5-fold split as `switchyard bench routing`:

- task: the router knows each query's task (the `query_id` prefix before the first dot) and every
  model's true mean score and cost per task *on the evaluated queries themselves* — the best any
  task-level router (clusters, per-task tables) can do;
- task + near copies: as task, but it also knows the true outcome of every model on each query
  that has a near copy (cosine ≥ 0.99, the `NearDuplicateQuality` threshold) in its training folds;
- oracle: every model's true outcome on every query.

A router that reaches the second bound has extracted everything that task identity and near
copies offer; going beyond it needs signal that tells apart, within a task, the queries a model
gets right from those it gets wrong.

    python infra/scripts/routing_bounds.py ../shared/data/routing/routerbench_subset.jsonl.gz
"""
from __future__ import annotations

import json
import sys

import numpy as np

from router.bench.evaluate import reference_of
from router.bench.metrics import curve_metrics
from router.bench.splits import cv_folds
from router.data import build_table, load_rows
from router.embeddings import embed
from router.policy import lagrangian_choice
from router.quality import NearDuplicateQuality, nearest_neighbour

LAMBDAS = np.r_[0.0, np.logspace(-1, 7, 600)]


def curve(predicted: np.ndarray, predicted_cost: np.ndarray, scores: np.ndarray, costs: np.ndarray):
    """Operating points (mean cost, mean quality) of the rule argmax predicted − λ·cost over λ."""
    rows = np.arange(len(scores))
    picks = (lagrangian_choice(predicted, predicted_cost, lam) for lam in LAMBDAS)
    return [(costs[rows, pick].mean(), scores[rows, pick].mean()) for pick in picks]


def bounds(path: str, n_folds: int = 5, seed: int = 0) -> dict[str, dict[str, float]]:
    table = build_table(load_rows([path]))
    scores, costs = table.scores, table.costs
    ref, _, _ = reference_of(scores, costs)

    task = np.array([q.split(".")[0] for q in table.query_ids])
    task_quality, task_cost = np.zeros_like(scores), np.zeros_like(costs)
    for t in np.unique(task):
        task_quality[task == t] = scores[task == t].mean(0)
        task_cost[task == t] = costs[task == t].mean(0)

    emb = embed(table.texts)
    folds = cv_folds(table.query_ids, n_folds, seed)
    near = np.zeros(len(scores), dtype=bool)
    for f in range(n_folds):
        test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        _, sim = nearest_neighbour(emb[test], emb[train])
        near[test] = sim >= NearDuplicateQuality.threshold
    with_copies = task_quality.copy()
    with_copies[near] = scores[near]

    out = {
        "task": curve_metrics(curve(task_quality, task_cost, scores, costs), ref),
        "task + near copies": curve_metrics(curve(with_copies, task_cost, scores, costs), ref),
        "oracle": curve_metrics(curve(scores, costs, scores, costs), ref),
    }
    out["queries_with_near_copy"] = {"count": int(near.sum()), "of": len(near)}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(bounds(sys.argv[1]), indent=1))
