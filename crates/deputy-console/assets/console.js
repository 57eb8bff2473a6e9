// Progressive enhancement only: every page works without this script. With it, a question to an agent is sent to
// the form's `data-stream` address and the answer is shown while the agent writes it; when it is recorded, the
// conversation's page (with what ran for the answer and its sources) replaces this one.
"use strict";

function showError(form, message) {
  let notice = form.querySelector("p.error");
  if (!notice) {
    notice = document.createElement("p");
    notice.className = "error";
    notice.setAttribute("role", "alert");
    form.insertBefore(notice, form.firstChild);
  }
  notice.textContent = message;
}

async function streamAnswer(form, status) {
  const response = await fetch(form.dataset.stream, {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    credentials: "same-origin",
  });
  if (!response.ok || !response.body) {
    throw new Error(`Deputy refused the question (HTTP ${response.status}); reload the page and try again.`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const event = JSON.parse(line.slice(5));
        if (event.error) throw new Error(event.error);
        if (event.text !== undefined) status.textContent = event.text;
        if (event.done) {
          window.location.assign(event.done);
          return;
        }
      }
    }
  }
  throw new Error("The answer ended before it was recorded; reload the page.");
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("ask");
  if (!form || !form.dataset.stream || !window.fetch || !window.ReadableStream) return;
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const status = document.getElementById("streaming");
    button.disabled = true;
    status.textContent = "The agent is working on your question…";
    streamAnswer(form, status).catch((error) => {
      status.textContent = "";
      showError(form, error.message);
      button.disabled = false;
    });
  });
});
