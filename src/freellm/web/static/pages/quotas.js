"use strict";
const NAMES = { rpm: "RPM", tpm: "TPM", rpd: "RPD", tpd: "TPD" };
let latest = null;

function filled(share) {
  const span = el("span", { class: share >= 1 ? "full" : "" });
  span.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM: the page's policy allows no style attributes
  return span;
}

function bar(name, w) {
  if (!w || w.cap === null || w.cap === undefined) {
    return [el("span", {}, NAMES[name]), el("span", { class: "muted" }, "no known cap"), el("span", {}, w && w.used ? fmt.num(w.used) + " used" : "")];
  }
  const share = w.cap ? Math.min(1, w.used / w.cap) : 1;
  const label = `${NAMES[name]}: ${fmt.num(w.used)} of ${fmt.num(w.cap)} used`;
  return [el("span", {}, NAMES[name]),
    el("div", { class: "bar", role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": String(w.cap), "aria-valuenow": String(Math.min(w.used, w.cap)) },
      filled(share)),
    el("span", {}, `${fmt.num(w.used)} / ${fmt.num(w.cap)}`, w.resets_at ? el("span", { class: "hint" }, ` · ${name.endsWith("d") ? "resets" : "frees"} ${fmt.clock(w.resets_at)}`) : "")];
}

function card(row) {
  const title = `${row.provider}/${row.model}${row.account ? " (whole key)" : ""}`;
  return el("div", { class: "card", "data-slot": `${row.provider}/${row.key_id}/${row.model}` },
    el("h3", {}, title),
    el("p", { class: "hint" }, el("code", {}, row.key_id), " · ", el("span", { class: `badge ${row.health}` }, row.health), " · ",
      row.available ? el("span", { class: "ok" }, "free now") : el("span", { class: "warn" }, `${row.blocked_reason || "blocked"}${row.retry_at ? ", free at " + fmt.clock(row.retry_at) : ""}`)),
    el("div", { class: "bars" }, ["rpm", "tpm", "rpd", "tpd"].flatMap((name) => bar(name, row.windows[name]))),
    row.concurrency ? el("p", { class: "hint" }, `${row.inflight} of ${row.concurrency} in flight`) : null,
    row.cooldowns.length ? el("ul", { class: "plain" }, row.cooldowns.map((c) => el("li", { class: "warn", "data-until": c.until },
      `Cooling down (${c.scope}): ${c.reason}, `, el("span", { class: "countdown" }, fmt.left(c.until)), " left"))) : null,
    row.announced.length ? el("p", { class: "hint" }, "Provider says: ", row.announced.map((a) =>
      `${fmt.num(a.remaining)}${a.limit ? " of " + fmt.num(a.limit) : ""} ${a.dimension} per ${a.window} left until ${fmt.clock(a.until)}`).join("; ")) : null,
    el("p", { class: "hint" }, `Daily reset: ${row.daily_reset === "rolling" ? "rolling 24 h" : row.daily_reset}`));
}

function show(view) {
  latest = view;
  document.getElementById("capacity").replaceChildren(...[["rpm", "requests / min"], ["tpm", "tokens / min"], ["rpd", "requests / day"], ["tpd", "tokens / day"]].map(([name, label]) => {
    const c = view.capacity[name];
    return stat(`Left: ${label}`, c.cap ? fmt.num(c.left) : "–", c.cap ? `of ${fmt.num(c.cap)}` : "no known cap");
  }));
  const box = document.getElementById("quotas");
  if (!view.rows.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No keys yet. ", el("a", { href: "/keys" }, "Add one"), "."));
    return;
  }
  const groups = new Map();
  for (const row of view.rows) {
    const key = `${row.provider} · ${row.key_id}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(row);
  }
  box.replaceChildren(...[...groups].map(([name, rows]) => el("section", {}, el("h2", {}, name), el("div", { class: "quota" }, rows.map(card)))));
}

document.getElementById("zone").textContent = Intl.DateTimeFormat().resolvedOptions().timeZone;
setInterval(() => {
  for (const node of document.querySelectorAll("[data-until] .countdown")) node.textContent = fmt.left(Number(node.parentNode.dataset.until));
}, 1000);
attempt(async () => show(await api("GET", "/api/quotas"))).then(ready);
live({ quotas: show }, (up) => {
  const badge = document.getElementById("live");
  badge.textContent = up ? "live" : "reconnecting…";
  badge.className = `badge ${up ? "ok" : "warn"}`;
});
