"""Cheap text features beside the embedding: length, code / math markers, script (language)."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_CODE = re.compile(r"```|\bdef |\bclass |\bimport |\breturn\b|#include|;\s*$|[{}]|==|\bfunction\b", re.M)
_MATH = re.compile(r"\$|\\frac|\\sqrt|\^|\d+\s*[-+*/=]\s*\d+|\bsolve\b|\bequation\b", re.I)
_CHOICE = re.compile(r"^\s*\(?[A-D][).:]\s", re.M)

FEATURE_NAMES = (
    "log_chars",
    "log_lines",
    "code_markers",
    "math_markers",
    "choice_markers",
    "digit_ratio",
    "non_ascii_ratio",
    "question_mark",
)


def text_features(texts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32; unscaled (estimators standardise them)."""
    out = np.zeros((len(texts), len(FEATURE_NAMES)), dtype=np.float32)
    for i, t in enumerate(texts):
        n = max(1, len(t))
        out[i] = (
            np.log1p(len(t)),
            np.log1p(t.count("\n")),
            np.log1p(len(_CODE.findall(t))),
            np.log1p(len(_MATH.findall(t))),
            np.log1p(len(_CHOICE.findall(t))),
            sum(c.isdigit() for c in t) / n,
            sum(ord(c) > 127 for c in t) / n,
            float("?" in t[-300:]),
        )
    return out
