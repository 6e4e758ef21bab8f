"""Answer grading: per-metric answer checks (`grading.checks`) and the code sandbox (`grading.sandbox`).

Self-contained: nothing here imports the router, the streams, the workers or the CLI.
"""
from grading.checks import CODE_TIMEOUT_S, METRICS, Grade, UnknownMetricError, grade, parse_choices

__all__ = ["Grade", "UnknownMetricError", "grade", "parse_choices", "METRICS", "CODE_TIMEOUT_S"]
