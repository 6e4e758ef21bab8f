"""Regenerate switchyard/data/sample_job.jsonl (the demo's job) from the graded training queries.

    python infra/scripts/make_sample_job.py ../shared/data/graded/llmrouter_train.jsonl.gz
"""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MIX = {"trivia_qa": 5, "natural_qa": 4, "commonsense_qa": 4, "openbook_qa": 3, "gsm8k": 6,
       "mmlu": 3, "mbpp": 3, "math": 2}
MAX_CHARS = 1200
OUT = Path(__file__).resolve().parents[2] / "switchyard" / "data"


def prompt_for(row: dict) -> str:
    """The graded queries carry options and tests apart from the question; a model needs them."""
    from grading import parse_choices

    query = row["query"]
    if row["metric"] == "em_mc" and row.get("choices"):
        labels, texts = parse_choices(row["choices"])
        options = "\n".join(f"{label}) {text}" for label, text in zip(labels, texts))
        return f"{query}\n{options}\nAnswer with the letter of the correct option."
    if row["task_name"] == "mbpp":
        tests = row["ground_truth"] if isinstance(row["ground_truth"], list) else eval(row["ground_truth"])  # noqa: S307 (our data)
        return f"{query}\nYour code should pass this test:\n{tests[0]}"
    return query


def main(source: str) -> None:
    rows = [json.loads(line) for line in gzip.open(source)]
    rng = random.Random(11)
    rng.shuffle(rows)
    picked = []
    for task, n in MIX.items():
        picked += [r for r in rows if r["task_name"] == task and len(r["query"]) <= MAX_CHARS][:n]
    with (OUT / "sample_job.jsonl").open("w") as job, (OUT / "sample_job.grades.jsonl").open("w") as grades:
        for r in picked:
            job.write(json.dumps({
                "custom_id": r["id"], "method": "POST", "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": prompt_for(r)}], "max_tokens": 128},
            }) + "\n")
            grades.write(json.dumps({"custom_id": r["id"], "task": r["task_name"], "metric": r["metric"],
                                     "ground_truth": r["ground_truth"], "choices": r.get("choices"),
                                     "query": r["query"]}) + "\n")
    print(f"wrote {len(picked)} requests to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
