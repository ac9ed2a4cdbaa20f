"""The report: one row per phase, the figures pooled per server, the checks, and the table."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from _load import Measured

SATURATED_PCT: Final = 90.0  # a CPU this busy over a phase limited it
RULE_FACTOR: Final = 10.0  # the direct baseline must be this many times faster than freellm
NO_NOISE_ESTIMATE_PCT: Final = 1.0  # a change this small is "same" where rounds give no spread

# Issue 3's targets (and DESIGN.md's measured prototypes, for scale).
TARGET_ADDED_P50_MS: Final = 1.0
TARGET_RPS: Final = 600.0
TARGET_IDLE_RSS_MB: Final = 45.0

Summary = dict[str, float | None]


@attrs.frozen
class Row:
    """One phase of one server, with the CPU seconds each party spent over ``wall_s``."""

    case: str
    target: str  # "direct", "freellm" or "baseline"
    phase: str  # "c1", "cN" or "stream"
    concurrency: int
    measured: Measured
    wall_s: float
    server_cpu_s: float | None  # the freellm measured; None for the direct path
    upstream_cpu_s: float
    generator_cpu_s: float
    pinned: bool  # the upstream and the generator share one CPU
    notes: str = ""

    def pct(self, seconds: float) -> float:
        return round(100 * seconds / self.wall_s, 1) if self.wall_s else 0.0

    def limits(self) -> list[str]:
        """What was saturated over the phase (with one client at a time, something always is)."""
        if self.concurrency <= 1:
            return []
        found = []
        if self.server_cpu_s is not None and self.pct(self.server_cpu_s) >= SATURATED_PCT:
            found.append(f"{self.target} CPU-bound")
        upstream, generator = self.pct(self.upstream_cpu_s), self.pct(self.generator_cpu_s)
        if self.pinned and upstream + generator >= SATURATED_PCT:
            larger = "generator" if generator > upstream else "upstream"
            found.append(f"upstream+generator CPU saturated, mostly the {larger}")
        elif not self.pinned:
            for who, pct in (("upstream", upstream), ("generator", generator)):
                if pct >= SATURATED_PCT:
                    found.append(f"{who} CPU-bound")
        return found

    def data(self) -> dict[str, Any]:
        m, server = self.measured, self.server_cpu_s
        return {
            "case": self.case,
            "target": self.target,
            "phase": self.phase,
            "p50_ms": round(m.p50_ms, 3),
            "p99_ms": round(m.p99_ms, 3),
            "rps": round(m.rps, 1),
            "requests": m.requests,
            "errors": m.errors,
            "seconds": round(m.seconds, 2),
            "freellm_cpu_ms_per_request": (
                round(server / m.requests * 1000, 3) if server is not None and m.requests else None
            ),
            "freellm_cpu_pct": None if server is None else self.pct(server),
            "upstream_cpu_pct": self.pct(self.upstream_cpu_s),
            "generator_cpu_pct": self.pct(self.generator_cpu_s),
            "notes": "; ".join(([self.notes] if self.notes else []) + self.limits()),
        }


def _figures(row: Row) -> dict[str, float | None]:
    m, server = row.measured, row.server_cpu_s
    per_request = server / m.requests * 1000 if server is not None and m.requests else None
    return {"rps": m.rps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "cpu_ms_per_request": per_request}


def pooled(rows: Sequence[Row]) -> Summary:
    """The rounds of one phase of one server as one figure: requests over seconds, the median
    round's percentiles, CPU time over requests; and, over 2+ rounds, ``<figure>_spread``: how
    far apart the rounds' own figures were (max - min), a measure of the noise."""
    requests = sum(row.measured.requests for row in rows)
    seconds = sum(row.measured.seconds for row in rows)
    cpu = [row.server_cpu_s for row in rows if row.server_cpu_s is not None]
    summary: Summary = {
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": statistics.median(row.measured.p50_ms for row in rows),
        "p99_ms": statistics.median(row.measured.p99_ms for row in rows),
        "cpu_ms_per_request": sum(cpu) / requests * 1000 if cpu and requests else None,
        "errors": sum(row.measured.errors for row in rows),
    }
    if len(rows) > 1:
        for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request"):
            values = [v for v in (_figures(row)[key] for row in rows) if v is not None]
            summary[f"{key}_spread"] = max(values) - min(values) if len(values) > 1 else None
    return summary


# (key, label, "higher" or "lower" is better); `c` is the loaded concurrency.
METRICS: Final = (
    ("c1_p50_ms", "latency p50, c=1 (ms)", "lower"),
    ("c1_p99_ms", "latency p99, c=1 (ms)", "lower"),
    ("added_p50_ms", "added latency p50, c=1 (ms)", "lower"),
    ("cN_rps", "req/s, c={c}", "higher"),
    ("cN_p50_ms", "latency p50, c={c} (ms)", "lower"),
    ("cN_p99_ms", "latency p99, c={c} (ms)", "lower"),
    ("c1_cpu_ms_per_request", "CPU ms/request, c=1", "lower"),
    ("cN_cpu_ms_per_request", "CPU ms/request, c={c}", "lower"),
    ("stream_p50_ms", "time to first token p50 (ms)", "lower"),
    ("added_ttft_p50_ms", "added time to first token p50 (ms)", "lower"),
    ("rss_idle_mib", "RSS idle after start (MiB)", "lower"),
    ("rss_peak_mib", "RSS peak under c={c} (MiB)", "lower"),
    ("rss_hwm_mib", "RSS high-water mark (MiB)", "lower"),
    ("rss_after_mib", "RSS idle after the load (MiB)", "lower"),
)


def summarize(
    rows: Sequence[Row], target: str, direct: Summary | None, rss: Mapping[str, float]
) -> Summary:
    """The figures of ``target`` (the keys of :data:`METRICS`), pooled over its rounds."""
    summary: Summary = {}
    for phase in ("c1", "cN", "stream"):
        for key, value in pooled(
            [r for r in rows if (r.target, r.phase) == (target, phase)]
        ).items():
            summary[f"{phase}_{key}"] = value
    if direct is not None:
        summary["added_p50_ms"] = _minus(summary["c1_p50_ms"], direct["c1_p50_ms"])
        summary["added_ttft_p50_ms"] = _minus(summary["stream_p50_ms"], direct["stream_p50_ms"])
        summary["added_p50_ms_spread"] = summary.get("c1_p50_ms_spread")
        summary["added_ttft_p50_ms_spread"] = summary.get("stream_p50_ms_spread")
    summary.update(rss)
    return summary


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def change_pct(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None or old == 0 else 100 * (new - old) / old


def comparison(summaries: Mapping[str, Summary], concurrency: int) -> list[dict[str, Any]]:
    """freellm against the baseline, figure by figure: the change in percent, the noise (the
    larger spread between either server's rounds, in percent of the baseline) and a verdict:
    ``same`` when the change is within the noise (or under 1% where there is no estimate)."""
    new, old = summaries["freellm"], summaries["baseline"]
    found = []
    for key, label, better in METRICS:
        a, b = new.get(key), old.get(key)
        change = change_pct(a, b)
        if a is None or b is None or change is None:
            continue
        spreads = [s for s in (new.get(f"{key}_spread"), old.get(f"{key}_spread")) if s]
        noise = 100 * max(spreads) / abs(b) if spreads else None
        if abs(change) <= (NO_NOISE_ESTIMATE_PCT if noise is None else noise):
            verdict = "same"
        else:
            verdict = "better" if (change > 0) == (better == "higher") else "worse"
        found.append(
            {
                "metric": key,
                "label": label.format(c=concurrency),
                "freellm": round(a, 3),
                "baseline": round(b, 3),
                "change_pct": round(change, 1),
                "noise_pct": None if noise is None else round(noise, 1),
                "better": better,
                "verdict": verdict,
            }
        )
    return found


def upstream_check(
    summaries: Mapping[str, Summary], servers: Sequence[str], direct_row: Row
) -> dict[str, Any]:
    """Whether the direct baseline was at least :data:`RULE_FACTOR` times every server's req/s at
    the loaded concurrency, and what limited the direct phase."""
    direct = summaries["direct"]["cN_rps"] or 0.0
    fastest = max(servers, key=lambda name: summaries[name]["cN_rps"] or 0.0)
    proxied = summaries[fastest]["cN_rps"] or 0.0
    ratio = direct / proxied if proxied else float("inf")
    data = direct_row.data()
    return {
        "direct_rps": round(direct, 1),
        "server": fastest,
        "server_rps": round(proxied, 1),
        "ratio": round(ratio, 1),
        "required": RULE_FACTOR,
        "ok": ratio >= RULE_FACTOR,
        "direct_limited_by": "; ".join(direct_row.limits()) or "nothing saturated",
        "direct_upstream_cpu_pct": data["upstream_cpu_pct"],
        "direct_generator_cpu_pct": data["generator_cpu_pct"],
    }


def check_lines(check: Mapping[str, Any], concurrency: int, generator: str) -> list[str]:
    figures = (
        f"direct {check['direct_rps']:,.0f} req/s at c={concurrency} is {check['ratio']:.1f}x "
        f"{check['server']}'s {check['server_rps']:,.0f} req/s (rule: >= {check['required']:g}x)"
    )
    if check["ok"]:
        return [f"upstream check: {figures}: OK"]
    lines = [
        f"WARNING: {figures}: the proxied figures may measure the upstream side (upstream and "
        "load generator), not freellm.",
        f"WARNING: the direct phase was limited by: {check['direct_limited_by']} "
        f"(upstream CPU {check['direct_upstream_cpu_pct']:.0f}%, "
        f"generator {check['direct_generator_cpu_pct']:.0f}%)",
    ]
    if (
        check["direct_generator_cpu_pct"] > check["direct_upstream_cpu_pct"]
        and "wrk" not in generator
    ):
        lines.append(
            "WARNING: the load generator costs the most there; wrk (--generator wrk) costs less"
        )
    return lines


def targets(summary: Summary, concurrency: int) -> list[dict[str, Any]]:
    """Issue 3's targets, against the working tree's figures."""
    added, rps = summary["added_p50_ms"] or 0.0, summary["cN_rps"] or 0.0
    idle = summary["rss_idle_mib"] or 0.0
    return [
        {
            "label": "added latency p50, c=1 (ms)",
            "target": f"<= {TARGET_ADDED_P50_MS:g}",
            "measured": round(added, 3),
            "met": added <= TARGET_ADDED_P50_MS,
        },
        {
            "label": f"req/s at c={concurrency}",
            "target": f">= {TARGET_RPS:g}",
            "measured": round(rps, 1),
            "met": rps >= TARGET_RPS,
        },
        {
            "label": "idle RSS (MiB)",
            "target": f"<= {TARGET_IDLE_RSS_MB:g}",
            "measured": round(idle, 1),
            "met": idle <= TARGET_IDLE_RSS_MB,
        },
    ]


# --- the table -----------------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _phase_lines(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [f"{'case':24} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}  notes"]
    for case in cases:
        notes = []
        if case["freellm_cpu_ms_per_request"] is not None:
            notes.append(
                f"CPU {case['freellm_cpu_ms_per_request']:.2f} ms/req "
                f"({case['freellm_cpu_pct']:.0f}% of a core)"
            )
        notes.append(
            f"upstream CPU {case['upstream_cpu_pct']:.0f}%, "
            f"generator {case['generator_cpu_pct']:.0f}%"
        )
        if case["notes"]:
            notes.append(case["notes"])
        lines.append(
            f"{case['case']:24} {_num(case['p50_ms'], 2):>8} {_num(case['p99_ms'], 2):>8} "
            f"{_num(case['rps'], 0):>8} {case['errors']:>7}  {'; '.join(notes)}"
        )
    return lines


def _summary_lines(result: Mapping[str, Any]) -> list[str]:
    summaries: Mapping[str, Summary] = result["summary"]
    names = ["direct", *(server["name"] for server in result["servers"])]
    changes = {row["metric"]: row for row in result.get("comparison") or ()}
    head = f"{'':36}" + "".join(f"{name:>11}" for name in names)
    lines = [head + (f"{'change':>10} {'noise':>8}" if changes else "")]
    for key, label, _ in METRICS:
        values = [summaries[name].get(key) for name in names]
        if all(value is None for value in values):
            continue
        digits = 0 if key == "cN_rps" else 1 if key.startswith("rss") else 3 if "cpu" in key else 2
        line = f"{label.format(c=result['concurrency']):36}" + "".join(
            f"{_num(value, digits):>11}" for value in values
        )
        if key in changes:
            change = changes[key]
            noise = "-" if change["noise_pct"] is None else f"±{change['noise_pct']:.1f}%"
            line += f"{change['change_pct']:>+9.1f}% {noise:>8}  {change['verdict']}"
        lines.append(line)
    if changes:
        lines += [
            "change: this tree against the baseline (req/s: higher is better; the rest: lower).",
            "noise: the widest spread between one server's rounds; `same`: the change is within it"
            f" (or under {NO_NOISE_ESTIMATE_PCT:g}% without rounds).",
            "Compare only within this run; CPU ms/request is the steadier figure.",
        ]
    return lines


def table(result: Mapping[str, Any]) -> str:
    upstream = result["upstream"]
    lines = [
        f"freellm proxy benchmark, {result['flavor']} flavor, routed via {result['routed_via']}",
        f"upstream: {upstream['description']}",
        f"load generator: {result['generator']}; time to first token: {result['ttfb_client']}",
        f"pinning: {result['pinning']}; {result['cpus']} CPUs",
        f"phases: {result['duration_s']:g} s each (streams {result['stream_duration_s']:g} s), "
        f"after {result['warmup_s']:g} s of warm-up per path; {result['order']}",
    ]
    for server in result["servers"]:
        lines.append(
            f"{server['name']}: {server['build']}; pid {server['pid']} imports {server['package']}"
            f" (PYTHONPATH={server['pythonpath'] or 'unset'})"
        )
    lines += ["", *_phase_lines(result["cases"]), ""]
    lines += check_lines(result["upstream_check"], result["concurrency"], result["generator"])
    lines += ["", *_summary_lines(result), ""]
    lines.append(f"{'target (issue 3), freellm':34} {'target':>8} {'measured':>10}")
    for target in result["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        label = target["label"]
        lines.append(f"{label:34} {target['target']:>8} {target['measured']:>10}  {verdict}")
    lines.append(
        "for scale (DESIGN.md, bare prototypes): quart-trio + httpx 1.3 ms / ~570 req/s / 47 MB;"
        " raw ASGI + httpx 1.0 ms / ~700 req/s / 36 MB"
    )
    return "\n".join(lines)
