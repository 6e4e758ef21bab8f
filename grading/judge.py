"""An LLM judge for answers that have no reference: the prompt it gets and how its verdict is read.

Pure text in, text out; switchyard.judge sends the prompts to the large tier through the stack.
The verdict is a mark from 1 to 10 on its own line ("Score: 7"); the feedback score is the mark
mapped onto [0, 1]. A reply without a readable mark gives no score (never a guess).
"""
from __future__ import annotations

import re

RUBRIC = (
    "You grade an assistant's answer to a user's request. Judge correctness first, then whether "
    "it answers what was asked, then clarity. Reply with one line and nothing else: "
    "'Score: N' where N is a whole number from 1 (wrong or useless) to 10 (correct and complete)."
)
MAX_QUERY_CHARS = 4000  # the judge reads the head of a long request and answer, not all of it
MAX_ANSWER_CHARS = 4000
_MARK = re.compile(r"(?:score|rating|mark|grade)\s*[:=]?\s*(10|[1-9])(?:\s*/\s*10)?\b", re.IGNORECASE)
_BARE = re.compile(r"^\s*(10|[1-9])\s*(?:/\s*10)?\s*\.?\s*$")


def judge_messages(query: str, answer: str) -> list[dict[str, str]]:
    """The chat messages asking the judge to mark `answer` to `query`."""
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"Request:\n{query[:MAX_QUERY_CHARS]}\n\nAnswer:\n{answer[:MAX_ANSWER_CHARS]}\n\n"
                                    "Reply 'Score: N' (1-10)."},
    ]


def read_verdict(reply: str) -> float | None:
    """The judge's mark as a score in [0, 1] ((N - 1) / 9), or None when the reply has none."""
    found = _MARK.search(reply) or _BARE.match(reply)
    if not found:
        return None
    return (int(found.group(1)) - 1) / 9
