// Progressive enhancement only: every page works without this script. While an agent thinks, say so and keep the
// form from being sent twice.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const ask = document.getElementById("ask");
  if (!ask) return;
  ask.addEventListener("submit", () => {
    const button = ask.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    const status = document.getElementById("streaming");
    if (status) status.textContent = "The agent is working on your question…";
  });
});
