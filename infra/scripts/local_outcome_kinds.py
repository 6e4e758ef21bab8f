"""Which quality model routes the local models' outcomes best (docs/learning.md, "Which tasks go
up"): 5-fold CV over the 168 committed local-outcome queries, 3 fold seeds averaged, each tier
priced at its mean cost; for each model the λ sweep's best quality within 25 % and 50 % of
always-large's cost, and at those points the share of math/code and of unsolved-task queries
sent to medium or large.

    .venv/bin/python infra/scripts/local_outcome_kinds.py [--json OUT]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from router.data import build_table, load_rows
from router.embeddings import embed
from router.features import text_features
from router.policy import lagrangian_choice
from router.quality import FormatKnnQuality, KnnQuality
from router.stacking import StackedQuality, kfold_indices

OUTCOMES = Path(__file__).resolve().parents[2] / "switchyard" / "data" / "local_outcomes.jsonl.gz"
MATH_CODE = {"gsm8k", "agentverse-mgsm", "mbpp", "human_eval"}
UNSOLVED = {"math", "natural_qa", "trivia_qa"}
MODELS = {
    "stack (switchyard)": StackedQuality,
    "knn-10, embedding only": lambda: KnnQuality(k=10, weighted=True),
    "format_knn (embedding + form)": FormatKnnQuality,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = load_rows([OUTCOMES])
    task_of = {r["query_id"]: r["task"] for r in rows}
    tier_of = {r["model"]: r["tier"] for r in rows}
    table = build_table(rows)
    emb, feats = embed(table.texts).astype(np.float32), text_features(table.texts)
    scores, costs = table.scores, table.costs
    tasks = np.array([task_of[q] for q in table.query_ids])
    small = [tier_of[m] for m in table.models].index("small")
    large = int(costs.mean(axis=0).argmax())
    idx = np.arange(len(table))
    report = {}
    for name, make in MODELS.items():
        oof = np.zeros_like(scores)
        for seed in range(3):
            for test in kfold_indices(len(table), 5, seed):
                train = np.setdiff1d(idx, test)
                model = make().fit(emb[train], feats[train], scores[train], costs[train])
                oof[test] += model.predict(emb[test], feats[test]).quality / 3
        points = []
        for lam in np.r_[0.0, np.geomspace(1, 1e5, 80)]:
            pick = lagrangian_choice(oof, np.broadcast_to(costs.mean(axis=0), scores.shape), lam)
            points.append((costs[idx, pick].mean() / costs[:, large].mean(),
                           scores[idx, pick].mean() / scores[:, large].mean(), pick))
        out = {}
        for cap in (0.25, 0.5):
            _, q, pick = max((p for p in points if p[0] <= cap), key=lambda p: p[1])
            up = pick != small
            out[f"at_{int(cap * 100)}pct_cost"] = {
                "quality_vs_large": round(float(q), 3),
                "math_code_sent_up": round(float(up[np.isin(tasks, list(MATH_CODE))].mean()), 2),
                "unsolved_sent_up": round(float(up[np.isin(tasks, list(UNSOLVED))].mean()), 2)}
        report[name] = out
        print(name, json.dumps(out), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
