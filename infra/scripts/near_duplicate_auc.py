"""How well the near-duplicate base predicts each model's outcome on queries that have a near copy,
next to a 10-neighbour kNN, on the bench's pooled 5-fold split (ROC AUC per model).

    python infra/scripts/near_duplicate_auc.py ../shared/data/routing/routerbench_subset.jsonl.gz
"""
from __future__ import annotations

import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from router.bench.splits import cv_folds
from router.data import build_table, load_rows
from router.embeddings import embed
from router.features import text_features
from router.quality import KnnQuality, NearDuplicateQuality


def main(path: str, n_folds: int = 5, seed: int = 0) -> None:
    table = build_table(load_rows([path]))
    emb, feats = embed(table.texts), text_features(table.texts)
    folds = cv_folds(table.query_ids, n_folds, seed)
    near_dup = np.full(table.scores.shape, 0.5)
    knn = np.zeros(table.scores.shape)
    for f in range(n_folds):
        test, train = folds == f, folds != f
        args = (emb[train], feats[train], table.scores[train], table.costs[train])
        near_dup[test] = NearDuplicateQuality().fit(*args).predict(emb[test], feats[test]).quality
        knn[test] = KnnQuality(k=10, weighted=True).fit(*args).predict(emb[test], feats[test]).quality
    near = (near_dup != 0.5).any(axis=1)
    print(f"{near.sum()} of {len(near)} queries have a near copy in their training folds")
    for j, model in enumerate(table.models):
        y = table.scores[near, j]
        if y.min() == y.max():
            continue
        print(f"{model:36s} near-duplicate AUC {roc_auc_score(y, near_dup[near, j]):.3f}   "
              f"kNN AUC {roc_auc_score(y, knn[near, j]):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
