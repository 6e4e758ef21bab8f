"""Per-model cost per call: a + b · chars (the input side), plus a ridge correction on the query's
embedding and text features (the output side: RouterBench's MBPP prompts are short but their
answers — code — are long, so a length-only model priced gpt-4 on MBPP at half its real cost).

With token-priced data (LLMRouter: cost = price · (chars/4 + 256)) the correction learns ≈ 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RIDGE_ALPHA = 1.0


def query_chars(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=np.float64)


def _design(emb: np.ndarray, feats: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(emb, dtype=np.float64), (np.asarray(feats, dtype=np.float64) - mean) / scale])


@dataclass
class CostModel:
    intercept: np.ndarray  # (m,)
    slope: np.ndarray  # (m,) USD per character
    floor: np.ndarray  # (m,) smallest cost seen in training
    resid_coef: np.ndarray | None = None  # (m, d) ridge on [embedding, standardised features]
    resid_intercept: np.ndarray | None = None  # (m,)
    feat_mean: np.ndarray | None = None
    feat_scale: np.ndarray | None = None

    @classmethod
    def fit(
        cls, texts: Sequence[str], costs: np.ndarray, emb: np.ndarray | None = None, feats: np.ndarray | None = None
    ) -> "CostModel":
        if np.isnan(costs).any():
            return cls._fit_masked(texts, costs, emb, feats)
        chars = query_chars(texts)
        x = np.c_[np.ones_like(chars), chars]
        coef, *_ = np.linalg.lstsq(x, costs, rcond=None)  # (2, m)
        slope = np.maximum(coef[1], 0.0)
        intercept = costs.mean(axis=0) - slope * chars.mean()
        model = cls(intercept, slope, costs.min(axis=0))
        if emb is not None and feats is not None and len(texts) >= 20:
            from sklearn.linear_model import Ridge

            mean, scale = feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-6)
            resid = costs - model._linear(chars)
            ridge = Ridge(alpha=RIDGE_ALPHA).fit(_design(emb, feats, mean, scale), resid)
            model.resid_coef = np.atleast_2d(ridge.coef_).astype(np.float64)
            model.resid_intercept = np.atleast_1d(ridge.intercept_).astype(np.float64)
            model.feat_mean, model.feat_scale = mean.astype(np.float64), scale.astype(np.float64)
        return model

    @classmethod
    def _fit_masked(
        cls, texts: Sequence[str], costs: np.ndarray, emb: np.ndarray | None, feats: np.ndarray | None
    ) -> "CostModel":
        """A table with missing cells (NaN: no row of that model for that query): each model is
        fitted on its own rows; the residuals share one feature standardisation over all queries."""
        observed = [np.flatnonzero(~np.isnan(costs[:, j])) for j in range(costs.shape[1])]
        if any(not len(rows) for rows in observed):
            raise ValueError("every model needs at least one observed cost")
        parts = [cls.fit([texts[i] for i in rows], costs[rows, j : j + 1]) for j, rows in enumerate(observed)]
        model = cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("intercept", "slope", "floor")))
        if emb is not None and feats is not None and min(map(len, observed)) >= 20:
            from sklearn.linear_model import Ridge

            mean, scale = feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-6)
            x = _design(emb, feats, mean, scale)
            resid = costs - model._linear(query_chars(texts))
            ridges = [Ridge(alpha=RIDGE_ALPHA).fit(x[rows], resid[rows, j]) for j, rows in enumerate(observed)]
            model.resid_coef = np.array([r.coef_ for r in ridges], dtype=np.float64)
            model.resid_intercept = np.array([r.intercept_ for r in ridges], dtype=np.float64)
            model.feat_mean, model.feat_scale = mean.astype(np.float64), scale.astype(np.float64)
        return model

    def _linear(self, chars: np.ndarray) -> np.ndarray:
        return self.intercept[None] + self.slope[None] * chars[:, None]

    def predict(
        self, texts: Sequence[str], emb: np.ndarray | None = None, feats: np.ndarray | None = None
    ) -> np.ndarray:
        out = self._linear(query_chars(texts))
        if self.resid_coef is not None and emb is not None and feats is not None and len(texts):
            out = out + _design(emb, feats, self.feat_mean, self.feat_scale) @ self.resid_coef.T + self.resid_intercept
        return np.maximum(out, self.floor[None])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"cost_intercept": self.intercept, "cost_slope": self.slope, "cost_floor": self.floor}
        if self.resid_coef is not None:
            out.update({"cost_resid_coef": self.resid_coef, "cost_resid_intercept": self.resid_intercept,
                        "cost_feat_mean": self.feat_mean, "cost_feat_scale": self.feat_scale})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CostModel":
        return cls(arrays["cost_intercept"], arrays["cost_slope"], arrays["cost_floor"],
                   arrays.get("cost_resid_coef"), arrays.get("cost_resid_intercept"),
                   arrays.get("cost_feat_mean"), arrays.get("cost_feat_scale"))
