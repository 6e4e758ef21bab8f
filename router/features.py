"""Cheap text features beside the embedding: length, code / math markers, script (language),
and the order of a multiple-choice question's options."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_CODE = re.compile(r"```|\bdef |\bclass |\bimport |\breturn\b|#include|;\s*$|[{}]|==|\bfunction\b", re.M)
_MATH = re.compile(r"\$|\\frac|\\sqrt|\^|\d+\s*[-+*/=]\s*\d+|\bsolve\b|\bequation\b", re.I)
_CHOICE = re.compile(r"^\s*\(?[A-D][).:]\s", re.M)
_OPTION = re.compile(r"^\s*\(?[A-Ea-e1-5][).:]\s*(.+?)\s*$", re.M)

FEATURE_NAMES = (
    "log_chars",
    "log_lines",
    "code_markers",
    "math_markers",
    "choice_markers",
    "digit_ratio",
    "non_ascii_ratio",
    "question_mark",
    "choice_order",
)


def choice_order(text: str) -> float:
    """+1 if the last question's options are listed in alphabetical order, −1 if not, 0 if it has
    fewer than two. Two near-identical questions whose product is −1 list the same options
    swapped, which flips the outcome of a model that tends to answer the same letter (see
    `router.quality.NearDuplicateQuality`)."""
    options = [o.lower() for o in _OPTION.findall(text.rsplit("\n\n", 1)[-1])]
    if len(options) < 2:
        return 0.0
    return 1.0 if options == sorted(options) else -1.0


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
            choice_order(t),
        )
    return out
