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
  if (PRESSURE_UNITS.has(units)) return v.toExponential(2) + " " + units;
  return v.toPrecision(5) + " " + units;
}
const PRESSURE_UNITS = new Set(["mbar", "Torr", "Pa", "hPa", "micron"]);  // a gauge's p<n>: decades, not digits
function fmtAge(s) {
  if (s < 90) return s.toFixed(0) + " s ago";
  if (s < 5400) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
// -- contact: when did the appliance last answer? A page that cannot reach it must not look alive.
// Tracked per endpoint: /latest (the readings) and /health (alarms, instruments) must each have
// answered, fully rendered, within their limit; the oldest last good answer decides. A request for
// plot data is not contact (a 30-day plot may take longer than a refresh).
const REQUEST_DEADLINE_MS = 4000;   // a latest/health request not answered by then counts as a failure
const DATA_DEADLINE_MS = 30000;     // plot data: a long range on a Pi takes a while
const CONTACT = {latest: {period: 2000, url: "/api/v1/latest"}, health: {period: 3000, url: "/api/v1/health"}};
for (const k of Object.keys(CONTACT)) Object.assign(CONTACT[k], {lastOk: null, lastOkMono: null, failures: 0,
    error: "", serverNow: null, pendingNow: null});
// limit: two refreshes plus one request deadline (latest 8 s, health 10 s); two failures in a row sooner
const limitMs = (e) => 2 * e.period + REQUEST_DEADLINE_MS;
const contact = {ep: CONTACT, lastOk: null, failures: 0, error: "", started: performance.now(), panelError: "",
                 serverOffset: 0, serverKnown: false};
// The appliance's clock ("now" on the Pi), for the plots' range: the browser's may be off.
function serverNowS() { return Date.now() / 1000 + contact.serverOffset; }
class Counted extends Error {}
function fail(name, msg) {
  const e = CONTACT[name];
  e.failures += 1;
  e.error = msg;
  showContact();
}
// A refresh of ``name`` got its answer and drew it: contact, unless the appliance's own time did not
// move since the last answer (a middlebox replaying a frozen answer).
function answered(name) {
  const e = CONTACT[name];
  const now = e.pendingNow;
  if (now !== null && e.serverNow !== null && !(now > e.serverNow)) {
    fail(name, `the appliance's answers stopped changing (its time stuck at ${hhmmss(now * 1000)})`);
    return;
  }
  if (now !== null) e.serverNow = now;
  e.lastOk = Date.now(); e.lastOkMono = performance.now(); e.failures = 0; e.error = "";
  showContact();
}
async function getJSON(url, name, deadline) {
  const ms = deadline || REQUEST_DEADLINE_MS;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const r = await fetch(url, {cache: "no-store", signal: ctl.signal});
    if (!r.ok) throw new Error(`${url.split("?")[0]} answered HTTP ${r.status}`);
    const body = await r.json();
    const now = parseFloat(r.headers.get("X-Kelvinpi-Now"));
    if (Number.isFinite(now)) { contact.serverOffset = now - Date.now() / 1000; contact.serverKnown = true; }
    if (name) CONTACT[name].pendingNow = Number.isFinite(now) ? now : null;
    return body;
  } catch (e) {
    const msg = e.name === "AbortError" ? `${url.split("?")[0]}: no answer within ${ms / 1000} s` : e.message;
    if (name) fail(name, msg);
    throw new Counted(msg);
  } finally {
    clearTimeout(timer);
  }
}
function hhmmss(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}
function lost(e) {
  const since = e.lastOkMono === null ? contact.started : e.lastOkMono;
  return e.failures >= 2 || performance.now() - since > limitMs(e);
}
function noContact() { return Object.values(CONTACT).some(lost); }
// The banner, the greyed page and the header's "updated" line, from the contact record alone.
function showContact() {
  const eps = Object.values(CONTACT);
  const gone = noContact();
  // the oldest last good answer decides (null: one of them never answered)
  const oldest = eps.some((e) => e.lastOk === null) ? null : Math.min(...eps.map((e) => e.lastOk));
  contact.lastOk = oldest;
  contact.failures = Math.max(...eps.map((e) => e.failures));
  contact.error = eps.filter((e) => e.error).map((e) => e.error).join(" · ");
  document.body.classList.toggle("nocontact", gone);
  const box = $("#nocontact");
  box.hidden = !gone;
  if (gone) {
    box.querySelector(".big").textContent = oldest === null ? "NO CONTACT with the appliance" :
        `NO CONTACT with the appliance since ${hhmmss(oldest)}`;
    box.querySelector(".why").textContent = (contact.error || "no answer") +
        " · everything below is the last known state";
  }
  // health (alarms, instruments) lost: the alarm area must not look like "no alarms"
  const h = CONTACT.health;
  const hLost = lost(h);
  const unknown = hLost ? (h.lastOk === null ? "health unknown: no answer yet" :
      `health unknown since ${hhmmss(h.lastOk)}`) : "";
  const au = $("#alarms-unknown");
  au.hidden = !hLost;
  if (hLost) au.textContent = `ALARMS UNKNOWN · ${unknown} · ${h.error || "no answer"}`;
  const inst = $("#instruments");
  if (hLost) inst.dataset.unknown = unknown; else delete inst.dataset.unknown;
  const pe = $("#panel-error");
  pe.hidden = !contact.panelError;
  pe.textContent = contact.panelError ? "panel error: " + contact.panelError : "";
  const upd = $("#updated");
  upd.textContent = oldest === null ? "waiting for the appliance…" :
      (gone ? "last answer " : "updated ") + hhmmss(oldest);
  upd.classList.toggle("bad", gone);
}
// Each part of an answer drawn on its own: one bad part does not stop the others (the alarm banner
// first); the errors are returned so the refresh counts as failed and says why.
function sections(parts) {
  const errs = [];
  for (const [what, fn] of parts) {
    try { fn(); } catch (e) { errs.push(`${what}: ${e.message}`); }
  }
  return errs;
}
function stemOf(field) { return field.replace(/_(t|r)$/, ""); }

async function refreshFields() {
  const f = await getJSON("/api/v1/fields");
  fields = {};
  for (const x of f.fields) fields[x.field] = x;
}

// A word of a plant instrument's warning or alarm bits (minus their sum, as a CPA sends it) as names.
function bitNames(value, table) {
  const bits = Math.round(-(value || 0));
  const out = [];
  for (let n = 0; n < 32; n++) { const b = 2 ** n; if (Math.floor(bits / b) % 2) out.push(table[String(b)] || "BIT" + b); }
  return out;
}
// A card's value with its unit in a span of its own (the kiosk draws the unit smaller, so that a
// pressure's "1.51e-6 mbar" holds one line of a quarter of 800 pixels in large digits).
function showValue(el, text) {
  const m = /^([-+0-9.e]+) (\S+)$/.exec(text);
  if (!m) { el.textContent = text; return; }
  const u = document.createElement("span");
  u.className = "u";
  u.textContent = " " + m[2];
  el.replaceChildren(m[1], u);
}
// A card's title: "node · channel"; on the kiosk's narrow cards "channel · node", so that what is cut
// off (after the age beside it) is the instrument every card of a row shares, not the channel.
function cardName(node, what) {
  return document.body.classList.contains("kiosk") ? what + " · " + node : node + " · " + what;
}
// One card for a whole plant instrument (panelInfo.plant[node], declared by its driver class): a
// compressor (its state, values, warning and alarm bits) or a gas handling system (its flow, the
// pumps and pulse tube on or off, the open valves), drawn by the card's kind.
function plantCard(box, node, spec, byField) {
  let card = box.querySelector(`[data-channel="${CSS.escape(node)}"]`);
  if (!card) {
    card = document.createElement("div");
    card.className = "chan plant";
    card.dataset.channel = node;
    card.innerHTML = '<div class="name"></div><div class="kelvin"></div><div class="sensor"></div>' +
                     '<div class="status"></div><div class="age"></div>';
    card.querySelector(".name").textContent = cardName(node, spec.title);
    box.appendChild(card);
  }
  card.style.order = 998;
  const its = Object.values(byField);
  const get = (f) => byField[node + "::" + f];
  const flagged = (spec.kind === "gas" ? gasCard : compressorCard)(card, spec, get, byField, node);
  card.kp = {age: Math.min(...its.map((x) => x.age)), stale: its.every((x) => x.stale), scan: null,
             at: performance.now()};
  showAge(card);
  card.classList.toggle("flagged", flagged);
  card.classList.toggle("alarm", its.some((x) => alarmedFields.has(x.field)));
}
function compressorCard(card, spec, get) {
  const state = get(spec.state), run = get(spec.running);
  card.querySelector(".kelvin").textContent = state && state.value !== null ?
      (spec.states[String(state.value)] || "state " + state.value) : "";
  card.querySelector(".sensor").textContent = spec.show.map(([label, f]) => {
    const it = get(f);
    return it && it.value !== null ? `${label} ${it.value.toFixed(1)} ${it.units}`.trim() : null;
  }).filter(Boolean).join(" · ");
  const warn = get(spec.warnings), alarm = get(spec.alarms);
  const names = [...(alarm ? bitNames(alarm.value, spec.bits).map((n) => "ALARM " + n) : []),
                 ...(warn ? bitNames(warn.value, spec.bits).map((n) => "warning " + n) : [])];
  const stopped = run && run.value === 0;
  card.querySelector(".status").textContent = names.length ? names.join(" ") : (stopped ? "STOPPED" : "ok");
  card.dataset.value = state && state.value !== null ? String(state.value) : "";
  return names.length > 0 || stopped;
}
// The gas handling system as the Bluefors logs tell it: the flow in large digits, the pumps and the
// pulse tube on or off (one that must run and is off flags the card), the open valves by name.
function gasCard(card, spec, get, byField, node) {
  const flow = get(spec.flow);
  showValue(card.querySelector(".kelvin"), flow && flow.value !== null ?
      flow.value.toPrecision(3) + " " + (flow.units || spec.flow_units) : "");
  const off = [];
  card.querySelector(".sensor").textContent = spec.pumps.map(([label, f]) => {
    const it = get(f);
    if (!it || it.value === null) return null;
    if (it.value === 0 && spec.must_run.includes(f)) off.push(label);
    return `${label} ${it.value ? "on" : "off"}`;
  }).filter(Boolean).join(" · ");
  const valve = new RegExp(spec.valves);
  const open = Object.values(byField).map((it) => it.field.slice(node.length + 2))
      .filter((f) => valve.test(f) && get(f).value)
      .sort((a, b) => parseInt(a.slice(1), 10) - parseInt(b.slice(1), 10));
  card.querySelector(".status").textContent = (off.length ? off.join(" ") + " OFF · " : "") +
      (open.length ? "open " + open.join(" ") : "valves closed");
  card.dataset.value = flow && flow.value !== null ? String(flow.value) : "";
  card.dataset.open = open.join(" ");
  return off.length > 0;
}

async function refreshLatest() {
  const items = await getJSON("/api/v1/latest", "latest");
  const groups = new Map();
  const plant = new Map();  // node -> {field: item} of the plant instruments' fields
  for (const it of items) {
    const node = it.field.split("::")[0];
    if (panelInfo && panelInfo.plant && panelInfo.plant[node]) {
      if (!plant.has(node)) plant.set(node, {});
      plant.get(node)[it.field] = it;
      continue;
    }
    const key = stemOf(it.field);
    if (!groups.has(key)) groups.set(key, {key});
    const g = groups.get(key);
    if (it.field.endsWith("_t")) g.t = it; else if (it.field.endsWith("_r")) g.r = it; else g.other = it;
  }
  const box = $("#channels");
  if ((groups.size || plant.size) && box.querySelector("p")) box.innerHTML = "";
  for (const [node, byField] of plant) plantCard(box, node, panelInfo.plant[node], byField);
  for (const g of groups.values()) {
    let card = box.querySelector(`[data-channel="${CSS.escape(g.key)}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "chan";
      card.dataset.channel = g.key;
      card.innerHTML = '<div class="name"></div><div class="kelvin"></div><div class="sensor"></div>' +
                       '<div class="status"></div><div class="age"></div>';
      const [node, ...rest] = g.key.split("::");
      card.querySelector(".name").textContent = cardName(node, rest.join("::"));
      box.appendChild(card);
    }
    // the fridge from top to bottom: cards in config order (instruments, then their channels)
    if (panelInfo) {
      const i = panelInfo.channels.findIndex((c) => c.kelvin === g.key + "_t" || c.sensor === g.key + "_r" ||
                                                   c.sensor === g.key);
      card.style.order = i < 0 ? 999 : i;
    }
    const main = g.t || g.r || g.other;
    const age = Math.min(...[g.t, g.r, g.other].filter(Boolean).map((x) => x.age));
    const stale = [g.t, g.r, g.other].filter(Boolean).every((x) => x.stale);
    const scan = [g.t, g.r].filter(Boolean).map((x) => x.scan).find(Boolean);
    // a plant field's bits too (a compressor's WARNING, ALARM, STOPPED)
    const allBits = [...new Set([g.t, g.r, g.other].filter(Boolean).flatMap((x) => x.status_bits))];
    // An unsynchronised clock is shown once in the header; it does not make a reading suspect.
    const bits = allBits.filter((b) => b !== "CLOCK_UNSYNCED");
    showValue(card.querySelector(".kelvin"), g.t ? fmtKelvin(g.t.value) :
        (g.other ? fmtSensor(g.other.value, g.other.units) : ""));
    card.querySelector(".sensor").textContent = g.r ? fmtSensor(g.r.value, g.r.units) : "";
    card.querySelector(".status").textContent = bits.length ? bits.join(" ") :
        (allBits.length && !document.body.classList.contains("kiosk") ? "ok (clock unsynced)" : "ok");
    // the age as answered, and when: between answers (and with no answer at all) it counts on here
    card.kp = {age, stale, scan, at: performance.now()};
    showAge(card);
    card.classList.toggle("scanned", !!scan);
    card.classList.toggle("alarm", alarmedFields.has(g.key + "_t") || alarmedFields.has(g.key + "_r") ||
                                   alarmedFields.has(g.key));
    card.classList.toggle("flagged", bits.length > 0);
    card.dataset.value = main && main.value !== null ? String(main.value) : "";
    card.dataset.t = main ? String(main.t) : "";
  }
  answered("latest");
}

// A card's age from its last answer plus the time since, every second: a reading does not get
// younger because the appliance stopped answering. Stale once past the answer's own limit.
function showAge(card) {
  const kp = card.kp;
  if (!kp) return;
  const since = (performance.now() - kp.at) / 1000;
  const age = kp.age + since;
  const limit = (panelInfo ? panelInfo.stale_after : 30) + (kp.scan ? kp.scan.period : 0);
  const stale = kp.stale || age > limit;
  const scan = kp.scan;
  const nextIn = scan && scan.next_in !== null ? Math.max(0, scan.next_in - since) : null;
  // A scanned 372 channel is read only while the autoscan is on it: between visits it is waiting.
  // the age first: on the kiosk's narrow cards the rest may be cut off
  card.querySelector(".age").textContent = stale ? "STALE · " + fmtAge(age) :
      (scan && !scan.active ? `${fmtAge(age)} · scanning · next in ≈ ${Math.ceil(nextIn)} s` :
       (scan ? `${fmtAge(age)} · scanner on it` + (nextIn >= 1 ? ` · next in ≈ ${Math.ceil(nextIn)} s` : "") :
        fmtAge(age)));
  card.classList.toggle("stale", stale);
  card.dataset.age = age.toFixed(1);
}
function everySecond() {
  for (const card of document.querySelectorAll("#channels .chan")) showAge(card);
  showContact();
}

// One status card per instrument or uplink: green while connected, red with the last error when not.
// Rebuilt only when what they say changes: a card (or button) replaced under a finger loses the tap.
function unchanged(box, what) {
  const sig = JSON.stringify(what);
  if (box.dataset.sig === sig) return true;
  box.dataset.sig = sig;
  return false;
}
function fillCards(box, items, key, describe, extra) {
  const shown = (it) => [it.name, it.connected, describe(it), it.last_error,
                         extra ? [it.incomplete_curves, shareLines(it)] : null];
  if (unchanged(box, items.map(shown))) return;
  box.innerHTML = "";
  for (const it of items) {
    const d = document.createElement("div");
    d.className = "inst" + (it.connected ? "" : " down");
    d.dataset[key] = it.name;
    d.textContent = describe(it) + (!it.connected && it.last_error ? ` · ${it.last_error}` : "");
    if (extra) extra(it, d);
    box.appendChild(d);
  }
}

// An instrument's card: a link to its settings view (read-only without the token), and a warning
// for each curve slot an upload left part written (health's incomplete_curves), until it is mended.
function instrumentExtras(i, card) {
  const a = document.createElement("a");
  a.className = "settings-link";
  a.href = `/instruments/${encodeURIComponent(i.name)}/settings`;
  a.textContent = "instrument settings";
  card.append(" · ", a);
  const slots = Object.entries(i.incomplete_curves || {});
  card.classList.toggle("incomplete", slots.length > 0);
  for (const [slot, why] of slots) {
    const w = document.createElement("div");
    w.className = "incomplete-curve";
    w.dataset.slot = slot;
    w.textContent = `curve ${slot} INCOMPLETE: ${why} (upload or verify it again)`;
    card.appendChild(w);
  }
  showShare(i, card);
}

// [instrument.share]: the port other clients use, and each client's address, command rate and wait.
function shareLines(i) {
  const sh = i.share;
  if (!sh) return [];
  const head = `shared on port ${sh.port} (policy ${sh.policy}) · ${sh.clients} client(s)` +
      ` · ${sh.commands} lines, ${sh.cached} from this cycle's readings` +
      (sh.settings ? ` · ${sh.settings} settings (audited)` : "") +
      (sh.settings_refused ? ` · ${sh.settings_refused} settings refused` : "") +
      (sh.displaced ? ` · ${sh.displaced} readings DISPLACED by clients' scanner moves` : "") +
      (sh.refused ? ` · ${sh.refused} clients refused` : "") +
      (sh.dropped ? ` · ${sh.dropped} lines dropped` : "") +
      (sh.cut_off ? ` · ${sh.cut_off} cut off` : "");
  return [head].concat((sh.client_list || []).map((c) =>
      `client ${c.address} · ${c.rate.toFixed(1)} lines/s · wait ${c.wait_ms.toFixed(1)} ms` +
      ` (max ${c.wait_ms_max.toFixed(0)}) · ${c.commands} lines` + (c.queued ? ` · ${c.queued} waiting` : "")));
}
function showShare(i, card) {
  const lines = shareLines(i);
  lines.forEach((text, n) => {
    const d = document.createElement("div");
    d.className = n ? "share-client" : "share";
    d.textContent = text;
    card.appendChild(d);
  });
}

async function refreshHealth() {
  const h = await getJSON("/api/v1/health", "health");
  lastHealth = h;
  const errs = sections([
    // the alarms first: whatever else in the answer is odd, an active alarm is shown
    ["alarms", () => showAlarms(h.alarms ? h.alarms.active : [])],
    ["unmatched rules", () => showUnmatched(h.alarms && h.alarms.unmatched ? h.alarms.unmatched : [])],
    ["clock", () => showClock(h)], ["config", () => showConfigError(h)], ["store", () => showStore(h)],
    ["instruments", () => showInstruments(h)], ["uplinks", () => showUplinks(h)],
  ]);
  if (errs.length) throw new Error("health answer: " + errs.join("; "));
  answered("health");
}
function showClock(h) {
  const clock = $("#clock");
  clock.textContent = h.clock_synchronised === false ? "clock NOT synchronised" :
      (h.clock_synchronised ? "clock synchronised" : "clock unknown");
  clock.className = "pill " + (h.clock_synchronised === false ? "warn" : "ok");
}
function showConfigError(h) {
  const ce = $("#config-error");
  ce.hidden = !h.config_error;
  ce.querySelector("pre").textContent = h.config_error ?
      "kelvinpi.toml on the SD card was rejected; the last good configuration is running:\n" + h.config_error : "";
}
function showStore(h) {
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
}
function showInstruments(h) {
  fillCards($("#instruments"), h.instruments, "node", (i) => {
    const errs = Object.entries(i.errors).map(([k, v]) => `${k} ${v}`).join(", ");
    const scan = i.scan ? ` · scanner ${i.scan.autoscan ? "on" : "held"} at ${i.scan.channel}` :
        (i.active_channel ? ` · channel ${i.active_channel}` : "");
    return `${i.name} (${i.model}) ` + (i.connected ? "connected" : "DOWN") +
        (i.identity ? ` · ${i.identity}` : "") + ` · cycle ${(i.cycle_seconds * 1000).toFixed(0)} ms` + scan +
        ` · errors: ${errs || "none"}`;
  }, instrumentExtras);
}
function showUplinks(h) {
  // notification targets sit with the uplinks: "connected" while nothing waits or fails
  const targets = (h.alarms ? h.alarms.targets : []).map((t) => Object.assign({}, t, {
    connected: !t.error && !t.last_error, last_error: t.error || t.last_error}));
  fillCards($("#uplinks"), h.uplinks.concat(targets.map((t) => Object.assign(t, {notify: true}))), "uplink",
      (u) => u.notify ? `notify ${u.name} (${u.kind || "?"}) · ` + (u.connected ? "ok" : "FAILING") +
                        ` · waiting ${u.backlog || 0} · sent ${u.sent || 0}` +
                        (u.failures ? ` · failures ${u.failures}` : "") :
          `uplink ${u.name} (${u.kind}) ` + (u.connected ? "connected" : "DOWN") + ` · backlog ${u.backlog}`);
}

// A rule whose field never appeared cannot fire: say so, with the fields its instrument does have.
function showUnmatched(rules) {
  const box = $("#unmatched");
  box.hidden = rules.length === 0;
  if (unchanged(box, rules)) return;
  box.innerHTML = "";
  for (const u of rules) {
    const d = document.createElement("div");
    d.dataset.rule = u.rule;
    const have = (u.instrument_fields || u.fields || []).map((f) => String(f).split("::").pop());
    d.textContent = `rule ${u.rule} cannot fire: no field ${u.field} on ${u.instrument || "any instrument"}` +
        (have.length ? ` (its fields: ${have.slice(0, 12).join(", ")}${have.length > 12 ? ", …" : ""})` : "");
    box.appendChild(d);
  }
}

// -- alarms: a banner on top, the channel's card red, acknowledge with the control token ------------
let alarmedFields = new Set();
function showAlarms(active) {
  alarmedFields = new Set(active.map((a) => a.target).filter(Boolean));
  const box = $("#alarms");
  box.hidden = active.length === 0;
  document.body.classList.toggle("alarmed", active.some((a) => !a.acked));
  if (unchanged(box, active.map((a) => [a.name, a.severity, a.target, a.detail, a.since, a.acked, a.acked_by]))) return;
  box.innerHTML = "";
  for (const a of active) {
    const d = document.createElement("div");
    d.className = `alarm-row ${a.severity}` + (a.acked ? " acked" : "");
    d.dataset.alarm = a.name;
    const text = document.createElement("span");
    const since = a.since ? hhmmss(a.since * 1000) : "";  // 24-hour, as the header
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
// Acknowledging: the control token if this browser already has it, else the PIN pad (touch: no
// keyboard needed) or the token typed into the pad's field. Never window.prompt.
async function postAck(name, auth) {
  const r = await fetch(`/api/v1/alarms/${encodeURIComponent(name)}/ack`,
                        {method: "POST", headers: {Authorization: auth}});
  if (r.ok) return null;
  let msg = `HTTP ${r.status}`;
  try { msg = (await r.json()).error.message; } catch (e) { /* keep the status */ }
  return msg;
}
async function ackAlarm(name) {
  const token = sessionStorage.getItem("kelvinpi-token");
  if (token && (await postAck(name, "Bearer " + token)) === null) { refreshHealth(); return; }
  sessionStorage.removeItem("kelvinpi-token");
  openPad(name);
}
const pad = {name: null, digits: ""};
function openPad(name) {
  pad.name = name; pad.digits = "";
  const ack = panelInfo ? panelInfo.ack : {pin: true, token: true};
  const box = $("#ackpad");
  $("#pad-alarm").textContent = name;
  box.querySelector(".keys").hidden = !ack.pin;
  box.querySelector("#pad-token").hidden = !ack.token || (ack.pin && document.body.classList.contains("kiosk"));
  $("#pad-msg").textContent = ack.pin ? "Enter the acknowledge PIN" :
      (ack.token ? "Give the control token" :
       "Acknowledging is off on this appliance (control.ack_pin_file or control.token_file)");
  $("#pad-msg").className = "";
  showDigits();
  box.hidden = false;
}
function closePad() { $("#ackpad").hidden = true; pad.name = null; pad.digits = ""; $("#pad-token input").value = ""; }
function showDigits() { $("#pad-entry").textContent = "•".repeat(pad.digits.length) || "\u00a0"; }
async function sendPad(auth, remember) {
  const msg = await postAck(pad.name, auth);
  if (msg === null) {
    if (remember) sessionStorage.setItem("kelvinpi-token", remember);
    closePad();
    refreshHealth();
    return;
  }
  pad.digits = ""; showDigits();
  $("#pad-msg").textContent = "Not acknowledged: " + msg;
  $("#pad-msg").className = "bad";
}
function setupPad() {
  const keys = $("#ackpad .keys");
  for (const k of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "⌫", "0", "OK"]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = k;
    b.dataset.key = k;
    b.addEventListener("click", () => {
      if (k === "⌫") pad.digits = pad.digits.slice(0, -1);
      else if (k === "OK") { if (pad.digits) sendPad("PIN " + pad.digits, null); return; }
      else if (pad.digits.length < 12) pad.digits += k;
      showDigits();
    });
    keys.appendChild(b);
  }
  $("#pad-cancel").addEventListener("click", closePad);
  $("#pad-token").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#pad-token input").value.trim();
    if (t) sendPad("Bearer " + t, t);
  });
}

// -- the fridge in one picture: every stage's temperature on one log axis, in config order, the
// sensor resistances on a second plot, events as marks on the time axis; rollups for long ranges.
let panelInfo = null;
const PALETTE = ["#ff7b72", "#ffa657", "#d2a8ff", "#79c0ff", "#56d364", "#e3b341", "#f778ba", "#a5d6ff",
                 "#7ee787", "#ffdcd7", "#bc8cff", "#39c5cf"];
const EVENT_COLOURS = {disconnected: "#f85149", connected: "#3fb950", clock_step: "#d29922", control: "#58a6ff"};
let shownEvents = [];
let shownRange = null;
let shownX = null;  // the plots' time axis: {min, max} of the chosen range, null for the whole history
window.kelvinpi = {};

async function refreshPanel() { panelInfo = await getJSON("/api/v1/panel"); }

function fmtAxisK(u, vals) { return vals.map((v) => v === null ? "" : (v < 1 ? +(v * 1000).toPrecision(3) + " mK" : +v.toPrecision(3) + " K")); }
function fmtAxisP(u, vals) { return vals.map((v) => v === null ? "" : +v.toPrecision(2) + ""); }
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
  return (await getJSON(`/api/v1/data?${q}&start=${start}&end=0&min_stride=${stride}`, null, DATA_DEADLINE_MS)).fields;
}

// A silence longer than the readings' expected spacing is a gap, drawn as one: a null point in it
// (uPlot breaks a line at null, with spanGaps off).
function withGaps(t, v, expected, stride) {
  const dts = [];
  for (let i = 1; i < t.length; i++) dts.push(t[i] - t[i - 1]);
  dts.sort((a, b) => a - b);
  const typical = dts.length ? dts[Math.floor(dts.length / 2)] : 0;  // a rollup's bucket, the stride's spacing
  const limit = 1.5 * Math.max(expected || 0, stride || 0, typical) + 1;
  const T = [], V = [];
  for (let i = 0; i < t.length; i++) {
    if (i && t[i] - t[i - 1] > limit) { T.push((t[i] + t[i - 1]) / 2); V.push(null); }
    T.push(t[i]); V.push(v[i]);
  }
  return [T, V];
}

function drawCombined(key, names, labels, fields, fmt, title, gaps, stride) {
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
  const tables = names.map((n, i) => fields[n] ?
      withGaps(fields[n].t, fields[n].value.map((v) => (v !== null && v > 0) ? v : null), gaps[i], stride) : [[], []]);
  // NULL_EXPAND (2): a gap's null spreads over the other series' times inside it, so the whole
  // silence is blank (the undefined that joining adds would otherwise be bridged by the line)
  const data = tables.length ? uPlot.join(tables, tables.map(() => [0, 2])) : [[]];
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
    // the x axis is the chosen range (the last 10 minutes are 10 minutes wide, however little data)
    scales: {x: {time: true, range: (u, mn, mx) => shownX ? [shownX.min, shownX.max] : [mn, mx]},
             y: {distr: 3, log: 10}},
    axes: [{stroke: "#8b98a5", grid: {stroke: "#2a323c"}},
           {stroke: "#8b98a5", grid: {stroke: "#2a323c"}, size: 70, values: fmt}],
    series: [{}].concat(names.map((n, i) => ({label: labels[i], stroke: PALETTE[i % PALETTE.length], width: 1.5,
                                               spanGaps: false}))),
    legend: {show: true, live: false},
    plugins: [eventMarks()],
  }, data, wrap);
}

async function refreshPlots() {
  if (!panelInfo) await refreshPanel();
  const span = rangeSeconds();
  if (!contact.serverKnown) await getJSON("/api/v1/latest");  // its X-Kelvinpi-Now: the Pi's clock
  const now = serverNowS();  // the Pi's "now": the data are stamped by its clock, not the browser's
  const start = span === null ? 1 : -span;
  const stride = span === null ? 3600 : Math.max(1, span / 600);
  const chans = panelInfo.channels;
  const temps = chans.filter((c) => c.kelvin && fields[c.kelvin]);
  const ohms = chans.filter((c) => c.sensor && c.sensor_units === "Ohm" && fields[c.sensor]);
  // a gauge controller's pressures (p1-p6), on their own log axis: a gauge that is off is a gap
  const press = chans.filter((c) => c.sensor && PRESSURE_UNITS.has(c.sensor_units) && fields[c.sensor]);
  const label = (c) => `${c.name} (${c.node})`;
  const note = $("#plots-note");
  note.textContent = "loading…";
  let tf, rf, pf, ev;
  try {
    [tf, rf, pf, ev] = await Promise.all([
      seriesData(temps.map((c) => c.kelvin), start, stride),
      seriesData(ohms.map((c) => c.sensor), start, stride),
      seriesData(press.map((c) => c.sensor), start, stride),
      getJSON(`/api/v1/events?since=${start}`, null, DATA_DEADLINE_MS)]);
    note.textContent = "";
  } catch (e) {
    note.textContent = "plot not loaded: " + e.message;
    throw e;
  }
  shownEvents = ev.events;
  // the chosen range, from where the store begins if it is younger (a new appliance is not a sliver)
  const oldest = panelInfo && panelInfo.store.oldest ? panelInfo.store.oldest : 0;
  shownX = span === null ? null : {min: Math.max(now - span, Math.min(oldest, now - 60)), max: now};
  window.kelvinpi.events = shownEvents;
  shownRange = {start: span === null ? 0 : now - span, end: now,
                fields: temps.map((c) => c.kelvin).concat(ohms.map((c) => c.sensor), press.map((c) => c.sensor))};
  drawCombined("temperatures", temps.map((c) => c.kelvin), temps.map(label), tf, fmtAxisK, "Temperatures [log]",
               temps.map((c) => c.gap), stride);
  drawCombined("resistances", ohms.map((c) => c.sensor), ohms.map(label), rf, fmtAxisOhm, "Sensor resistances [log]",
               ohms.map((c) => c.gap), stride);
  if (press.length) {
    const units = [...new Set(press.map((c) => c.sensor_units))].join(", ");
    drawCombined("pressures", press.map((c) => c.sensor), press.map(label), pf, fmtAxisP, `Pressures [${units}, log]`,
                 press.map((c) => c.gap), stride);
  }
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
window.kelvinpi.contact = contact;
window.kelvinpi.serverNow = serverNowS;
window.kelvinpi.refreshPlots = refreshPlots;

// One refresh; any exception counts as a failure of its endpoint (a request's own failure is already
// counted by getJSON) and a drawing error is shown as a "panel error" line: never a silent freeze.
async function tick(name, fn, ms) {
  try {
    await fn();
    if (name) { contact.panelError = ""; showContact(); }
  } catch (e) {
    if (!(e instanceof Counted)) {
      contact.panelError = e.message || String(e);
      if (name) fail(name, "panel error: " + contact.panelError); else showContact();
    }
  }
  setTimeout(() => tick(name, fn, ms), ms);
}
async function start() {
  try { await refreshFields(); await refreshPanel(); } catch (e) { /* retried below */ }
  tick("latest", refreshLatest, CONTACT.latest.period);
  tick("health", refreshHealth, CONTACT.health.period);
  setInterval(everySecond, 1000);
  setTimeout(() => tick(null, async () => { await refreshFields(); await refreshPanel(); await refreshPlots(); }, 30000), 300);
  $("#range").addEventListener("change", refreshPlots);
  $("#csv").addEventListener("click", downloadCsv);
  setupPad();
}
if (new URLSearchParams(location.search).has("kiosk")) document.body.classList.add("kiosk");
start();
