"""Per-model cost per call predicted from the query's length (cost ≈ a + b · chars)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def query_chars(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=np.float64)


@dataclass
class CostModel:
    intercept: np.ndarray  # (m,)
    slope: np.ndarray  # (m,) USD per character
    floor: np.ndarray  # (m,) smallest cost seen in training

    @classmethod
    def fit(cls, texts: Sequence[str], costs: np.ndarray) -> "CostModel":
        chars = query_chars(texts)
        x = np.c_[np.ones_like(chars), chars]
        coef, *_ = np.linalg.lstsq(x, costs, rcond=None)  # (2, m)
        slope = np.maximum(coef[1], 0.0)
        intercept = costs.mean(axis=0) - slope * chars.mean()
        return cls(intercept, slope, costs.min(axis=0))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        chars = query_chars(texts)[:, None]
        return np.maximum(self.intercept[None] + self.slope[None] * chars, self.floor[None])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"cost_intercept": self.intercept, "cost_slope": self.slope, "cost_floor": self.floor}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CostModel":
        return cls(arrays["cost_intercept"], arrays["cost_slope"], arrays["cost_floor"])
