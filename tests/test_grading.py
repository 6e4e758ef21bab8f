"""Answer grading (the `grading` package): every metric, verbose answers, and the code_eval sandbox."""
from __future__ import annotations

import builtins
import collections
import gzip
import json
from pathlib import Path

import pytest

from grading import Grade, UnknownMetricError, grade

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRADED = DATA / "graded" / "llmrouter_train.jsonl.gz"

CSQA = "{'label': ['A', 'B', 'C', 'D', 'E'], 'text': ['bus depot', 'train station', 'beach', 'bridge', 'taxi']}"
LOGICGRID = "{'text': ['1', '2', '3'], 'labels': ['A', 'B', 'C']}"
ARC_NUMERIC = "{'text': ['competition', 'conservation', 'decomposition', 'pollution'], 'label': ['1', '2', '3', '4']}"
MMLU_LIST = "['$100', '$150', '$200', '$250']"
GSM8K_GT = ("If half the value of what Connie sold the land for was $30,000, then the full value was "
            "$30,000*2 = $<<30000*2=60000>>60,000.\nIf $60,000 is triple what Connie bought the land for, "
            "then the initial cost was $60,000/3 = $<<60000/3=20000>>20,000.\n#### 20,000")


# ------------------------------------------------------------------------------------ general

def test_unknown_metric_is_a_clear_value_error():
    with pytest.raises(UnknownMetricError, match="unknown grading metric 'bleu'.*em_mc") as info:
        grade("anything", "x", "bleu")
    assert isinstance(info.value, ValueError)


def test_metric_names_are_case_insensitive_and_reported_canonically():
    g = grade("#### 20,000", GSM8K_GT, "gsm8k")
    assert g == Grade(1.0, "GSM8K", "20,000", g.detail)


@pytest.mark.parametrize("metric,gt,choices", [
    ("em_mc", "B", CSQA), ("GSM8K", GSM8K_GT, None), ("MATH", "\\boxed{5}", None),
    ("f1_score", "Paris", None), ("commongen_coverage", "dog, ball", None),
    ("code_eval", "['assert f(1) == 1']", None)])
@pytest.mark.parametrize("answer", ["", "   \n", None])
def test_empty_answer_scores_zero(metric, gt, choices, answer):
    g = grade(answer, gt, metric, choices)
    assert g.score == 0.0 and g.extracted is None


# ------------------------------------------------------------------------------------ em_mc

@pytest.mark.parametrize("answer", [
    "B", "b", "(B)", "B.", "Answer: B", "**Answer:** B", "The answer is B", "The correct answer is (B) train station.",
    "B. train station", "train station",
    "I think he would go to the train station because trains are easy to sneak onto.",
    "To answer this, think about where trains stop. The answer is: train station",
    "The answer is a train station.", "After thinking carefully, I'd pick (B).", "\\boxed{B}",
])
def test_em_mc_correct_verbose_answers(answer):
    g = grade(answer, "B", "em_mc", CSQA)
    assert g.score == 1.0, g


@pytest.mark.parametrize("answer", [
    "Answer: A", "A", "(C)", "He might go to the bus depot.", "The answer is taxi.",
    "A bus depot or a train station, hard to say",   # ambiguous: no credit
    "I don't know.",
])
def test_em_mc_wrong_or_unreadable_answers_score_zero(answer):
    assert grade(answer, "B", "em_mc", CSQA).score == 0.0


def test_em_mc_article_a_is_not_read_as_option_a():
    choices = "['A very careful person.', 'An able person.', 'A very dedicated person.', 'A specially trained person.']"
    assert grade("The answer is A very dedicated person.", "C", "em_mc", choices).score == 1.0
    assert grade("The answer is A very careful person.", "C", "em_mc", choices).score == 0.0


def test_em_mc_plain_list_choices_and_python_repr():
    assert grade("The fee is $200 in total.", "C", "em_mc", MMLU_LIST).score == 1.0
    assert grade("Answer: C", "C", "em_mc", ["$100", "$150", "$200", "$250"]).score == 1.0
    assert grade("Answer: D", "C", "em_mc", MMLU_LIST).score == 0.0
    assert grade("Answer: C", "C", "em_mc", None).score == 1.0  # no choices: letters only


def test_em_mc_numeric_labels_accept_label_or_letter():
    assert grade("Answer: 3", "3", "em_mc", ARC_NUMERIC).score == 1.0
    assert grade("Answer: C", "3", "em_mc", ARC_NUMERIC).score == 1.0
    assert grade("It is decomposition.", "3", "em_mc", ARC_NUMERIC).score == 1.0
    assert grade("1", "3", "em_mc", ARC_NUMERIC).score == 0.0


def test_em_mc_numeric_options_logic_grid():
    for answer in ["2", "B", "Answer: 2", "The violinist lives in house 2.",
                   "Clue 1 puts the radio in house 3, so the answer is house 2"]:
        assert grade(answer, "B", "em_mc", LOGICGRID).score == 1.0, answer
    assert grade("The violinist lives in house 3.", "B", "em_mc", LOGICGRID).score == 0.0


def test_em_mc_reports_what_it_read():
    g = grade("I'd say the answer is (B) train station", "B", "em_mc", CSQA)
    assert g.metric == "em_mc" and g.extracted == "B" and "picked B" in g.detail


# ------------------------------------------------------------------------------------ GSM8K

@pytest.mark.parametrize("answer", [
    "20000", "20,000", "$20,000", "20000.00", "#### 20000", "So Blake gave Connie $20,000.",
    "The land was worth $60,000, so Blake gave $60,000 / 3 = $20,000",
    "The answer is 20000 dollars; the land later sold for 60000.",
    "\\boxed{20,000}",
])
def test_gsm8k_correct(answer):
    assert grade(answer, GSM8K_GT, "GSM8K").score == 1.0


@pytest.mark.parametrize("answer", ["19,999", "60000", "The answer is 30,000.", "I am not sure.", "-20000"])
def test_gsm8k_wrong(answer):
    assert grade(answer, GSM8K_GT, "GSM8K").score == 0.0


def test_gsm8k_thousands_separators_and_currency():
    assert grade("It costs 1,000 dollars.", "So...\n#### 1000", "GSM8K").score == 1.0
    assert grade("$60,000", "#### 60000", "GSM8K").score == 1.0
    assert grade("It is 1000.", "#### 1,000", "GSM8K").score == 1.0
    assert grade("It is -3.5 degrees", "#### -3.5", "GSM8K").score == 1.0
    assert grade("1,0000", "#### 1000", "GSM8K").score == 0.0


# ------------------------------------------------------------------------------------ MATH

@pytest.mark.parametrize("answer,gt", [
    ("\\boxed{\\dfrac{1}{2}}", "so $x=\\boxed{\\frac12}$."),
    ("$\\boxed{0.5}$", "\\boxed{\\frac{1}{2}}"),
    ("\\boxed{\\left( 3, 4 \\right)}", "The point is $\\boxed{(3,4)}$."),
    ("\\boxed{45^\\circ}", "\\boxed{45}"),
    ("\\boxed{10.0}", "\\boxed{10}"),
    ("\\boxed{10\\text{ cm}}", "\\boxed{10}"),
    ("\\boxed{x = 5}", "\\boxed{5}"),
    ("\\boxed{3\\sqrt{11}}", "we get $\\boxed{3\\sqrt{11}}$"),
    ("First \\boxed{7}, then corrected: \\boxed{\\frac{a+b}{2}}", "\\boxed{\\frac{a + b}{2}}"),
    ("The answer is $\\frac{3}{4}$.", "\\boxed{\\frac34}"),
    ("There are 1,000 ways.", "\\boxed{1000}"),
    ("Jan has 12, Marcia 6, Cindy 4, so the total is \\boxed{28}.", "28"),  # agentverse-mgsm
    ("So 25 pets, then 3 more gives 28", "28"),
])
def test_math_correct(answer, gt):
    assert grade(answer, gt, "MATH").score == 1.0


@pytest.mark.parametrize("answer,gt", [
    ("\\boxed{27}", "28"), ("\\boxed{3\\sqrt{13}}", "\\boxed{3\\sqrt{11}}"),
    ("\\boxed{\\frac{1}{3}}", "\\boxed{\\frac{1}{2}}"), ("\\boxed{0.33}", "\\boxed{\\frac13}"),
    ("No idea.", "\\boxed{5}"),
])
def test_math_wrong(answer, gt):
    assert grade(answer, gt, "MATH").score == 0.0


def test_math_uses_last_boxed_of_ground_truth_and_answer():
    gt = "$14-20=\\boxed{-6}$. Another way ... is $\\boxed{-6}$."
    g = grade("Try \\boxed{6}... no wait, \\boxed{-6}", gt, "MATH")
    assert g.score == 1.0 and g.extracted == "-6"


# ------------------------------------------------------------------------------------ f1_score

def test_f1_exact_after_squad_normalisation():
    assert grade("Sammy Davis Jr.", "Sammy Davis, Jr", "f1_score").score == 1.0
    assert grade("The Tremeloes", "the Tremeloes", "f1_score").score == 1.0


def test_f1_partial_credit_for_verbose_answer():
    g = grade("The song was sung by Sammy Davis Jr. in 1968, and it was a hit.", "Sammy Davis, Jr", "f1_score")
    # best span is the first sentence: 3 of its 7 normalised tokens are gold -> F1 = 0.6
    assert g.score == pytest.approx(0.6)
    assert g.extracted == "The song was sung by Sammy Davis Jr"


def test_f1_answer_marker_and_aliases():
    assert grade("Let me think.\nAnswer: Bayreuth, Germany", "bayreuth germany", "f1_score").score == 1.0
    assert grade("Bayreuth", ["Bayreuth", "bayreuth germany"], "f1_score").score == 1.0
    assert grade("Bayreuth", "['Bayreuth', 'bayreuth germany']", "f1_score").score == 1.0
    assert grade("Bayreuth", "bayreuth germany", "f1_score").score == pytest.approx(2 / 3)


def test_f1_wrong_scores_zero():
    assert grade("Frank Sinatra", "Sammy Davis, Jr", "f1_score").score == 0.0


# ------------------------------------------------------------------------------------ commongen

def test_commongen_full_coverage_with_inflections():
    g = grade("The dog caught the frisbee that the boy had thrown.", "dog, frisbee, catch, throw",
              "commongen_coverage")
    assert g.score == 1.0
    assert grade("Dogs throwing frisbees and catching them.", "dog, frisbee, catch, throw",
                 "commongen_coverage").score == 1.0
    assert grade("She stopped and sold the berries she carried.", "stop, sell, berry, carry",
                 "commongen_coverage").score == 1.0


def test_commongen_partial_coverage():
    g = grade("A dog runs in the park.", "dog, frisbee, catch, throw", "commongen_coverage")
    assert g.score == pytest.approx(0.25)
    assert g.extracted == "dog" and "frisbee" in g.detail


def test_commongen_no_coverage():
    assert grade("Hello there.", "dog, frisbee", "commongen_coverage").score == 0.0


# ------------------------------------------------------------------------------------ code_eval

MBPP_GT = "['assert max_of_three(10,20,30)==30', 'assert max_of_three(55,47,39)==55', 'assert max_of_three(10,49,30)==49']"
GOOD = "def max_of_three(a, b, c):\n    return max(a, b, c)\n"
HE_PROMPT = ('from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
             '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
             '    given threshold.\n    """\n')
HE_TEST = ("\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
           "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
           "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
           "    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False\n\n")
HE_BODY = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
           "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n")


def test_code_mbpp_pass_from_verbose_fenced_answer():
    answer = f"Sure! Here is the function:\n```python\n{GOOD}```\nIt uses the builtin max.\n```python\nprint(max_of_three(1,2,3))\n```"
    g = grade(answer, MBPP_GT, "code_eval")
    assert g.score == 1.0, g
    assert g.extracted.startswith("def max_of_three") and "3/3" in g.detail


def test_code_mbpp_unfenced_with_prose_and_truncation():
    answer = f"Here is my solution.\n\n{GOOD}\nThis function returns the largest of the three and then we can also writ"
    assert grade(answer, MBPP_GT, "code_eval").score == 1.0


def test_code_mbpp_fail_and_syntax_error():
    g = grade("```python\ndef max_of_three(a, b, c):\n    return a\n```", MBPP_GT, "code_eval")
    assert g.score == 0.0 and "1/3 tests passed" in g.detail
    assert grade("def max_of_three(a, b, c) return a", MBPP_GT, "code_eval").score == 0.0
    assert grade("I cannot write code.", MBPP_GT, "code_eval").score == 0.0


def test_code_mbpp_other_function_name_is_aliased():
    """The MBPP prompts do not name the function; a single differently named function is accepted."""
    g = grade("def biggest(x, y, z):\n    return max(x, y, z)\n", MBPP_GT, "code_eval")
    assert g.score == 1.0 and "aliased" in g.detail


def test_code_humaneval_full_function_and_body_continuation():
    full = "```python\nfrom typing import List\n\ndef has_close_elements(numbers, threshold):\n" + HE_BODY + "```"
    assert grade(full, HE_TEST, "code_eval", None, HE_PROMPT).score == 1.0
    assert grade(HE_BODY, HE_TEST, "code_eval", None, HE_PROMPT).score == 1.0
    wrong = HE_BODY.replace("return True", "return False")
    assert grade(wrong, HE_TEST, "code_eval", None, HE_PROMPT).score == 0.0
    # without the query the entry point is the function the answer defines
    assert grade(full, HE_TEST, "code_eval").score == 1.0


def test_code_humaneval_prompt_helpers_are_available():
    prompt = ('def is_even(n: int) -> bool:\n    return n % 2 == 0\n\n\n'
              'def count_even(xs: list) -> int:\n    """Count even numbers."""\n')
    test = "def check(candidate):\n    assert candidate([1, 2, 4]) == 2\n    assert is_even(2)\n"
    assert grade("    return sum(1 for x in xs if is_even(x))\n", test, "code_eval", None, prompt).score == 1.0


def test_code_infinite_loop_times_out():
    g = grade("def max_of_three(a, b, c):\n    while True:\n        pass\n", MBPP_GT, "code_eval", code_timeout=1)
    assert g.score == 0.0
    # a busy loop is stopped by whichever 1 s limit strikes first: CPU seconds or the wall clock
    assert g.detail in ("timeout: timed out: CPU time limit of 1s reached", "timeout: timed out after 1s"), g


def test_code_sleeping_forever_times_out():
    g = grade("import time\ndef max_of_three(a, b, c):\n    time.sleep(60)\n", MBPP_GT, "code_eval", code_timeout=1)
    assert g.score == 0.0
    assert g.detail == "timeout: timed out after 1s", g  # sleeping uses no CPU: the wall clock killed it


def test_code_runs_out_of_process_with_an_empty_environment(monkeypatch):
    monkeypatch.setenv("SWITCHYARD_TEST_SECRET", "hunter2")
    answer = ("import os, builtins\nbuiltins.SWITCHYARD_PWNED = True\n"
              "def leak():\n    return os.environ.get('SWITCHYARD_TEST_SECRET'), set(os.environ) - {'LC_CTYPE'}\n")
    g = grade(answer, "['assert leak() == (None, set())']", "code_eval", code_timeout=2)
    assert g.score == 1.0, g  # the child saw an empty environment (bar the LC_CTYPE Python's locale coercion sets)
    assert not hasattr(builtins, "SWITCHYARD_PWNED")  # and nothing ran in this process


@pytest.mark.parametrize("evil, refused", [
    ("import os\nos.system('touch {marker}')", "load: PermissionError('sandbox: os.system is not allowed')"),
    ("import subprocess\nsubprocess.run(['touch', '{marker}'])",
     "load: PermissionError('sandbox: subprocess.Popen is not allowed')"),
    ("open('{marker}', 'w').write('x')", "load: PermissionError('sandbox: writing files is not allowed')"),
    ("import os\nos.open('{marker}', os.O_CREAT | os.O_WRONLY)",
     "load: PermissionError('sandbox: writing files is not allowed')"),
    ("import os\npid = os.fork()", "load: PermissionError('sandbox: os.fork is not allowed')"),
    ("import os\nos.remove('{marker}.keep')", "load: PermissionError('sandbox: os.remove is not allowed')"),
    ("import shutil\nshutil.rmtree('{dir}')", "load: PermissionError('sandbox: shutil.rmtree is not allowed')"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))",
     "load: PermissionError('sandbox: socket.getaddrinfo is not allowed')"),
    ("import ctypes", "load: PermissionError('sandbox: importing ctypes is not allowed')"),
    ("hog = bytearray(4 * 1024 ** 3)", "load: MemoryError()"),  # the address-space limit
    ("import os\nos._exit(0)", "crash: child exited 0 without a result"),
])
def test_code_dangerous_code_is_contained(evil, refused, tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "pwned.keep").write_text("keep")
    answer = GOOD + evil.format(marker=marker, dir=tmp_path) + "\n"
    g = grade(answer, MBPP_GT, "code_eval", code_timeout=2)
    assert g.score == 0.0, g
    assert g.detail == refused  # refused at once for its own reason, not left to run into the timeout
    assert not marker.exists()
    assert (tmp_path / "pwned.keep").read_text() == "keep"


def test_code_exit_cannot_fake_a_pass():
    wrong = "def max_of_three(a, b, c):\n    return a\n"
    assert grade(wrong + "import sys\nsys.exit(0)\n", MBPP_GT, "code_eval").score == 0.0
    assert grade("import sys\nsys.exit(0)\n" + GOOD, MBPP_GT, "code_eval").score == 0.0  # never defined
    exits = "def max_of_three(a, b, c):\n    import sys\n    sys.exit(0)\n"
    assert grade(exits, MBPP_GT, "code_eval").score == 0.0
    # a trailing sys.exit(main()) after a correct function does not stop the tests from running
    assert grade(GOOD + "import sys\nsys.exit(0)\n", MBPP_GT, "code_eval").score == 1.0


# ------------------------------------------------------------------------------------ real rows

def _rows() -> list[dict]:
    if not GRADED.exists():
        pytest.skip(f"graded data not found at {GRADED}")
    with gzip.open(GRADED, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_real_rows_ground_truth_grades_as_correct():
    """Grading the ground truth itself (for em_mc: the correct letter, the option text and a verbose
    sentence naming it) must score 1.0 for every non-code row of the graded data."""
    from grading import parse_choices

    rows = _rows()
    failures: list[str] = []
    seen = collections.Counter()
    for r in rows:
        metric = r["metric"]
        if metric == "code_eval":
            continue
        seen[metric] += 1
        if metric == "em_mc":
            labels, texts = parse_choices(r["choices"])
            gold = texts[labels.index(r["ground_truth"])]
            answers = [r["ground_truth"], f"Answer: {r['ground_truth']}", gold, f"The answer is {gold}."]
        else:
            answers = [r["ground_truth"]]
        for answer in answers:
            g = grade(answer, r["ground_truth"], metric, r["choices"], r["query"])
            if g.score != 1.0:
                failures.append(f"{r['task_name']} {r['id']}: {answer[-80:]!r} -> {g}")
    assert set(seen) == {"em_mc", "GSM8K", "MATH", "f1_score", "commongen_coverage"}
    assert not failures, f"{len(failures)} failures, e.g.:\n" + "\n".join(failures[:10])


def test_real_rows_other_rows_answers_are_not_credited():
    """The neighbouring row's ground truth is (almost always) wrong for GSM8K, MATH and f1 rows."""
    rows = [r for r in _rows() if r["metric"] in ("GSM8K", "MATH", "f1_score")]
    credited = total = 0
    for a, b in zip(rows, rows[1:]):
        if a["task_name"] != b["task_name"] or a["ground_truth"] == b["ground_truth"]:
            continue
        total += 1
        credited += grade(a["ground_truth"], b["ground_truth"], b["metric"]).score == 1.0
    assert total > 1000 and credited / total < 0.02  # only coincidences like two answers both '6'


def test_real_rows_code_eval_harness_runs_real_tests():
    """No reference solutions in the data: check that real tests run and reject a stub, and that a
    hand-written solution to HumanEval/0 passes its real check()."""
    rows = _rows()
    mbpp = [r for r in rows if r["task_name"] == "mbpp"][:3]
    for r in mbpp:
        g = grade("def solution(*args):\n    return None\n", r["ground_truth"], "code_eval", r["choices"], r["query"])
        assert g.score == 0.0 and "tests passed" in g.detail, g
    he0 = next(r for r in rows if r.get("task_id") == "HumanEval/0")
    assert grade(HE_BODY, he0["ground_truth"], "code_eval", None, he0["query"]).score == 1.0
