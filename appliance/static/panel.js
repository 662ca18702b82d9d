// Kelvinpi front panel: polls the JSON API, never the instruments.
"use strict";
const $ = (sel) => document.querySelector(sel);
let fields = {};            // "node::field" -> {units, timeline, node}
const plots = {};           // "node::stem" -> uPlot
let lastHealth = null;

function fmtKelvin(v) {
  if (v === null || v === undefined) return "—";
  if (v < 1) return (v * 1000).toPrecision(4) + " mK";
  return v.toPrecision(5) + " K";
}
function fmtSensor(v, units) {
  if (v === null || v === undefined) return "—";
  if (units === "Ohm") {
    if (v >= 1e6) return (v / 1e6).toPrecision(5) + " MΩ";
    if (v >= 1e3) return (v / 1e3).toPrecision(5) + " kΩ";
    return v.toPrecision(5) + " Ω";
  }
  return v.toPrecision(5) + " " + units;
}
function fmtAge(s) {
  if (s < 90) return s.toFixed(0) + " s ago";
  if (s < 5400) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(url + " -> " + r.status);
  return r.json();
}
function stemOf(field) { return field.replace(/_(t|r)$/, ""); }

async function refreshFields() {
  const f = await getJSON("/api/v1/fields");
  fields = {};
  for (const x of f.fields) fields[x.field] = x;
}

async function refreshLatest() {
  const items = await getJSON("/api/v1/latest");
  const groups = new Map();
  for (const it of items) {
    const key = stemOf(it.field);
    if (!groups.has(key)) groups.set(key, {key});
    const g = groups.get(key);
    if (it.field.endsWith("_t")) g.t = it; else if (it.field.endsWith("_r")) g.r = it; else g.other = it;
  }
  const box = $("#channels");
  if (groups.size && box.querySelector("p")) box.innerHTML = "";
  for (const g of groups.values()) {
    let card = box.querySelector(`[data-channel="${CSS.escape(g.key)}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "chan";
      card.dataset.channel = g.key;
      card.innerHTML = '<div class="name"></div><div class="kelvin"></div><div class="sensor"></div>' +
                       '<div class="status"></div><div class="age"></div>';
      card.querySelector(".name").textContent = g.key.replace("::", " · ");
      box.appendChild(card);
    }
    // the fridge from top to bottom: cards in config order (instruments, then their channels)
    if (panelInfo) {
      const i = panelInfo.channels.findIndex((c) => c.kelvin === g.key + "_t" || c.sensor === g.key + "_r");
      card.style.order = i < 0 ? 999 : i;
    }
    const main = g.t || g.r || g.other;
    const age = Math.min(...[g.t, g.r, g.other].filter(Boolean).map((x) => x.age));
    const stale = [g.t, g.r, g.other].filter(Boolean).every((x) => x.stale);
    const allBits = [...new Set([g.t, g.r].filter(Boolean).flatMap((x) => x.status_bits))];
    // An unsynchronised clock is shown once in the header; it does not make a reading suspect.
    const bits = allBits.filter((b) => b !== "CLOCK_UNSYNCED");
    card.querySelector(".kelvin").textContent = g.t ? fmtKelvin(g.t.value) :
        (g.other ? fmtSensor(g.other.value, g.other.units) : "");
    card.querySelector(".sensor").textContent = g.r ? fmtSensor(g.r.value, g.r.units) : "";
    card.querySelector(".status").textContent = bits.length ? bits.join(" ") :
        (allBits.length ? "ok (clock unsynced)" : "ok");
    // A scanned 372 channel is read only while the autoscan is on it: between visits it is waiting.
    const scan = [g.t, g.r].filter(Boolean).map((x) => x.scan).find(Boolean);
    card.querySelector(".age").textContent = stale ? "STALE · " + fmtAge(age) :
        (scan && !scan.active ? `scanning · next in ≈ ${Math.ceil(scan.next_in)} s · ${fmtAge(age)}` :
         (scan ? `scanner on it` + (scan.next_in >= 1 ? ` · next in ≈ ${Math.ceil(scan.next_in)} s` : "") +
                 ` · ${fmtAge(age)}` : fmtAge(age)));
    card.classList.toggle("stale", stale);
    card.classList.toggle("scanned", !!scan);
    card.classList.toggle("alarm", alarmedFields.has(g.key + "_t") || alarmedFields.has(g.key + "_r"));
    card.classList.toggle("flagged", bits.length > 0);
    card.dataset.value = main && main.value !== null ? String(main.value) : "";
    card.dataset.t = main ? String(main.t) : "";
  }
  $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// One status card per instrument or uplink: green while connected, red with the last error when not.
function fillCards(box, items, key, describe) {
  box.innerHTML = "";
  for (const it of items) {
    const d = document.createElement("div");
    d.className = "inst" + (it.connected ? "" : " down");
    d.dataset[key] = it.name;
    d.textContent = describe(it) + (!it.connected && it.last_error ? ` · ${it.last_error}` : "");
    box.appendChild(d);
  }
}

async function refreshHealth() {
  const h = await getJSON("/api/v1/health");
  lastHealth = h;
  const clock = $("#clock");
  clock.textContent = h.clock_synchronised === false ? "clock NOT synchronised" :
      (h.clock_synchronised ? "clock synchronised" : "clock unknown");
  clock.className = "pill " + (h.clock_synchronised === false ? "warn" : "ok");
  const ce = $("#config-error");
  ce.hidden = !h.config_error;
  ce.querySelector("pre").textContent = h.config_error ?
      "kelvinpi.toml on the SD card was rejected; the last good configuration is running:\n" + h.config_error : "";
  const st = h.store;
  const store = $("#store");
  store.textContent = `store ${(st.file_bytes / 1048576).toFixed(1)} MB · ${st.written} samples` +
      (st.writing === false ? ` · NOT WRITING (${st.last_error}) · ${st.queue} samples held in memory` : "") +
      (st.dropped ? ` · ${st.dropped} DROPPED` : "") +
      (st.records_dropped ? ` · ${st.records_dropped} EVENTS DROPPED` : "") +
      (st.write_errors ? ` · write errors ${st.write_errors}` : "");
  store.className = "pill " + (st.dropped || st.records_dropped || st.write_errors || st.writing === false ? "bad" : "ok");
  if (panelInfo) {
    const ps = panelInfo.store;
    store.textContent += ` · ${ps.days_kept.toFixed(ps.days_kept < 10 ? 1 : 0)} days kept` +
        (ps.write_bytes_per_day !== null ? ` · wear ${(ps.write_bytes_per_day / 1048576).toFixed(1)} MB/day` :
         " · wear: measuring");
  }
  fillCards($("#instruments"), h.instruments, "node", (i) => {
    const errs = Object.entries(i.errors).map(([k, v]) => `${k} ${v}`).join(", ");
    const scan = i.scan ? ` · scanner ${i.scan.autoscan ? "on" : "held"} at ${i.scan.channel}` :
        (i.active_channel ? ` · channel ${i.active_channel}` : "");
    return `${i.name} (${i.model}) ` + (i.connected ? "connected" : "DOWN") +
        (i.identity ? ` · ${i.identity}` : "") + ` · cycle ${(i.cycle_seconds * 1000).toFixed(0)} ms` + scan +
        ` · errors: ${errs || "none"}`;
  });
  // notification targets sit with the uplinks: "connected" while nothing waits or fails
  const targets = (h.alarms ? h.alarms.targets : []).map((t) => Object.assign({}, t, {
    connected: !t.error && !t.last_error, last_error: t.error || t.last_error}));
  fillCards($("#uplinks"), h.uplinks.concat(targets.map((t) => Object.assign(t, {notify: true}))), "uplink",
      (u) => u.notify ? `notify ${u.name} (${u.kind || "?"}) · ` + (u.connected ? "ok" : "FAILING") +
                        ` · waiting ${u.backlog || 0} · sent ${u.sent || 0}` :
          `uplink ${u.name} (${u.kind}) ` + (u.connected ? "connected" : "DOWN") + ` · backlog ${u.backlog}`);
  showAlarms(h.alarms ? h.alarms.active : []);
}

// -- alarms: a banner on top, the channel's card red, acknowledge with the control token ------------
let alarmedFields = new Set();
function showAlarms(active) {
  alarmedFields = new Set(active.map((a) => a.target).filter(Boolean));
  const box = $("#alarms");
  box.hidden = active.length === 0;
  document.body.classList.toggle("alarmed", active.some((a) => !a.acked));
  box.innerHTML = "";
  for (const a of active) {
    const d = document.createElement("div");
    d.className = `alarm-row ${a.severity}` + (a.acked ? " acked" : "");
    d.dataset.alarm = a.name;
    const text = document.createElement("span");
    const since = a.since ? new Date(a.since * 1000).toLocaleTimeString() : "";
    text.textContent = `${a.severity.toUpperCase()} · ${a.name} · ${a.target || ""} · ${a.detail} · since ${since}` +
        (a.acked ? ` · acknowledged${a.acked_by ? " by " + a.acked_by : ""}` : "");
    d.appendChild(text);
    if (!a.acked) {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.className = "ack";
      b.addEventListener("click", () => ackAlarm(a.name));
      d.appendChild(b);
    }
    box.appendChild(d);
  }
}
async function ackAlarm(name) {
  let token = sessionStorage.getItem("kelvinpi-token");
  if (!token) {
    token = window.prompt("Control token (from the appliance's control.token_file):");
    if (!token) return;
  }
  const r = await fetch(`/api/v1/alarms/${encodeURIComponent(name)}/ack`,
                        {method: "POST", headers: {Authorization: "Bearer " + token}});
  if (r.ok) { sessionStorage.setItem("kelvinpi-token", token); }
  else {
    sessionStorage.removeItem("kelvinpi-token");
    let msg = r.status;
    try { msg = (await r.json()).error.message; } catch (e) { /* keep the status */ }
    window.alert("Not acknowledged: " + msg);
  }
  refreshHealth();
}

// -- the fridge in one picture: every stage's temperature on one log axis, in config order, the
// sensor resistances on a second plot, events as marks on the time axis; rollups for long ranges.
let panelInfo = null;
const PALETTE = ["#ff7b72", "#ffa657", "#d2a8ff", "#79c0ff", "#56d364", "#e3b341", "#f778ba", "#a5d6ff",
                 "#7ee787", "#ffdcd7", "#bc8cff", "#39c5cf"];
const EVENT_COLOURS = {disconnected: "#f85149", connected: "#3fb950", clock_step: "#d29922", control: "#58a6ff"};
let shownEvents = [];
let shownRange = null;
window.kelvinpi = {};

async function refreshPanel() { panelInfo = await getJSON("/api/v1/panel"); }

function fmtAxisK(u, vals) { return vals.map((v) => v === null ? "" : (v < 1 ? +(v * 1000).toPrecision(3) + " mK" : +v.toPrecision(3) + " K")); }
function fmtAxisOhm(u, vals) { return vals.map((v) => v === null ? "" : fmtSensor(v, "Ohm").replace(/\.?0+ /, " ")); }

function eventMarks() {
  return {hooks: {draw: [(u) => {
    const ctx = u.ctx;
    ctx.save();
    for (const e of shownEvents) {
      const x = u.valToPos(e.t, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.strokeStyle = e.kind.startsWith("alarm") ? "#f85149" : (EVENT_COLOURS[e.kind] || "#8b98a5");
      ctx.setLineDash([4, 4]);
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  }]}};
}

function rangeSeconds() {
  const v = $("#range").value;
  return v === "all" ? null : Number(v);
}

async function seriesData(names, start, stride) {
  if (!names.length) return {};
  const q = names.map((n) => "field=" + encodeURIComponent(n)).join("&");
  return (await getJSON(`/api/v1/data?${q}&start=${start}&end=0&min_stride=${stride}`)).fields;
}

function drawCombined(key, names, labels, fields, fmt, title) {
  const box = $("#plots");
  let wrap = box.querySelector(`[data-plot="${key}"]`);
  if (!wrap) {
    wrap = document.createElement("div");
    wrap.className = "plot";
    wrap.dataset.plot = key;
    const t = document.createElement("div");
    t.className = "title";
    t.textContent = title;
    wrap.appendChild(t);
    box.appendChild(wrap);
  }
  const tables = names.map((n) => fields[n] ? [fields[n].t, fields[n].value.map((v) => (v !== null && v > 0) ? v : null)] : [[], []]);
  const data = tables.length ? uPlot.join(tables) : [[]];
  const width = Math.max(200, wrap.clientWidth - 8);
  const height = document.body.classList.contains("kiosk") ? 190 : 260;
  const old = window.kelvinpi[key];
  if (old && old.series.length === names.length + 1) {
    old.setSize({width, height});
    old.setData(data);
    old.redraw();
    return;
  }
  if (old) old.destroy();
  window.kelvinpi[key] = new uPlot({
    width, height,
    scales: {x: {time: true}, y: {distr: 3, log: 10}},
    axes: [{stroke: "#8b98a5", grid: {stroke: "#2a323c"}},
           {stroke: "#8b98a5", grid: {stroke: "#2a323c"}, size: 70, values: fmt}],
    series: [{}].concat(names.map((n, i) => ({label: labels[i], stroke: PALETTE[i % PALETTE.length], width: 1.5,
                                               spanGaps: true}))),
    legend: {show: true, live: false},
    plugins: [eventMarks()],
  }, data, wrap);
}

async function refreshPlots() {
  if (!panelInfo) await refreshPanel();
  const span = rangeSeconds();
  const now = Date.now() / 1000;
  const start = span === null ? 1 : -span;
  const stride = span === null ? 3600 : Math.max(1, span / 600);
  const chans = panelInfo.channels;
  const temps = chans.filter((c) => c.kelvin && fields[c.kelvin]);
  const ohms = chans.filter((c) => c.sensor && c.sensor_units === "Ohm" && fields[c.sensor]);
  const label = (c) => `${c.name} (${c.node})`;
  const [tf, rf, ev] = await Promise.all([
    seriesData(temps.map((c) => c.kelvin), start, stride),
    seriesData(ohms.map((c) => c.sensor), start, stride),
    getJSON(`/api/v1/events?since=${start}`)]);
  shownEvents = ev.events;
  window.kelvinpi.events = shownEvents;
  shownRange = {start: span === null ? 0 : now - span, end: now, fields: temps.map((c) => c.kelvin).concat(ohms.map((c) => c.sensor))};
  drawCombined("temperatures", temps.map((c) => c.kelvin), temps.map(label), tf, fmtAxisK, "Temperatures [log]");
  drawCombined("resistances", ohms.map((c) => c.sensor), ohms.map(label), rf, fmtAxisOhm, "Sensor resistances [log]");
  window.kelvinpi.drawn = {start, stride};
  const list = $("#events");
  list.innerHTML = "";
  for (const e of shownEvents.slice(0, 8)) {
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    li.textContent = `${new Date(e.t * 1000).toLocaleString()} · ${e.kind} · ${e.node || ""} ${e.detail}`;
    list.appendChild(li);
  }
}

// The raw samples behind what is shown: the plotted fields over the plotted range.
function csvUrl() {
  if (!shownRange) return null;
  const q = shownRange.fields.map((n) => "field=" + encodeURIComponent(n)).join("&");
  return `/api/v1/export.csv?${q}&start=${shownRange.start}&end=${shownRange.end}`;
}
function downloadCsv() { const u = csvUrl(); if (u) window.location.href = u; }
window.kelvinpi.csvUrl = csvUrl;

async function tick(fn, ms) {
  try { await fn(); } catch (e) { $("#updated").textContent = "connection problem: " + e.message; }
  setTimeout(() => tick(fn, ms), ms);
}
async function start() {
  try { await refreshFields(); } catch (e) { /* retried below */ }
  tick(refreshLatest, 2000);
  tick(refreshHealth, 3000);
  setTimeout(() => tick(async () => { await refreshFields(); await refreshPanel(); await refreshPlots(); }, 30000), 300);
  $("#range").addEventListener("change", refreshPlots);
  $("#csv").addEventListener("click", downloadCsv);
}
if (new URLSearchParams(location.search).has("kiosk")) document.body.classList.add("kiosk");
start();
