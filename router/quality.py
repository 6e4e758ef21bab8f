"""Per-query, per-model quality estimators: kNN, clusters (Avengers-Pro), RouteLLM's family
(similarity-weighted, matrix factorisation, classifier) and the stacked Switchyard default.

Each estimator is fitted on embeddings + cheap text features + a (queries × models) score
matrix, predicts a (queries × models) matrix of expected scores, and round-trips through
`state()` / `from_state()` as plain JSON params + numpy arrays (no pickles). Inference is
numpy only; scikit-learn / torch are used to fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from router.features import FEATURE_NAMES

EPS = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


@dataclass
class QualityPrediction:
    """quality: expected score (n, m). util_q / util_c: Avengers-style normalised performance and
    cost terms (n, m) where the estimator defines them; cluster: nearest cluster id or -1."""

    quality: np.ndarray
    cluster: np.ndarray
    util_q: np.ndarray | None = None
    util_c: np.ndarray | None = None


def _chunks(n: int, size: int = 2048):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class QualityModel:
    kind: ClassVar[str] = ""

    def fit(self, emb: np.ndarray, feats: np.ndarray, scores: np.ndarray, costs: np.ndarray):
        raise NotImplementedError

    def predict(self, emb: np.ndarray, feats: np.ndarray) -> QualityPrediction:
        raise NotImplementedError

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "QualityModel":
        raise NotImplementedError


# --------------------------------------------------------------------------- kNN


@dataclass
class KnnQuality(QualityModel):
    """Mean score of the k most similar training queries (cosine on normalised embeddings)."""

    kind: ClassVar[str] = "knn"
    k: int = 20
    weighted: bool = False
    train_emb: np.ndarray | None = None
    train_scores: np.ndarray | None = None

    def fit(self, emb, feats, scores, costs):
        self.train_emb = emb.astype(np.float16)
        self.train_scores = scores.astype(np.float32)
        return self

    def predict(self, emb, feats):
        n = len(emb)
        k = min(self.k, len(self.train_emb))
        out = np.zeros((n, self.train_scores.shape[1]), dtype=np.float64)
        train = self.train_emb.astype(np.float32)
        for sl in _chunks(n):
            sims = emb[sl] @ train.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            neigh = self.train_scores[idx]  # (b, k, m)
            if self.weighted:
                w = np.exp(10.0 * np.take_along_axis(sims, idx, axis=1))
                w /= w.sum(axis=1, keepdims=True)
                out[sl] = np.einsum("bk,bkm->bm", w, neigh)
            else:
                out[sl] = neigh.mean(axis=1)
        return QualityPrediction(out, np.full(n, -1))

    def state(self):
        return {"k": self.k, "weighted": self.weighted}, {
            "train_emb": self.train_emb,
            "train_scores": self.train_scores.astype(np.float16),
        }

    @classmethod
    def from_state(cls, params, arrays):
        return cls(
            k=params["k"],
            weighted=params.get("weighted", False),
            train_emb=arrays["train_emb"],
            train_scores=arrays["train_scores"].astype(np.float32),
        )


# --------------------------------------------------------------------------- RouteLLM SW


@dataclass
class SimilarityWeightedQuality(QualityModel):
    """RouteLLM's similarity-weighted router, pointwise: every training query votes with weight
    γ^(1+10·sim) (γ=10, i.e. exp(23·sim)); the weighted mean score per model is its quality.
    (RouteLLM fits a weighted Bradley–Terry model on pairwise battles; with per-model outcomes
    for every query the weighted mean is the direct estimate of the same preference.)"""

    kind: ClassVar[str] = "sw_ranking"
    temperature: float = 23.0
    train_emb: np.ndarray | None = None
    train_scores: np.ndarray | None = None

    def fit(self, emb, feats, scores, costs):
        self.train_emb = emb.astype(np.float16)
        self.train_scores = scores.astype(np.float32)
        return self

    def predict(self, emb, feats):
        train = self.train_emb.astype(np.float32)
        out = np.zeros((len(emb), self.train_scores.shape[1]))
        for sl in _chunks(len(emb)):
            logits = self.temperature * (emb[sl] @ train.T)
            w = np.exp(logits - logits.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            out[sl] = w @ self.train_scores
        return QualityPrediction(out, np.full(len(emb), -1))

    def state(self):
        return {"temperature": self.temperature}, {
            "train_emb": self.train_emb,
            "train_scores": self.train_scores.astype(np.float16),
        }

    @classmethod
    def from_state(cls, params, arrays):
        return cls(params["temperature"], arrays["train_emb"], arrays["train_scores"].astype(np.float32))


# --------------------------------------------------------------------------- Avengers-Pro clusters


@dataclass
class ClusterQuality(QualityModel):
    """Avengers-Pro: k-means over embeddings; per-cluster, per-model mean score and cost; a query
    uses its top_k nearest clusters. util_q / util_c are the per-cluster min–max normalised
    performance and cost summed over those clusters (the paper's performance–efficiency score is
    α·util_q + (1−α)·(top_k − util_c))."""

    kind: ClassVar[str] = "cluster"
    n_clusters: int = 60
    top_k: int = 3
    prior_strength: float = 2.0
    seed: int = 0
    n_init: int = 3
    centers: np.ndarray | None = None
    perf: np.ndarray | None = None
    cost: np.ndarray | None = None

    def fit(self, emb, feats, scores, costs):
        from sklearn.cluster import KMeans

        k = max(2, min(self.n_clusters, len(emb) // 10))
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(emb)
        labels = km.labels_
        prior = scores.mean(axis=0)
        perf = np.zeros((k, scores.shape[1]))
        cost = np.zeros_like(perf)
        for c in range(k):
            mask = labels == c
            cnt = mask.sum()
            perf[c] = (scores[mask].sum(axis=0) + self.prior_strength * prior) / (cnt + self.prior_strength)
            cost[c] = costs[mask].mean(axis=0) if cnt else costs.mean(axis=0)
        self.centers = km.cluster_centers_.astype(np.float32)
        self.perf, self.cost = perf, cost
        return self

    def nearest(self, emb: np.ndarray) -> np.ndarray:
        """(n, top_k) cluster ids, nearest first."""
        d = -2 * emb @ self.centers.T + (self.centers**2).sum(axis=1)[None, :]
        k = min(self.top_k, len(self.centers))
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, idx, axis=1), axis=1)
        return np.take_along_axis(idx, order, axis=1)

    def predict(self, emb, feats):
        top = self.nearest(emb)

        def norm(x):
            lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
            return (x - lo) / np.maximum(hi - lo, 1e-12)

        perf_n, cost_n = norm(self.perf), norm(self.cost)
        quality = self.perf[top].mean(axis=1)
        return QualityPrediction(quality, top[:, 0], perf_n[top].sum(axis=1), cost_n[top].sum(axis=1))

    def state(self):
        return {"n_clusters": self.n_clusters, "top_k": self.top_k, "prior_strength": self.prior_strength}, {
            "centers": self.centers,
            "perf": self.perf,
            "cost": self.cost,
        }

    @classmethod
    def from_state(cls, params, arrays):
        return cls(
            n_clusters=params["n_clusters"],
            top_k=params["top_k"],
            prior_strength=params["prior_strength"],
            centers=arrays["centers"],
            perf=arrays["perf"],
            cost=arrays["cost"],
        )


# --------------------------------------------------------------------------- inputs for parametric models


@dataclass
class Standardizer:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def design_matrix(emb: np.ndarray, feats: np.ndarray, std: Standardizer, feature_weight: float = 0.3) -> np.ndarray:
    return np.hstack([emb, feature_weight * std(feats)]).astype(np.float64)


def fit_soft_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 300):
    """Logistic regression on targets in [0, 1]: each row counts as y positive + (1−y) negative."""
    from sklearn.linear_model import LogisticRegression

    hard = np.isin(y, (0.0, 1.0))
    if hard.all():
        xs, ys, ws = x, y.astype(int), None
    else:
        xs = np.vstack([x, x])
        ys = np.r_[np.ones(len(y), int), np.zeros(len(y), int)]
        ws = np.r_[y, 1 - y]
        keep = ws > 0
        xs, ys, ws = xs[keep], ys[keep], ws[keep]
    if len(np.unique(ys)) < 2:  # a model that always / never succeeds
        p = float(np.clip(ys.mean() if ws is None else np.average(ys, weights=ws), EPS, 1 - EPS))
        return np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(xs, ys, sample_weight=ws)
    return clf.coef_[0].copy(), float(clf.intercept_[0])


# --------------------------------------------------------------------------- RouteLLM classifier


@dataclass
class ClassifierQuality(QualityModel):
    """RouteLLM-style classifier over embeddings (+ text features): one logistic regression per
    model predicting that model's success."""

    kind: ClassVar[str] = "classifier"
    c: float = 0.5
    coef: np.ndarray | None = None  # (m, d)
    intercept: np.ndarray | None = None  # (m,)
    std: Standardizer | None = None

    def fit(self, emb, feats, scores, costs):
        self.std = Standardizer.fit(feats)
        x = design_matrix(emb, feats, self.std)
        fits = [fit_soft_logistic(x, scores[:, j], self.c) for j in range(scores.shape[1])]
        self.coef = np.array([f[0] for f in fits])
        self.intercept = np.array([f[1] for f in fits])
        return self

    def predict(self, emb, feats):
        x = design_matrix(emb, feats, self.std)
        return QualityPrediction(sigmoid(x @ self.coef.T + self.intercept), np.full(len(emb), -1))

    def state(self):
        return {"c": self.c}, {
            "coef": self.coef,
            "intercept": self.intercept,
            "std_mean": self.std.mean,
            "std_scale": self.std.scale,
        }

    @classmethod
    def from_state(cls, params, arrays):
        return cls(params["c"], arrays["coef"], arrays["intercept"], Standardizer(arrays["std_mean"], arrays["std_scale"]))


# --------------------------------------------------------------------------- RouteLLM matrix factorisation


@dataclass
class MatrixFactorizationQuality(QualityModel):
    """RouteLLM's matrix factorisation: score(m, q) = σ(w·(v_m ⊙ (W q)) + b_m), trained pointwise
    with binary cross-entropy on per-model outcomes (torch, full batch, Adam)."""

    kind: ClassVar[str] = "mf"
    dim: int = 64
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    proj: np.ndarray | None = None  # (dim, d)
    model_vecs: np.ndarray | None = None  # (m, dim)
    out_w: np.ndarray | None = None  # (dim,)
    bias: np.ndarray | None = None  # (m,)

    def fit(self, emb, feats, scores, costs):
        import torch

        torch.manual_seed(self.seed)
        x = torch.tensor(emb, dtype=torch.float32)
        y = torch.tensor(scores, dtype=torch.float32)
        d, m = x.shape[1], y.shape[1]
        proj = torch.nn.Parameter(torch.randn(self.dim, d) / d**0.5)
        vecs = torch.nn.Parameter(torch.randn(m, self.dim) * 0.1 + 1.0)
        out_w = torch.nn.Parameter(torch.randn(self.dim) / self.dim**0.5)
        prior = torch.logit(y.mean(0).clamp(EPS, 1 - EPS))
        bias = torch.nn.Parameter(prior.clone())
        opt = torch.optim.Adam([proj, vecs, out_w, bias], lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(self.epochs):
            opt.zero_grad()
            h = x @ proj.T  # (n, dim)
            logits = (h[:, None, :] * vecs[None, :, :]) @ out_w + bias
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
        self.proj = proj.detach().numpy()
        self.model_vecs = vecs.detach().numpy()
        self.out_w = out_w.detach().numpy()
        self.bias = bias.detach().numpy()
        return self

    def predict(self, emb, feats):
        h = emb @ self.proj.T
        logits = (h[:, None, :] * self.model_vecs[None]) @ self.out_w + self.bias
        return QualityPrediction(sigmoid(logits), np.full(len(emb), -1))

    def state(self):
        return {"dim": self.dim, "epochs": self.epochs}, {
            "proj": self.proj,
            "model_vecs": self.model_vecs,
            "out_w": self.out_w,
            "bias": self.bias,
        }

    @classmethod
    def from_state(cls, params, arrays):
        return cls(
            dim=params["dim"],
            epochs=params.get("epochs", 300),
            proj=arrays["proj"],
            model_vecs=arrays["model_vecs"],
            out_w=arrays["out_w"],
            bias=arrays["bias"],
        )


# --------------------------------------------------------------------------- near duplicates


def nearest_neighbour(emb: np.ndarray, train: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine similarity of each query's nearest training query."""
    idx = np.zeros(len(emb), dtype=np.int64)
    sim = np.zeros(len(emb), dtype=np.float32)
    for sl in _chunks(len(emb)):
        sims = emb[sl] @ train.T
        if exclude_self:
            sims[np.arange(sims.shape[0]), np.arange(sl.start, sl.stop)] = -np.inf
        idx[sl] = sims.argmax(axis=1)
        sim[sl] = sims[np.arange(sims.shape[0]), idx[sl]]
    return idx, sim


@dataclass
class NearDuplicateQuality(QualityModel):
    """What happened to a near-copy of this query. Averaging neighbours (kNN, clusters) blurs a
    sharp signal: two questions that differ in one word, or list the same options in the other
    order, often have opposite right answers (Winogrande's twin sentences are built that way), so
    a model that tends to answer the same letter fails one of them exactly when it passed the
    other. For a query whose nearest training query has cosine ≥ `threshold`, one logistic
    regression per model reads that neighbour's outcomes on every model (which, taken together,
    reveal where its answer was), whether the options are swapped between the two (the product
    of their `choice_order` features) and the interaction. Queries without a near copy get 0.5,
    i.e. a zero logit in the stack, so this base speaks only where it knows something."""

    kind: ClassVar[str] = "near_duplicate"
    threshold: float = 0.99
    c: float = 1.0
    min_pairs: int = 30  # fewer near-duplicate training pairs than this: the base stays silent
    train_emb: np.ndarray | None = None
    train_scores: np.ndarray | None = None
    train_order: np.ndarray | None = None  # (N,) choice_order feature
    coef: np.ndarray | None = None  # (m, 2m + 1); None = silent
    intercept: np.ndarray | None = None  # (m,)

    @staticmethod
    def _order(feats: np.ndarray) -> np.ndarray:
        return feats[:, FEATURE_NAMES.index("choice_order")].astype(np.float32)

    def _design(self, idx: np.ndarray, order: np.ndarray) -> np.ndarray:
        s = self.train_scores[idx].astype(np.float64)  # neighbour's outcomes (n, m)
        same = (order * self.train_order[idx])[:, None]  # +1 same order, −1 swapped, 0 not multiple choice
        return np.hstack([same, s, s * same])

    def fit(self, emb, feats, scores, costs):
        self.train_emb = emb.astype(np.float16)
        self.train_scores = scores.astype(np.float32)
        self.train_order = self._order(feats)
        idx, sim = nearest_neighbour(emb, self.train_emb.astype(np.float32), exclude_self=True)
        near = sim >= self.threshold
        self.coef = self.intercept = None
        if near.sum() >= self.min_pairs:
            x = self._design(idx[near], self.train_order[near])
            fits = [fit_soft_logistic(x, scores[near, j], self.c) for j in range(scores.shape[1])]
            self.coef = np.array([f[0] for f in fits])
            self.intercept = np.array([f[1] for f in fits])
        return self

    def predict(self, emb, feats):
        out = np.full((len(emb), self.train_scores.shape[1]), 0.5)
        if self.coef is not None and len(emb):
            idx, sim = nearest_neighbour(emb, self.train_emb.astype(np.float32))
            near = sim >= self.threshold
            if near.any():
                x = self._design(idx[near], self._order(feats)[near])
                out[near] = sigmoid(x @ self.coef.T + self.intercept)
        return QualityPrediction(out, np.full(len(emb), -1))

    def state(self):
        arrays = {"train_emb": self.train_emb, "train_scores": self.train_scores.astype(np.float16),
                  "train_order": self.train_order}
        if self.coef is not None:
            arrays.update(coef=self.coef, intercept=self.intercept)
        return {"threshold": self.threshold, "c": self.c, "min_pairs": self.min_pairs}, arrays

    @classmethod
    def from_state(cls, params, arrays):
        return cls(
            threshold=params["threshold"],
            c=params["c"],
            min_pairs=params["min_pairs"],
            train_emb=arrays["train_emb"],
            train_scores=arrays["train_scores"].astype(np.float32),
            train_order=arrays["train_order"],
            coef=arrays.get("coef"),
            intercept=arrays.get("intercept"),
        )


def format_vectors(emb: np.ndarray, feats: np.ndarray, std: Standardizer, weight: float) -> np.ndarray:
    """Unit vectors over the embedding and the standardised text features (weight `weight` in all,
    spread over the features), for similarity that sees a prompt's form as well as its topic."""
    z = std(feats) * (weight / np.sqrt(feats.shape[1]))
    x = np.hstack([emb, z])
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


FORMAT_WEIGHT = 2.0


@dataclass
class FormatKnnQuality(KnnQuality):
    """kNN whose similarity sees the prompt's form (length, code and math markers, options, ...)
    beside its topic. MiniLM puts a short open trivia question next to a multiple-choice one on
    the same subject; on the local models' outcomes that made every short question look like the
    tasks a bigger model wins (docs/learning.md, "Which tasks go up"). k = 10, weight 2 were
    chosen by 5-fold CV on those outcomes.

    Its semantic cluster (what a decision records and the drift report compares) is the nearest
    k-means centre over the embedding alone: clusters name topics for analysts, so the form
    features stay out of them."""

    kind: ClassVar[str] = "format_knn"
    k: int = 10
    weighted: bool = True
    weight: float = FORMAT_WEIGHT
    n_clusters: int = 40
    std: Standardizer | None = None
    centers: np.ndarray | None = None

    def fit(self, emb, feats, scores, costs):
        from sklearn.cluster import KMeans

        self.std = Standardizer.fit(feats)
        k = max(1, min(self.n_clusters, len(emb) // 10))
        self.centers = KMeans(n_clusters=k, n_init=1, random_state=0).fit(emb).cluster_centers_.astype(np.float32)
        return super().fit(format_vectors(emb, feats, self.std, self.weight), feats, scores, costs)

    def predict(self, emb, feats):
        pred = super().predict(format_vectors(emb, feats, self.std, self.weight), feats)
        if self.centers is not None:
            d = -2 * emb @ self.centers.T + (self.centers**2).sum(axis=1)[None, :]
            pred.cluster = d.argmin(axis=1)
        return pred

    def state(self):
        params, arrays = super().state()
        params.update(weight=self.weight, n_clusters=self.n_clusters)
        arrays = {**arrays, "feat_mean": self.std.mean, "feat_scale": self.std.scale}
        if self.centers is not None:
            arrays["centers"] = self.centers
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        return cls(k=params["k"], weighted=params.get("weighted", True), weight=params["weight"],
                   n_clusters=params.get("n_clusters", 40),
                   train_emb=arrays["train_emb"], train_scores=arrays["train_scores"].astype(np.float32),
                   std=Standardizer(arrays["feat_mean"], arrays["feat_scale"]),
                   centers=arrays.get("centers"))


ESTIMATORS: dict[str, type[QualityModel]] = {
    cls.kind: cls
    for cls in (KnnQuality, FormatKnnQuality, SimilarityWeightedQuality, ClusterQuality, ClassifierQuality, MatrixFactorizationQuality,
                NearDuplicateQuality)
}
