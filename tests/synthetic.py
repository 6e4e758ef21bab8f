"""A small synthetic routing problem with known structure, for the router tests (no MiniLM needed)."""
import numpy as np

from router.data import RoutingTable

MODELS = ["tiny", "mid-a", "mid-b", "big"]
PRICE = np.array([1.0, 3.0, 4.0, 20.0]) * 1e-6  # USD per character
# success probability per (task, model): each mid model is strong on one task only
P = np.array([
    [0.30, 0.90, 0.35, 0.92],
    [0.30, 0.35, 0.90, 0.92],
    [0.85, 0.85, 0.85, 0.90],
])


def make_table(n=600, seed=0, dim=384):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, dim))
    task = rng.integers(0, 3, size=n)
    emb = centers[task] + 0.6 * rng.normal(size=(n, dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    texts = [f"task {t} question {i} " + "x" * int(rng.integers(20, 400)) for i, t in enumerate(task)]
    scores = (rng.random((n, len(MODELS))) < P[task]).astype(float)
    lengths = np.array([len(t) for t in texts], dtype=float)
    costs = lengths[:, None] * PRICE[None, :] * rng.uniform(0.9, 1.1, size=(n, len(MODELS)))
    table = RoutingTable("synthetic", [f"q{i}" for i in range(n)], texts, list(MODELS), scores, costs, ["train"] * n)
    return table, emb
