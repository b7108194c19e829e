// pullgate's status page: refreshes the live parts every 2 s from /status/api/*, and
// streams the doctor's hops. The page reads without it. Text goes in as text (never as
// HTML): names come from clients.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function bytes(n) {
    let v = n, u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? n + " B" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + units[u];
  }
  function span(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    s %= 60;
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s";
  }
  function ago(ms, now) {
    return span(Math.max(0, Math.floor((now - ms) / 1000))) + " ago";
  }
  function short(d) {
    const i = d.indexOf(":");
    return i > 0 && d.length - i > 13 ? d.slice(0, i + 13) + "\u2026" : d;
  }
  function row(cells, head) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement(i === 0 && head ? "th" : "td");
      if (i === 0 && head) td.scope = "row";
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(body, rows, empty, cols) {
    if (!body) return;
    body.replaceChildren(...rows);
    if (!rows.length && empty) {
      const tr = row([empty]);
      tr.className = "empty";
      tr.firstChild.colSpan = cols;
      body.appendChild(tr);
    }
  }
  // Absolute URLs from the origin: a page opened as http://user:pw@host/ has a base URL
  // with credentials, and fetch refuses any URL that resolves to one.
  const api = location.origin + "/status/api/";
  async function get(part) {
    const r = await fetch(api + part, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(part + ": " + r.status);
    return r.json();
  }
  function fillsRows(fills) {
    return fills.map((f) => {
      const size = f.size === null ? "?" : bytes(f.size);
      const bar = document.createElement("progress");
      if (f.size !== null) { bar.max = f.size; bar.value = f.bytes; }
      bar.setAttribute("aria-label", f.repo + " " + f.digest + ": " + bytes(f.bytes) + " of " + size);
      const cell = document.createElement("span");
      cell.append(bar, " " + bytes(f.bytes) + " / " + size);
      const tr = row([f.upstream + "/" + f.repo, short(f.digest), cell, bytes(f.rate) + "/s", String(f.clients),
        f.from_peer ? "peer " + f.from_peer : "upstream"], true);
      tr.dataset.digest = f.digest;
      tr.children[4].className = "num clients";
      return tr;
    });
  }
  function egressRows(u, now) {
    return u.hosts.map((h) => {
      const f = h.last_failure;
      const tr = row([h.host, h.role, h.last_success_ms ? ago(h.last_success_ms, now) : "never",
        f ? ago(f.at_ms, now) : "none", f ? f.phase : "", f ? f.cause : "", f ? f.remedy : "",
        h.failures_last_hour + " of " + h.requests_last_hour], true);
      tr.dataset.host = h.host;
      ["", "", "", "", "phase", "cause", "remedy", "num"].forEach((c, i) => { if (c) tr.children[i].className = c; });
      if (f && (!h.last_success_ms || h.last_success_ms < f.at_ms)) tr.className = "failing";
      return tr;
    });
  }
  async function refresh() {
    try {
      const [summary, fills, egress, pulls, fleet] = await Promise.all(
        ["summary", "fills", "egress", "pulls", "fleet"].map(get));
      const now = summary.now_ms;
      $("uptime").textContent = span(summary.uptime_s);
      $("updated").textContent = new Date(now).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
      fill($("fills-body"), fillsRows(fills), "No fill is running.", 6);
      egress.forEach((u, i) => {
        fill($("egress-body-" + i), egressRows(u, now));
        const p = $("paused-" + i);
        if (p) p.textContent = u.paused_for_s ? " \u2014 requests paused for " + u.paused_for_s + " s after repeated failures" : "";
      });
      fill($("pulls-body"), pulls.recent.map((r) => row([ago(r.at_ms, now), r.name, short(r.reference),
        r.client + (r.user ? " (" + r.user + ")" : ""), r.cache, String(r.status), bytes(r.bytes)])),
        "Nothing pulled yet.", 7);
      fill($("top-body"), pulls.top_last_hour.map((t) => row([t.name, bytes(t.bytes)], true)));
      fill($("fleet-body"), fleet.members.map((m) => {
        const tr = row([m.name, m.state], true);
        if (m.state === "down") tr.className = "down";
        return tr;
      }));
      const c = summary.cache;
      const usage = $("usage");
      if (usage) usage.value = c.usage_bytes;
      $("usage-text").textContent = c.max_size_bytes === null ? bytes(c.usage_bytes) + ", no max_size set"
        : bytes(c.usage_bytes) + " of " + bytes(c.max_size_bytes);
      $("objects").textContent = c.blobs + " blobs, " + c.manifests + " manifests, " + c.tags + " tags";
      $("hit-ratio").textContent = summary.hit_ratio_last_hour === null ? "no lookups yet"
        : (summary.hit_ratio_last_hour * 100).toFixed(1) + " %";
      $("served").textContent = bytes(summary.served_bytes_last_hour);
      $("evictions").textContent = String(summary.evictions_last_hour);
      document.body.dataset.refreshed = String(now);
    } catch (e) {
      document.body.dataset.refreshError = String(e);
    }
  }
  async function doctor(form, event) {
    event.preventDefault();
    const list = $(form.dataset.hops);
    const button = form.querySelector("button");
    list.replaceChildren();
    button.disabled = true;
    try {
      const r = await fetch(api + "doctor/" + form.action.split("/status/doctor/")[1],
        { method: "POST", credentials: "same-origin" });
      if (!r.ok) { list.append(row([await r.text()])); return; }
      const reader = r.body.getReader();
      const text = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += text.decode(value, { stream: true });
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const item = JSON.parse(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
          const li = document.createElement("li");
          if (item.done) {
            li.textContent = item.passed ? "Every hop passed." : "A hop failed: its remedy says what to do.";
          } else {
            li.className = item.passed ? "passed" : "failed";
            const phase = document.createElement("strong");
            phase.textContent = item.phase;
            li.append(phase, " " + item.target + ": " + item.detail + (item.remedy ? " \u2014 " + item.remedy : ""));
          }
          list.appendChild(li);
        }
      }
    } finally {
      button.disabled = false;
    }
  }
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form.doctor").forEach((f) => f.addEventListener("submit", (e) => doctor(f, e)));
    setInterval(refresh, 2000);
  });
})();
