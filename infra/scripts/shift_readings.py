"""Readings of the 5-fold cross-validated picks under particular task mixes and small samples,
beside `switchyard bench routing --protocol shift` (docs/routing.md, "Under shift").

    python infra/scripts/shift_readings.py ../shared/data/routing/llmrouter_dcrouter.jsonl.gz \
        --prices ../shared/data/routing/llmrouter_dcrouter.prices.json --sample 381

Prints, for the switchyard stack, cluster and kNN, Q@25 % / cost@95 % / cost@parity / AUC under the
data's own mix, a uniform task mix and each task left out of the mix; then, over 2,000 random
subsets of `--sample` queries, how often the stack reads worse than cluster by at least the given
gaps (how likely a small test split shows a gap by chance alone).
"""
from __future__ import annotations

import argparse

import numpy as np

from router.bench.evaluate import _resampled, bench_cv
from router.bench.splits import cv_folds
from router.data import build_table, load_rows
from router.embeddings import embed
from router.registry import load_prices

ROUTERS = ("switchyard", "cluster", "knn")
KEYS = ("q_at_25pct_cost", "cost_95pct", "cost_parity", "auc")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--prices")
    ap.add_argument("--sample", type=int, default=381)
    ap.add_argument("--gaps", default="2.2,16,3.5", help="Q@25 %%, parity, max quality gaps (cluster ahead)")
    args = ap.parse_args()
    table = build_table(load_rows([args.data]), load_prices(args.prices) if args.prices else None, splits=["train"])
    emb = embed(table.texts)
    res = bench_cv(table, emb, cv_folds(table.query_ids, 5, 0), routers=ROUTERS, n_bootstrap=0, jobs=2)
    tasks = np.asarray(table.tasks)
    names = sorted(set(table.tasks))
    n = len(table)
    mixes = {"data mix": np.full(n, 1 / n),
             "uniform over tasks": np.array([1 / (len(names) * (tasks == t).sum()) for t in tasks])}
    for t in names:
        w = (tasks != t).astype(float)
        mixes[f"without {t}"] = w / w.sum()
    got = _resampled(res.per_query, table, 0, 0, np.stack(list(mixes.values()), axis=1), per_column_reference=True)
    print("mix".ljust(30), "  ".join(f"{r:>28s}" for r in ROUTERS), "   (Q@25 / cost@95 / parity / AUC)")
    for j, mix in enumerate(mixes):
        cells = ["/".join(f"{got[r][k][j]:5.1f}" for k in KEYS) for r in ROUTERS]
        print(mix.ljust(30), "  ".join(f"{c:>28s}" for c in cells))
    rng = np.random.default_rng(0)
    w = np.zeros((n, 2000))
    for b in range(w.shape[1]):
        w[rng.choice(n, args.sample, replace=False), b] = 1 / args.sample
    sub = _resampled(res.per_query, table, 0, 0, w, per_column_reference=True)
    q, parity, top = (float(x) for x in args.gaps.split(","))
    s, c = sub["switchyard"], sub["cluster"]
    never = 1e9  # parity never reached reads as the dearest
    print(f"{args.sample}-query subsets: P(cluster − switchyard Q@25 % ≥ {q}) = {(c['q_at_25pct_cost'] - s['q_at_25pct_cost'] >= q).mean():.3f}; "
          f"P(switchyard − cluster parity cost ≥ {parity}) = "
          f"{(np.nan_to_num(s['cost_parity'], nan=never) - np.nan_to_num(c['cost_parity'], nan=never) >= parity).mean():.3f}; "
          f"P(cluster − switchyard max quality ≥ {top}) = {(c['max_quality'] - s['max_quality'] >= top).mean():.3f}")


if __name__ == "__main__":
    main()
