// freellm dashboard: what every page shares. Plain JavaScript, no build step.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

// One call of the JSON /api. Throws an Error carrying the server's message; a lost session
// sends the user to the login page.
async function api(method, path, body) {
  const init = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && !path.startsWith("/api/login")) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
    throw new Error("Logged out.");
  }
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

// A DOM element: el("td", {class: "num"}, "12"). Text is always text, never HTML.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function say(message, isError) {
  const status = document.getElementById("status");
  status.textContent = message || "";
  status.classList.toggle("error", Boolean(isError));
}

// Run an action; show its error instead of losing it.
async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    say(error.message, true);
    return undefined;
  }
}

const fmt = {
  num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString(); },
  pct(x) { return x === null || x === undefined ? "–" : (x * 100).toFixed(x >= 0.999 || x === 0 ? 0 : 1) + "%"; },
  ms(x) { return x === null || x === undefined ? "–" : x < 1000 ? Math.round(x) + " ms" : (x / 1000).toFixed(2) + " s"; },
  time(epoch) { return epoch ? new Date(epoch * 1000).toLocaleString() : "–"; },
  clock(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "–"; },
  ago(epoch) {
    if (!epoch) return "never";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  },
  left(epoch) {
    const s = Math.max(0, Math.round(epoch - Date.now() / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  },
};

function stat(label, value, note) {
  return el("div", { "data-stat": label }, el("dt", {}, label), el("dd", {}, value, note ? el("small", {}, " " + note) : null));
}

// The server-sent event stream: handlers by event name ("quotas", "request").
function live(handlers, onState) {
  const source = new EventSource("/api/events");
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  }
  if (onState) {
    source.addEventListener("open", () => onState(true));
    source.addEventListener("error", () => onState(false));
  }
  return source;
}

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    await attempt(() => api("POST", "/api/logout"));
    sessionStorage.removeItem("freellm-key");
    location.href = "/login";
  });
}

// Tests (and anyone curious) can tell when a page has shown its first data.
function ready() {
  document.body.dataset.ready = "true";
}
