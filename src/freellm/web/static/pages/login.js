"use strict";
ready();
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  const done = await attempt(() => api("POST", "/api/login", { token }));
  if (!done) return;
  // Kept for this tab only, so that the Keys page can copy it; never sent back by the server.
  sessionStorage.setItem("freellm-key", token);
  const next = new URLSearchParams(location.search).get("next") || "/";
  location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
});
