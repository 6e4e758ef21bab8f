"""The bench's tables as rows of text: one source for the terminal table and the Markdown that
goes into docs (so numbers in the docs are pasted from the run, not retyped)."""
from __future__ import annotations

import math

from router.bench.metrics import METRIC_LABELS

HEADERS = list(METRIC_LABELS.values())


def fmt(value: float | None, pct: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.1f}" if pct else f"{value:.3f}"


def _cell(metrics: dict, interval: dict | None, key: str) -> str:
    pct = key != "apgr"
    text = fmt(metrics[key], pct)
    if interval and key in interval and not math.isnan(interval[key][0]):
        text += f" [{fmt(interval[key][0], pct)}, {fmt(interval[key][1], pct)}]"
    return text


def title(result: dict) -> str:
    ref = result["reference"]
    n_boot = result.get("n_bootstrap") or 0
    if result.get("protocol") == "task_mixes":
        spread = f"; mean over mixes [2.5–97.5 percentile over {result['n_task_mixes']} mixes]"
    else:
        spread = f"; [95 % query-bootstrap interval, {n_boot} resamples]" if n_boot else ""
    return (f"{result['dataset']}: {result['n_eval_queries']} queries scored, {result['eval_source']}; "
            f"best single = {ref['best_quality']:.3f} @ ${ref['best_cost']:.6f}" + spread)


def metric_rows(result: dict) -> list[list[str]]:
    """One row per router and baseline: name, then every metric (with its interval, if any)."""
    intervals = result.get("intervals_95") or {}
    return [[name, *[_cell(m, intervals.get(name), k) for k in METRIC_LABELS]]
            for name, m in result["metrics"].items()]


def paired_rows(result: dict) -> list[list[str]]:
    """One row per baseline: the default router minus that baseline, paired 95 % interval and the
    share of resamples where the default is better."""
    rows = []
    for base, metrics in (result.get("paired_vs_baselines") or {}).items():
        cells = [base]
        for key in METRIC_LABELS:
            d = metrics.get(key)
            if d is None or math.isnan(d["diff_95"][0]):
                cells.append("—")
                continue
            pct = key != "apgr"
            cells.append(f"{fmt(d['diff_95'][0], pct)} … {fmt(d['diff_95'][1], pct)} (P {d['p_default_better']:.2f})")
        rows.append(cells)
    return rows


def budget_line(result: dict) -> str:
    """Realised / target mean cost for each budget, as one batch and query by query (fold range in brackets)."""
    checks = result.get("budget_check") or []
    if not checks:
        return ""

    def ratios(suffix: str) -> str:
        cells = []
        for b in checks:
            cell = f"{b[f'ratio{suffix}']:.2f}×"
            spread = b.get(f"fold_ratio{suffix}_range")
            if spread:
                cell += f" [{spread[0]:.2f}–{spread[1]:.2f}]"
            cells.append(cell)
        return ", ".join(cells)

    targets = ", ".join(f"${b['target_usd']:.6f}" for b in checks)
    return (f"Budget (realised / target mean cost; targets {targets}): one batch {ratios('')}; "
            f"query by query, calibrated λ {ratios('_fixed_lambda')}.")


def _table(header: list[str], rows: list[list[str]], bold: str | None = None) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [f"**{row[0]}**" if row[0] == bold else row[0], *row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SHIFT_KEYS = ("q_at_25pct_cost", "cost_95pct", "cost_parity", "auc")
PROTOCOL_LABELS = {"cv": "folds by query", "leave_tasks_out": "leave tasks out", "task_mixes": "re-weighted mixes"}


def shift_rows(results: dict[str, dict], dataset: str) -> tuple[list[str], list[list[str]]]:
    """One row per router: the headline metrics under each protocol run for `dataset` (the keys
    `dataset`, `dataset/leave_tasks_out`, `dataset/task_mixes` of a `bench routing` JSON)."""
    blocks = [(r.get("protocol", "cv"), r) for k, r in results.items() if k == dataset or k.startswith(dataset + "/")]
    header = ["router"] + [f"{METRIC_LABELS[k]} {PROTOCOL_LABELS[p]}" for p, _ in blocks for k in SHIFT_KEYS]
    names = [n for n in blocks[0][1]["metrics"] if n not in ("best_single", "cheapest", "oracle")]
    rows = [[n] + [fmt(r["metrics"].get(n, {}).get(k)) for _, r in blocks for k in SHIFT_KEYS] for n in names]
    return header, rows


def markdown(results: dict[str, dict]) -> str:
    """Every dataset of a `bench routing` JSON as Markdown: title, metrics, paired differences, budget."""
    parts = []
    for result in results.values():
        default = result.get("paired_default", "switchyard")
        parts.append(f"#### {title(result)}\n")
        parts.append(_table(["router", *HEADERS], metric_rows(result), bold=default) + "\n")
        paired = paired_rows(result)
        if paired:
            parts.append(f"Paired difference {default} − baseline (95 % interval; P = share of resamples where "
                         f"{default} is better; for costs, lower is better):\n")
            parts.append(_table(["vs", *HEADERS], paired) + "\n")
        line = budget_line(result) if result.get("protocol", "cv") == "cv" else ""
        if line:
            parts.append(line + "\n")
    for dataset in [k for k in results if "/" not in k and f"{k}/leave_tasks_out" in results]:
        header, rows = shift_rows(results, dataset)
        parts.append(f"#### {dataset}: the same routers in distribution and under shift\n")
        parts.append(_table(header, rows, bold=results[dataset].get("paired_default", "switchyard")) + "\n")
    return "\n".join(parts)
