"""A quality model for a pool of models that were not all run on the same queries: item response
theory (a Rasch model) with the query's difficulty read from its embedding.

    logit P(model m solves q) = θ_m − b(q) [+ v_m · h(q)] [+ r_m · x(q)]

x(q) = [embedding, standardised text features]; b(q) = w · x(q) is the query's difficulty,
shared by every model, and θ_m the model's ability. What makes a query hard is largely the same
whoever answers it (IRT-Router, EmbedLLM), so b, fitted on every model's outcomes, carries over
to models that never saw a task, and θ_m, fitted on the tasks a model did see, carries over to
queries it never saw. Predictions never cross: a model of higher ability is predicted better on
every query, and the routing choice between two models rests on where the query's difficulty
lies relative to their abilities (the gain σ(θ_s − b) − σ(θ_w − b) peaks between them).

Options, off by default because the transfer protocol (router/bench/transfer.py, docs/routing.md)
read them worse: `dim` > 0 adds query traits h(q) = U x(q) and per-model skill profiles v_m (a
low-rank extension); `l2_resid` > 0 a per-model ridge residual r_m on x. (A per-model
discrimination a_m · b(q) was tried too and dropped: fitted on two datasets whose models share
no query, it let one dataset's models ignore the shared difficulty, a_m → 0.1, and nothing
transferred.)

Fitted on a table with missing cells (NaN = no outcome for that model and query): binary
cross-entropy on soft labels in [0, 1] over the observed cells only, full batch, Adam, torch,
seeded. Inference is numpy only; state() holds numpy arrays only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from router.quality import ESTIMATORS, QualityModel, QualityPrediction, Standardizer, design_matrix, logit, sigmoid


@dataclass
class PooledQuality(QualityModel):
    kind: ClassVar[str] = "pooled"
    dim: int = 0  # query traits / model skill dimensions beside the scalar difficulty
    l2_query: float = 1e-4  # on w (and U)
    l2_model: float = 1e-3  # on v_m
    l2_resid: float = 0.0  # on r_m; 0 = no residual
    epochs: int = 200
    lr: float = 0.02
    seed: int = 0
    std: Standardizer | None = None
    w_diff: np.ndarray | None = None  # (p,)
    ability: np.ndarray | None = None  # (m,)
    w_traits: np.ndarray | None = None  # (p, dim)
    skills: np.ndarray | None = None  # (m, dim)
    resid: np.ndarray | None = None  # (m, p) or None

    def fit(self, emb, feats, scores, costs):
        import torch

        observed = ~np.isnan(scores)
        if not observed.any(axis=0).all():
            raise ValueError("every model needs at least one observed score")
        self.std = Standardizer.fit(feats)
        x = torch.tensor(design_matrix(emb, feats, self.std), dtype=torch.float32)
        y = torch.tensor(np.nan_to_num(scores), dtype=torch.float32)
        mask = torch.tensor(observed, dtype=torch.float32)
        n_obs = float(mask.sum())
        p, m = x.shape[1], scores.shape[1]
        g = torch.Generator().manual_seed(self.seed)
        mean = np.array([scores[observed[:, j], j].mean() for j in range(m)])
        w = torch.zeros(p, 1 + self.dim)  # [w_diff | U]
        w[:, 1:] = 0.01 * torch.randn(p, self.dim, generator=g)
        w.requires_grad_()
        ability = torch.tensor(logit(mean), dtype=torch.float32, requires_grad=True)
        skills = (0.1 * torch.randn(m, self.dim, generator=g)).requires_grad_()
        resid = torch.zeros(m, p, requires_grad=True) if self.l2_resid > 0 else None
        opt = torch.optim.Adam([w, ability, skills] + ([resid] if resid is not None else []), lr=self.lr)
        bce = torch.nn.BCEWithLogitsLoss(reduction="none")
        for _ in range(self.epochs):
            opt.zero_grad()
            q = x @ w
            z = ability - q[:, :1] + q[:, 1:] @ skills.T
            penalty = self.l2_query * w.square().sum() + self.l2_model * skills.square().sum()
            if resid is not None:
                z = z + x @ resid.T
                penalty = penalty + self.l2_resid * resid.square().sum()
            loss = (bce(z, y) * mask).sum() / n_obs + penalty
            loss.backward()
            opt.step()
        w_np = w.detach().numpy().astype(np.float64)
        self.w_diff, self.w_traits = w_np[:, 0].copy(), w_np[:, 1:].copy()
        self.ability = ability.detach().numpy().astype(np.float64)
        self.skills = skills.detach().numpy().astype(np.float64)
        self.resid = None if resid is None else resid.detach().numpy().astype(np.float64)
        return self

    def logits(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        x = design_matrix(emb, feats, self.std)
        z = self.ability[None] - (x @ self.w_diff)[:, None] + (x @ self.w_traits) @ self.skills.T
        if self.resid is not None:
            z = z + x @ self.resid.T
        return z

    def difficulty(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """b(q) per query (higher = harder for every model)."""
        return design_matrix(emb, feats, self.std) @ self.w_diff

    def predict(self, emb, feats):
        return QualityPrediction(sigmoid(self.logits(emb, feats)), np.full(len(emb), -1))

    def state(self):
        params = {"dim": self.dim, "l2_query": self.l2_query, "l2_model": self.l2_model, "l2_resid": self.l2_resid,
                  "epochs": self.epochs, "lr": self.lr, "seed": self.seed}
        arrays = {"std_mean": self.std.mean, "std_scale": self.std.scale, "w_diff": self.w_diff,
                  "ability": self.ability, "w_traits": self.w_traits, "skills": self.skills}
        if self.resid is not None:
            arrays["resid"] = self.resid
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        return cls(**params, std=Standardizer(arrays["std_mean"], arrays["std_scale"]), w_diff=arrays["w_diff"],
                   ability=arrays["ability"], w_traits=arrays["w_traits"], skills=arrays["skills"],
                   resid=arrays.get("resid"))


ESTIMATORS[PooledQuality.kind] = PooledQuality
