"use strict";
let entries = []; // [{target, enabled, servable_now, keys, retry_at}]
let chainName = new URLSearchParams(location.search).get("name") || "auto";
let catalogData = null; // /api/catalog: the providers and their models, with each model's kind

function move(index, by) {
  const to = index + by;
  if (to < 0 || to >= entries.length) return;
  const [entry] = entries.splice(index, 1);
  entries.splice(to, 0, entry);
  save(`Moved ${entry.target} to position ${to + 1}.`, entry.target, by < 0 ? "up" : "down");
}

function item(entry, index) {
  const servable = entry.servable_now
    ? el("span", { class: "badge ok" }, "can serve now")
    : el("span", { class: "badge warn" }, entry.keys ? (entry.retry_at ? `free at ${fmt.clock(entry.retry_at)}` : "no capacity now") : "no key");
  const last = entries.length - 1;
  return el("li", { class: entry.enabled ? "" : "off", "data-target": entry.target },
    el("span", { class: "handle", "aria-hidden": "true", title: "Drag to reorder" }, "⠿"),
    el("span", { class: "target" }, entry.target),
    servable,
    el("label", {}, el("input", { type: "checkbox", checked: entry.enabled,
      onchange: (e) => { entry.enabled = e.target.checked; save(`${entry.target} ${entry.enabled ? "enabled" : "disabled"}.`); } }), "enabled"),
    el("button", { type: "button", class: "small quiet", "data-move": "up", "aria-label": `Move ${entry.target} up`, disabled: index === 0, onclick: () => move(index, -1) }, "↑"),
    el("button", { type: "button", class: "small quiet", "data-move": "down", "aria-label": `Move ${entry.target} down`, disabled: index === last, onclick: () => move(index, 1) }, "↓"),
    el("button", { type: "button", class: "small danger", "aria-label": `Remove ${entry.target} from the chain`, disabled: entries.length === 1,
      onclick: () => { entries.splice(index, 1); save(`Removed ${entry.target}.`); } }, "✕"));
}

function render(focusTarget, focusMove) {
  const list = document.getElementById("chain");
  list.replaceChildren(...entries.map(item));
  if (focusTarget) {
    const button = list.querySelector(`li[data-target="${CSS.escape(focusTarget)}"] button[data-move="${focusMove}"]`);
    if (button && !button.disabled) button.focus();
    else { const other = list.querySelector(`li[data-target="${CSS.escape(focusTarget)}"] button[data-move]:not([disabled])`); if (other) other.focus(); }
  }
}

async function save(message, focusTarget, focusMove) {
  render(focusTarget, focusMove);
  const body = { name: chainName, entries: entries.map((e) => ({ target: e.target, enabled: e.enabled })) };
  const saved = await attempt(() => api("PUT", "/api/chain", body));
  if (saved) {
    entries = saved.data;
    say(message + " Saved.");
    render(focusTarget, focusMove);
  } else {
    await load();
  }
}

function chainQuery(name) {
  return name === "auto" ? "" : `?name=${encodeURIComponent(name)}`;
}

async function load() {
  const chain = await api("GET", `/api/chain${chainQuery(chainName)}`);
  entries = chain.data;
  const select = document.getElementById("chain-name");
  select.replaceChildren(...chain.chains.map((name) =>
    el("option", { value: name, selected: name === chainName }, name === "auto" ? "auto (the default)" : `auto:${name}`)));
  document.getElementById("chain-model").textContent = chainName === "auto" ? "auto" : `auto:${chainName}`;
  document.getElementById("remove-chain").hidden = chainName === "auto";
  fillModels();
  render();
}

// The models a chain may hold: embedding models in one of embeddings, chat models in any other.
function kindOf(name, chain) {
  if (chain.length && catalogData) {
    const first = catalogData.providers.flatMap((p) => p.models).find((m) => m.target === chain[0].target);
    if (first) return first.kind;
  }
  return name === "embeddings" ? "embedding" : "chat";
}

function modelOptions(kind) {
  return catalogData.providers
    .map((p) => ({ p, models: p.models.filter((m) => m.kind === kind) }))
    .filter(({ models }) => models.length)
    .map(({ p, models }) => el("optgroup", { label: `${p.name}${p.keys ? "" : " (no key)"}` },
      models.map((m) => el("option", { value: m.target }, m.target))));
}

function fillModels() {
  if (!catalogData) return;
  document.getElementById("add-model").replaceChildren(...modelOptions(kindOf(chainName, entries)));
  const name = document.getElementById("new-chain-name").value;
  document.getElementById("new-chain-model").replaceChildren(...modelOptions(name === "embeddings" ? "embedding" : "chat"));
}

async function show(name) {
  chainName = name;
  history.replaceState(null, "", `/chain${chainQuery(name)}`);
  await attempt(load);
}

Sortable.create(document.getElementById("chain"), {
  handle: ".handle",
  animation: 120,
  onEnd(event) {
    if (event.oldIndex === event.newIndex) return;
    const [entry] = entries.splice(event.oldIndex, 1);
    entries.splice(event.newIndex, 0, entry);
    save(`Moved ${entry.target} to position ${event.newIndex + 1}.`);
  },
});

document.getElementById("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const target = document.getElementById("add-model").value;
  if (entries.some((e) => e.target === target)) { say(`${target} is already in the chain.`, true); return; }
  entries.push({ target, enabled: true });
  save(`Added ${target}.`);
});

for (const button of document.querySelectorAll("[data-preset]")) {
  button.addEventListener("click", async () => {
    const query = chainName === "auto" ? "" : `?chain=${encodeURIComponent(chainName)}`;
    const catalog = await attempt(() => api("GET", `/api/catalog${query}`));
    if (!catalog) return;
    const order = catalog.presets[button.dataset.preset];
    const rank = new Map(order.map((t, i) => [t, i]));
    entries = [...entries].sort((a, b) => (rank.get(a.target) ?? Infinity) - (rank.get(b.target) ?? Infinity));
    save(`Chain ordered: ${button.textContent.toLowerCase()}.`);
  });
}

document.getElementById("chain-name").addEventListener("change", (event) => show(event.target.value));

document.getElementById("remove-chain").addEventListener("click", async () => {
  const name = chainName;
  if (!confirm(`Remove the chain auto:${name}? Requests for auto:${name} will get a 404.`)) return;
  const removed = await attempt(() => api("DELETE", `/api/chain?name=${encodeURIComponent(name)}`));
  if (removed) {
    say(`Removed the chain auto:${name}.`);
    await show("auto");
  }
});

document.getElementById("new-chain-name").addEventListener("input", fillModels);

document.getElementById("new-chain").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = document.getElementById("new-chain-name").value.trim();
  const target = document.getElementById("new-chain-model").value;
  const body = { name, entries: [{ target, enabled: true }] };
  const made = await attempt(() => api("PUT", "/api/chain", body));
  if (made) {
    say(`Created the chain auto:${name}.`);
    document.getElementById("new-chain").reset();
    await show(name);
  }
});
for (const radio of document.querySelectorAll('input[name="strategy"]')) {
  radio.addEventListener("change", async () => {
    const saved = await attempt(() => api("PUT", "/api/strategy", { strategy: radio.value }));
    if (saved) say(`Routing by ${saved.strategy === "chain" ? "chain order" : "capacity"}. Saved.`);
    const current = saved || await attempt(() => api("GET", "/api/strategy"));
    if (current) for (const r of document.querySelectorAll('input[name="strategy"]')) r.checked = r.value === current.strategy;
  });
}

(async () => {
  catalogData = await attempt(() => api("GET", "/api/catalog"));
  await attempt(load);
  ready();
})();
