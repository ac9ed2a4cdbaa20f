"use strict";
let catalog = { providers: [] };

function confirmed(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function showHint() {
  const provider = catalog.providers.find((p) => p.id === document.getElementById("provider").value);
  const hint = document.getElementById("hint");
  if (!provider) { hint.textContent = ""; return; }
  const where = provider.key_hint.url
    ? [" Get one at ", el("a", { href: provider.key_hint.url, target: "_blank", rel: "noopener" }, provider.key_hint.url), "."]
    : [];
  hint.replaceChildren(`${provider.name}: ${provider.key_hint.looks_like}.`, ...where);
}

function keyRow(key) {
  const name = key.label ? `${key.label} (${key.provider})` : key.provider;
  const health = el("td", {}, el("span", { class: `badge ${key.health}` }, key.health),
    el("div", { class: "hint" }, `checked ${fmt.ago(key.last_check)}`),
    key.last_error ? el("div", { class: "hint bad" }, key.last_error) : null);
  const toggle = el("input", { type: "checkbox", checked: key.enabled, "aria-label": `Enabled: ${name} ${key.id}`,
    onchange: (e) => change(key, { enabled: e.target.checked }) });
  return el("tr", { "data-key": key.id },
    el("td", {}, el("strong", {}, name), el("div", { class: "hint" }, el("code", {}, key.id), key.secret_tail ? ` · ${key.secret_tail}` : "")),
    health,
    el("td", { class: "num" }, `${fmt.num(key.today.requests)} req`, el("div", { class: "hint" }, `${fmt.num(key.today.tokens)} tokens`)),
    el("td", {}, el("label", { class: "toggle" }, toggle, " enabled")),
    el("td", {}, el("div", { class: "row" },
      el("button", { type: "button", class: "small quiet", "aria-label": `Check now: ${name} ${key.id}`, onclick: () => check(key) }, "Check now"),
      el("button", { type: "button", class: "small quiet", "aria-label": `Edit ${name} ${key.id}`, onclick: () => edit(key) }, "Edit"),
      el("button", { type: "button", class: "small danger", "aria-label": `Remove ${name} ${key.id}`, onclick: () => remove(key, name) }, "Remove"))));
}

async function load() {
  const keys = await api("GET", "/api/keys");
  document.querySelector("#keys tbody").replaceChildren(...keys.data.map(keyRow));
  document.getElementById("no-keys").hidden = keys.data.length > 0;
  return keys.data;
}

async function change(key, patch) {
  const done = await attempt(() => api("PATCH", `/api/keys/${key.id}`, patch));
  if (done) say(`Key ${key.id} saved.`);
  await attempt(load);
}

async function check(key) {
  say(`Checking ${key.id}…`);
  const result = await attempt(() => api("POST", `/api/keys/${key.id}/check`));
  if (result) say(`Key ${key.id}: ${result.health}${result.last_error ? " (" + result.last_error + ")" : ""}.`);
  await attempt(load);
}

function edit(key) {
  const dialog = document.getElementById("edit");
  document.getElementById("edit-label").value = key.label;
  document.getElementById("edit-secret").value = "";
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "ok") return;
    const patch = { label: document.getElementById("edit-label").value };
    const secret = document.getElementById("edit-secret").value.trim();
    if (secret) patch.secret = secret;
    await change(key, patch);
  }, { once: true });
  dialog.showModal();
}

async function remove(key, name) {
  if (!(await confirmed(`Remove the ${name} key ${key.id}? Routing stops using it at once.`))) return;
  if (await attempt(() => api("DELETE", `/api/keys/${key.id}`))) say(`Key ${key.id} removed.`);
  await attempt(load);
}

document.getElementById("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    provider: document.getElementById("provider").value,
    secret: document.getElementById("secret").value,
    label: document.getElementById("label").value,
  };
  const added = await attempt(() => api("POST", "/api/keys", body));
  if (!added) return;
  event.target.reset();
  showHint();
  say(`Key ${added.id} added; checking it…`);
  await attempt(load);
  // The server checks a new key at once: show its health when the check is done.
  for (let i = 0; i < 20; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const keys = await attempt(load);
    const key = keys && keys.find((k) => k.id === added.id);
    if (key && key.last_check) { say(`Key ${added.id}: ${key.health}.`); break; }
  }
});

async function showUnified() {
  const token = await api("GET", "/api/token");
  document.getElementById("unified-masked").textContent = "freellm-" + token.masked;
  document.getElementById("base-url").textContent = `${location.origin}/v1`;
  document.getElementById("copy-unified").disabled = !sessionStorage.getItem("freellm-key");
}

document.getElementById("copy-unified").addEventListener("click", async () => {
  const key = sessionStorage.getItem("freellm-key");
  if (!key) { say("Log in again in this tab to copy the key, or run `freellm token`.", true); return; }
  try {
    await navigator.clipboard.writeText(key);
    say("Unified key copied.");
  } catch (error) {
    say("The browser refused the clipboard: select the key by hand.", true);
  }
});

document.getElementById("regenerate").addEventListener("click", async () => {
  if (!(await confirmed("Regenerate the unified key? Every client using the old key stops working, and you will be logged out."))) return;
  const result = await attempt(() => api("POST", "/api/token/regenerate"));
  if (!result) return;
  sessionStorage.setItem("freellm-key", result.token);
  document.getElementById("unified-value").textContent = result.token;
  document.getElementById("unified-new").hidden = false;
  say("New key made: copy it now, then log in again with it.");
  document.querySelectorAll("button, input, select").forEach((n) => { if (n.id !== "copy-unified") n.disabled = true; });
  document.getElementById("copy-unified").disabled = false;
  const relog = el("a", { href: "/login", id: "relogin" }, "Log in with the new key");
  document.getElementById("unified-new").after(el("p", {}, relog));
});

(async () => {
  catalog = await attempt(() => api("GET", "/api/catalog")) || catalog;
  const select = document.getElementById("provider");
  select.replaceChildren(...catalog.providers.map((p) => el("option", { value: p.id }, `${p.name} (${p.id})`)));
  select.addEventListener("change", showHint);
  showHint();
  await attempt(load);
  await attempt(showUnified);
  ready();
})();
