// driftloop console: the live timeline (server-sent events) and the control buttons.
// Plain JavaScript, no build step; the API token is kept in this tab's sessionStorage only.
"use strict";

function followTimeline() {
  const table = document.getElementById("timeline");
  if (!table || !table.dataset.events) return;
  const body = table.tBodies[0];
  const badge = document.getElementById("live-state");
  const source = new EventSource(table.dataset.events);
  source.addEventListener("entry", (e) => {
    body.insertAdjacentHTML("afterbegin", e.data);
    body.rows[0].classList.add("new");
  });
  source.onopen = () => { if (badge) { badge.textContent = "live"; badge.classList.remove("off"); } };
  source.onerror = () => { if (badge) { badge.textContent = "reconnecting"; badge.classList.add("off"); } };
}

function controls() {
  const form = document.getElementById("control");
  if (!form) return;
  const out = document.getElementById("control-result");
  const token = form.elements.namedItem("token");
  if (token) token.value = sessionStorage.getItem("driftloop-token") || "";
  const actor = form.elements.namedItem("actor");
  actor.value = sessionStorage.getItem("driftloop-actor") || "";
  form.addEventListener("submit", (e) => e.preventDefault());
  for (const button of form.querySelectorAll("button[name=action]")) {
    button.addEventListener("click", async () => {
      const action = button.value;
      const version = form.elements.namedItem("version").value.trim();
      const headers = { "Content-Type": "application/json" };
      if (token && token.value) {
        sessionStorage.setItem("driftloop-token", token.value);
        headers.Authorization = "Bearer " + token.value;
      }
      sessionStorage.setItem("driftloop-actor", actor.value);
      const body = { action, reason: form.elements.namedItem("reason").value || null, actor: actor.value || null };
      if (action === "rollback") body.to = version || null;
      else if (action !== "pause" && action !== "resume") body.version = version || null;
      out.className = ""; out.textContent = action + "…";
      for (const b of form.querySelectorAll("button")) b.disabled = true;
      try {
        const resp = await fetch(`/ui/models/${encodeURIComponent(form.dataset.model)}/control`, {
          method: "POST", headers, body: JSON.stringify(body),
        });
        const answer = await resp.json().catch(() => ({}));
        if (resp.ok) {
          const r = answer.rollout || {};
          out.className = "good";
          out.textContent = `${action}: version ${r.version} ${r.state}${r.state === "canary" ? " " + r.weight + "%" : ""}${r.paused ? " (paused)" : ""}`;
          setTimeout(() => location.reload(), 1200);
        } else {
          out.className = "bad";
          out.textContent = `${action} refused (${resp.status}): ${typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail || answer)}`;
        }
      } catch (err) {
        out.className = "bad"; out.textContent = `${action} failed: ${err}`;
      } finally {
        for (const b of form.querySelectorAll("button")) b.disabled = false;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => { followTimeline(); controls(); });
