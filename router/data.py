"""Long-format routing rows → dense (query × model) score and cost matrices.

Rows: {dataset, query_id, query_text, model, score, cost_usd, split}. Rows without a cost get a
token-price proxy when prices are given; otherwise loading fails with a clear message.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from router.registry import ModelInfo

REQUIRED_FIELDS = ("query_id", "query_text", "model", "score")


class RoutingDataError(ValueError):
    """Input routing data that cannot be used; the message says why."""


@dataclass
class RoutingTable:
    """Queries × models. `scores` in [0, 1], `costs` in USD per call, both (n_queries, n_models)."""

    dataset: str
    query_ids: list[str]
    texts: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray
    splits: list[str]
    tasks: list[str] | None = None  # the row's `task` field per query ("" where absent)

    def __post_init__(self) -> None:
        if self.tasks is None:
            self.tasks = [""] * len(self.query_ids)

    def __len__(self) -> int:
        return len(self.query_ids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "RoutingTable":
        idx = np.asarray(idx, dtype=int)
        return RoutingTable(
            self.dataset,
            [self.query_ids[i] for i in idx],
            [self.texts[i] for i in idx],
            list(self.models),
            self.scores[idx],
            self.costs[idx],
            [self.splits[i] for i in idx],
            [self.tasks[i] for i in idx],
        )

    def with_split(self, split: str) -> "RoutingTable":
        return self.subset([i for i, s in enumerate(self.splits) if s == split])


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterable[dict]:
    path = Path(path)
    if not path.exists():
        raise RoutingDataError(f"data file not found: {path}")
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RoutingDataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise RoutingDataError(f"{path}:{lineno}: expected a JSON object")
            yield rec


def load_rows(paths: Sequence[str | Path], dataset: str | None = None) -> list[dict]:
    rows: list[dict] = []
    for path in paths:
        for rec in read_jsonl(path):
            if dataset is not None and rec.get("dataset") != dataset:
                continue
            rows.append(rec)
    if not rows:
        what = f" for dataset {dataset!r}" if dataset else ""
        raise RoutingDataError(f"no rows{what} in {', '.join(map(str, paths))}")
    return rows


def build_table(
    rows: Sequence[Mapping],
    prices: Mapping[str, ModelInfo] | None = None,
    splits: Sequence[str] | None = None,
    complete: bool = True,
) -> RoutingTable:
    """Pivot long rows into a complete matrix; queries missing any model's row are dropped.
    complete=False: the union of models, every query kept, missing cells NaN (scores and costs)."""
    models: dict[str, int] = {}
    queries: dict[tuple[str, str], int] = {}
    texts: list[str] = []
    qsplits: list[str] = []
    qtasks: list[str] = []
    cells: list[tuple[int, int, float, float | None]] = []
    datasets: set[str] = set()
    for n, rec in enumerate(rows, 1):
        missing = [f for f in REQUIRED_FIELDS if rec.get(f) is None]
        if missing:
            raise RoutingDataError(f"row {n}: missing field(s) {', '.join(missing)}")
        split = str(rec.get("split") or "train")
        if splits is not None and split not in splits:
            continue
        text = str(rec["query_text"])
        if not text.strip():
            raise RoutingDataError(f"row {n} (query {rec['query_id']!r}): empty query_text")
        try:
            score = float(rec["score"])
        except (TypeError, ValueError):
            raise RoutingDataError(f"row {n}: score {rec['score']!r} is not a number") from None
        if not 0.0 <= score <= 1.0:
            raise RoutingDataError(f"row {n}: score {score} is outside [0, 1]")
        model = str(rec["model"])
        cost = rec.get("cost_usd")
        if cost is None:
            info = (prices or {}).get(model)
            if info is None:
                hint = "pass --prices FILE" if not prices else f"model {model!r} is not in the prices file"
                raise RoutingDataError(
                    f"row {n}: no cost_usd for model {model!r} and no price to estimate it ({hint})"
                )
            cost = info.proxy_cost(text)
        datasets.add(str(rec.get("dataset", "")))
        key = (split, str(rec["query_id"]))
        if key not in queries:
            queries[key] = len(texts)
            texts.append(text)
            qsplits.append(split)
            qtasks.append(str(rec.get("task") or ""))
        mi = models.setdefault(model, len(models))
        cells.append((queries[key], mi, score, float(cost)))
    if not cells:
        raise RoutingDataError(f"no rows with split in {list(splits or [])}")
    n, m = len(texts), len(models)
    scores = np.full((n, m), np.nan)
    costs = np.full((n, m), np.nan)
    for qi, mi, s, c in cells:
        scores[qi, mi] = s
        costs[qi, mi] = c
    full = ~np.isnan(scores).any(axis=1)
    if complete and not full.any():
        raise RoutingDataError("no query has a row for every model; cannot build a routing table")
    idx = np.flatnonzero(full) if complete else np.arange(n)
    qids = [k[1] for k in sorted(queries, key=queries.get)]
    return RoutingTable(
        dataset=",".join(sorted(d for d in datasets if d)) or "routing",
        query_ids=[qids[i] for i in idx],
        texts=[texts[i] for i in idx],
        models=list(models),
        scores=scores[idx],
        costs=costs[idx],
        splits=[qsplits[i] for i in idx],
        tasks=[qtasks[i] for i in idx],
    )
