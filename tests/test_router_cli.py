"""CLI: clear errors on bad input (exit 2, no traceback), and fit → route end to end."""
import gzip
import json

import typer
from typer.testing import CliRunner

from switchyard.cli_router import bench_app, router_app

app = typer.Typer()
app.add_typer(router_app, name="router")
app.add_typer(bench_app, name="bench")
runner = CliRunner()


def write_jsonl(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def rows(n=40, cost=True, models=("small-m", "big-m")):
    out = []
    for i in range(n):
        text = ("Write a python function to sort a list." if i % 2 else "What is the capital of France?") + f" #{i}"
        for j, m in enumerate(models):
            out.append({"dataset": "toy", "query_id": f"q{i}", "query_text": text, "model": m,
                        "score": float((i + j) % 3 != 0), "cost_usd": (0.001 * (j * 9 + 1)) if cost else None,
                        "split": "train"})
    return out


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_fit_without_cost_or_prices_is_a_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows(cost=False))
    r = run("router", "fit", "--data", data, "--out", tmp_path / "out", "--kind", "knn")
    assert r.exit_code == 2
    assert "no cost_usd" in r.output and "--prices" in r.output


def test_fit_with_model_missing_from_prices_is_a_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows(cost=False))
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"small-m": {"input_price_usd_per_mtok": 0.1, "output_price_usd_per_mtok": 0.1}}))
    r = run("router", "fit", "--data", data, "--prices", prices, "--out", tmp_path / "out", "--kind", "knn")
    assert r.exit_code == 2 and "'big-m' is not in the prices file" in r.output


def test_fit_with_empty_query_is_a_clear_error(tmp_path):
    bad = rows()
    bad[3]["query_text"] = "   "
    data = write_jsonl(tmp_path / "d.jsonl", bad)
    r = run("router", "fit", "--data", data, "--out", tmp_path / "out", "--kind", "knn")
    assert r.exit_code == 2 and "empty query_text" in r.output


def test_missing_data_file_and_bad_json(tmp_path):
    r = run("router", "fit", "--data", tmp_path / "nope.jsonl", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not found" in r.output
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    r = run("bench", "routing", "--data", tmp_path / "bad.jsonl", "--json", tmp_path / "b.json")
    assert r.exit_code == 2 and "not valid JSON" in r.output


def test_route_errors_on_bad_queries_and_unknown_models(tmp_path):
    from router.artifact import DEFAULT_DIR

    q = write_jsonl(tmp_path / "q.jsonl", [{"query_id": "a", "query_text": "hi"}, {"query_id": "b", "query_text": ""}])
    r = run("router", "route", "--router", DEFAULT_DIR, "--queries", q, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 2 and "empty or missing query_text" in r.output
    q = write_jsonl(tmp_path / "q2.jsonl", [{"query_id": "a", "query_text": "hi"}])
    r = run("router", "route", "--router", DEFAULT_DIR, "--queries", q, "--out", tmp_path / "o.jsonl",
            "--allowed-models", "qwen2.5-coder-1.5b,gpt-9")
    assert r.exit_code == 2 and "unknown model(s) gpt-9" in r.output
    r = run("router", "route", "--router", tmp_path, "--queries", q, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 2 and "not a router directory" in r.output


def test_fit_then_route_end_to_end(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl.gz", rows(n=40))
    cache = tmp_path / "cache"
    r = run("router", "fit", "--data", data, "--out", tmp_path / "r", "--kind", "knn", "--embed-cache", cache)
    assert r.exit_code == 0, r.output
    q = write_jsonl(tmp_path / "q.jsonl", [{"query_id": f"x{i}", "query_text": f"Sort these numbers {i}"} for i in range(3)])
    r = run("router", "route", "--router", tmp_path / "r", "--queries", q, "--sweep", 5,
            "--out", tmp_path / "o.jsonl", "--embed-cache", cache)
    assert r.exit_code == 0, r.output
    lines = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(lines) == 15
    assert set(lines[0]) == {"query_id", "point", "knob", "model"}
    assert {l["point"] for l in lines} == set(range(5))
    assert {l["model"] for l in lines} <= {"small-m", "big-m"}
    assert [l["model"] for l in lines if l["point"] == 0] == ["small-m"] * 3  # knob 0 = cheapest


def test_route_at_budgets(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl.gz", rows(n=40))
    cache = tmp_path / "cache"
    r = run("router", "fit", "--data", data, "--out", tmp_path / "r", "--embed-cache", cache)
    assert r.exit_code == 0, r.output
    q = write_jsonl(tmp_path / "q.jsonl", [{"query_id": f"x{i}", "query_text": f"Sort these numbers {i}"} for i in range(4)])
    r = run("router", "route", "--router", tmp_path / "r", "--queries", q, "--budget", "0,1000",
            "--out", tmp_path / "o.jsonl", "--embed-cache", cache)
    assert r.exit_code == 0, r.output
    lines = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(l["point"], l["knob"]) for l in lines] == [(0, 0.0)] * 4 + [(1, 1000.0)] * 4
    assert {l["model"] for l in lines if l["point"] == 0} == {"small-m"}  # nothing costs $0: the cheapest
    r = run("router", "route", "--router", tmp_path / "r", "--queries", q, "--budget", "-1",
            "--out", tmp_path / "o.jsonl", "--embed-cache", cache)
    assert r.exit_code == 2 and "non-negative" in r.output


def test_score_out_of_range_message_survives_markup(tmp_path):
    bad = rows()
    bad[0]["score"] = 1.5
    r = run("router", "fit", "--data", write_jsonl(tmp_path / "d.jsonl", bad), "--out", tmp_path / "o", "--kind", "knn")
    assert r.exit_code == 2 and "outside [0, 1]" in r.output


def test_bench_routing_cross_validates_with_intervals(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows(n=40))
    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    r = run("bench", "routing", "--data", data, "--json", out, "--routers", "knn,cluster", "--folds", 3,
            "--bootstrap", 50, "--sweep", 5, "--jobs", 1, "--embed-cache", tmp_path / "cache", "--markdown", md)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["toy"]
    assert res["n_folds"] == 3 and res["n_eval_queries"] == 40 and res["n_bootstrap"] == 50
    assert "knn" in res["intervals_95"] and "cross-validation" in res["eval_source"]
    table = [line for line in md.read_text().splitlines() if line.startswith("| cluster |")]
    auc = res["metrics"]["cluster"]["auc"]
    assert len(table) == 1 and f"| {auc:.1f} [" in table[0]  # the Markdown carries the JSON's numbers
    r = run("bench", "routing", "--data", data, "--json", out, "--routers", "knn", "--folds", 1,
            "--bootstrap", 0, "--sweep", 5, "--embed-cache", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["toy"]
    assert res["n_folds"] == 1 and res["n_eval_queries"] < 40 and not res["intervals_95"]
    r = run("bench", "routing", "--data", data, "--json", out, "--routers", "knn", "--folds", 5,
            "--embed-cache", tmp_path / "cache")
    assert r.exit_code == 2 and "too few for 5 folds" in r.output
