"""The learning loop offline, on the 168 committed local-outcome queries (every tier answered
each): a router that knows nothing of the local models (the LLMRouter-fitted dcrouter) routes
the training folds with exploration, each query shows only the tier it was sent to, the router is
refitted from those logged outcomes as `switchyard retrain` does, and judged on the held-out
fold with every tier's real outcome: quality and cost against always-large at the default knob,
and the share of math/code and of unsolved-task queries sent to medium or large
(docs/learning.md, "Which tasks go up"). About 10 s per seed on 2 cores.

    .venv/bin/python infra/scripts/simulated_learning.py [--explore 0.5] [--other] [--seeds 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from router.artifact import DCROUTER_DIR, load_router
from router.base import TIERS, Knobs
from router.data import build_table, load_rows
from router.embeddings import embed
from router.outcomes import Outcome, fit_on_outcomes, outcome_table
from router.stacking import kfold_indices

OUTCOMES = Path(__file__).resolve().parents[2] / "switchyard" / "data" / "local_outcomes.jsonl.gz"
MATH_CODE = {"gsm8k", "agentverse-mgsm", "mbpp", "human_eval"}
UNSOLVED = {"math", "natural_qa", "trivia_qa"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--explore", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--other", action="store_true", help="exploration draws only tiers other than the pick")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = load_rows([OUTCOMES])
    task_of = {r["query_id"]: r["task"] for r in rows}
    tier_of = {r["model"]: r["tier"] for r in rows}
    table = build_table(rows)
    emb = embed(table.texts).astype(np.float32)
    tiers = [tier_of[m] for m in table.models]
    col = {t: tiers.index(t) for t in TIERS}
    columns = {t: table.models[col[t]] for t in TIERS}
    tasks = np.array([task_of[q] for q in table.query_ids])
    start = load_router(DCROUTER_DIR)
    start_tiers = [c.tier for c in start.route(table.texts, emb, [Knobs()] * len(table))]
    large_q, large_c = table.scores[:, col["large"]].mean(), table.costs[:, col["large"]].mean()
    q_all, c_all, up_mc, up_un = [], [], [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        for test in kfold_indices(len(table), 5, seed):
            train = np.setdiff1d(np.arange(len(table)), test)
            logged = []
            for i in train:
                explored = rng.random() < args.explore
                if args.other:
                    others = [t for t in TIERS if t != start_tiers[i]]
                    tier = others[rng.integers(2)] if explored else start_tiers[i]
                    p = 1 - args.explore if tier == start_tiers[i] else args.explore / 2
                else:
                    tier = TIERS[rng.integers(3)] if explored else start_tiers[i]
                    p = args.explore / 3 + (1 - args.explore) * (tier == start_tiers[i])
                j = col[tier]
                logged.append(Outcome(table.texts[i], tier, float(table.scores[i, j]),
                                      float(table.costs[i, j]), propensity=p, explored=explored))
            t, q_emb, _ = outcome_table(logged, emb[train], columns)
            router = fit_on_outcomes(t, q_emb, {m: tr for tr, m in columns.items()}, kind=args.kind)
            picks = [c.tier for c in router.route([table.texts[i] for i in test], emb[test], [Knobs()] * len(test))]
            js = np.array([col[p] for p in picks])
            q_all += list(table.scores[test, js])
            c_all += list(table.costs[test, js])
            up = np.array([p != "small" for p in picks])
            up_mc += list(up[np.isin(tasks[test], list(MATH_CODE))])
            up_un += list(up[np.isin(tasks[test], list(UNSOLVED))])
    out = {"quality_vs_large": round(float(np.mean(q_all) / large_q), 3),
           "cost_vs_large": round(float(np.mean(c_all) / large_c), 3),
           "math_code_sent_up": round(float(np.mean(up_mc)), 3),
           "unsolved_sent_up": round(float(np.mean(up_un)), 3)}
    report = {"explore_rate": args.explore, "explore_other_tiers_only": args.other, "kind": args.kind,
              "seeds": args.seeds, **out}
    print(json.dumps(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
