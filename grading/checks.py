"""Answer checks: score a model's (often verbose) answer against a ground truth.

One entry point, :func:`grade`, dispatching on the metric names used by the graded training data
(``em_mc``, ``GSM8K``, ``MATH``, ``f1_score``, ``code_eval``, ``commongen_coverage``).  Everything
here is our own code; no evaluation library is used.  ``code_eval`` runs the candidate through
:mod:`grading.sandbox`, never in this process.
"""
from __future__ import annotations

import ast
import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from grading.sandbox import CODE_TIMEOUT_S, MAX_CODE_CHARS, run_sandboxed

__all__ = ["Grade", "UnknownMetricError", "grade", "parse_choices", "METRICS", "CODE_TIMEOUT_S"]


@dataclass(frozen=True)
class Grade:
    score: float            # in [0, 1]
    metric: str
    extracted: str | None   # what was read from the answer (for debugging/analysts)
    detail: str = ""


class UnknownMetricError(ValueError):
    """The metric name is not one this module can grade."""


# ----------------------------------------------------------------------------------- helpers

def _as_literal(value: Any) -> Any:
    """Parse a Python-repr / JSON string into a list or dict when it looks like one."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{(":
            for parse in (ast.literal_eval, json.loads):
                try:
                    return parse(text)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
    return value


def _clean(answer: str) -> str:
    """Drop markdown emphasis that hides answers ("**Answer: C**")."""
    return re.sub(r"(?<![\w*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])", r"\1", answer).strip()


def _last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}) with balanced braces, or None."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, m.end()
        for k in range(start, len(text)):
            ch = text[k]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    best = text[start:k]
                    break
    if best is None:  # "\boxed 5" without braces
        m = None
        for m in re.finditer(r"\\boxed +([^\s$]+)", text):
            pass
        if m is not None:
            best = m.group(1)
    return best


_NUM_RE = re.compile(
    r"(?<![\w.])(?P<neg>-\s?)?\$?\s?(?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+)(?![\d.]))?")


def _numbers(text: str) -> list[tuple[float, str]]:
    """All numbers in text, as (value, matched text). Handles 1,000 / $60,000 / -3.5 / 3/4."""
    out = []
    for m in _NUM_RE.finditer(text):
        try:
            value = float(m.group("num").replace(",", ""))
            if m.group("den"):
                den = float(m.group("den"))
                if den == 0:
                    continue
                value /= den
        except ValueError:
            continue
        if m.group("neg"):
            value = -value
        out.append((value, m.group(0).strip()))
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# The explicit-answer markers small models use: "Answer: X", "the answer is X", "#### X", ...
_ANSWER_MARKER = re.compile(
    r"(?:\b(?i:answer|correct\s+option|correct\s+choice)\b\s*"
    r"(?i:is|would\s+be|will\s+be|should\s+be|=|:|-(?=\s))\s*(?i:is\b)?\s*:?\s*"
    r"|####\s*:?\s*)")


def _after_markers(text: str) -> list[str]:
    """Text following each explicit answer marker, last marker first (up to end of line)."""
    segments = []
    for m in _ANSWER_MARKER.finditer(text):
        rest = text[m.end():]
        line = rest.split("\n", 1)[0].strip()
        if not line and rest.strip():  # "Answer:\n42"
            line = rest.strip().split("\n", 1)[0].strip()
        if line:
            segments.append(line)
    return segments[::-1]


# ----------------------------------------------------------------------------------- em_mc

def parse_choices(choices: Any) -> tuple[list[str], list[str]]:
    """(labels, texts) from {'text': [...], 'label'|'labels': [...]}, a list, or their repr."""
    choices = _as_literal(choices)
    texts: list[str] = []
    labels: list[str] = []
    if isinstance(choices, dict):
        texts = [str(t) for t in (choices.get("text") or choices.get("texts") or [])]
        labels = [str(x) for x in (choices.get("label") or choices.get("labels") or [])]
    elif isinstance(choices, (list, tuple)):
        texts = [str(t) for t in choices]
    if len(labels) != len(texts):
        labels = [string.ascii_uppercase[i] for i in range(len(texts))]
    return labels, texts


def _norm_option(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"[^\w\s.^/+-]", " ", text)
    text = re.sub(r"\s+", " ", text).strip(" .")
    return text


def _label_index(token: str, labels: list[str], n_options: int) -> int | None:
    """Map a label token ('C', '(c)', '3') to an option index."""
    token = token.strip().strip("()[]*.:").strip()
    if not token:
        return None
    if token in labels:
        return labels.index(token)
    if token.upper() in labels:
        return labels.index(token.upper())
    if len(token) == 1 and token.isalpha() and token.isupper():  # letter while labels are 1..4
        i = ord(token) - ord("A")
        return i if i < n_options and not any(lab.isalpha() for lab in labels) else None
    if token.isdigit() and all(lab.isalpha() for lab in labels):  # "2" while labels are A..D
        return None  # ambiguous with option texts that are numbers; handled by text matching
    return None


def _find_options(text: str, texts: list[str]) -> list[int]:
    """Indices of options whose (normalised) text occurs in text as whole words; drop those that are
    only found as part of a longer found option."""
    hay = " " + _norm_option(text) + " "
    found = []
    for i, opt in enumerate(texts):
        needle = _norm_option(opt)
        if needle and re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", hay):
            found.append(i)
    norm = {i: _norm_option(texts[i]) for i in found}
    return [i for i in found if not any(j != i and norm[i] != norm[j] and norm[i] in norm[j] for j in found)]


def _extract_choice(answer: str, labels: list[str], texts: list[str]) -> tuple[int | None, str | None, str]:
    """(index, extracted text, how) of the option an answer picks, or (None, None, reason)."""
    n = len(texts) or max(len(labels), 5)
    if not labels:
        labels = [string.ascii_uppercase[i] for i in range(n)]
    letter = r"(?:[A-Z]|\d{1,2})"
    text = _clean(answer)
    numeric_options = bool(texts) and all(re.fullmatch(r"-?\d+(?:\.\d+)?", t.strip()) for t in texts)

    def by_text(segment: str) -> int | None:
        if not texts:
            return None
        exact = [i for i, t in enumerate(texts) if _norm_option(t) == _norm_option(segment)]
        if exact:
            return exact[0]
        if numeric_options:
            return None
        found = _find_options(segment, texts)
        return found[0] if len(found) == 1 else None

    def label_then_text(token: str) -> int | None:
        i = _label_index(token, labels, n)
        if i is None and texts:
            i = by_text(token)
        return i

    # 1. the whole answer is a label ("C", "(C)", "C.") or exactly an option's text
    whole = text.strip().strip("*`'\" ")
    m = re.fullmatch(r"\(?\s*(" + letter + r")\s*\)?[.:)]?", whole, re.I)
    if m and (i := label_then_text(m.group(1).upper())) is not None:
        return i, m.group(1), "lone label"
    if texts and (i := by_text(whole)) is not None and _norm_option(whole) == _norm_option(texts[i]):
        return i, texts[i], "option text"
    # 2. explicit marker: "Answer: C", "the correct answer is (B) train station", "\boxed{C}"
    boxed = _last_boxed(text)
    if boxed is not None:
        b = re.sub(r"\\text\{([^{}]*)\}", r"\1", boxed).strip()
        if (i := label_then_text(b)) is not None:
            return i, b, "boxed"
    for segment in _after_markers(text):
        if texts and not numeric_options:  # "The answer is A young person." names an option, not A
            seg = _norm_option(segment)
            starts = [i for i, t in enumerate(texts) if _norm_option(t)
                      and re.match(re.escape(_norm_option(t)) + r"(?!\w)", seg)]
            if starts:
                i = max(starts, key=lambda j: len(_norm_option(texts[j])))
                return i, texts[i], "answer marker (option text)"
        m = re.match(r"(?:option|choice)?\s*\(?\s*(" + letter + r")\s*\)?(?![\w'])", segment, re.I)
        if m and (m.group(1).isupper() or m.group(1).isdigit() or segment.lstrip().startswith("(")):
            if (i := label_then_text(m.group(1))) is not None:
                return i, m.group(1), "answer marker"
        if texts:
            if numeric_options:
                nums = _numbers(segment)
                if nums and (i := by_text(nums[0][1])) is not None:
                    return i, texts[i], "answer marker (number)"
            elif (i := by_text(segment)) is not None:
                return i, texts[i], "answer marker (option text)"
    # 3. answer starts with a label: "C) train station", "B. ..." (letters only, "1." may be a list)
    m = re.match(r"\(?([A-Z])[).:]\s", text + " ")
    if m and (i := _label_index(m.group(1), labels, n)) is not None:
        return i, m.group(1), "leading label"
    # 4. option text anywhere (unique); for numeric options ("house 2") the last number that is one
    if texts:
        if numeric_options:
            for _, raw in reversed(_numbers(text)):
                if (i := by_text(raw)) is not None:
                    return i, texts[i], "last number matching an option"
        else:
            found = _find_options(text, texts)
            if len(found) == 1:
                return found[0], texts[found[0]], "option text in answer"
    # 5. a unique parenthesised label "(B)" anywhere, or a unique bare label in a very short answer
    paren = {t for t in re.findall(r"\(([A-Z])\)", text) if _label_index(t, labels, n) is not None}
    if len(paren) == 1:
        t = paren.pop()
        return _label_index(t, labels, n), t, "parenthesised label"
    if len(text.split()) <= 5:
        bare = {t for t in re.findall(r"(?<![\w'])([A-Z])(?![\w'])", text)
                if _label_index(t, labels, n) is not None}
        if len(bare) == 1:
            t = bare.pop()
            return _label_index(t, labels, n), t, "bare label in short answer"
    return None, None, "no option found in answer"


def _grade_em_mc(answer: str, ground_truth: Any, choices: Any, query: str | None) -> Grade:
    labels, texts = parse_choices(choices)
    n = len(texts) or 5
    gt = str(ground_truth).strip()
    gold = _label_index(gt, labels or [string.ascii_uppercase[i] for i in range(n)], n)
    if gold is None and texts:  # ground truth given as the option text itself
        exact = [i for i, t in enumerate(texts) if _norm_option(t) == _norm_option(gt)]
        gold = exact[0] if exact else None
    if gold is None and gt.isdigit() and 0 < int(gt) <= n:
        gold = int(gt) - 1
    if gold is None:
        return Grade(0.0, "em_mc", None, f"cannot map ground truth {gt!r} onto choices {labels}")
    picked, extracted, how = _extract_choice(answer, labels, texts)
    if picked is None:
        return Grade(0.0, "em_mc", None, how)
    label = labels[picked] if picked < len(labels) else string.ascii_uppercase[picked]
    same = picked == gold or (bool(texts) and _norm_option(texts[picked]) == _norm_option(texts[gold]))
    return Grade(1.0 if same else 0.0, "em_mc", extracted,
                 f"{how}: picked {label}, gold {labels[gold] if gold < len(labels) else gt}")


# ----------------------------------------------------------------------------------- GSM8K

def _gsm8k_gold(ground_truth: Any) -> float | None:
    text = str(ground_truth)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    nums = _numbers(text)
    if not nums:
        return None
    return nums[0][0] if "####" in str(ground_truth) else nums[-1][0]


def _extract_number(answer: str) -> tuple[float | None, str | None, str]:
    text = _clean(answer)
    if "####" in text:
        nums = _numbers(text.rsplit("####", 1)[1])
        if nums:
            return nums[0][0], nums[0][1], "after ####"
    boxed = _last_boxed(text)
    if boxed is not None:
        value = _latex_number(_strip_math(boxed))
        if value is not None:
            return value, boxed, "boxed"
        nums = _numbers(boxed)
        if nums:
            return nums[-1][0], nums[-1][1], "boxed"
    for segment in _after_markers(text):
        nums = _numbers(segment)
        if nums:
            return nums[0][0], nums[0][1], "after answer marker"
    nums = _numbers(text)
    if nums:
        return nums[-1][0], nums[-1][1], "last number"
    return None, None, "no number in answer"


def _grade_gsm8k(answer: str, ground_truth: Any) -> Grade:
    gold = _gsm8k_gold(ground_truth)
    if gold is None:
        return Grade(0.0, "GSM8K", None, f"no number in ground truth {str(ground_truth)[-80:]!r}")
    value, raw, how = _extract_number(answer)
    if value is None:
        return Grade(0.0, "GSM8K", None, how)
    return Grade(1.0 if _close(value, gold) else 0.0, "GSM8K", raw, f"{how}: {value:g} vs gold {gold:g}")


# ----------------------------------------------------------------------------------- MATH

def _replace_braced(s: str, command: str, fn: Callable[[str], str]) -> str:
    """Replace \\command{arg} (balanced braces) by fn(arg)."""
    out, i = [], 0
    pat = re.compile(re.escape(command) + r"\s*\{")
    while True:
        m = pat.search(s, i)
        if not m:
            out.append(s[i:])
            return "".join(out)
        depth, k = 1, m.end()
        while k < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            k += 1
        if depth:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:m.start()])
        out.append(fn(s[m.end():k - 1]))
        i = k


def _strip_math(s: str) -> str:
    """Normalise a LaTeX answer so that equal answers compare equal as strings."""
    s = str(s).strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "")
    s = s.replace("\\ ", "").replace("\\displaystyle", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    # units: "10 \text{ cm}" -> "10"; then \text{X} / \mbox{X} / \textbf{X} / \mathrm{X} -> X
    if re.match(r"^[-\d.,\\{}a-z ]*?\d\s*\\(?:text|mbox|mathrm)\{\s", s):
        s = re.split(r"\\(?:text|mbox|mathrm)\{\s", s)[0]
    for cmd in ("\\text", "\\textbf", "\\mbox", "\\mathrm", "\\mathbf", "\\textnormal"):
        s = _replace_braced(s, cmd, lambda arg: arg)
    s = s.strip()
    s = re.sub(r"^(?:[a-zA-Z]\w?|\\[a-zA-Z]+)\s*=\s*", "", s) if s.count("=") == 1 else s  # "x = 5"
    s = s.replace(" ", "")
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)            # .5 -> 0.5
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # 1,000 -> 1000
        s = s.replace(",", "")
    s = re.sub(r"(\d)\.0+(?!\d)", r"\1", s)                # 12.0 -> 12
    s = re.sub(r"(\d\.\d*?)0+(?!\d)", r"\1", s)            # 1.50 -> 1.5
    if re.fullmatch(r"\(\s*[A-E]\s*\)", s):                # "(A)" -> "A"
        s = s.strip("()")
    return s


def _latex_number(s: str) -> float | None:
    """Value of a normalised LaTeX answer that is a plain number or a simple fraction."""
    s = s.strip().replace("{,}", "")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        pass
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m:
        den = float(m.group(3))
        return None if den == 0 else (-1 if m.group(1) else 1) * float(m.group(2)) / den
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s)
    if m:
        den = float(m.group(2))
        return None if den == 0 else float(m.group(1)) / den
    return None


def _math_gold(ground_truth: Any) -> str:
    text = str(ground_truth)
    boxed = _last_boxed(text)
    return boxed if boxed is not None else text


def _extract_math(answer: str) -> tuple[str | None, str]:
    text = _clean(answer)
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
        if tail:
            return tail, "after ####"
    for segment in _after_markers(text):
        if not re.search(r"[\d$\\]", segment):
            continue  # "the answer is what we get when ..." carries no answer
        dollars = re.findall(r"\$+([^$]+)\$+", segment)
        if dollars:
            return dollars[0], "after answer marker ($...$)"
        seg = re.split(r"(?<!\d)\.(?:\s|$)|,\s(?:so|which|and|because)\b", segment)[0].strip()
        if seg:
            return seg, "after answer marker"
    nums = _numbers(text)
    if nums:
        return nums[-1][1], "last number"
    return None, "no answer found"


def _grade_math(answer: str, ground_truth: Any) -> Grade:
    gold_raw = _math_gold(ground_truth)
    raw, how = _extract_math(answer)
    if raw is None:
        return Grade(0.0, "MATH", None, how)
    gold, got = _strip_math(gold_raw), _strip_math(raw)
    if got == gold and gold:
        return Grade(1.0, "MATH", raw, f"{how}: {got!r} == {gold!r}")
    gv, av = _latex_number(gold), _latex_number(got)
    if av is None and how in ("last number", "after answer marker"):  # "42 square units"
        nums = _numbers(raw)
        av = nums[0][0] if len(nums) == 1 else None
    if gv is not None and av is not None and _close(av, gv):
        return Grade(1.0, "MATH", raw, f"{how}: numerically {av:g} == {gv:g}")
    return Grade(0.0, "MATH", raw, f"{how}: {got!r} != {gold!r}")


# ----------------------------------------------------------------------------------- f1_score

_PUNCT = set(string.punctuation)


def _squad_normalize(text: str) -> str:
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = _squad_normalize(prediction).split(), _squad_normalize(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _short_answer_candidates(answer: str) -> list[str]:
    """The whole answer plus the spans a short answer usually sits in."""
    text = _clean(answer)
    cands = [text]
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if lines:
        cands.append(lines[0])
        first_sentence = re.split(r"(?<=[a-z0-9)\]])[.!?](?:\s|$)", lines[0])[0]
        cands.append(first_sentence)
    for segment in _after_markers(text)[:1]:
        cands.append(segment)
        cands.append(re.split(r"(?<=[a-z0-9)\]])[.!?](?:\s|$)", segment)[0])
    seen, out = set(), []
    for c in cands:
        c = re.sub(r"^(?i:answer)\s*[:\-]\s*", "", c).strip()
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _grade_f1(answer: str, ground_truth: Any) -> Grade:
    truths = _as_literal(ground_truth)
    if isinstance(truths, dict):
        truths = truths.get("aliases") or truths.get("answers") or truths.get("text") or list(truths.values())
    if not isinstance(truths, (list, tuple)):
        truths = [truths]
    truths = [str(t) for t in truths if str(t).strip()]
    if not truths:
        return Grade(0.0, "f1_score", None, "empty ground truth")
    best, best_cand, best_truth = 0.0, None, truths[0]
    for cand in _short_answer_candidates(answer):
        for truth in truths:
            score = _f1(cand, truth)
            if score > best or best_cand is None:
                best, best_cand, best_truth = max(best, score), cand, truth
    return Grade(best, "f1_score", best_cand, f"token F1 {best:.3f} against {best_truth!r}")


# ----------------------------------------------------------------------------------- commongen

_IRREGULAR = {
    "be": "am is are was were been being", "begin": "began begun", "bite": "bit bitten",
    "blow": "blew blown", "break": "broke broken", "bring": "brought", "build": "built",
    "buy": "bought", "catch": "caught", "choose": "chose chosen", "come": "came",
    "cut": "cut", "dig": "dug", "do": "did done does", "draw": "drew drawn", "drink": "drank drunk",
    "drive": "drove driven", "eat": "ate eaten", "fall": "fell fallen", "feed": "fed",
    "feel": "felt", "fight": "fought", "find": "found", "fly": "flew flown flies",
    "forget": "forgot forgotten", "freeze": "froze frozen", "get": "got gotten", "give": "gave given",
    "go": "went gone goes", "grow": "grew grown", "hang": "hung", "have": "had has",
    "hear": "heard", "hide": "hid hidden", "hit": "hit", "hold": "held", "keep": "kept",
    "know": "knew known", "lay": "laid", "lead": "led", "leave": "left", "lend": "lent",
    "lie": "lay lain lying", "light": "lit", "lose": "lost", "make": "made", "meet": "met",
    "pay": "paid", "put": "put", "read": "read", "ride": "rode ridden", "ring": "rang rung",
    "rise": "rose risen", "run": "ran", "say": "said", "see": "saw seen", "sell": "sold",
    "send": "sent", "set": "set", "shake": "shook shaken", "shine": "shone", "shoot": "shot",
    "show": "shown", "shut": "shut", "sing": "sang sung", "sink": "sank sunk", "sit": "sat",
    "sleep": "slept", "slide": "slid", "speak": "spoke spoken", "spend": "spent", "spin": "spun",
    "stand": "stood", "steal": "stole stolen", "stick": "stuck", "sting": "stung",
    "strike": "struck", "swim": "swam swum", "swing": "swung", "take": "took taken",
    "teach": "taught", "tear": "tore torn", "tell": "told", "think": "thought",
    "throw": "threw thrown", "wake": "woke woken", "wear": "wore worn", "win": "won",
    "wind": "wound", "write": "wrote written", "child": "children", "foot": "feet",
    "goose": "geese", "man": "men", "mouse": "mice", "person": "people", "tooth": "teeth",
    "woman": "women", "sheep": "sheep", "fish": "fish", "deer": "deer", "ox": "oxen",
}
_VOWELS = set("aeiou")


def _inflections(word: str) -> set[str]:
    w = word
    forms = {w, w + "s", w + "es", w + "ed", w + "d", w + "ing", w + "'s"}
    if w.endswith("y") and len(w) > 1 and w[-2] not in _VOWELS:
        forms |= {w[:-1] + "ies", w[:-1] + "ied"}
    if w.endswith("e"):
        forms |= {w[:-1] + "ing"}
    if w.endswith("ie"):
        forms |= {w[:-2] + "ying"}
    if w.endswith("fe"):
        forms |= {w[:-2] + "ves"}
    elif w.endswith("f"):
        forms |= {w[:-1] + "ves"}
    if len(w) >= 3 and w[-1] not in _VOWELS | set("wxy") and w[-2] in _VOWELS and w[-3] not in _VOWELS:
        forms |= {w + w[-1] + "ed", w + w[-1] + "ing"}
    if w.endswith("c"):
        forms |= {w + "ked", w + "king"}
    forms |= set(_IRREGULAR.get(w, "").split())
    return forms


def _lemmas(token: str) -> set[str]:
    t = token
    out = {t}
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ves", "f"), ("ves", "fe"), ("es", ""), ("s", ""),
                         ("ed", ""), ("ed", "e"), ("d", ""), ("ing", ""), ("ing", "e"), ("'s", "")):
        if t.endswith(suffix) and len(t) - len(suffix) >= 2:
            out.add(t[: len(t) - len(suffix)] + repl)
    for suffix in ("ed", "ing"):  # stopped -> stop, running -> run
        if t.endswith(suffix) and len(t) - len(suffix) >= 3:
            stem = t[: len(t) - len(suffix)]
            if stem[-1] == stem[-2]:
                out.add(stem[:-1])
    return out


def _grade_commongen(answer: str, ground_truth: Any, query: str | None) -> Grade:
    concepts = _as_literal(ground_truth)
    if isinstance(concepts, str):
        concepts = re.split(r"[,\n]", concepts)
    concepts = [re.sub(r"_[A-Z]+$", "", str(c).strip()).lower() for c in concepts]
    concepts = [c for c in concepts if c]
    if not concepts:
        return Grade(0.0, "commongen_coverage", None, "no concepts in ground truth")
    tokens = re.findall(r"[a-z]+(?:'s)?", _clean(answer).lower())
    token_set = set(tokens)
    token_lemmas = set().union(*(_lemmas(t) for t in token_set)) if token_set else set()
    found, missing = [], []
    for concept in concepts:
        parts = concept.split()
        if len(parts) > 1:  # multi-word concept: every word present
            hit = all((_inflections(p) & token_set) or p in token_lemmas for p in parts)
        else:
            hit = bool(_inflections(concept) & token_set) or concept in token_lemmas
        (found if hit else missing).append(concept)
    score = len(found) / len(concepts)
    return Grade(score, "commongen_coverage", ", ".join(found),
                 f"{len(found)}/{len(concepts)} concepts; missing: {', '.join(missing)}"[:500])


# ----------------------------------------------------------------------------------- code_eval

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def |class |import |from \w+(?:\.\w+)* import |@)", re.M)


def _compiles(code: str) -> bool:
    if len(code) > MAX_CODE_CHARS:
        return False
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)  # parsing only, nothing runs
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False


def _trim_to_compilable(code: str, prefix: str = "") -> str:
    """Drop trailing lines (prose after the code, a line cut off by max_tokens) until it compiles."""
    lines = code.rstrip().split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if _compiles(prefix + candidate):
            return candidate
    return code


def _extract_code(answer: str, needed: list[str]) -> str:
    """The code in an answer: a ```python fenced block (the one defining the needed function when
    several), else the answer from its first code-looking line, trimmed to what compiles."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(answer)]
    if blocks:
        py = [b for lang, b in blocks if lang in ("python", "py", "python3", "")] or [b for _, b in blocks]
        for name in needed:
            for body in py:
                if re.search(r"^\s*def\s+" + re.escape(name) + r"\s*\(", body, re.M):
                    return body
        for body in py:
            if re.search(r"^\s*def\s", body, re.M):
                return body
        return py[0]
    text = answer.replace("\r\n", "\n")
    if text.strip() and text.lstrip("\n")[:1] in (" ", "\t"):  # a HumanEval-style body continuation
        return text
    m = _CODE_START.search(text)
    return text[m.start():] if m else text


def _top_level_functions(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _called_names(tests: list[str]) -> list[str]:
    """Non-builtin function names the tests call (the functions the candidate must define)."""
    import builtins
    names: list[str] = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                n = node.func.id
                if not hasattr(builtins, n) and n not in names:
                    names.append(n)
    return names


def _pick_alias_target(defined: list[str]) -> str | None:
    usable = [n for n in defined if not re.match(r"(?:test|main|check)(?:_|$)", n)]
    return usable[-1] if usable else None


def _grade_code(answer: str, ground_truth: Any, query: str | None, timeout: float) -> Grade:
    gt = _as_literal(ground_truth)
    prefix, aliases = "", {}
    if isinstance(gt, (list, tuple)):                      # MBPP: list of asserts
        tests = [str(t) for t in gt if str(t).strip()]
        needed = _called_names(tests)
        code = _extract_code(answer, needed)
        code = _trim_to_compilable(code)
        defined = _top_level_functions(code)
        target = _pick_alias_target(defined)
        aliases = {n: target for n in needed if n not in defined and target}
    else:                                                  # HumanEval check(candidate) or raw tests
        test_code = str(gt)
        if re.search(r"^def check\(", test_code, re.M):
            prompt_defs = (_top_level_functions(query) or re.findall(r"^def (\w+)\(", query, re.M)) if query else []
            entry = prompt_defs[-1] if prompt_defs else None
            code = _extract_code(answer, [entry] if entry else [])
            continuation = code.lstrip("\n")[:1] in (" ", "\t")
            if query:
                prefix = query if continuation else query.rstrip("\n") + "\n\n"
                if continuation and not prefix.endswith("\n"):
                    prefix += "\n"
            code = _trim_to_compilable(code, prefix)
            defined = _top_level_functions(code) if not continuation else []
            if entry is None:
                entry = _pick_alias_target(defined)
                if entry is None:
                    return Grade(0.0, "code_eval", code[:4000] or None, "no function to test (no query, none defined)")
            elif not continuation and entry not in defined and (target := _pick_alias_target(defined)):
                aliases = {entry: target}
            tests = [test_code, f"check({entry})"]
        else:
            tests = [test_code]
            code = _trim_to_compilable(_extract_code(answer, _called_names([test_code])))
    program = prefix + code
    result = run_sandboxed(program, tests, aliases, timeout=timeout)
    alias_note = f"; aliased {aliases}" if aliases else ""
    if result.get("stage") == "tests":
        detail = f"{result.get('passed')}/{result.get('total')} tests passed{alias_note}"
        if result.get("error"):
            detail += f"; first failure: {result['error']}"
    else:
        detail = f"{result.get('stage')}: {result.get('error')}{alias_note}"
    return Grade(1.0 if result.get("ok") else 0.0, "code_eval", code[:4000] or None, detail[:1000])


# ----------------------------------------------------------------------------------- dispatch

METRICS = ("em_mc", "GSM8K", "MATH", "f1_score", "code_eval", "commongen_coverage")
_ALIASES = {m.lower(): m for m in METRICS}


def grade(answer: str, ground_truth: Any, metric: str, choices: Any = None, query: str | None = None,
          *, code_timeout: float = CODE_TIMEOUT_S) -> Grade:
    """Score one answer in [0, 1] against its ground truth under the named metric.

    Raises UnknownMetricError for a metric this module does not know."""
    name = _ALIASES.get(str(metric).strip().lower())
    if name is None:
        raise UnknownMetricError(f"unknown grading metric {metric!r}; known metrics: {', '.join(METRICS)}")
    if answer is None or not str(answer).strip():
        return Grade(0.0, name, None, "empty answer")
    answer = str(answer)
    if name == "em_mc":
        return _grade_em_mc(answer, ground_truth, choices, query)
    if name == "GSM8K":
        return _grade_gsm8k(answer, ground_truth)
    if name == "MATH":
        return _grade_math(answer, ground_truth)
    if name == "f1_score":
        return _grade_f1(answer, ground_truth)
    if name == "commongen_coverage":
        return _grade_commongen(answer, ground_truth, query)
    return _grade_code(answer, ground_truth, query, code_timeout)
