"use strict";
let windowName = new URLSearchParams(location.search).get("window") || "24h";
let chart = null;

function table(id, columns, rows) {
  const node = document.getElementById(id);
  node.querySelector("thead").replaceChildren(el("tr", {}, columns.map(([label, , num]) => el("th", { scope: "col", class: num ? "num" : null }, label))));
  node.querySelector("tbody").replaceChildren(...(rows.length ? rows.map((row) =>
    el("tr", {}, columns.map(([, value, num]) => el("td", { class: num ? "num" : null }, value(row))))) :
    [el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, "Nothing in this window."))]));
}

// A bar per interval; errors as a narrower bar in front of their interval's requests.
function bars(label, color, size) {
  return { label, stroke: color, fill: color, width: 0, points: { show: false },
    paths: uPlot.paths.bars({ size: [size, 40], align: 0 }) };
}

function drawTimeline(report) {
  const box = document.getElementById("timeline");
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--muted").trim();
  const line = css.getPropertyValue("--line").trim();
  const data = [report.timeline.map((b) => b.at), report.timeline.map((b) => b.requests), report.timeline.map((b) => b.errors)];
  const axis = { stroke: fg, grid: { stroke: line }, ticks: { stroke: line } };
  const options = {
    width: Math.max(280, box.clientWidth), height: 220,
    series: [{}, bars("requests", css.getPropertyValue("--accent").trim(), 0.7),
      bars("errors", css.getPropertyValue("--bad").trim(), 0.35)],
    axes: [axis, axis],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
  };
  if (chart) chart.destroy();
  box.replaceChildren();
  chart = new uPlot(options, data, box);
}

async function load() {
  for (const b of document.querySelectorAll("[data-window]")) b.setAttribute("aria-pressed", String(b.dataset.window === windowName));
  const report = await api("GET", `/api/analytics?window=${windowName}`);
  const t = report.totals;
  document.getElementById("totals").replaceChildren(
    stat("Requests", fmt.num(t.requests)),
    stat("Success (requests)", fmt.pct(t.success_rate)),
    stat("Success (attempts)", fmt.pct(t.attempt_success_rate), `${fmt.num(t.attempts)} ${t.attempts === 1 ? "attempt" : "attempts"}`),
    stat("Fallbacks", fmt.num(t.fallbacks)),
    stat("Tokens in", fmt.num(t.prompt_tokens)),
    stat("Tokens out", fmt.num(t.completion_tokens)),
    stat("Latency p50 / p95", fmt.ms(t.latency_ms.p50), fmt.ms(t.latency_ms.p95)),
    stat("First token p50 / p95", fmt.ms(t.ttft_ms.p50), fmt.ms(t.ttft_ms.p95)));
  drawTimeline(report);
  table("models", [
    ["Model", (r) => r.target || "(nothing answered)"], ["Requests", (r) => fmt.num(r.requests), 1],
    ["Success", (r) => fmt.pct(r.success_rate), 1], ["Tokens in", (r) => fmt.num(r.prompt_tokens), 1],
    ["Tokens out", (r) => fmt.num(r.completion_tokens), 1], ["p50", (r) => fmt.ms(r.latency_ms.p50), 1],
    ["p95", (r) => fmt.ms(r.latency_ms.p95), 1], ["First token p50", (r) => fmt.ms(r.ttft_ms.p50), 1]], report.models);
  table("providers", [
    ["Provider", (r) => r.provider], ["Attempts", (r) => fmt.num(r.attempts), 1], ["Success", (r) => fmt.pct(r.success_rate), 1],
    ["Tokens in", (r) => fmt.num(r.prompt_tokens), 1], ["Tokens out", (r) => fmt.num(r.completion_tokens), 1],
    ["p50", (r) => fmt.ms(r.latency_ms.p50), 1], ["p95", (r) => fmt.ms(r.latency_ms.p95), 1]], report.providers);
  const classes = document.getElementById("classes");
  classes.replaceChildren(...(report.error_classes.length ? report.error_classes.map((c) => el("li", {}, el("strong", {}, fmt.num(c.count)), " ", c.class))
    : [el("li", { class: "muted" }, "No errors in this window.")]));
  const failed = await api("GET", "/api/requests?failed=1&limit=10");
  document.getElementById("failed").replaceChildren(...(failed.data.length ? failed.data.map((r) => el("li", {},
    el("details", {}, el("summary", {}, el("span", { class: "badge bad" }, r.status), ` ${fmt.time(r.at)} · ${r.model}`),
      r.error ? el("p", {}, r.error) : null,
      el("ol", {}, r.attempts.map((a) => el("li", {}, `${a.target}: ${a.outcome}${a.status ? " (" + a.status + ")" : ""}, ${fmt.ms(a.latency_ms)}`))))))
    : [el("li", { class: "muted" }, "No failed requests.")]));
}

for (const button of document.querySelectorAll("[data-window]")) {
  button.addEventListener("click", () => {
    windowName = button.dataset.window;
    history.replaceState(null, "", `?window=${windowName}`);
    attempt(load);
  });
}
let pending = null;
live({ request() { clearTimeout(pending); pending = setTimeout(() => attempt(load), 500); } });
window.addEventListener("resize", () => { if (chart) chart.setSize({ width: Math.max(280, document.getElementById("timeline").clientWidth), height: 220 }); });
attempt(load).then(ready);
