"""The report: one row per phase, and the table printed at the end."""

from __future__ import annotations

from typing import Any, Final

import attrs

from _load import Measured

SATURATED_PCT: Final = 90.0  # a CPU this busy over a phase limited it


@attrs.frozen
class Row:
    """One phase, with the CPU seconds each party spent over its ``wall_s`` seconds."""

    case: str
    concurrency: int
    measured: Measured
    wall_s: float
    proxy_cpu_s: float | None  # None: freellm had no part in the phase
    fake_cpu_s: float
    generator_cpu_s: float
    pinned: bool  # the fake and the generator share one CPU
    notes: str = ""

    def data(self) -> dict[str, Any]:
        m = self.measured

        def pct(seconds: float) -> float:
            return round(100 * seconds / self.wall_s, 1)

        proxy = self.proxy_cpu_s
        notes = [self.notes] if self.notes else []
        if self.concurrency > 1:  # one client at a time keeps some CPU busy by definition
            if proxy is not None and pct(proxy) >= SATURATED_PCT:
                notes.append("freellm CPU-bound")
            if self.pinned and pct(self.fake_cpu_s + self.generator_cpu_s) >= SATURATED_PCT:
                notes.append("fake + generator CPU saturated")
        return {
            "case": self.case,
            "p50_ms": round(m.p50_ms, 3),
            "p99_ms": round(m.p99_ms, 3),
            "rps": round(m.rps, 1),
            "requests": m.requests,
            "errors": m.errors,
            "seconds": round(m.seconds, 2),
            "freellm_cpu_ms_per_request": (
                round(proxy / m.requests * 1000, 3) if proxy is not None and m.requests else None
            ),
            "freellm_cpu_pct": None if proxy is None else pct(proxy),
            "upstream_cpu_pct": pct(self.fake_cpu_s),
            "generator_cpu_pct": pct(self.generator_cpu_s),
            "notes": "; ".join(notes),
        }


def table(result: dict[str, Any]) -> str:
    def num(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"freellm proxy benchmark: fake {result['flavor']} upstream, routed via "
        f"{result['routed_via']}",
        f"load generator: {result['generator']}; streaming TTFB: {result['ttfb_client']}",
        f"pinning: {result['pinning']}; {result['cpus']} CPUs",
        f"phases: {result['duration_s']:g} s each (streams {result['stream_duration_s']:g} s), "
        f"after {result['warmup_s']:g} s of warm-up per path",
        "",
        f"{'case':22} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}  notes",
    ]
    for case in result["cases"]:
        notes = []
        if case["freellm_cpu_ms_per_request"] is not None:
            notes.append(
                f"freellm CPU {case['freellm_cpu_ms_per_request']:.2f} ms/req "
                f"({case['freellm_cpu_pct']:.0f}% of a core)"
            )
        notes.append(
            f"fake CPU {case['upstream_cpu_pct']:.0f}%, generator {case['generator_cpu_pct']:.0f}%"
        )
        if case["notes"]:
            notes.append(case["notes"])
        lines.append(
            f"{case['case']:22} {num(case['p50_ms'], 2):>8} {num(case['p99_ms'], 2):>8} "
            f"{num(case['rps'], 0):>8} {case['errors']:>7}  {'; '.join(notes)}"
        )
    rss = result["rss_mib"]
    lines += [
        "",
        f"added latency, p50, c=1:      {result['added_latency_p50_ms']:.2f} ms",
        f"added time to first token:    {result['added_ttfb_p50_ms']:.2f} ms (p50, c=1)",
        f"freellm RSS idle after start: {rss['idle_after_start']:.1f} MiB",
        f"freellm RSS peak, c={result['concurrency']} load: {rss['peak_under_load']:.1f} MiB "
        f"(VmHWM {rss['high_water_mark']:.1f} MiB; idle after the load "
        f"{rss['idle_after_load']:.1f} MiB)",
        "",
        f"{'target (issue 3)':34} {'target':>8} {'measured':>10}",
    ]
    labels = {
        "added_latency_p50_ms_c1": "added latency p50, c=1 (ms)",
        "idle_rss_mb": "idle RSS (MiB)",
    }
    for key, target in result["targets"].items():
        label = labels.get(key, f"req/s at c={result['concurrency']}")
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"{label:34} {target['target']:>8} {target['measured']:>10}  {verdict}")
    lines.append(
        "for scale (DESIGN.md, bare prototypes): quart-trio + httpx 1.3 ms / ~570 req/s / 47 MB;"
        " raw ASGI + httpx 1.0 ms / ~700 req/s / 36 MB"
    )
    return "\n".join(lines)
