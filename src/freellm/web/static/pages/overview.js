"use strict";
const WINDOWS = [["rpm", "requests / min"], ["tpm", "tokens / min"], ["rpd", "requests / day"], ["tpd", "tokens / day"]];

function showCapacity(quotas) {
  const capacity = document.getElementById("capacity");
  capacity.replaceChildren(...WINDOWS.map(([name, label]) => {
    const c = quotas.capacity[name];
    const uncapped = c.unknown ? `; ${c.unknown} model${c.unknown === 1 ? "" : "s"} with no known cap not counted` : "";
    const note = c.cap ? `of ${fmt.num(c.cap)}${uncapped}` : c.unknown ? "no known cap" : "";
    return stat(label, c.cap ? fmt.num(c.left) : "–", note);
  }));
  const providers = new Map();
  for (const row of quotas.rows) {
    const entry = providers.get(row.provider) || { keys: new Map(), available: 0, slots: 0 };
    entry.keys.set(row.key_id, row.health);
    entry.slots += 1;
    if (row.available) entry.available += 1;
    providers.set(row.provider, entry);
  }
  const list = document.getElementById("providers");
  if (!providers.size) {
    list.replaceChildren(el("li", { class: "muted" }, "No keys yet. ", el("a", { href: "/keys" }, "Add one"), "."));
    return;
  }
  list.replaceChildren(...[...providers].map(([name, entry]) => {
    const states = [...entry.keys.values()];
    return el("li", {}, el("strong", {}, name), ` · ${states.length} key${states.length === 1 ? "" : "s"} `,
      ...states.map((s) => el("span", { class: `badge ${s}` }, s)),
      el("span", { class: "muted" }, ` · ${entry.available} of ${entry.slots} model${entry.slots === 1 ? "" : "s"} free now`));
  }));
}

function feedItem(r) {
  const ok = r.status < 400;
  return el("li", {}, el("span", { class: `badge ${ok ? "ok" : "bad"}` }, r.status), " ",
    fmt.clock(r.at), " · ", r.model, " → ", r.routed_via || "nothing", " · ", fmt.ms(r.latency_ms),
    r.attempts > 1 ? ` · ${r.attempts} attempts` : "",
    r.prompt_tokens !== null ? ` · ${fmt.num(r.prompt_tokens)} in / ${fmt.num(r.completion_tokens)} out` : "");
}

async function loadToday() {
  const report = await api("GET", "/api/analytics?window=24h");
  const t = report.totals;
  document.getElementById("today").replaceChildren(
    stat("Requests", fmt.num(t.requests)),
    stat("Success rate", fmt.pct(t.success_rate)),
    stat("Tokens in", fmt.num(t.prompt_tokens)),
    stat("Tokens out", fmt.num(t.completion_tokens)),
    stat("Latency p50", fmt.ms(t.latency_ms.p50)),
    stat("Fallbacks", fmt.num(t.fallbacks)));
}

async function loadErrors() {
  const failed = await api("GET", "/api/requests?failed=1&limit=5");
  const list = document.getElementById("errors");
  if (!failed.data.length) {
    list.replaceChildren(el("li", { class: "muted" }, "No failed requests."));
    return;
  }
  list.replaceChildren(...failed.data.map((r) => el("li", {},
    el("span", { class: "badge bad" }, r.status), " ", fmt.time(r.at), " · ", r.model, el("br"),
    el("span", { class: "muted" }, r.error || r.attempts.map((a) => `${a.target}=${a.outcome}`).join(", ")))));
}

Promise.all([attempt(loadToday), attempt(loadErrors),
  attempt(async () => showCapacity(await api("GET", "/api/quotas")))]).then(ready);
let first = true;
live({
  quotas: showCapacity,
  request(r) {
    const feed = document.getElementById("feed");
    if (first) { feed.replaceChildren(); first = false; }
    feed.prepend(feedItem(r));
    while (feed.children.length > 20) feed.lastChild.remove();
    attempt(loadToday);
    if (r.status >= 400) attempt(loadErrors);
  },
});
