"""The operator's raw SQL door: one read-only SELECT, no table functions that reach outside.

ClickHouse's own `readonly = 1` refuses writes, DDL and the file/url/remote/s3/executable table
functions, so it is the guard that matters; it is applied as the query's own SETTINGS clause
because chDB keeps settings passed through the client for the whole session (the sink's writer
shares that session). What readonly does not cover is checked here first, on the statement
with its strings and comments blanked out: a second statement (chDB runs `SELECT 1; DROP ...`),
`INTO OUTFILE` (chDB writes the file even in readonly mode), a caller's own SETTINGS or FORMAT,
and table functions outside a small allowlist (chDB's `python()` reads the sink's memory).
"""
from __future__ import annotations

import re

READ_LIMITS = "readonly = 1"  # last: after it, no setting may change
MAX_EXECUTION_SECONDS = 60
MAX_RESULT_ROWS = 1_000_000
# Table functions that only generate numbers; anything else named like a table function is refused.
SAFE_TABLE_FUNCTIONS = {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
                        "primes", "values", "null"}


class UnsafeQuery(ValueError):
    pass


_STRING_OR_COMMENT = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'      # 'string' with \' or '' escapes
      | "(?:[^"\\]|\\.|"")*"      # "quoted identifier"
      | `(?:[^`\\]|\\.|``)*`      # `quoted identifier`
      | --[^\n]*                 # -- comment
      | /\*.*?\*/                # /* comment */
    """, re.VERBOSE | re.DOTALL)
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def blank(sql: str) -> str:
    """The statement with strings, quoted names and comments replaced by spaces; an unclosed
    one is refused (it could hide the rest of the statement, or the limits we append)."""
    code = _STRING_OR_COMMENT.sub(lambda m: " " * len(m.group()), sql)
    if re.search(r"['\"`]|/\*|\*/", code):
        raise UnsafeQuery("unbalanced quote or comment")
    return code


def guard(sql: str, table_functions: set[str]) -> str:
    """`sql` with the read-only limits appended, or UnsafeQuery saying what was refused.
    `table_functions`: the engine's table function names (system.table_functions)."""
    code = blank(sql).strip()
    if code.endswith(";"):
        code, sql = code[:-1].rstrip(), sql.rstrip()[:-1]
    if not code:
        raise UnsafeQuery("empty statement")
    if ";" in code:
        raise UnsafeQuery("one statement only (found ';')")
    words = [w.upper() for w in _WORD.findall(code)]
    if words[0] not in {"SELECT", "WITH"}:
        raise UnsafeQuery(f"only SELECT (or WITH ... SELECT) is allowed, not {words[0]}")
    for forbidden in ("OUTFILE", "INFILE", "SETTINGS", "FORMAT"):
        if forbidden in words:
            raise UnsafeQuery(f"{forbidden} is not allowed here")
    known = {t.lower() for t in table_functions} | {"file", "url", "executable", "python", "remote"}
    for name in _CALL.findall(code):
        if name.lower() in known and name.lower() not in SAFE_TABLE_FUNCTIONS:
            raise UnsafeQuery(f"the table function {name}() is not allowed")
    return (f"{sql}\nSETTINGS max_execution_time = {MAX_EXECUTION_SECONDS}, "
            f"max_result_rows = {MAX_RESULT_ROWS}, result_overflow_mode = 'throw', {READ_LIMITS}")
