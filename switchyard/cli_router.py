"""`switchyard router fit|route` and `switchyard bench routing` (mounted by switchyard.cli)."""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from switchyard.console import progress as progress_lines

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

router_app = typer.Typer(help="Fit learned routers and route query files offline.", no_args_is_help=True)
bench_app = typer.Typer(help="Offline benchmarks.", no_args_is_help=True)
console = Console(stderr=True)


class InputError(Exception):
    pass


@contextmanager
def clear_errors():
    """Bad input → one readable line on stderr and exit code 2, never a traceback."""
    from router.artifact import ArtifactError
    from router.base import RoutingError
    from router.data import RoutingDataError

    try:
        yield
    except (InputError, RoutingDataError, ArtifactError, RoutingError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)


def _paths(spec: str) -> list[Path]:
    paths = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if not paths:
        raise InputError("--data needs at least one file")
    for p in paths:
        if not p.exists():
            raise InputError(f"data file not found: {p}")
    return paths


def _prices(path: Optional[Path]):
    if path is None:
        return None
    from router.registry import load_prices

    try:
        return load_prices(path)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _embed_with_progress(texts: list[str], label: str, cache_dir: Optional[Path]):
    from router.embeddings import cache_for, content_key, embed

    cache = cache_for(cache_dir)
    todo = len({k for k, v in zip(map(content_key, texts), cache.get([content_key(t) for t in texts])) if v is None})
    if todo == 0:
        return embed(texts, cache_dir=cache_dir)
    with progress_lines(console, transient=True) as progress:
        task = progress.add_task(f"embedding {label}", total=todo)
        return embed(texts, cache_dir=cache_dir, progress=lambda n: progress.advance(task, n))


def _tables_by_dataset(paths, dataset, prices):
    from router.data import build_table, load_rows

    rows = load_rows(paths, dataset)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("dataset") or "routing"), []).append(r)
    return {name: build_table(rs, prices) for name, rs in groups.items()}


# ----------------------------------------------------------------------------- router fit


@router_app.command("fit")
def fit(
    data: str = typer.Option(..., "--data", help="Routing data file(s), comma-separated (jsonl or jsonl.gz)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the router artifact to."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Use only rows of this dataset."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Prices file for rows without cost_usd."),
    kind: Optional[str] = typer.Option(
        None, "--kind", help="Router kind (switchyard, knn, cluster, sw_ranking, mf, classifier, pooled); default: "
        "switchyard on one dataset, pooled on several."),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache", help="Embedding cache directory."),
):
    """Fit a router on the rows whose split is train and save it as an artifact. Several datasets
    (and no --dataset): the pooled router over the union of their models, missing cells allowed."""
    with clear_errors():
        import numpy as np

        from router.artifact import save_router
        from router.data import build_table, load_rows
        from router.learned import ROUTER_KINDS, fit_router

        if kind is not None and kind not in ROUTER_KINDS:
            raise InputError(f"unknown --kind {kind!r}; choose one of {', '.join(ROUTER_KINDS)}")
        t0 = time.perf_counter()
        rows = load_rows(_paths(data), dataset)
        datasets = sorted({str(r.get("dataset")) for r in rows})
        several = len(datasets) > 1 and dataset is None
        kind = kind or ("pooled" if several else "switchyard")
        if several and kind != "pooled":
            raise InputError(f"data holds several datasets ({', '.join(datasets)}); pick one with --dataset, "
                             f"or fit --kind pooled on all of them")
        table = build_table(rows, _prices(prices), splits=["train"], complete=kind != "pooled")
        emb = _embed_with_progress(table.texts, f"{len(table)} queries", embed_cache)
        t1 = time.perf_counter()
        with console.status(f"fitting {kind} router on {len(table)} queries × {len(table.models)} models"):
            from router.bench.threads import single_threaded

            with single_threaded():  # one BLAS / torch thread: faster on 2 cores, and reproducible
                router = fit_router(kind, table, emb)
        save_router(router, out)
        t2 = time.perf_counter()
        size = sum(f.stat().st_size for f in Path(out).iterdir())
        console.print(
            f"fitted [bold]{kind}[/bold] on {table.dataset}: {len(table)} queries × {len(table.models)} models "
            f"(embed {t1 - t0:.1f}s, fit {t2 - t1:.1f}s) → {out} (version {router.version}, {size / 1e6:.2f} MB)"
        )
        tiers = Table("model", "tier", "train quality", "train mean cost $")
        for j, m in enumerate(table.models):
            tiers.add_row(m, router.tiers[m], f"{np.nanmean(table.scores[:, j]):.3f}",
                          f"{np.nanmean(table.costs[:, j]):.6f}")
        console.print(tiers)


# ----------------------------------------------------------------------------- router route


def _read_queries(path: Path) -> tuple[list[str], list[str]]:
    from router.data import read_jsonl

    ids, texts, seen = [], [], set()
    for n, rec in enumerate(read_jsonl(path), 1):
        qid, text = rec.get("query_id"), rec.get("query_text")
        if qid is None:
            raise InputError(f"{path}: line {n} has no query_id")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}: query {qid!r} (line {n}) has an empty or missing query_text")
        if str(qid) in seen:
            raise InputError(f"{path}: duplicate query_id {qid!r} (line {n})")
        seen.add(str(qid))
        ids.append(str(qid))
        texts.append(text)
    if not ids:
        raise InputError(f"{path}: no queries")
    return ids, texts


@router_app.command("mix")
def mix(
    router_dir: Path = typer.Option(..., "--router", help="Router artifact directory."),
    data: str = typer.Option(..., "--data", help="The routing rows it was fitted on (their query texts)."),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache", help="Embedding cache directory."),
):
    """Record an artifact's training mix (share of its training queries per cluster), which the
    drift figure compares live traffic with. `router fit` records it itself; this is for an
    artifact fitted before it did. Only router.json's meta changes: the version stays."""
    with clear_errors():
        import json as _json

        from router.artifact import load_router
        from router.data import load_rows
        from router.learned import cluster_mix

        router = load_router(router_dir)
        texts = list({str(r["query_text"]): None for r in load_rows(_paths(data))})
        emb = _embed_with_progress(texts, f"{len(texts)} queries", embed_cache)
        shares = cluster_mix(router.predict(texts, emb).cluster)
        if not shares:
            raise InputError(f"router {router.name!r} assigns no clusters: it has no training mix")
        meta_path = router_dir / "router.json"
        meta = _json.loads(meta_path.read_text())
        meta["meta"]["training_mix"] = shares
        meta_path.write_text(_json.dumps(meta, indent=1, sort_keys=True) + "\n")
        console.print(f"{router_dir}: training mix over {len(shares)} clusters from {len(texts)} queries "
                      f"(version {router.version} unchanged)")


@router_app.command("route")
def route(
    router_dir: Path = typer.Option(..., "--router", help="Router artifact directory."),
    queries: Path = typer.Option(..., "--queries", help="JSONL of {query_id, query_text}."),
    out: Path = typer.Option(..., "--out", help="Output JSONL of {query_id, point, knob, model}."),
    sweep: int = typer.Option(21, "--sweep", min=1, help="Operating points from cheapest (knob 0) to best (knob 1)."),
    budget: Optional[str] = typer.Option(
        None, "--budget", help="Instead of the sweep: target mean cost per query in USD, one point per value "
        "(comma-separated); the file's queries share each budget (knob = the budget)."),
    allowed_models: Optional[str] = typer.Option(None, "--allowed-models", help="Comma-separated models to choose from."),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache", help="Embedding cache directory."),
):
    """Route every query at each operating point of the knob sweep, or at each --budget."""
    with clear_errors():

        import numpy as np

        from router.artifact import load_router
        from router.base import Knobs

        router = load_router(router_dir)
        budgets = _budgets(budget) if budget is not None else None
        for b in budgets or ():
            router.setting(budget_usd=b)  # RoutingError (exit 2) before the embedding work
        allowed = None
        if allowed_models:
            allowed = tuple(m.strip() for m in allowed_models.split(",") if m.strip())
            unknown = [m for m in allowed if m not in router.models]
            if unknown:
                raise InputError(f"unknown model(s) {', '.join(unknown)}; router knows: {', '.join(router.models)}")
        ids, texts = _read_queries(queries)
        t0 = time.perf_counter()
        emb = _embed_with_progress(texts, f"{len(texts)} queries", embed_cache)
        t1 = time.perf_counter()
        pred = router.predict(texts, emb)
        mask = router.model_mask(Knobs(allowed_models=allowed)) if allowed else None
        out.parent.mkdir(parents=True, exist_ok=True)
        if budgets is None:
            points = [(round(alpha, 6), picks) for alpha, picks in router.sweep_picks(pred, sweep, mask)]
        else:
            points = [(b, router.choose(pred, Knobs(budget_usd=b, allowed_models=allowed))) for b in budgets]
            rows = np.arange(len(ids))
            for b, picks in points:
                console.print(f"budget ${b:.6g}/query: predicted mean cost ${pred.cost[rows, picks].mean():.6g}")
        with open(out, "w") as fh:
            for point, (knob, picks) in enumerate(points):
                for qid, j in zip(ids, picks):
                    fh.write(json.dumps({"query_id": qid, "point": point, "knob": knob, "model": router.models[j]}) + "\n")
        t2 = time.perf_counter()
        console.print(
            f"routed {len(ids)} queries × {len(points)} points with {router.name} (version {router.version}) → {out} "
            f"(embed {t1 - t0:.1f}s, route {t2 - t1:.1f}s)"
        )


def _budgets(spec: str) -> list[float]:
    try:
        return [float(part) for part in spec.split(",")]
    except ValueError:
        raise InputError(f"--budget: {spec!r} is not a comma-separated list of numbers (USD per query)") from None


# ----------------------------------------------------------------------------- bench routing


def render_bench_table(result: dict) -> Table:
    from router.bench.report import HEADERS, metric_rows, title

    table = Table(title=title(result))
    table.add_column("router")
    for label in HEADERS:
        table.add_column(label, justify="right")
    for row in metric_rows(result):
        table.add_row(*row)
    return table


def render_paired_table(result: dict) -> Table | None:
    from router.bench.report import HEADERS, paired_rows

    rows = paired_rows(result)
    if not rows:
        return None
    default = result.get("paired_default", "switchyard")
    table = Table(title=f"{result['dataset']}: {default} − baseline, paired 95 % interval "
                  f"(P = share of resamples where {default} is better; costs: lower is better)")
    table.add_column("vs")
    for label in HEADERS:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


@bench_app.command("routing")
def bench_routing(
    data: str = typer.Option(..., "--data", help="Routing data file(s), comma-separated."),
    json_out: Path = typer.Option(..., "--json", help="Write curves and metrics here."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as Markdown here."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Prices file for rows without cost_usd."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this dataset."),
    sweep: int = typer.Option(21, "--sweep", min=2, help="Operating points per router."),
    routers: str = typer.Option("switchyard,knn,cluster,sw_ranking,mf,classifier", "--routers"),
    folds: int = typer.Option(5, "--folds", min=1, help="K-fold cross-validation over the train rows (by query_id); "
                              "1 = a single validation split of --val-fraction. Ignored when test rows exist."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.05, max=0.5, help="Validation share when --folds 1."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Query-bootstrap resamples for 95 % intervals (0 = none)."),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Worker processes for the cross-validation fits "
                             "(one thread each; the results do not depend on it)."),
    seed: int = typer.Option(0, "--seed"),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache"),
    protocol: str = typer.Option("cv", "--protocol", help="cv: K folds by query_id. shift: also leave-tasks-out "
                                 "folds (every task in one fold) and the cv picks under re-weighted task mixes."),
    mixes: int = typer.Option(1000, "--mixes", min=10, help="Task mixes drawn for --protocol shift."),
    mix_concentration: float = typer.Option(10.0, "--mix-concentration", min=0.1,
                                            help="Dirichlet concentration of the mixes (smaller: further from the data's mix)."),
):
    """Fit on train and score on queries the routers never saw: test rows if present, else K-fold
    cross-validation over train (default 5; pooled out-of-fold), or one validation split (--folds 1).
    --protocol shift adds the router under shift: leave-tasks-out folds and re-weighted task mixes."""
    with clear_errors():
        import numpy as np

        from router.bench.evaluate import bench, bench_cv
        from router.bench.report import budget_line, markdown
        from router.bench.evaluate import task_mixes
        from router.bench.splits import cv_folds, task_folds, validation_split
        from router.learned import ROUTER_KINDS

        if protocol not in ("cv", "shift"):
            raise InputError(f"--protocol must be cv or shift, not {protocol!r}")
        names = [r.strip() for r in routers.split(",") if r.strip()]
        bad = [r for r in names if r not in ROUTER_KINDS]
        if bad:
            raise InputError(f"unknown router(s) {', '.join(bad)}; choose from {', '.join(ROUTER_KINDS)}")
        results = {}
        for name, table in _tables_by_dataset(_paths(data), dataset, _prices(prices)).items():
            t0 = time.perf_counter()
            emb = _embed_with_progress(table.texts, f"{name} ({len(table)} queries)", embed_cache)
            t_embed = time.perf_counter() - t0
            is_test = np.array([s == "test" for s in table.splits])
            is_train = np.array([s == "train" for s in table.splits])
            tr = np.flatnonzero(is_train)
            shift = protocol == "shift"
            if shift and (is_test.any() or folds == 1):
                raise InputError(f"{name}: --protocol shift needs train rows only and --folds ≥ 2")
            n_tasks = len({table.tasks[i] for i in tr})
            n_steps = len(names) * (folds if (folds > 1 and not is_test.any()) else 1)
            if shift:
                n_steps += len(names) * min(folds, n_tasks)
            with progress_lines(console, transient=True) as progress:
                task = progress.add_task(f"{name}", total=n_steps)

                def step(msg, task=task):
                    progress.update(task, description=f"{name}: {msg}")
                    progress.advance(task, 1)

                if is_test.any() or folds == 1:
                    if is_test.any():
                        train_idx, eval_idx, source = tr, np.flatnonzero(is_test), "test"
                    else:
                        val = validation_split([table.query_ids[i] for i in tr], val_fraction, seed)
                        train_idx, eval_idx = tr[~val], tr[val]
                        source = f"validation (seed {seed}, {val_fraction:.0%} of train by query_id)"
                    if not len(train_idx) or not len(eval_idx):
                        raise InputError(f"{name}: need both training and evaluation queries")
                    res = bench(table.subset(train_idx), table.subset(eval_idx), emb[train_idx], emb[eval_idx],
                                routers=names, points=sweep, eval_source=source, seed=seed, on_step=step,
                                n_bootstrap=bootstrap)
                else:
                    if len(tr) < 10 * folds:
                        raise InputError(f"{name}: {len(tr)} training queries are too few for {folds} folds")
                    sub = table.subset(tr)
                    res = bench_cv(sub, emb[tr], cv_folds(sub.query_ids, folds, seed), routers=names,
                                   points=sweep, seed=seed, on_step=step, n_bootstrap=bootstrap, jobs=jobs)
                    if shift:
                        tf = task_folds(sub.tasks, folds, seed)
                        lto = bench_cv(sub, emb[tr], tf, routers=names, points=sweep, seed=seed, on_step=step,
                                       n_bootstrap=bootstrap, jobs=jobs, protocol="leave_tasks_out",
                                       eval_source=f"leave-tasks-out ({len(np.unique(tf))} folds of whole tasks; "
                                                   f"pooled out-of-fold)")
                        mix = task_mixes(res, sub, mixes, mix_concentration, seed)
            res.timings_s["embed"] = round(t_embed, 2)
            res.timings_s["total"] = round(time.perf_counter() - t0, 2)
            blocks = {name: res} if not shift else {name: res, f"{name}/leave_tasks_out": lto,
                                                    f"{name}/task_mixes": mix}
            wide = Console(width=260)
            for key, r in blocks.items():
                out = r.to_json()
                results[key] = out
                wide.print(render_bench_table(out))
                paired = render_paired_table(out)
                if paired is not None:
                    wide.print(paired)
                if out["budget_check"] and r.protocol == "cv":
                    wide.print(budget_line(out))
            wide.print(f"timings (s): {res.timings_s}")
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=1))
        console.print(f"wrote {json_out}")
        if markdown_out is not None:
            markdown_out.parent.mkdir(parents=True, exist_ok=True)
            markdown_out.write_text(markdown(results))
            console.print(f"wrote {markdown_out}")


# ----------------------------------------------------------------------------- bench transfer


@bench_app.command("transfer")
def bench_transfer(
    data: str = typer.Option(..., "--data", help="Routing data files, comma-separated (two or more datasets)."),
    json_out: Path = typer.Option(..., "--json", help="Write the per-case readings and aggregates here."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Prices file for rows without cost_usd."),
    routers: str = typer.Option("pooled,switchyard,knn", "--routers", help="pooled (on the union) and kinds fitted "
                                "on the pair's own dataset without the task."),
    pairs: int = typer.Option(3, "--pairs", min=1, max=3, help="(strong, weak) pairs per dataset."),
    hide: str = typer.Option("pair", "--hide", help="pair: hide the evaluated models' rows on the task; dataset: "
                             "hide every model of the dataset on it."),
    folds: int = typer.Option(2, "--folds", min=1, help="Query folds of the task for the pooled router "
                              "(hide=pair; 1 = all its queries held out at once)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Only these tasks (comma-separated)."),
    sweep: int = typer.Option(41, "--sweep", min=2, help="Operating points per curve."),
    seed: int = typer.Option(0, "--seed"),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache"),
):
    """Route between a strong and a weak model on a task they were never seen on (their rows on it
    hidden), and read the share of strong calls needed to reach 95 % of the strong model's quality,
    beside random routing (router/bench/transfer.py)."""
    with clear_errors():
        from router.bench.transfer import HIDE_MODES, transfer_bench
        from router.learned import ROUTER_KINDS

        names = [r.strip() for r in routers.split(",") if r.strip()]
        bad = [r for r in names if r not in ROUTER_KINDS]
        if bad or not names:
            raise InputError(f"unknown router(s) {', '.join(bad) or '(none)'}; choose from {', '.join(ROUTER_KINDS)}")
        if hide not in HIDE_MODES:
            raise InputError(f"--hide must be one of {', '.join(HIDE_MODES)}, not {hide!r}")
        t0 = time.perf_counter()
        tables = _tables_by_dataset(_paths(data), None, _prices(prices))
        tables = {name: t.with_split("train") for name, t in tables.items()}
        if len(tables) < 2 and "pooled" in names:
            raise InputError("the pooled router transfers from another dataset: give at least two datasets")
        embs = {name: _embed_with_progress(t.texts, f"{name} ({len(t)} queries)", embed_cache)
                for name, t in tables.items()}
        only = {t.strip() for t in tasks.split(",")} if tasks else None
        with console.status("transfer bench") as status:
            res = transfer_bench(tables, embs, routers=names, n_pairs=pairs, points=sweep, hide=hide, folds=folds,
                                 tasks={n: only for n in tables} if only else None, seed=seed,
                                 on_step=lambda msg: status.update(f"transfer bench: {msg}"))
        res["elapsed_s"] = round(time.perf_counter() - t0, 1)
        cols = names + ["random"]
        table = Table("dataset", "task", "strong", "weak", "S", "W", *cols,
                      title=f"share of strong calls to reach {res['protocol']['fraction']:.0%} of the strong model's "
                            f"quality (hide={hide}; lower is better)")
        for c in res["cases"]:
            table.add_row(c["dataset"], c["task"], c["strong"], c["weak"], f"{c['strong_quality']:.3f}",
                          f"{c['weak_quality']:.3f}", *(f"{100 * c['share_to_95'][r]:.0f}%" for r in cols))
        wide = Console(width=260)
        wide.print(table)
        for scope, agg in [*res["by_dataset"].items(), ("overall", res["overall"])]:
            parts = [f"{r} {100 * agg[r]['mean_share']:.1f}% (wins vs random {agg[r]['wins_vs_random']})"
                     for r in cols if agg[r]["mean_share"] is not None]
            wide.print(f"{scope}: {agg['n_nontrivial']} non-trivial of {agg['n_cases']} cases; mean share: {'; '.join(parts)}")
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=1))
        console.print(f"wrote {json_out} ({res['elapsed_s']}s)")
