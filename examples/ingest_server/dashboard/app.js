// The edgestream live dashboard: plain JavaScript, no build step, no CDN.
// It subscribes over WebSockets (JSON frames) to the tenant's `metrics`
// and `geo` boards (snapshot, then deltas), to `alerts`, and to every
// tenant's raw `events` for the timeline.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
const HISTORY_MS = 5 * 60 * 1000;

let tenant = params.get("tenant") || "";
let sockets = [];
const boards = { metrics: new Map(), geo: new Map() };
const seqs = {};
let history = []; // {t, rate, p99}
let lastStart = 0;
const alerts = new Map();
const timeline = [];
const types = new Set();

function wsUrl(query) {
  const u = new URL("/ws", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  u.searchParams.set("format", "json");
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

// Sockets of the selected tenant belong to a generation; switching tenant
// closes them and stops their reconnects.
let generation = 0;

function subscribe(query, onFrame, tenantBound = true) {
  let retry = 500;
  const gen = generation;
  const open = () => {
    if (tenantBound && gen !== generation) return;
    const ws = new WebSocket(wsUrl(query));
    ws.tenantBound = tenantBound;
    sockets.push(ws);
    ws.onopen = () => { retry = 500; setStatus(true); };
    ws.onmessage = (m) => { try { onFrame(JSON.parse(m.data), ws); } catch (e) { console.error(e); } };
    ws.onclose = (e) => {
      sockets = sockets.filter((s) => s !== ws);
      if (ws.stopped) return;
      setStatus(false, e.reason || "closed");
      setTimeout(open, retry);
      retry = Math.min(retry * 2, 10000);
    };
  };
  open();
}

function setStatus(live, why) {
  const s = $("status");
  s.className = live ? "live" : "down";
  s.textContent = live ? "live" : "reconnecting (" + why + ")";
}

// A board frame: a snapshot replaces the tiles, a delta applies on top of
// the sequence it names; on a gap, ask for a resync.
function boardFrame(name, frame, ws) {
  const tiles = boards[name];
  if (frame.kind === "snapshot") {
    tiles.clear();
    for (const [k, v] of Object.entries(frame.tiles)) tiles.set(k, v);
    seqs[name] = frame.seq;
  } else if (frame.kind === "delta") {
    if (seqs[name] !== frame.base_seq) {
      ws.send(JSON.stringify({ type: "resync" }));
      return;
    }
    for (const [k, v] of Object.entries(frame.upserts || {})) tiles.set(k, v);
    for (const k of frame.removals || []) tiles.delete(k);
    seqs[name] = frame.seq;
  }
  if (name === "metrics") renderMetrics(); else renderHeatmap();
}

// Tile keys are `stream|label=value,…|field`.
function parseKey(key) {
  const parts = key.split("|");
  const labels = {};
  for (const pair of (parts[1] || "").split(",")) {
    const i = pair.indexOf("=");
    if (i > 0) labels[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return { stream: parts[0], labels, field: parts[2] };
}

const fmt = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));

function renderMetrics() {
  let newest = 0;
  for (const v of boards.metrics.values()) newest = Math.max(newest, v.start_ms || 0);
  const regions = {};
  let rate = 0, errors = 0, p99 = 0, p50sum = 0, p50n = 0;
  for (const [key, v] of boards.metrics) {
    if (v.start_ms !== newest) continue;
    const { labels, field } = parseKey(key);
    const r = (regions[labels.region || "all"] ||= {});
    if (field === "latency_ms") {
      rate += v.count; r.count = v.count; r.p99 = v.p99; r.p50 = v.p50;
      p99 = Math.max(p99, v.p99 || 0);
      if (v.p50 !== undefined) { p50sum += v.p50 * v.count; p50n += v.count; }
    } else if (field === "errors") {
      errors += v.sum; r.errors = v.sum;
    }
  }
  const any = newest > 0;
  $("kpi-rate").textContent = any ? fmt(rate) : "–";
  $("kpi-p50").textContent = p50n ? fmt(p50sum / p50n, 1) : "–";
  $("kpi-p99").textContent = any ? fmt(p99, 1) : "–";
  $("kpi-errors").textContent = any ? fmt(errors) : "–";
  const box = $("regions");
  box.innerHTML = "";
  for (const name of Object.keys(regions).sort()) {
    const r = regions[name];
    const div = document.createElement("div");
    div.className = "region" + ((r.p99 || 0) > 250 ? " hot" : "");
    div.innerHTML = `<b></b>${fmt(r.count)} ev/s · p99 ${fmt(r.p99, 0)} ms · ${fmt(r.errors)} err`;
    div.querySelector("b").textContent = name;
    box.appendChild(div);
  }
  if (newest > lastStart) {
    lastStart = newest;
    history.push({ t: newest, rate, p99 });
    history = history.filter((p) => p.t > newest - HISTORY_MS);
    drawChart();
  }
}

function drawChart() {
  const c = $("chart");
  const w = (c.width = c.clientWidth * devicePixelRatio);
  const h = (c.height = 220 * devicePixelRatio);
  const g = c.getContext("2d");
  g.clearRect(0, 0, w, h);
  c.dataset.points = history.length;
  if (history.length < 2) return;
  const t1 = history[history.length - 1].t, t0 = t1 - HISTORY_MS;
  const x = (t) => ((t - t0) / HISTORY_MS) * w;
  g.strokeStyle = "#26303b";
  g.lineWidth = 1;
  for (let i = 1; i < 4; i++) { g.beginPath(); g.moveTo(0, (h * i) / 4); g.lineTo(w, (h * i) / 4); g.stroke(); }
  for (const [key, color] of [["rate", "#4fb3ff"], ["p99", "#ffb547"]]) {
    const max = Math.max(1, ...history.map((p) => p[key] || 0)) * 1.1;
    g.strokeStyle = color;
    g.lineWidth = 2 * devicePixelRatio;
    g.beginPath();
    history.forEach((p, i) => {
      const y = h - ((p[key] || 0) / max) * h;
      if (i === 0) g.moveTo(x(p.t), y); else g.lineTo(x(p.t), y);
    });
    g.stroke();
    g.fillStyle = color;
    g.font = `${11 * devicePixelRatio}px system-ui`;
    g.fillText(fmt(max / 1.1), key === "rate" ? 4 : w - 50 * devicePixelRatio, 12 * devicePixelRatio);
  }
}

// Geohash cell to its bounding box [latMin, latMax, lonMin, lonMax].
function geohashBox(hash) {
  const base32 = "0123456789bcdefghjkmnpqrstuvwxyz";
  let lat = [-90, 90], lon = [-180, 180], even = true;
  for (const ch of hash) {
    const n = base32.indexOf(ch);
    if (n < 0) return null;
    for (let bit = 4; bit >= 0; bit--) {
      const r = even ? lon : lat;
      const mid = (r[0] + r[1]) / 2;
      if ((n >> bit) & 1) r[0] = mid; else r[1] = mid;
      even = !even;
    }
  }
  return [lat[0], lat[1], lon[0], lon[1]];
}

function renderHeatmap() {
  const c = $("heatmap");
  const w = (c.width = c.clientWidth * devicePixelRatio);
  const h = (c.height = 260 * devicePixelRatio);
  const g = c.getContext("2d");
  g.fillStyle = "#10161c";
  g.fillRect(0, 0, w, h);
  let newest = 0;
  for (const v of boards.geo.values()) newest = Math.max(newest, v.start_ms || 0);
  const cells = [];
  for (const [key, v] of boards.geo) {
    if ((v.start_ms || 0) < newest - 30000) continue;
    const cell = parseKey(key).labels.geohash;
    const box = cell && geohashBox(cell);
    if (box) cells.push([box, v.count]);
  }
  c.dataset.cells = cells.length;
  // The view fits the cells (with a margin), at the canvas's aspect ratio.
  let [la0, la1, lo0, lo1] = [-60, 75, -180, 180];
  if (cells.length) {
    la0 = Math.min(...cells.map((x) => x[0][0])) - 8; la1 = Math.max(...cells.map((x) => x[0][1])) + 8;
    lo0 = Math.min(...cells.map((x) => x[0][2])) - 8; lo1 = Math.max(...cells.map((x) => x[0][3])) + 8;
    const perPixel = Math.max((lo1 - lo0) / w, (la1 - la0) / h);
    const [cx, cy] = [(lo0 + lo1) / 2, (la0 + la1) / 2];
    [lo0, lo1, la0, la1] = [cx - (perPixel * w) / 2, cx + (perPixel * w) / 2, cy - (perPixel * h) / 2, cy + (perPixel * h) / 2];
  }
  const px = (lon) => ((lon - lo0) / (lo1 - lo0)) * w;
  const py = (lat) => ((la1 - lat) / (la1 - la0)) * h;
  g.strokeStyle = "#1f2831";
  g.fillStyle = "#3a4652";
  g.font = `${10 * devicePixelRatio}px system-ui`;
  for (let lon = Math.ceil(lo0 / 15) * 15; lon <= lo1; lon += 15) {
    g.beginPath(); g.moveTo(px(lon), 0); g.lineTo(px(lon), h); g.stroke(); g.fillText(`${lon}°`, px(lon) + 2, h - 4);
  }
  for (let lat = Math.ceil(la0 / 15) * 15; lat <= la1; lat += 15) {
    g.beginPath(); g.moveTo(0, py(lat)); g.lineTo(w, py(lat)); g.stroke(); g.fillText(`${lat}°`, 2, py(lat) - 2);
  }
  const max = Math.max(1, ...cells.map((x) => x[1]));
  for (const [[a0, a1, o0, o1], n] of cells) {
    const k = n / max;
    g.fillStyle = `rgba(255, ${Math.round(210 - 160 * k)}, 60, ${0.3 + 0.7 * k})`;
    g.fillRect(px(o0), py(a1), Math.max(2, px(o1) - px(o0)), Math.max(2, py(a0) - py(a1)));
  }
}

function alertFrame(frame) {
  if (frame.kind !== "alert") return;
  const a = frame.alert;
  alerts.set(String(a.fingerprint), a);
  const rows = [...alerts.values()].sort((x, y) => String(y.at).localeCompare(String(x.at))).slice(0, 50);
  const body = $("alerts");
  body.innerHTML = "";
  let firing = 0;
  for (const a of rows) {
    const state = String(a.state).toLowerCase();
    if (state === "firing") firing++;
    const labels = (a.labels || []).filter(([k]) => k !== "alertname").map(([k, v]) => `${k}=${v}`).join(" ");
    const tr = document.createElement("tr");
    for (const [text, cls] of [[a.rule], [labels], [state, "state-" + state], [fmt(a.value, 1)], [a.since]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  const k = $("kpi-alerts");
  k.textContent = firing;
  k.className = "value" + (firing ? " alerting" : "");
}

function eventsFrame(frame, fromTenant) {
  if (frame.kind !== "events") return;
  for (const e of frame.events) {
    timeline.unshift({ tenant: fromTenant, e });
    const type = e.dims && e.dims.type;
    if (type && !types.has(type)) {
      types.add(type);
      const o = document.createElement("option");
      o.value = o.textContent = type;
      $("filter-type").appendChild(o);
    }
  }
  timeline.length = Math.min(timeline.length, 500);
  scheduleTimeline();
}

let timelinePending = false;
function scheduleTimeline() {
  if (timelinePending) return;
  timelinePending = true;
  setTimeout(() => { timelinePending = false; renderTimeline(); }, 500);
}

function renderTimeline() {
  const ft = $("filter-tenant").value, fy = $("filter-type").value;
  const box = $("timeline");
  box.innerHTML = "";
  let shown = 0;
  for (const { tenant: t, e } of timeline) {
    if ((ft && t !== ft) || (fy && (!e.dims || e.dims.type !== fy))) continue;
    const div = document.createElement("div");
    const dims = Object.entries(e.dims || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    const fields = Object.entries(e.fields || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    div.textContent = `${e.ts}  ${t}  ${e.stream}  ${dims}  ${fields}`;
    box.appendChild(div);
    if (++shown >= 100) break;
  }
}

function connect() {
  generation++;
  for (const ws of sockets.filter((s) => s.tenantBound)) { ws.stopped = true; ws.close(); }
  sockets = sockets.filter((s) => !s.tenantBound);
  boards.metrics.clear(); boards.geo.clear();
  history = []; lastStart = 0; alerts.clear();
  subscribe({ tenant, topic: "metrics", mode: "deltas" }, (f, ws) => boardFrame("metrics", f, ws));
  subscribe({ tenant, topic: "geo", mode: "deltas" }, (f, ws) => boardFrame("geo", f, ws));
  subscribe({ tenant, topic: "alerts", mode: "deltas" }, alertFrame);
}

async function backfill() {
  // The chart starts with the last five minutes from the rollup.
  const q = new URLSearchParams({ tenant, stream: "http", agg: "second", from: String(Date.now() - HISTORY_MS), fields: "latency_ms", quantiles: "0.99", group_by: "" });
  if (token) q.set("token", token);
  try {
    const r = await fetch("/api/metrics?" + q);
    if (!r.ok) return;
    const body = await r.json();
    const points = new Map();
    for (const s of body.series) {
      for (const p of s.points) {
        const t = Date.parse(p.start);
        const agg = points.get(t) || { t, rate: 0, p99: 0 };
        agg.rate += p.events;
        for (const [q, v] of p.quantiles || []) if (q === 0.99) agg.p99 = Math.max(agg.p99, v);
        points.set(t, agg);
      }
    }
    const old = [...points.values()].sort((a, b) => a.t - b.t).filter((p) => !history.length || p.t < history[0].t);
    history = old.concat(history);
    if (history.length) lastStart = Math.max(lastStart, history[history.length - 1].t);
    drawChart();
  } catch (e) { console.warn("backfill", e); }
}

async function start() {
  let tenants = [];
  try {
    const health = await (await fetch("/api/health" + (token ? "?token=" + encodeURIComponent(token) : ""))).json();
    // With auth on, the health view names only the token's tenant.
    tenants = health.tenant ? [health.tenant] : Object.keys((health.pipeline || {}).tenants || {}).sort();
  } catch (e) { console.warn("health", e); }
  if (!tenant) tenant = tenants[0] || "acme";
  if (!tenants.includes(tenant)) tenants.unshift(tenant);
  for (const t of tenants) {
    for (const id of ["tenant", "filter-tenant"]) {
      const o = document.createElement("option");
      o.value = o.textContent = t;
      $(id).appendChild(o);
    }
    subscribe({ tenant: t, topic: "events", mode: "full" }, (f) => eventsFrame(f, t), false);
  }
  $("tenant").value = tenant;
  $("tenant").onchange = () => { tenant = $("tenant").value; connect(); backfill(); };
  $("filter-tenant").onchange = renderTimeline;
  $("filter-type").onchange = renderTimeline;
  connect();
  backfill();
  addEventListener("resize", () => { drawChart(); renderHeatmap(); });
}

start();
