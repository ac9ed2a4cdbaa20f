"use strict";
// The playground goes through the same dispatch as /v1 (POST /api/chat/completions, with the
// session instead of the bearer key), streaming, and shows how each reply was routed.
let history = [];
let session = newSession();
let controller = null;

function newSession() {
  const id = "pg-" + crypto.randomUUID().slice(0, 8);
  document.getElementById("session").textContent = id;
  return id;
}

function bubble(role, text) {
  const node = el("li", { class: role }, el("div", { class: "text" }, text));
  document.getElementById("messages").append(node);
  return node;
}

function describeTrail(trail) {
  if (!trail) return null;
  return trail.split(",").map((step) => {
    const [target, outcome] = step.split("=");
    return outcome === "ok" ? `${target} answered` : `${target} passed over (${outcome})`;
  }).join("; ");
}

async function send(prompt) {
  const messages = [];
  const system = document.getElementById("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history, { role: "user", content: prompt });
  bubble("user", prompt);
  const reply = bubble("assistant", "");
  const text = reply.querySelector(".text");
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  controller = new AbortController();
  document.getElementById("stop").disabled = false;
  document.getElementById("send").disabled = true;
  let answer = "";
  let response;
  try {
    response = await fetch("/api/chat/completions", {
      method: "POST",
      signal: controller.signal,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "X-Session-Id": session },
      body: JSON.stringify({ model: document.getElementById("model").value, messages, stream: true,
        stream_options: { include_usage: true } }),
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error((data && data.error && data.error.message) || response.statusText);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") continue;
          const chunk = JSON.parse(payload);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (firstToken === null) firstToken = performance.now() - started;
            answer += delta.content;
            text.textContent = answer;
          }
        }
      }
    }
    history.push({ role: "user", content: prompt }, { role: "assistant", content: answer });
  } catch (error) {
    reply.classList.add("bad");
    text.textContent = answer + (answer ? "\n" : "") + (error.name === "AbortError" ? "(stopped)" : `Error: ${error.message}`);
  }
  const total = performance.now() - started;
  const headers = response ? response.headers : new Headers();
  const attempts = Number(headers.get("x-fallback-attempts") || 0);
  const trail = describeTrail(headers.get("x-fallback-trail"));
  reply.append(el("div", { class: "meta" },
    el("span", { class: "routed" }, `via ${headers.get("x-routed-via") || "–"}`),
    ` · first token ${fmt.ms(firstToken)} · total ${fmt.ms(total)}`,
    usage ? ` · ${fmt.num(usage.prompt_tokens)} tokens in / ${fmt.num(usage.completion_tokens)} out` : "",
    ` · ${attempts} fallback${attempts === 1 ? "" : "s"}`,
    trail ? el("div", { class: "trail" }, `Trail: ${trail}`) : null));
  controller = null;
  document.getElementById("stop").disabled = true;
  document.getElementById("send").disabled = false;
}

document.getElementById("chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = document.getElementById("prompt");
  const value = prompt.value.trim();
  if (!value || controller) return;
  prompt.value = "";
  send(value);
});
document.getElementById("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) document.getElementById("chat").requestSubmit();
});
document.getElementById("stop").addEventListener("click", () => controller && controller.abort());
document.getElementById("new-chat").addEventListener("click", () => {
  history = [];
  document.getElementById("messages").replaceChildren();
  session = newSession();
});

(async () => {
  const catalog = await attempt(() => api("GET", "/api/catalog"));
  const select = document.getElementById("model");
  const options = [el("option", { value: "auto" }, "auto (the fallback chain)")];
  if (catalog) {
    const plain = new Set();
    for (const p of catalog.providers) {
      if (!p.keys) continue;
      for (const m of p.models) { options.push(el("option", { value: m.target }, m.target)); plain.add(m.id); }
    }
    for (const id of plain) options.push(el("option", { value: id }, `${id} (any provider)`));
  }
  select.replaceChildren(...options);
  ready();
})();
