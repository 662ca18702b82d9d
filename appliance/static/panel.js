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
    card.querySelector(".age").textContent = (stale ? "STALE · " : "") + fmtAge(age);
    card.classList.toggle("stale", stale);
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
  fillCards($("#instruments"), h.instruments, "node", (i) => {
    const errs = Object.entries(i.errors).map(([k, v]) => `${k} ${v}`).join(", ");
    return `${i.name} (${i.model}) ` + (i.connected ? "connected" : "DOWN") +
        (i.identity ? ` · ${i.identity}` : "") + (errs ? ` · errors: ${errs}` : "");
  });
  fillCards($("#uplinks"), h.uplinks, "uplink",
      (u) => `uplink ${u.name} (${u.kind}) ` + (u.connected ? "connected" : "DOWN") + ` · backlog ${u.backlog}`);
}

async function refreshPlots() {
  const hours = Number($("#hours").value);
  const span = hours * 3600;
  const stride = Math.max(1, span / 600);
  const names = Object.keys(fields).filter((f) => f.endsWith("_t"));
  const box = $("#plots");
  for (const name of names) {
    const q = `/api/v1/data?field=${encodeURIComponent(name)}&start=${-span}&end=0&min_stride=${stride}`;
    let d;
    try { d = (await getJSON(q)).fields[name]; } catch (e) { continue; }
    const data = [d.t, d.value];
    let wrap = box.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!wrap) {
      wrap = document.createElement("div");
      wrap.className = "plot";
      wrap.dataset.field = name;
      const title = document.createElement("div");
      title.className = "title";
      title.textContent = name + " [K]";
      wrap.appendChild(title);
      box.appendChild(wrap);
    }
    const width = Math.max(200, wrap.clientWidth - 8);
    if (!plots[name]) {
      plots[name] = new uPlot({
        width, height: 180,
        scales: {x: {time: true}, y: {distr: 3}},
        axes: [{stroke: "#8b98a5", grid: {stroke: "#2a323c"}}, {stroke: "#8b98a5", grid: {stroke: "#2a323c"}, size: 60}],
        series: [{}, {label: "K", stroke: "#58a6ff", width: 1.5, spanGaps: false}],
        legend: {show: false},
      }, data, wrap);
    } else {
      plots[name].setSize({width, height: 180});
      plots[name].setData(data);
    }
  }
}

async function tick(fn, ms) {
  try { await fn(); } catch (e) { $("#updated").textContent = "connection problem: " + e.message; }
  setTimeout(() => tick(fn, ms), ms);
}
async function start() {
  try { await refreshFields(); } catch (e) { /* retried below */ }
  tick(refreshLatest, 2000);
  tick(refreshHealth, 3000);
  setTimeout(() => tick(async () => { await refreshFields(); await refreshPlots(); }, 30000), 500);
  $("#hours").addEventListener("change", refreshPlots);
}
start();
