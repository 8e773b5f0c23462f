// Vigil's status page (docs/ui.md). Plain JS, no build step, nothing fetched from elsewhere.
// Snapshots: one JSON-RPC batch on POST rpc every POLL_MS (and soon after pushed events,
// throttled); push: events.subscribe on the WebSocket at ws. The token, when the server wants
// one, lives in sessionStorage and goes in the Authorization header (the WebSocket carries it
// as a subprotocol, as browsers cannot set headers there).
"use strict";
(() => {
  const POLL_MS = 2000;       // snapshot period
  const MIN_GAP_MS = 1000;    // at most one event-driven refresh per second
  const PAGE = 50;            // instance rows in the DOM, at most
  const FEED_MAX = 300;       // event rows in the DOM, at most
  const SAMPLES = 60;         // chart points (two minutes at POLL_MS)
  const TOKEN_KEY = "vigil.token";
  const STATE_ORDER = { active: 0, suspect: 1, expired: 2, unregistered: 3 };
  const SYMBOL = { active: "●", suspect: "◐", expired: "✕", unregistered: "–" };
  const EVENT_TYPES = [
    "instance.registered", "instance.suspect", "instance.expired", "instance.unregistered",
    "leader.elected", "leader.vacant", "task.created", "task.claimed", "task.completed",
    "task.failed", "task.reassigned", "task.withdrawn", "task.assigned", "task.unassigned",
    "task.updated", "task.deleted", "lease.acquired", "lease.released", "lease.expired",
  ];

  const $ = (id) => document.getElementById(id);
  const natural = new Intl.Collator(undefined, { numeric: true }); // worker-9 before worker-10
  // What the page received, last few answers and frames: for tests and for a curious operator.
  const seen = (window.vigilDebug = { answers: [], frames: [], calls: 0, batches: 0 });
  // Sizes of the event feed's memory (ids seen, events held while paused): bounded.
  Object.defineProperty(seen, "feedMemory", { get: () => ({ seen: feedSeen.size, held: held.length, feed: feed.length }) });
  const keep = (list, item, max) => { list.push(item); if (list.length > max) list.shift(); };

  let token = sessionStorage.getItem(TOKEN_KEY);
  let needToken = false;
  let skew = 0;               // server clock minus ours, ms
  let snapshot = null;        // the last get_state answer
  let pages = [];             // `after` cursors of the pages before this one
  let after = null;           // this page's cursor: what the next poll asks for
  let shownAfter = null, shownPage = 0; // the cursor and page index `snapshot` answered
  let sortKey = "id", sortDir = 1;
  let timer = null, nextAt = 0, inFlight = false, queued = false, lastPoll = 0;
  let rpcId = 0;

  class AuthError extends Error {}

  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    e.append(...children.filter((c) => c !== null && c !== undefined));
    return e;
  };
  const now = () => Date.now() + skew;
  const secs = (ms) => (ms < 0 ? "-" : "") + fmtDur(Math.abs(ms));
  function fmtDur(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
    return Math.floor(ms / 3600000) + " h " + Math.floor((ms % 3600000) / 60000) + " min";
  }
  const ago = (ms) => (ms == null ? "—" : fmtDur(Math.max(0, now() - ms)) + " ago");
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  // ---- JSON-RPC over POST rpc ----
  async function batch(calls) {
    const body = calls.map(([method, params]) => ({ jsonrpc: "2.0", method, params, id: ++rpcId }));
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch("rpc", { method: "POST", headers, body: JSON.stringify(body), cache: "no-store" });
    seen.calls += calls.length; seen.batches += 1;
    if (res.status === 401) throw new AuthError("the server wants a token");
    if (!res.ok) throw new Error("HTTP " + res.status + ": " + (await res.text()).slice(0, 200));
    const text = await res.text();
    keep(seen.answers, text, 20);
    const byId = new Map(JSON.parse(text).map((a) => [a.id, a]));
    return body.map((req) => {
      const a = byId.get(req.id);
      if (!a) throw new Error("no answer for " + req.method);
      if (a.error) throw new Error(req.method + ": " + a.error.message);
      return a.result;
    });
  }

  // ---- snapshots ----
  function schedule(delay) {
    if (needToken) return;
    const at = Date.now() + delay;
    if (timer !== null && nextAt <= at) return;
    clearTimeout(timer);
    nextAt = at;
    timer = setTimeout(() => { timer = null; poll(); }, delay);
  }
  function nudge() { // after a pushed event: refresh soon, at most once per MIN_GAP_MS
    if (inFlight) { queued = true; return; }
    schedule(Math.max(200, MIN_GAP_MS - (Date.now() - lastPoll)));
  }

  async function poll() {
    if (inFlight || needToken) return;
    inFlight = true; queued = false; lastPoll = Date.now();
    const stateParams = { limit: PAGE, taskLimit: 0 };
    // The cursor asked with: a page click while this is in flight moves `after`, and the answer
    // for the old cursor is then not drawn as the new page (the poll after it fetches that).
    const asked = after;
    if (asked) stateParams.after = asked;
    try {
      const [state, oldest, claimed, failed, leases, health, metrics] = await batch([
        ["system.get_state", stateParams],
        ["task.list", { status: "pending", orderBy: "createdAt", order: "asc", limit: 1 }],
        ["task.list", { status: "in_progress", orderBy: "updatedAt", order: "desc", limit: 10 }],
        ["task.list", { status: "failed", orderBy: "updatedAt", order: "desc", limit: 10 }],
        ["lease.list", { limit: 20 }],
        ["system.health", {}],
        ["system.metrics", { detailed: true }],
      ]);
      if (typeof state.nowMs === "number") skew = state.nowMs - Date.now();
      renderHeader(state, health, metrics);
      if (asked === after) {
        snapshot = state; shownAfter = asked; shownPage = pages.length;
        renderInstances();
      }
      renderTasks(state, oldest, claimed, failed);
      renderLeases(leases);
      mergeEvents(state.recentEvents || []);
      renderLeadership(state);
      sample(metrics);
      $("updated").textContent = clock(Date.now());
      ensureSocket();
    } catch (e) {
      if (e instanceof AuthError) askToken(token ? "That token was refused." : "");
      else { $("updated").textContent = "failed: " + e.message; setHealth("unreachable"); }
    } finally {
      inFlight = false;
      if (asked !== after) schedule(0); // a page was clicked meanwhile: fetch it now
      else schedule(queued ? Math.max(200, MIN_GAP_MS - (Date.now() - lastPoll)) : POLL_MS);
    }
  }

  // ---- token ----
  function askToken(message) {
    needToken = true;
    clearTimeout(timer); timer = null;
    closeSocket();
    $("token-form").hidden = false;
    $("main").hidden = true;
    $("token-error").textContent = message;
    $("token-input").focus();
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    $("token-input").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    needToken = false;
    $("token-form").hidden = true;
    $("main").hidden = false;
    poll();
  });

  // ---- header: health, leader, store ----
  function setHealth(status) {
    const h = $("health");
    h.textContent = status;
    h.className = "health-" + status;
  }
  function renderHeader(state, health, metrics) {
    setHealth(health.status);
    const leader = $("leader");
    leader.textContent = state.leader ? "★ " + state.leader : "none";
    leader.dataset.id = state.leader || "";
    $("term").textContent = state.term;
    const s = health.services || {};
    const breaker = { ok: "ok", failing: "failing (breaker closed)", open: "breaker open: writes refused" };
    $("store").textContent = (s.store || "?") + " · " + (breaker[s.storeState] || s.storeState || "?");
    $("pending-writes").textContent = (s.pendingWrites ?? "?") + " (events " + (s.pendingEvents ?? "?") + ")";
    const parts = [];
    const version = health.version ?? s.version;
    if (version) parts.push("v" + version);
    const listen = health.listen ?? s.listen;
    if (listen) parts.push(listen);
    const uptime = health.uptimeMs ?? metrics.uptimeMs;
    if (uptime != null) parts.push("up " + fmtDur(uptime));
    $("server-info").textContent = parts.join(" · ");
  }

  // ---- instances: one page of at most PAGE rows, sorted and filtered here ----
  function instanceRows() {
    const t = now(), grace = snapshot.graceMs ?? 0;
    const text = $("filter").value.trim().toLowerCase();
    const stateWanted = $("state-filter").value;
    const rows = snapshot.instances.map((i) => {
      const alive = i.state === "active" || i.state === "suspect";
      return {
        i, alive,
        left: alive ? i.lastSeenMs + i.ttlMs - t : -Infinity,
        suspectAt: Math.min(grace, i.ttlMs / 2),
        age: t - i.lastSeenMs,
        roles: (i.roles || []).join(", "),
      };
    }).filter((r) => (!stateWanted || r.i.state === stateWanted) &&
      (!text || r.i.id.toLowerCase().includes(text) || r.roles.toLowerCase().includes(text)));
    const key = {
      id: (r) => r.i.id, roles: (r) => r.roles, state: (r) => STATE_ORDER[r.i.state] ?? 9,
      epoch: (r) => r.i.epoch, left: (r) => r.left, age: (r) => r.age,
    }[sortKey];
    const cmp = (a, b) => (typeof a === "string" ? natural.compare(a, b) : a < b ? -1 : a > b ? 1 : 0);
    rows.sort((a, b) => sortDir * cmp(key(a), key(b)) || cmp(a.i.id, b.i.id));
    return rows;
  }
  function deadlineCell(r) {
    if (!r.alive) return el("td", {}, r.i.state);
    const ttl = r.i.ttlMs;
    const bar = el("span", { class: "bar " + r.i.state, "aria-hidden": "true" });
    const fill = el("span", { class: "fill" });
    fill.style.width = Math.max(0, Math.min(100, (100 * r.left) / ttl)) + "%";
    const tick = el("span", { class: "tick" });
    tick.style.left = (100 * r.suspectAt) / ttl + "%";
    bar.append(fill, tick);
    const label = r.left > r.suspectAt ? "suspect in " + secs(r.left - r.suspectAt) : "expires in " + secs(r.left);
    return el("td", { "data-testid": "deadline", title: "TTL " + fmtDur(ttl) }, bar, label);
  }
  function renderInstances() {
    if (!snapshot) return;
    const rows = instanceRows();
    const leader = snapshot.leader;
    $("instances").tBodies[0].replaceChildren(...rows.map((r) => {
      const isLeader = r.i.id === leader;
      return el("tr", {
        "data-testid": "instance-row", "data-id": r.i.id, "data-state": r.i.state,
        "data-leader": isLeader ? "true" : "false", class: isLeader ? "leader" : null,
      },
      el("td", { "data-testid": "instance-id" }, r.i.id,
        isLeader ? el("span", { class: "mark" }, " ★ leader (term " + snapshot.term + ")") : null),
      el("td", { class: "wrap" }, r.roles || "—"),
      el("td", { class: "state-" + r.i.state, "data-testid": "instance-state" }, SYMBOL[r.i.state] + " " + r.i.state),
      el("td", {}, String(r.i.epoch)),
      deadlineCell(r),
      el("td", {}, ago(r.i.lastSeenMs)));
    }));
    const first = shownPage * PAGE;
    const n = snapshot.instances.length;
    $("instance-count").textContent = "(" + snapshot.instanceCount + ")";
    $("page-label").textContent = n === 0 ? "no instances" :
      "page " + (shownPage + 1) + ": " + (first + 1) + "–" + (first + n) + " of " + snapshot.instanceCount +
      (rows.length !== n ? " · " + rows.length + " shown by the filter" : "");
    $("prev-page").disabled = $("first-page").disabled = pages.length === 0;
    $("next-page").disabled = !snapshot.truncated || shownAfter !== after;
  }
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    b.addEventListener("click", () => {
      const k = b.dataset.sort;
      sortDir = k === sortKey ? -sortDir : 1;
      sortKey = k;
      for (const o of document.querySelectorAll("th button[data-sort]")) o.removeAttribute("aria-sort");
      b.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      renderInstances();
    });
  }
  document.querySelector('th button[data-sort="id"]').setAttribute("aria-sort", "ascending");
  $("filter").addEventListener("input", renderInstances);
  $("state-filter").addEventListener("change", renderInstances);
  // `snapshot.nextAfter` is the next page only while the snapshot is this page's: a second
  // click before that page arrives is ignored (it would push the same cursor twice).
  $("next-page").addEventListener("click", () => {
    if (!snapshot || !snapshot.nextAfter || shownAfter !== after) return;
    pages.push(after); after = snapshot.nextAfter; $("next-page").disabled = true; poll();
  });
  $("prev-page").addEventListener("click", () => { if (pages.length) { after = pages.pop(); poll(); } });
  $("first-page").addEventListener("click", () => { pages = []; after = null; poll(); });

  // ---- tasks and leases ----
  const brief = (v) => (v == null ? "—" : typeof v === "string" ? v : JSON.stringify(v)).slice(0, 200);
  function renderTasks(state, oldest, claimed, failed) {
    const counts = state.taskCounts || {};
    for (const k of ["pending", "in_progress", "completed", "failed"]) $("count-" + k).textContent = counts[k] ?? 0;
    const o = oldest.tasks[0];
    $("oldest-pending").textContent = o ? o.id + " · waiting " + ago(o.createdAtMs) + " · priority " + o.priority : "none";
    $("claimed").tBodies[0].replaceChildren(...claimed.tasks.map((t) => el("tr", { "data-testid": "claimed-row", "data-task": t.id },
      el("td", {}, t.id), el("td", { "data-testid": "assignee" }, t.assignedTo || "—"),
      el("td", {}, ago(t.heartbeatAtMs)), el("td", {}, t.attempts + "/" + t.maxAttempts))));
    $("failed").tBodies[0].replaceChildren(...failed.tasks.map((t) => el("tr", { "data-testid": "failed-row", "data-task": t.id },
      el("td", {}, t.id), el("td", { class: "wrap" }, brief(t.error)), el("td", {}, t.attempts + "/" + t.maxAttempts))));
  }
  function holderText(h) {
    if (!h) return "—";
    if (h.kind === "claim") return "claim of " + h.taskId;
    return h.instanceId || h.id || brief(h);
  }
  function renderLeases(leases) {
    $("lease-count").textContent = "(" + leases.total + ")";
    $("leases").tBodies[0].replaceChildren(...leases.leases.map((l) => el("tr", { "data-testid": "lease-row", "data-key": l.key },
      el("td", { class: "wrap" }, l.key), el("td", {}, l.mode), el("td", {}, holderText(l.holder)),
      el("td", {}, String(l.fencingToken)), el("td", {}, secs(l.expiresAtMs - now())))));
  }

  // ---- leadership history: from leader.* events, pushed or in the snapshot ----
  const leadership = new Map(); // seq -> event, newest 20 kept
  function noteLeadership(ev) {
    if (!ev.type.startsWith("leader.")) return;
    leadership.set(ev.seq ?? ev.atMs, ev);
    while (leadership.size > 20) leadership.delete(Math.min(...leadership.keys()));
  }
  function renderLeadership(state) {
    const items = [...leadership.values()].sort((a, b) => (b.seq ?? b.atMs) - (a.seq ?? a.atMs));
    const head = state && state.leadership;
    const current = head ? [el("li", { "data-testid": "leadership-current" },
      "term " + head.term + ": " + (head.leader || "no leader") + " since " + (head.sinceMs ? clock(head.sinceMs) : "—") + " (current)")] : [];
    $("leadership").replaceChildren(...current, ...items.filter((e) => !head || e.term !== head.term || e.type !== "leader.elected").map((e) =>
      el("li", {}, "term " + e.term + ": " + (e.type === "leader.elected" ? e.instanceId + " elected" : "vacant") + " at " + clock(e.atMs))));
  }

  // ---- event feed ----
  const feedSeen = new Set();
  let lastSeq = 0, paused = false, held = [], missed = 0;
  const feed = [];            // newest last, at most FEED_MAX
  const typeSelect = $("event-type");
  for (const t of EVENT_TYPES) typeSelect.append(el("option", { value: t }, t));
  function eventLine(ev) {
    const bits = [];
    if (ev.instanceId) bits.push(ev.instanceId);
    if (ev.epoch != null) bits.push("epoch " + ev.epoch);
    if (ev.taskId) bits.push(ev.taskId);
    if (ev.leaseKey) bits.push("lease " + ev.leaseKey);
    if (ev.fencingToken != null) bits.push("fencing " + ev.fencingToken);
    if (ev.term != null) bits.push("term " + ev.term);
    if (ev.missed != null) bits.push(ev.missed + " missed");
    if (ev.reason) bits.push(brief(ev.reason));
    return el("li", { "data-testid": "event", "data-type": ev.type },
      el("span", { class: "t" }, clock(ev.atMs || Date.now())), el("span", { class: "k" }, ev.type), bits.join(" · "));
  }
  function renderFeed() {
    fresh = [];
    const want = typeSelect.value;
    const list = $("events");
    list.replaceChildren(...feed.filter((e) => !want || e.type === want).reverse().map(eventLine));
  }
  function addEvent(ev) {
    if (ev.seq != null) {
      if (feedSeen.has(ev.seq)) return;
      feedSeen.add(ev.seq);
      lastSeq = Math.max(lastSeq, ev.seq);
    }
    noteLeadership(ev);
    if (paused) {
      held.push(ev); missed += 1;
      // The oldest held event is dropped past FEED_MAX, and so is its id: the dedupe set stays
      // at most the feed plus the held events however long the pause.
      if (held.length > FEED_MAX) feedSeen.delete(held.shift().seq);
      $("feed-state").textContent = "paused, " + held.length + " held" +
        (missed > held.length ? ", " + (missed - held.length) + " dropped" : "");
      return;
    }
    feed.push(ev);
    if (feed.length > FEED_MAX) { const gone = feed.shift(); feedSeen.delete(gone.seq); }
    const want = typeSelect.value;
    if (!want || ev.type === want) keep(fresh, ev, FEED_MAX);
    // A burst (thousands of events a second under load) is drawn ten times a second at most.
    if (!flushing) flushing = setTimeout(flushFeed, 100);
  }
  let fresh = [], flushing = null;
  function flushFeed() {
    flushing = null;
    const list = $("events"), lines = fresh.reverse().map(eventLine);
    fresh = [];
    list.prepend(...lines);
    while (list.children.length > FEED_MAX) list.lastElementChild.remove();
  }
  function mergeEvents(events) { // the snapshot's recent events newer than any seen: missed pushes
    for (const ev of [...events].sort((a, b) => a.seq - b.seq)) if (ev.seq > lastSeq) addEvent(ev);
  }
  typeSelect.addEventListener("change", renderFeed);
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").setAttribute("aria-pressed", String(paused));
    $("pause").textContent = paused ? "Resume" : "Pause";
    if (!paused) { const h = held; held = []; missed = 0; for (const ev of h) { feed.push(ev); } while (feed.length > FEED_MAX) feedSeen.delete(feed.shift().seq); renderFeed(); }
    $("feed-state").textContent = paused ? "paused" : socketState;
  });

  // ---- WebSocket: events.subscribe ----
  let socket = null, socketState = "connecting…", backoff = 1000, retry = null;
  function b64url(text) {
    let bin = "";
    for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function setSocketState(s) { socketState = s; if (!paused) $("feed-state").textContent = s; }
  function ensureSocket() {
    if (socket || retry || needToken) return;
    const url = new URL("ws", document.baseURI); // beside the page, as `rpc` is
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = ["vigil.v1"];
    if (token) protocols.push("vigil.bearer." + b64url(token));
    const ws = (socket = new WebSocket(url, protocols));
    ws.onopen = () => {
      ws.send(JSON.stringify({ jsonrpc: "2.0", method: "events.subscribe", params: {}, id: "subscribe" }));
    };
    ws.onmessage = (m) => {
      keep(seen.frames, m.data, 50);
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.id === "subscribe" && msg.result) { setSocketState("live"); backoff = 1000; }
      if (msg.method !== "event" || !msg.params) return;
      addEvent(msg.params);
      nudge();
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      if (needToken) return;
      setSocketState("disconnected; retrying in " + fmtDur(backoff));
      retry = setTimeout(() => { retry = null; ensureSocket(); }, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }
  function closeSocket() {
    clearTimeout(retry); retry = null;
    if (socket) { const s = socket; socket = null; s.close(); }
  }

  // ---- chart: heartbeats/s and calls/s by method, from system.metrics' counters ----
  const samples = [];
  let prevCounts = null;
  const COLORS = ["#0550ae", "#1b1f24", "#bc4c00", "#8250df", "#1a7f37"];
  const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3], [1, 1]];
  function sample(metrics) {
    const t = Date.now(), counts = {};
    let total = 0;
    for (const [m, h] of Object.entries(metrics.handlers || {})) { counts[m] = h.totalCalls; total += h.totalCalls; }
    counts["all calls"] = total;
    if (prevCounts && t > prevCounts.t) {
      const dt = (t - prevCounts.t) / 1000, rates = {};
      for (const [m, n] of Object.entries(counts)) rates[m] = Math.max(0, (n - (prevCounts.counts[m] || 0)) / dt);
      keep(samples, rates, SAMPLES);
    }
    prevCounts = { t, counts };
    drawChart();
  }
  function drawChart() {
    const canvas = $("chart"), g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 34;
    g.clearRect(0, 0, w, h);
    const last = samples[samples.length - 1] || {};
    const methods = Object.keys(last).filter((m) => m !== "all calls" && m !== "system.heartbeat")
      .sort((a, b) => last[b] - last[a]).slice(0, 3);
    const series = ["system.heartbeat", "all calls", ...methods];
    const max = Math.max(1, ...samples.flatMap((s) => series.map((m) => s[m] || 0)));
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#59636e"; g.strokeStyle = "#d0d7de"; g.lineWidth = 1; g.setLineDash([]);
    for (const f of [0, 0.5, 1]) {
      const y = h - pad / 2 - f * (h - pad);
      g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 4, y); g.stroke();
      g.fillText(max * f >= 10 ? Math.round(max * f) : (max * f).toFixed(1), 2, y + 4);
    }
    g.fillText("/s, last " + fmtDur(SAMPLES * POLL_MS), pad, 12);
    const legend = [];
    series.forEach((m, k) => {
      g.strokeStyle = COLORS[k]; g.lineWidth = k === 0 ? 2.5 : 1.5; g.setLineDash(DASHES[k]);
      g.beginPath();
      samples.forEach((s, i) => {
        const x = w - 4 - ((samples.length - 1 - i) * (w - pad - 4)) / (SAMPLES - 1); // newest at the right
        const y = h - pad / 2 - ((s[m] || 0) / max) * (h - pad);
        i ? g.lineTo(x, y) : g.moveTo(x, y);
      });
      g.stroke();
      const sw = el("span", { class: "swatch" + (DASHES[k].length ? " dash" : "") });
      sw.style.background = COLORS[k]; sw.style.borderColor = COLORS[k];
      legend.push(el("li", { "data-testid": "rate", "data-method": m }, sw, m + ": " + (last[m] || 0).toFixed(1) + "/s"));
    });
    $("chart-legend").replaceChildren(...legend);
  }

  // Re-draw ages and bars between snapshots, cheaply: one page of rows.
  setInterval(() => { if (snapshot && !needToken) renderInstances(); }, 1000);
  poll();
})();
