"""The Switchyard default quality model: a stack of kNN, cluster, similarity-weighted,
classifier, matrix-factorisation and near-duplicate estimators, combined per model by a logistic regression
over their out-of-fold logits (so it learns which signal to trust for which model), which also
calibrates the result into a success probability.

Base probabilities are clipped to [clip, 1 − clip] before the logit: a 10-neighbour kNN that saw
10 successes would otherwise hand the stacker a logit of +9, and a few such extremes dominate a
weakly regularised fit. clip = 0.03 and C = 0.1 were chosen by cross-validating the stacker on
the bases' out-of-fold predictions of the training split only (docs/routing.md)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from router.quality import (
    ESTIMATORS,
    ClassifierQuality,
    ClusterQuality,
    KnnQuality,
    MatrixFactorizationQuality,
    NearDuplicateQuality,
    QualityModel,
    QualityPrediction,
    SimilarityWeightedQuality,
    fit_soft_logistic,
    logit,
    sigmoid,
)


def kfold_indices(n: int, n_folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::n_folds] for i in range(n_folds)]


def default_bases() -> list[QualityModel]:
    return [
        KnnQuality(k=10, weighted=True),
        KnnQuality(k=50),
        SimilarityWeightedQuality(),
        ClusterQuality(n_clusters=40, top_k=1, n_init=1),
        ClassifierQuality(c=0.5),
        MatrixFactorizationQuality(dim=32, epochs=150),
        NearDuplicateQuality(),
    ]


def out_of_fold(make, emb, feats, scores, costs, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Predictions for every training row from a model that did not see it."""
    out = np.zeros_like(scores, dtype=np.float64)
    for test in kfold_indices(len(emb), n_folds, seed):
        train = np.setdiff1d(np.arange(len(emb)), test)
        model = make().fit(emb[train], feats[train], scores[train], costs[train])
        out[test] = model.predict(emb[test], feats[test]).quality
    return out


@dataclass
class StackedQuality(QualityModel):
    kind: ClassVar[str] = "stacked"
    bases: list[QualityModel] = field(default_factory=default_bases)
    n_folds: int = 5
    c: float = 0.1
    clip: float = 0.03
    seed: int = 0
    coef: np.ndarray | None = None  # (m, n_bases)
    intercept: np.ndarray | None = None  # (m,)
    oof_quality: np.ndarray | None = None  # training-time only, not saved

    def _stack_inputs(self, base_preds: list[np.ndarray]) -> np.ndarray:
        lo = max(self.clip, 0.0)
        return np.stack([logit(np.clip(p, lo, 1 - lo)) for p in base_preds], axis=2)  # (n, m, B)

    def fit(self, emb, feats, scores, costs):
        templates = [copy.deepcopy(b) for b in self.bases]  # unfitted copies, one per fold
        oof = [
            out_of_fold(lambda t=t: copy.deepcopy(t), emb, feats, scores, costs, self.n_folds, self.seed)
            for t in templates
        ]
        x = self._stack_inputs(oof)
        m = scores.shape[1]
        fits = [fit_soft_logistic(x[:, j, :], scores[:, j], self.c) for j in range(m)]
        self.coef = np.array([f[0] for f in fits])
        self.intercept = np.array([f[1] for f in fits])
        self.oof_quality = self._combine(x)
        self.bases = [b.fit(emb, feats, scores, costs) for b in self.bases]
        return self

    def _combine(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(np.einsum("nmb,mb->nm", x, self.coef) + self.intercept)

    def predict(self, emb, feats):
        preds = [b.predict(emb, feats) for b in self.bases]
        cluster = next((p.cluster for p in preds if (p.cluster >= 0).any()), np.full(len(emb), -1))
        return QualityPrediction(self._combine(self._stack_inputs([p.quality for p in preds])), cluster)

    def state(self):
        params = {"n_folds": self.n_folds, "c": self.c, "clip": self.clip, "bases": []}
        arrays = {"stack_coef": self.coef, "stack_intercept": self.intercept}
        for i, base in enumerate(self.bases):
            bp, ba = base.state()
            params["bases"].append({"kind": base.kind, "params": bp})
            arrays.update({f"base{i}.{k}": v for k, v in ba.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        bases = []
        for i, spec in enumerate(params["bases"]):
            prefix = f"base{i}."
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            bases.append(ESTIMATORS[spec["kind"]].from_state(spec["params"], sub))
        return cls(bases=bases, n_folds=params["n_folds"], c=params["c"], clip=params.get("clip", 0.0),
                   coef=arrays["stack_coef"], intercept=arrays["stack_intercept"])


ESTIMATORS[StackedQuality.kind] = StackedQuality
