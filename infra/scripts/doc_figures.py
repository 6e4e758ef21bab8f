"""Small figures the docs quote, printed as JSON (`make figures` writes them under figures/).

    .venv/bin/python infra/scripts/doc_figures.py task-means ROUTERBENCH.jsonl.gz
        each model's mean score per RouterBench task (docs/routing.md, "How far can it go")
    .venv/bin/python infra/scripts/doc_figures.py artifact-tiers
        the shipped artifacts' tier maps (docs/routing.md, "Tiers")
    .venv/bin/python infra/scripts/doc_figures.py default-sample-tiers
        the default artifact's version, default knob and the sample job's tier split (README, docs/routing.md)
"""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def task_means(path: str) -> dict:
    from router.data import build_table, load_rows

    t = build_table(load_rows([path]), splits=["train"])
    task = np.array([q.split(".")[0] for q in t.query_ids])
    return {k: dict(zip(t.models, t.scores[task == k].mean(0).round(3).tolist())) for k in np.unique(task).tolist()}


def artifact_tiers() -> dict:
    return {a: json.loads((ROOT / "router" / "artifacts" / a / "router.json").read_text())["tiers"]
            for a in ("default", "dcrouter", "routerbench")}


def default_sample_tiers() -> dict:
    from router.artifact import load_default
    from router.base import Knobs
    from router.embeddings import embed

    lines = (ROOT / "switchyard" / "data" / "sample_job.jsonl").read_text().splitlines()
    texts = [json.loads(line)["body"]["messages"][-1]["content"] for line in lines]
    router = load_default()
    tiers = collections.Counter(c.tier for c in router.route(texts, embed(texts), [Knobs()] * len(texts)))
    return {"version": router.version, "default_alpha": router.default_alpha, "queries": len(texts), **tiers}


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    figures = {"task-means": task_means, "artifact-tiers": artifact_tiers, "default-sample-tiers": default_sample_tiers}
    if what not in figures:
        sys.exit(f"unknown figure {what!r}; one of {', '.join(figures)}")
    print(json.dumps(figures[what](*args), indent=1))
