"""What a replay tells its user: a terminal table, one JSON object, or one self-contained page.

- :func:`table` is the terminal's summary: one row per policy, with the upper bound beside it.
- :func:`to_json` is ``freellm replay --json`` (DESIGN.md's fields: ``requests``, ``served``,
  ``refused``, ``failed``, ``upstream_429``, ``cap_violations``, ``upper_bound``, ``policy``,
  ``mode``, ``seconds``, and ``baselines`` when they ran, each with the same fields).
- :func:`html` is ``--report out.html``: the figures and three charts (demand, served and
  capacity over time; the load on each provider; refusals over time), drawn by uPlot, whose
  script and styles are inlined from the copy the dashboard serves: the page needs no network.
"""

from __future__ import annotations

import html as html_
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.sim.bounds import Bound
from freellm.sim.replay import Result
from freellm.sim.trace import Trace

__all__ = ["Replayed", "html", "progress_bar", "suggestions_table", "table", "to_json"]

BAR_WIDTH: Final = 30


@attrs.frozen
class Replayed:
    """Everything one ``freellm replay`` run found."""

    trace: Trace
    keys: Mapping[str, int]
    main: Result
    bound: Bound
    baselines: Mapping[str, Result] = attrs.field(factory=dict)


def to_json(run: Replayed) -> dict[str, Any]:
    data = run.main.to_data()
    data["upper_bound"] = run.bound.served
    data["upper_bound_how"] = run.bound.how
    data["trace"] = {"source": run.trace.source, "requests": len(run.trace.requests)}
    data["keys"] = dict(run.keys)
    if run.baselines:
        baselines = {}
        for name, result in run.baselines.items():
            entry = result.to_data()
            entry.pop("timeline")
            entry["upper_bound"] = run.bound.served
            baselines[name] = entry
        data["baselines"] = baselines
    return data


def table(run: Replayed) -> str:
    """The summary for a terminal."""
    trace = run.trace
    keys = " ".join(f"{provider}={count}" for provider, count in sorted(run.keys.items()))
    total = len(trace.requests)
    lines = [
        f"trace: {trace.source} ({total:,} requests over {trace.duration / 60:.1f} min)",
        f"keys: {keys or 'none'}; mode: {run.main.mode}",
        "",
    ]
    header = ("policy", "served", "share", "of bound", "refused", "failed", "429s up",
              "violations", "fallbacks", "p50 ms", "seconds")  # fmt: skip
    rows = [_row(run.main, run.bound.served)]
    rows += [_row(result, run.bound.served) for result in run.baselines.values()]
    bound_share = f"{run.bound.served / total:.1%}" if total else "-"
    rows.append(("upper bound", f"{run.bound.served:,}", bound_share, "100%", "", "", "", "",
                 "", "", ""))  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i])
                 for i, cell in enumerate(row)]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append(f"upper bound: {run.bound.how}")
    return "\n".join(lines)


def _row(result: Result, bound: int) -> tuple[str, ...]:
    share = f"{result.served_fraction:.1%}"
    of_bound = f"{result.served / bound:.1%}" if bound else "-"
    p50 = result.latency_ms.get("p50")
    name = result.policy
    if name == "freellm" and result.strategy is not None:
        name = f"freellm ({result.strategy})"
    return (
        name,
        f"{result.served:,}",
        share,
        of_bound,
        f"{result.refused:,}",
        f"{result.failed:,}",
        f"{result.upstream_429:,}",
        f"{result.cap_violations:,}",
        f"{result.fallbacks_per_served:.2f}",
        "-" if p50 is None else f"{p50:,.0f}",
        f"{result.seconds:.2f}",
    )


def suggestions_table(base: int, extra: Sequence[tuple[str, int]]) -> str:
    """``--suggest``: one more key of each provider, best first, by requests served."""
    lines = [f"one more key of ...   served (now {base:,})   gain"]
    for provider, served in extra:
        lines.append(f"  {provider:<18} {served:>14,}   {served - base:+,}")
    return "\n".join(lines)


def progress_bar(done: int, total: int, label: str) -> str:
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    return f"\r{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:,}/{total:,}"


# --- the page -----------------------------------------------------------------------------------


def html(run: Replayed) -> str:
    """One self-contained HTML page: the table and the charts, no network needed."""
    vendor = importlib.resources.files("freellm.web").joinpath("static/vendor/uplot")
    script = vendor.joinpath("uPlot.iife.min.js").read_text(encoding="utf-8")
    styles = vendor.joinpath("uPlot.min.css").read_text(encoding="utf-8")
    data = to_json(run)
    timeline = data["timeline"]
    providers = sorted({p for minute in timeline for p in minute["by_provider"]})
    series = {
        "minutes": [m["minute"] for m in timeline],
        "arrivals": [m["arrivals"] for m in timeline],
        "served": [m["served"] for m in timeline],
        "refused": [m["refused"] for m in timeline],
        "failed": [m["failed"] for m in timeline],
        "capacity": [(m["capacity_left"] or {}).get("rpm") for m in timeline],
        "providers": {p: [m["by_provider"].get(p, 0) for m in timeline] for p in providers},
    }
    summary = html_.escape(table(run))
    payload = json.dumps(series).replace("</", "<\\/")
    return _PAGE.format(
        title=html_.escape(f"freellm replay: {run.trace.source}"),
        styles=styles,
        summary=summary,
        script=script.replace("</script", "<\\/script"),
        payload=payload,
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{styles}
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 24px; color: #1b1f24; }}
pre {{ background: #f6f8fa; padding: 12px; overflow-x: auto; }}
h2 {{ font-size: 1.1rem; margin-top: 28px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<pre>{summary}</pre>
<h2>Demand, served and capacity per minute</h2>
<p>Arrivals and served requests per minute of the trace; the capacity is the requests per minute
left across all keys at each minute's start, as freellm's ledger saw it.</p>
<div id="demand"></div>
<h2>Load per provider</h2>
<div id="load"></div>
<h2>Refusals per minute</h2>
<p>Requests answered 429 (no capacity anywhere at that moment) and those that failed.</p>
<div id="refusals"></div>
<script>{script}</script>
<script>
const data = {payload};
const colors = ["#1f5fcc", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#0a7ea4", "#bf3989"];
const width = Math.min(1100, document.body.clientWidth - 20);
const axes = [{{ label: "minute" }}, {{}}];
const scales = {{ x: {{ time: false }} }};
function line(label, color) {{ return {{ label, stroke: color, width: 2 }}; }}
new uPlot({{ width, height: 280, scales, axes, series: [{{}}, line("arrivals", colors[0]),
  line("served", colors[1]), line("capacity left (rpm)", colors[2])] }},
  [data.minutes, data.arrivals, data.served, data.capacity], document.getElementById("demand"));
const names = Object.keys(data.providers);
new uPlot({{ width, height: 280, scales, axes,
  series: [{{}}, ...names.map((n, i) => line(n, colors[i % colors.length]))] }},
  [data.minutes, ...names.map((n) => data.providers[n])], document.getElementById("load"));
new uPlot({{ width, height: 220, scales, axes, series: [{{}}, line("refused", colors[3]),
  line("failed", colors[4])] }}, [data.minutes, data.refused, data.failed],
  document.getElementById("refusals"));
</script>
</body>
</html>
"""
