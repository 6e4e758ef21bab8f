"""`switchyard dashboard`: one self-contained HTML page of routing outcomes (plotly, its script
inlined, so the page opens with no network), built from the same tenant-scoped named questions
as `switchyard report`."""
from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import plotly.graph_objects as go
import plotly.io as pio

from schemas.common import TIERS

Rows = list[dict[str, Any]]
TIER_COLOURS = {"small": "#4c9f70", "medium": "#e0a526", "large": "#c8553d"}


@dataclass
class DashboardData:
    by_version: Rows
    by_tenant: Rows
    grid: Rows
    latency: Rows
    dead_letters: Rows
    labels: Rows
    as_of: Any = None


def gather(ask: Callable[..., Rows], **params: str) -> DashboardData:
    """Everything the page shows, through `ask(question, **params)` (a Warehouse's, so a
    tenant's key sees only its own tenant)."""
    scope = {k: v for k, v in params.items() if v is not None}
    return DashboardData(
        by_version=ask("outcomes", by="router_version", **scope),
        by_tenant=ask("outcomes", by="tenant", **scope),
        grid=ask("outcomes_grid", **scope),
        latency=ask("latency_sample", **scope),
        dead_letters=ask("dead_letters_by_reason", **scope),
        labels=ask("cluster_labels", **{k: v for k, v in scope.items() if k == "tenant"}),
    )


def _empty(fig: go.Figure, rows: Rows) -> go.Figure:
    if not rows:
        fig.add_annotation(text="no data yet", showarrow=False, font={"size": 16}, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    return fig


def quality_vs_cost(rows: Rows) -> go.Figure:
    graded = [r for r in rows if r["quality"] is not None and r["requests"]]
    fig = go.Figure(go.Scatter(
        x=[r["cost_usd"] / r["requests"] for r in graded], y=[r["quality"] for r in graded],
        mode="markers+text", text=[r["router_version"] for r in graded], textposition="top center",
        marker={"size": [max(8, min(40, r["graded"] ** 0.5 * 3)) for r in graded]},
        hovertemplate="%{text}<br>cost/request $%{x:.3g}<br>quality %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Quality vs cost per router version (marker size: graded answers)",
                      xaxis={"title": "mean cost per request (USD, log)", "type": "log"},
                      yaxis_title="mean graded score")
    return _empty(fig, graded)


def tier_mix(grid: Rows) -> go.Figure:
    hours = sorted({r["hour"] for r in grid})
    fig = go.Figure()
    for tier in TIERS:
        per_hour = {h: 0 for h in hours}
        for r in grid:
            if r["tier"] == tier:
                per_hour[r["hour"]] += r["requests"]
        fig.add_bar(name=tier, x=hours, y=[per_hour[h] for h in hours], marker_color=TIER_COLOURS[tier])
    fig.update_layout(title="Tier mix over time", barmode="stack", xaxis_title="hour (UTC)", yaxis_title="requests")
    return _empty(fig, grid)


def cluster_tier_quality(grid: Rows, labels: Rows = ()) -> go.Figure:
    cells: dict[tuple[int, str], list[float]] = {}
    for r in grid:
        acc = cells.setdefault((r["cluster"], r["tier"]), [0.0, 0.0])
        acc[0] += r["score_sum"]
        acc[1] += r["graded"]
    clusters = sorted({c for c, _ in cells})
    z = [[(cells[(c, t)][0] / cells[(c, t)][1]) if cells.get((c, t), [0, 0])[1] else None for t in TIERS]
         for c in clusters]
    named = {r["cluster"]: r["label"] for r in labels if r.get("label")}
    fig = go.Figure(go.Heatmap(z=z, x=list(TIERS), y=[f"{c}: {named[c]}" if c in named else f"cluster {c}"
                                                      for c in clusters], zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": "quality"},
                               hovertemplate="%{y} × %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title="Graded quality per cluster and tier", yaxis={"type": "category"})
    return _empty(fig, [1 for row in z for v in row if v is not None])


def latency(rows: Rows) -> go.Figure:
    fig = go.Figure()
    for tier in TIERS:
        values = [r["end_to_end_ms"] for r in rows if r["tier"] == tier]
        if values:
            fig.add_box(y=values, name=tier, marker_color=TIER_COLOURS[tier], boxpoints=False)
    fig.update_layout(title="End-to-end latency per tier (sample of answers)", yaxis_title="ms")
    return _empty(fig, rows)


def spend_per_tenant(rows: Rows) -> go.Figure:
    tenants = [r["tenant"] for r in rows]
    fig = go.Figure([
        go.Bar(name="spent", x=tenants, y=[r["cost_usd"] for r in rows]),
        go.Bar(name="at large-tier prices", x=tenants, y=[r["cost_at_large_usd"] for r in rows]),
    ])
    fig.update_layout(title="Spend and savings per tenant", barmode="group", yaxis_title="USD")
    return _empty(fig, rows)


def dead_letters(rows: Rows) -> go.Figure:
    labels = [f"{r['stage']}: {r['reason']}"[:80] for r in rows]
    fig = go.Figure(go.Bar(x=[r["dead_letters"] for r in rows], y=labels, orientation="h"))
    fig.update_layout(title="Dead letters by reason", xaxis_title="dead letters", yaxis={"autorange": "reversed"})
    return _empty(fig, rows)


def figures(data: DashboardData) -> dict[str, go.Figure]:
    return {
        "quality-vs-cost": quality_vs_cost(data.by_version),
        "tier-mix": tier_mix(data.grid),
        "cluster-tier-quality": cluster_tier_quality(data.grid, data.labels),
        "latency": latency(data.latency),
        "spend-per-tenant": spend_per_tenant(data.by_tenant),
        "dead-letters": dead_letters(data.dead_letters),
    }


def render(data: DashboardData, title: str = "Switchyard routing outcomes") -> str:
    """The page: plotly.js inlined once in the head, one div per figure (id `plot-<name>`)."""
    from plotly.offline import get_plotlyjs

    parts = []
    for name, fig in figures(data).items():
        fig.update_layout(template="plotly_white", height=420, margin={"t": 60, "l": 60, "r": 20, "b": 50})
        parts.append(f'<section class="plot">{pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"plot-{name}", config={"displaylogo": False, "responsive": True})}</section>')
    as_of = f"analytics as of {html.escape(str(data.as_of))} UTC" if data.as_of else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa}}
main{{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:1rem}}
.plot{{min-width:0;overflow:hidden;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p>{as_of}</p><main>
{"".join(parts)}
</main>
<script>window.addEventListener("load", () =>
  document.querySelectorAll(".js-plotly-plot").forEach((p) => Plotly.Plots.resize(p)));</script>
</body></html>
"""


def serve(build: Callable[[], str], port: int = 0, host: str = "127.0.0.1",
          on_ready: Callable[[str], None] = print) -> None:
    """Serve the page on loopback until interrupted, rebuilt on every load. The URL carries a
    random token (anyone without it gets 404), so other local users cannot read it."""
    token = secrets.token_urlsafe(16)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.rstrip("/") != f"/{token}":
                self.send_error(404)
                return
            body = build().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    on_ready(f"http://{host}:{server.server_address[1]}/{token}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
