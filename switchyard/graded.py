"""Graded queries as jobs: the shared graded training queries (or any file of the same shape)
turned into job lines and references, so that live traffic through the local models can be
graded and fed back. Used by the learning experiment, the outcome collection that fits the
shipped default, and the held-back evaluation."""
from __future__ import annotations

import ast
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

DEFAULT_GRADED = Path("../shared/data/graded/llmrouter_train.jsonl.gz")
# Prompts longer than this are left out: the local models' 2,048-token context must hold the
# prompt and up to 256 answer tokens.
MAX_PROMPT_CHARS = 2500
ANSWER_TOKENS = 256


@dataclass(frozen=True)
class GradedQuery:
    id: str
    task: str
    metric: str
    query: str
    ground_truth: Any
    choices: Any = None

    @classmethod
    def of(cls, row: dict) -> GradedQuery:
        return cls(str(row["id"]), row["task_name"], row["metric"], row["query"], row["ground_truth"],
                   row.get("choices"))

    def prompt(self) -> str:
        """The graded queries carry options and tests apart from the question; a model needs them."""
        from grading import parse_choices

        if self.metric == "em_mc" and self.choices:
            labels, texts = parse_choices(self.choices)
            options = "\n".join(f"{label}) {text}" for label, text in zip(labels, texts))
            return f"{self.query}\n{options}\nAnswer with the letter of the correct option."
        if self.task == "mbpp":
            tests = self.ground_truth if isinstance(self.ground_truth, list) else ast.literal_eval(self.ground_truth)
            return f"{self.query}\nYour code should pass this test:\n{tests[0]}"
        return self.query

    def reference(self) -> dict:
        return {"custom_id": self.id, "task": self.task, "metric": self.metric,
                "ground_truth": self.ground_truth, "choices": self.choices, "query": self.query}


def read_graded(path: Path) -> list[GradedQuery]:
    from router.data import read_jsonl

    return [GradedQuery.of(row) for row in read_jsonl(path)]


def in_holdout(query_id: str, share: float) -> bool:
    """A fixed, content-addressed split: the same query is held back in every run."""
    digest = hashlib.sha256(f"holdout:{query_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def sample_per_task(queries: Iterable[GradedQuery], per_task: int, seed: int = 0,
                    exclude: set[str] = frozenset(), tasks: Iterable[str] | None = None) -> list[GradedQuery]:
    """Up to `per_task` queries of each task (those that fit the context), in a seeded order."""
    by_task: dict[str, list[GradedQuery]] = {}
    for q in queries:
        if q.id not in exclude and len(q.prompt()) <= MAX_PROMPT_CHARS:
            by_task.setdefault(q.task, []).append(q)
    wanted = sorted(tasks) if tasks is not None else sorted(by_task)
    rng = random.Random(seed)
    picked = []
    for task in wanted:
        pool = sorted(by_task.get(task, []), key=lambda q: q.id)
        rng.shuffle(pool)
        picked += pool[:per_task]
    return picked


def job_lines(queries: Iterable[GradedQuery], max_tokens: int = ANSWER_TOKENS,
              pinned_tier: str | None = None, budget_usd: float | None = None) -> list[bytes]:
    lines = []
    for q in queries:
        line: dict[str, Any] = {
            "custom_id": q.id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": q.prompt()}], "max_tokens": max_tokens,
                     "temperature": 0},
        }
        routing = {k: v for k, v in (("pinned_tier", pinned_tier), ("budget_usd", budget_usd)) if v}
        if routing:
            line["routing"] = routing
        lines.append(json.dumps(line).encode())
    return lines
