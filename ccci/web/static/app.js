// ccci web: fills the pages from the server-sent-events stream (/api/stream).
// Text from the fleet is only ever set with textContent; the one exception is the
// agent's screen, which the server sends as HTML it escaped (ccci/web/ansi.py).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, props = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v == null ? "" : String(v);
    else if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const kid of kids) node.append(kid);
  return node;
}

const TOKEN_KEY = "ccci-token";
function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

function setupToken() {
  if (location.hash.startsWith("#token=")) {  // a link from 'ccci web': keep it, drop it from the address
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const form = $("#token-form");
  if (!form) return;
  $("#token-input").value = token();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    form.closest("details").open = false;
  });
}

function dur(s) {
  if (s == null) return "-";
  s = Math.floor(s);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function shortTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "-"; }
function stateClass(state) { return "state state-" + String(state || "unknown").replace(/[^a-z_]/g, ""); }

function connect(params, handlers) {
  const live = $("#live");
  const es = new EventSource("/api/stream?" + new URLSearchParams(params));
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
  }
  es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  return es;
}

function eventItem(e) {
  return el("li", { "data-kind": e.kind },
    el("time", { text: shortTime(e.at) }), " ",
    el("b", { text: e.kind }), e.agent ? el("span", { class: "who", text: " [" + e.agent + "]" }) : "",
    e.source ? el("span", { class: "src", text: " source=" + e.source }) : "",
    " ", el("span", { text: e.message }));
}

function prependEvents(list, events, keep) {
  for (const e of events) list.prepend(eventItem(e));
  while (list.children.length > keep) list.lastChild.remove();
}

// ------------------------------------------------------------------ fleet page
const FLEET_COLS = ["name", "state", "phase", "pid", "uptime", "restarts", "last_event", "last_commit"];
const FLEET_LABELS = ["agent", "state", "phase", "pid", "uptime", "restarts", "last event", "last commit"];

function fleetCell(r, col) {
  if (col === "name") return el("a", { href: "/agent/" + encodeURIComponent(r.name), text: r.name });
  if (col === "state") return el("span", { class: stateClass(r.state), text: r.waiting_until ? "waiting until " + shortTime(r.waiting_until) : r.state });
  if (col === "uptime") return dur(r.uptime_s);
  if (col === "last_commit") return r.last_commit ? r.last_commit.sha + " " + r.last_commit.subject : "-";
  const v = r[col];
  return v == null || v === "" ? "-" : String(v);
}

function renderFleet(data) {
  $("#fleet-name").textContent = data.fleet;
  $("#phase").textContent = data.phase || "-";
  $("#watcher").textContent = data.watcher_pid ? "pid " + data.watcher_pid : "NOT running";
  const body = $("#fleet tbody");
  for (const r of data.agents) {
    let tr = body.querySelector(`tr[data-agent="${CSS.escape(r.name)}"]`);
    if (!tr) {
      tr = el("tr", { "data-agent": r.name });
      FLEET_COLS.forEach((c, i) => tr.append(el("td", { "data-col": c, "data-label": FLEET_LABELS[i] })));
      body.append(tr);
    }
    for (const c of FLEET_COLS) {
      const td = tr.querySelector(`td[data-col="${c}"]`);
      const v = fleetCell(r, c);
      if (typeof v === "string") { if (td.textContent !== v) td.textContent = v; }
      else td.replaceChildren(v);
    }
  }
}

function fleetPage() {
  connect({ view: "fleet" }, {
    fleet: renderFleet,
    events: (evs) => prependEvents($("#recent"), evs, 15),
  });
}

// ------------------------------------------------------------------ agent page
function agentName() { return decodeURIComponent(location.pathname.split("/")[2] || ""); }

async function act(body) {
  const out = $("#action-result");
  out.textContent = "…";
  out.className = "result";
  try {
    const resp = await fetch("/api/action", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CCCI-Token": token() },
      body: JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({ error: "HTTP " + resp.status }));
    out.textContent = resp.ok ? data.lines.join("; ") : (data.error || (data.lines || []).join("; "));
    out.className = "result " + (resp.ok ? "ok" : "refused");
  } catch (err) {
    out.textContent = "the dashboard did not answer: " + err;
    out.className = "result refused";
  }
}

function renderAgent(d) {
  const r = d.row;
  document.title = "ccci " + d.name;
  $("#agent-state").textContent = r.waiting_until ? "waiting until " + shortTime(r.waiting_until) : r.state;
  $("#agent-state").className = stateClass(r.state);
  const pairs = [["backend", r.backend + (r.cli_version ? " " + r.cli_version : "")], ["role", r.role],
    ["phase", d.phase || "-"], ["pid", r.pid || "-"], ["uptime", dur(r.uptime_s)], ["restarts", r.restarts],
    ["resumes", r.resumes], ["conversation", d.conversation_id || "-"], ["session", r.session],
    ["last event", r.last_event || "-"],
    ["last commit", r.last_commit ? r.last_commit.sha + " " + r.last_commit.subject + " (" + shortTime(r.last_commit.at) + ")" : "-"]];
  $("#summary").replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-field": k })]));
  const screen = $("#screen");
  if (screen.dataset.html !== d.screen) { screen.innerHTML = d.screen || "(no pane)"; screen.dataset.html = d.screen; }
  const tl = $("#timeline");
  if (d.timeline.length) $("#timeline-span").textContent = shortTime(d.timeline[0].start) + " → " + shortTime(d.timeline[d.timeline.length - 1].end) + " UTC";
  tl.replaceChildren(...d.timeline.map((s) => {
    const seg = el("span", { class: "seg " + stateClass(s.state), title: s.state + ": " + shortTime(s.start) + " → " + shortTime(s.end) });
    seg.style.width = s.pct + "%";
    return seg;
  }));
  const totals = {};
  for (const s of d.timeline) totals[s.state] = (totals[s.state] || 0) + s.pct;
  $("#timeline-legend").replaceChildren(...Object.entries(totals).map(([st, pct]) =>
    el("li", {}, el("span", { class: "swatch " + stateClass(st) }), " " + st + " " + pct.toFixed(1) + "%")));
  $("#tokens tbody").replaceChildren(...(d.tokens.length ? d.tokens.map((t) => {
    const tr = el("tr");
    [["day", t.day], ["model", t.model], ["input", t.input_tokens], ["output", t.output_tokens],
     ["cache read", t.cache_read_tokens], ["cache write", t.cache_write_tokens]]
      .forEach(([k, v]) => tr.append(el("td", { "data-label": k, text: v })));
    return tr;
  }) : [el("tr", {}, el("td", { colSpan: 6, text: "no token usage recorded for this agent" }))]));
  $("#remedies").replaceChildren(...d.remedies.slice().reverse().map(eventItem));
  $("#messages").replaceChildren(...d.messages.map((m) =>
    el("li", {}, el("b", { text: "#" + m.id + " " + m.status }), " ", el("span", { text: m.text }),
       m.detail ? el("span", { class: "src", text: " (" + m.detail + ")" }) : "")));
  const list = $("#events");
  if (!list.dataset.filled) { list.replaceChildren(...d.events.slice().reverse().map(eventItem)); list.dataset.filled = "1"; }
  $("#job-button").hidden = !(d.jobs || []).includes(d.name);
}

function agentPage() {
  const name = agentName();
  $("#agent-name").textContent = name;
  $("#send-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act({ action: "send", agent: name, text: $("#send-text").value });
  });
  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", () => act({ action: b.dataset.action, agent: name }));
  }
  connect({ view: "agent", agent: name }, {
    agent: renderAgent,
    events: (evs) => { if ($("#events").dataset.filled) prependEvents($("#events"), evs, 100); },
  });
}

// ------------------------------------------------------------------ events page
let eventStream = null;

function eventRow(e) {
  const tr = el("tr", { "data-kind": e.kind });
  tr.append(el("td", { "data-label": "time", text: shortTime(e.at) }),
            el("td", { "data-label": "agent", text: e.agent || "-" }),
            el("td", { "data-label": "kind", text: e.kind }),
            el("td", { "data-label": "message", text: e.message + (e.source ? "  (source=" + e.source + ")" : "") }));
  return tr;
}

function eventsPage() {
  const form = $("#filters");
  const q = new URLSearchParams(location.search);
  fetch("/api/fleet").then((r) => r.json()).then((d) => {
    for (const a of d.agents) $("#f-agent").append(el("option", { value: a.name, text: a.name }));
    $("#f-agent").value = q.get("agent") || "";
  });
  $("#f-kind").value = q.get("kind") || "";
  $("#f-since").value = q.get("since") || "";
  const start = () => {
    const params = { view: "events", agent: $("#f-agent").value || q.get("agent") || "", kind: $("#f-kind").value, since: $("#f-since").value };
    if (eventStream) eventStream.close();
    $("#log tbody").replaceChildren();
    eventStream = connect(params, {
      events: (evs) => { const body = $("#log tbody"); for (const e of evs) body.prepend(eventRow(e)); while (body.children.length > 1000) body.lastChild.remove(); },
    });
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams(new FormData(form));
    for (const [k, v] of [...params]) if (!v) params.delete(k);
    history.replaceState(null, "", "/events" + (params.toString() ? "?" + params : ""));
    q.set("agent", $("#f-agent").value);
    start();
  });
  start();
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  const page = document.body.dataset.page;
  if (page === "fleet") fleetPage();
  else if (page === "agent") agentPage();
  else if (page === "events") eventsPage();
});
