"use strict";
let entries = []; // [{target, enabled, servable_now, keys, retry_at}]
let presets = {};

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
  const body = { entries: entries.map((e) => ({ target: e.target, enabled: e.enabled })) };
  const saved = await attempt(() => api("PUT", "/api/chain", body));
  if (saved) {
    entries = saved.data;
    say(message + " Saved.");
    render(focusTarget, focusMove);
  } else {
    await load();
  }
}

async function load() {
  const chain = await api("GET", "/api/chain");
  entries = chain.data;
  render();
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
    const catalog = await attempt(() => api("GET", "/api/catalog"));
    if (!catalog) return;
    const order = catalog.presets[button.dataset.preset];
    const byTarget = new Map(entries.map((e) => [e.target, e]));
    entries = order.map((t) => byTarget.get(t)).filter(Boolean);
    save(`Chain ordered: ${button.textContent.toLowerCase()}.`);
  });
}

for (const radio of document.querySelectorAll('input[name="strategy"]')) {
  radio.addEventListener("change", async () => {
    const saved = await attempt(() => api("PUT", "/api/strategy", { strategy: radio.value }));
    if (saved) say(`Routing by ${saved.strategy === "chain" ? "chain order" : "capacity"}. Saved.`);
    const current = saved || await attempt(() => api("GET", "/api/strategy"));
    if (current) for (const r of document.querySelectorAll('input[name="strategy"]')) r.checked = r.value === current.strategy;
  });
}

(async () => {
  await attempt(load);
  const catalog = await attempt(() => api("GET", "/api/catalog"));
  if (!catalog) return;
  const select = document.getElementById("add-model");
  select.replaceChildren(...catalog.providers.map((p) =>
    el("optgroup", { label: `${p.name}${p.keys ? "" : " (no key)"}` }, p.models.map((m) => el("option", { value: m.target }, m.target)))));
  ready();
})();
