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

from switchyard.graded import GradedQuery  # noqa: E402

MIX = {"trivia_qa": 5, "natural_qa": 4, "commonsense_qa": 4, "openbook_qa": 3, "gsm8k": 6,
       "mmlu": 3, "mbpp": 3, "math": 2}
MAX_CHARS = 1200
# Math and code need room to work the answer out; the others answer in a line or two.
LONG_ANSWER_TASKS = {"gsm8k", "math", "mbpp"}
OUT = Path(__file__).resolve().parents[2] / "switchyard" / "data"


def main(source: str) -> None:
    rows = [json.loads(line) for line in gzip.open(source)]
    rng = random.Random(11)
    rng.shuffle(rows)
    picked = []
    for task, n in MIX.items():
        picked += [GradedQuery.of(r) for r in rows if r["task_name"] == task and len(r["query"]) <= MAX_CHARS][:n]
    with (OUT / "sample_job.jsonl").open("w") as job, (OUT / "sample_job.grades.jsonl").open("w") as grades:
        for q in picked:
            job.write(json.dumps({
                "custom_id": q.id, "method": "POST", "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": q.prompt()}],
                         "max_tokens": 256 if q.task in LONG_ANSWER_TASKS else 128},
            }) + "\n")
            grades.write(json.dumps(q.reference()) + "\n")
    print(f"wrote {len(picked)} requests to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
