// trainjob-gateway dashboard: plain JavaScript over the /v1 API, no build step, no external host.
// Every value from the API is put in the page as text (never as HTML).
"use strict";

const KEY = "tjg-api-key";
const PHASES = ["QUEUED", "STARTING", "RUNNING", "SUSPENDING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLING",
  "CANCELLED", "UNKNOWN"];
const state = { backends: [], filters: {}, token: null, tokens: [], stream: null, jobs: new Map(), follow: null };

function h(tag, attrs, ...children) {
  const el = tag === "svg" || tag === "polyline" || tag === "rect" || tag === "text" || tag === "line"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function key() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const r = await fetch(path, { ...options, headers, body: options.body ? JSON.stringify(options.body) : undefined });
  if (r.status === 401) { signOut("that API key was not accepted"); throw new Error("unauthorized"); }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error((data && data.detail) || `HTTP ${r.status}`);
  return data;
}

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60]]) if (s >= n) return `${Math.floor(s / n)}${u}`;
  return `${Math.floor(s)}s`;
}

function phaseBadge(status) {
  return h("span", {},
    h("span", { class: `phase ${status.phase}`, "data-testid": "phase", text: status.phase }),
    status.stale ? h("span", { class: "mark stale", title: "the last poll failed", text: "stale" }) : null,
    status.idle ? h("span", { class: "mark idle", title: "GPUs held and idle", text: "idle" }) : null);
}

function main(...nodes) { const m = document.getElementById("main"); m.replaceChildren(...nodes); return m; }

function setActive(view) {
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view);
}

// -- sign in / out -----------------------------------------------------------------------------------------------
function signOut(why) {
  sessionStorage.removeItem(KEY);
  stopStream();
  document.getElementById("nav").hidden = true;
  location.hash = "";
  renderSignIn(why);
}

function renderSignIn(why) {
  const err = h("p", { id: "signin-error", class: "error", role: "alert", text: why || "" });
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  const form = h("form", { id: "signin", class: "card" }, h("h2", { text: "Sign in" }),
    h("p", { text: "Your API key stays in this tab's session storage; it is sent only as an Authorization header." }),
    h("label", {}, "API key", input), h("button", { type: "submit", text: "Sign in" }), err);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    try { await start(); } catch (ex) { err.textContent = ex.message; }
  });
  main(form);
}

async function start() {
  state.backends = await api("/v1/backends");
  document.getElementById("nav").hidden = false;
  startStream();
  if (!location.hash || location.hash === "#") location.hash = "#/jobs"; else route();
}

// -- live updates: the caller's transitions over /v1/events (fetch, so the key goes in a header) -----------------
function stopStream() { if (state.stream) state.stream.abort(); state.stream = null; setLive(false); }
function setLive(on) { const el = document.getElementById("live"); el.textContent = `live: ${on ? "on" : "off"}`; el.classList.toggle("on", on); }

async function startStream() {
  stopStream();
  const ctl = new AbortController();
  state.stream = ctl;
  try {
    const r = await fetch("/v1/events", { headers: { Authorization: `Bearer ${key()}` }, signal: ctl.signal });
    if (!r.ok) return;
    setLive(true);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i); buf = buf.slice(i + 2);
        let event = "message", data = "";
        for (const line of frame.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) onEvent(event, JSON.parse(data));
      }
    }
  } catch (e) { /* aborted or the gateway went away */ }
  setLive(false);
  if (state.stream === ctl && key()) setTimeout(startStream, 2000);  // reconnect
}

let reloadTimer = null;

// Whether the page still shows `view` (and `arg`): a render whose requests answer after the user moved on
// (or after an event's delayed reload) must not paint over the view that is there now.
function onView(view, arg) {
  const [, v, a] = location.hash.split("?")[0].split("/");
  const shown = (v === "job" && a) || v === "usage" || v === "backends" ? v : "jobs";  // as route() decides
  return shown === view && (arg === undefined || decodeURIComponent(a || "") === arg);
}

function onEvent(event, data) {
  if (!["transition", "idle", "active"].includes(event)) return;
  const view = location.hash.split("/")[1];
  if (view === "jobs") {
    const row = document.querySelector(`tr[data-job="${CSS.escape(data.job_id)}"]`);
    if (row) refreshRow(row, data.job_id);
    else if (!state.token) { clearTimeout(reloadTimer); reloadTimer = setTimeout(() => renderJobs(false), 300); }
  } else if (view === "job" && location.hash.split("/")[2] === data.job_id) {
    clearTimeout(reloadTimer); reloadTimer = setTimeout(() => renderJob(data.job_id), 300);
  }
}

async function refreshRow(row, id) {
  try { const job = await api(`/v1/jobs/${encodeURIComponent(id)}`); row.replaceWith(jobRow(job)); } catch (e) { /* gone */ }
}

// -- jobs --------------------------------------------------------------------------------------------------------
function jobRow(job) {
  return h("tr", { "data-job": job.id, "data-backend": job.backend },
    h("td", {}, h("a", { href: `#/job/${job.id}`, text: job.name })),
    h("td", { text: job.backend }), h("td", { text: job.kind || "training" }),
    h("td", {}, phaseBadge(job.status)), h("td", { class: "muted", text: job.status.vendor_phase || "-" }),
    h("td", { class: "reason", "data-testid": "reason", title: job.status.reason_message || "", text: job.status.reason || "-" }),
    h("td", { text: job.origin }), h("td", { class: "muted", text: age(job.created_at) }));
}

function select(name, label, options, value) {
  return h("label", {}, label, h("select", { name },
    options.map(([v, t]) => h("option", { value: v, selected: v === (value || ""), text: t }))));
}

async function renderJobs(resetPaging = true) {
  setActive("jobs");
  if (resetPaging) { state.token = null; state.tokens = []; }
  const f = state.filters;
  const form = h("form", { class: "filters", id: "filters" },
    select("backend", "Backend", [["", "all"], ...state.backends.map((b) => [b.name, b.name])], f.backend),
    select("phase", "Phase", [["", "all"], ...PHASES.map((p) => [p, p])], f.phase),
    select("kind", "Kind", [["", "all"], ["training", "training"], ["inference", "inference"]], f.kind),
    select("origin", "Origin", [["", "all"], ["gateway", "gateway"], ["external", "external"]], f.origin),
    h("label", {}, "Label k=v", h("input", { name: "label", value: f.label || "", placeholder: "team=vision" })),
    h("label", {}, "Name prefix", h("input", { name: "name_prefix", value: f.name_prefix || "" })),
    h("button", { type: "submit", text: "Filter" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state.filters = Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
    renderJobs();
  });
  const params = new URLSearchParams({ ...state.filters, limit: "25" });
  if (state.token) params.set("page_token", state.token);
  let page;
  try { page = await api(`/v1/jobs?${params}`); } catch (e) { if (onView("jobs")) main(form, h("p", { class: "error", text: e.message })); return; }
  if (!onView("jobs")) return;
  const body = h("tbody", { id: "jobs-body" }, page.jobs.map(jobRow));
  const table = h("table", { id: "jobs" }, h("thead", {}, h("tr", {},
    ["Name", "Backend", "Kind", "Phase", "Vendor phase", "Reason", "Origin", "Age"].map((t) => h("th", { text: t })))), body);
  const pager = h("div", { class: "pager" },
    h("button", { class: "secondary", type: "button", disabled: !state.tokens.length, text: "First page",
      onclick: () => renderJobs() }),
    h("button", { class: "secondary", type: "button", disabled: !page.next_page_token, text: "Next page",
      onclick: () => { state.tokens.push(state.token); state.token = page.next_page_token; renderJobs(false); } }),
    h("span", { class: "muted", text: `${page.jobs.length} job(s) on this page` }));
  main(h("div", { class: "card" }, h("h2", { text: "Jobs" }), form,
    page.jobs.length ? table : h("p", { class: "muted", id: "no-jobs", text: "No jobs match." }), pager));
}

// -- one job -----------------------------------------------------------------------------------------------------
function capability(job, cap) {
  const b = state.backends.find((x) => x.name === job.backend);
  if (!b) return { ok: false, reason: "unknown backend" };
  const caps = (job.kind === "inference" ? b.inference_capabilities : b.capabilities) || {};
  const v = caps[cap];
  return v === true || v === undefined ? { ok: true } : { ok: false, reason: v.reason };
}

function action(job, label, cap, allowed, run) {
  const c = capability(job, cap);
  const why = !c.ok ? c.reason : !allowed ? `not while ${job.status.phase}` : null;
  return h("span", {}, h("button", { type: "button", "data-action": label.toLowerCase(), disabled: !!why,
    title: why || "", text: label, onclick: run }), why ? h("span", { class: "reason", text: ` ${why}` }) : null);
}

function chart(series) {
  const pts = series.points.map(([t, v]) => [Date.parse(t), v]);
  if (pts.length < 2) return h("p", { class: "muted", text: `${series.name}: ${pts.length} point(s)` });
  const w = 520, ht = 90, xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys, series.unit === "percent" ? 100 : 1);
  const line = pts.map(([x, y]) => `${((x - x0) / (x1 - x0 || 1)) * (w - 10) + 5},${ht - 5 - (y / y1) * (ht - 10)}`);
  const last = ys[ys.length - 1];
  const shown = series.unit === "bytes" ? `${(last / 2 ** 30).toFixed(1)} GiB` : `${last.toFixed(1)}%`;
  return h("div", { class: "chart", "data-metric": series.name }, h("div", { text: `${series.name} (latest ${shown})` }),
    h("svg", { width: w, height: ht, viewBox: `0 0 ${w} ${ht}` }, h("polyline", { points: line.join(" ") })));
}

async function renderJob(id) {
  setActive("jobs");
  let job, events;
  try {
    [job, events] = await Promise.all([api(`/v1/jobs/${encodeURIComponent(id)}`),
      api(`/v1/jobs/${encodeURIComponent(id)}/events`)]);
  } catch (e) { if (onView("job", id)) main(h("p", { class: "error", text: e.message })); return; }
  if (!onView("job", id)) return;
  const st = job.status;
  const terminal = st.terminal;
  const act = async (path, body) => {
    try { await api(`/v1/jobs/${encodeURIComponent(id)}${path}`, { method: "POST", body }); renderJob(id); }
    catch (e) { document.getElementById("action-error").textContent = e.message; }
  };
  const targets = state.backends.filter((b) => b.name !== job.backend);
  const migrateTo = h("select", { id: "migrate-to" }, targets.map((b) => h("option", { value: b.name, text: b.name })));
  // What becomes of this job once the target has it: cancelled by default (two copies of a GPU job cost twice).
  const sourceAction = h("select", { id: "migrate-source-action", title: "what happens to this job once the target accepted it" },
    [["cancel", "then cancel this one"], ["suspend", "then suspend this one"], ["keep", "and keep this one running"]]
      .map(([v, t]) => h("option", { value: v, text: t })));
  const migrateBox = h("div", { id: "migrate-box" });
  const dryRun = async () => {
    try {
      const d = await api(`/v1/jobs/${encodeURIComponent(id)}/migrate?dry_run=true`, { method: "POST", body: { backend: migrateTo.value } });
      migrateBox.replaceChildren(h("h3", { text: `Dry run: ${job.backend} -> ${d.backend}` }),
        h("table", { id: "comparison" }, h("thead", {}, h("tr", {}, ["Field", job.backend, d.backend].map((t) => h("th", { text: t })))),
          h("tbody", {}, d.comparison.map((c) => h("tr", {}, h("td", { text: c.field }),
            h("td", { class: `outcome-${c.source.outcome}`, text: `${c.source.outcome || "-"}: ${c.source.detail}` }),
            h("td", { class: `outcome-${c.target.outcome}`, text: `${c.target.outcome || "-"}: ${c.target.detail}` }))))),
        h("div", { class: "actions" }, h("button", { type: "button", id: "migrate-confirm", text: `Migrate to ${d.backend}`,
          onclick: async () => {
            try {
              const moved = await api(`/v1/jobs/${encodeURIComponent(id)}/migrate`, { method: "POST",
                body: { backend: d.backend, source_action: sourceAction.value } });
              location.hash = `#/job/${moved.id}`;
            } catch (e) { document.getElementById("action-error").textContent = e.message; }
          } })));
    } catch (e) { migrateBox.replaceChildren(h("p", { class: "error", text: e.message })); }
  };
  const actions = h("div", { class: "actions", id: "actions" },
    // Destructive actions ask first: they sit beside Suspend and look alike.
    action(job, "Cancel", "cancel", !terminal, () => confirm(`Cancel ${job.name}? It stops for good.`) && act("/cancel")),
    action(job, "Suspend", "suspend", ["QUEUED", "STARTING", "RUNNING"].includes(st.phase), () => act("/suspend")),
    action(job, "Resume", "resume", ["SUSPENDED", "SUSPENDING"].includes(st.phase), () => act("/resume")),
    action(job, "Delete", "delete", !job.deleted, async () => {
      if (!confirm(`Delete ${job.name} from ${job.backend}? Its vendor job is removed; the record stays.`)) return;
      try { await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }); renderJob(id); }
      catch (e) { document.getElementById("action-error").textContent = e.message; }
    }),
    targets.length && !job.migrated_to ? h("span", {}, migrateTo, sourceAction,
      h("button", { type: "button", class: "secondary", id: "migrate-dry-run", text: "Migrate (dry run first)", onclick: dryRun })) : null);
  const lineage = [["migrated from", job.migrated_from], ["migrated to", job.migrated_to]].filter(([, v]) => v)
    .map(([k, v]) => [h("div", { class: "muted", text: k }), h("div", {}, h("a", { href: `#/job/${v}`, "data-lineage": k, text: v }))]);
  const summary = h("div", { class: "grid" },
    h("div", { class: "muted", text: "phase" }), h("div", { id: "job-phase" }, phaseBadge(st)),
    h("div", { class: "muted", text: "vendor phase" }), h("div", { text: st.vendor_phase || "-" }),
    h("div", { class: "muted", text: "message" }), h("div", { text: st.message || "-" }),
    h("div", { class: "muted", text: "reason" }), h("div", { id: "job-reason", text: st.reason ? `${st.reason}${st.reason_message ? ` (${st.reason_message})` : ""}` : "-" }),
    h("div", { class: "muted", text: "backend" }), h("div", { text: `${job.backend} (${job.backend_job_id || "not yet"})` }),
    job.placement ? [h("div", { class: "muted", text: "placed" }), h("div", { id: "job-placement",
      text: `${job.placement.chosen} by ${job.placement.policy}: ${job.placement.why}; ` +
        job.placement.candidates.map((c) => `${c.backend} ${c.feasible ? "could" : "could not"} (${c.why})`).join("; ") })] : null,
    h("div", { class: "muted", text: "kind" }), h("div", { text: job.kind }),
    job.kind === "inference" ? [h("div", { class: "muted", text: "endpoint" }), h("div", { text: st.endpoint || "-" }),
      h("div", { class: "muted", text: "replicas" }), h("div", { text: `${st.ready_replicas ?? "?"} ready / ${st.desired_replicas ?? "?"}` })] : null,
    h("div", { class: "muted", text: "GPU utilization" }), h("div", { text: st.gpu_utilization == null ? "-" : `${st.gpu_utilization}% mean` }),
    h("div", { class: "muted", text: "created" }), h("div", { text: job.created_at }), lineage);
  const report = h("table", { id: "report" }, h("thead", {}, h("tr", {}, ["Field", "Outcome", "Detail"].map((t) => h("th", { text: t })))),
    h("tbody", {}, job.report.map((e) => h("tr", {}, h("td", { text: e.field }),
      h("td", { class: `outcome-${e.outcome}`, text: e.outcome }), h("td", { text: e.detail })))));
  const history = h("table", { id: "history" }, h("thead", {}, h("tr", {}, ["When", "What", "Phase", "Vendor", "Message"].map((t) => h("th", { text: t })))),
    h("tbody", {}, events.events.map((e) => h("tr", {}, h("td", { class: "muted", text: e.at || "-" }),
      h("td", { text: e.kind === "vendor" ? `vendor (${e.source})` : e.kind }),
      h("td", { text: e.to_phase || e.reason || "-" }), h("td", { text: e.vendor_phase || e.type || "-" }),
      h("td", { text: e.message || "" })))));
  const attempts = attemptsTimeline(job);
  const logs = h("div", { id: "logs" });
  const metrics = h("div", { id: "metrics" });
  const whyBox = h("div", { id: "why" });
  main(h("div", { class: "card" }, h("h2", { text: job.name }), summary, h("h3", { text: "Actions" }), actions,
    h("p", { id: "action-error", class: "error", role: "alert" }), migrateBox),
  h("div", { class: "card" }, h("h3", { text: "Why" }), whyBox),
  attempts ? h("div", { class: "card" }, h("h3", { text: "Attempts" }), attempts) : null,
  h("div", { class: "card" }, h("h3", { text: "Metrics" }), metrics),
  h("div", { class: "card" }, h("h3", { text: "Log" }), logs),
  h("div", { class: "card" }, h("h3", { text: "History (transitions and vendor events)" }), history),
  h("div", { class: "card" }, h("h3", { text: "Translation report" }), report, h("h3", { text: "Spec" }),
    h("pre", { text: JSON.stringify(job.spec, null, 2) })));
  loadMetrics(job, metrics);
  loadLogs(job, logs);
  loadWhy(job, whyBox);
}

// One bar per attempt (a vendor job that tried to do this job), as long as it lasted, with how it ended.
function attemptsTimeline(job) {
  const list = job.attempts || [];
  if (!list.length) return null;
  const t0 = Date.parse(list[0].started_at);
  const end = (a) => (a.ended_at ? Date.parse(a.ended_at) : Date.now());
  const span = Math.max(1, end(list[list.length - 1]) - t0);
  return h("div", { id: "attempts" }, list.map((a) => {
    const bar = h("div", { class: `attempt-bar backend-${a.backend}` });
    bar.style.marginLeft = `${(100 * (Date.parse(a.started_at) - t0)) / span}%`;
    bar.style.width = `${Math.max(1, (100 * (end(a) - Date.parse(a.started_at))) / span)}%`;
    const how = a.ended_at ? `${a.phase || "?"}${a.reason ? ` (${a.reason})` : ""}` : `${a.phase || "?"} now`;
    return h("div", { class: "attempt", "data-attempt": String(a.n) },
      h("div", { class: "attempt-label", text: `#${a.n} ${a.backend} · ${how} · ${a.gpu_hours.toFixed(4)} GPU-h` +
        (a.exit_code != null ? ` · exit ${a.exit_code}` : "") }),
      h("div", { class: "attempt-track" }, bar));
  }));
}

// Why it waits or ended, the capacity the gateway last saw on every backend, and what would help.
async function loadWhy(job, box) {
  try {
    const w = await api(`/v1/jobs/${encodeURIComponent(job.id)}/why`);
    const seen = (v) => (v == null ? "?" : String(v));
    box.replaceChildren(...[h("p", { id: "why-summary", text: w.summary }),
      w.reason ? h("p", { class: "muted", text: `reason: ${w.reason}${w.reason_message ? ` - ${w.reason_message}` : ""}${w.since ? `; since ${w.since}` : ""}` }) : null,
      h("table", { id: "why-capacity" }, h("thead", {}, h("tr", {}, ["Backend", `Free ${w.asks.gpu_type || ""} GPUs`, "Total", "Queued", "Seen"].map((t) => h("th", { text: t })))),
        h("tbody", {}, w.capacity.map((c) => h("tr", {}, h("td", { text: c.backend }), h("td", { text: seen(c.free_gpus) }),
          h("td", { text: seen(c.total_gpus) }), h("td", { text: seen(c.queued_jobs) }),
          h("td", { class: "muted", text: c.age_seconds == null ? "never" : `${c.age_seconds} s ago` }))))),
      w.suggestions.length ? h("ul", { id: "why-suggestions" }, w.suggestions.map((s) => h("li", { text: s }))) : null]
      .filter(Boolean));  // (replaceChildren would print a null as the text "null")
  } catch (e) { box.replaceChildren(h("p", { class: "muted", text: e.message })); }
}

async function loadMetrics(job, box) {
  const c = capability(job, "metrics");
  if (!c.ok) { box.replaceChildren(h("p", { class: "muted", text: c.reason })); return; }
  if (!job.backend_job_id) { box.replaceChildren(h("p", { class: "muted", text: "not on the backend yet" })); return; }
  try {
    const m = await api(`/v1/jobs/${encodeURIComponent(job.id)}/metrics`);
    box.replaceChildren(...m.series.map(chart),
      ...m.report.filter((n) => n.outcome !== "exact").map((n) => h("p", { class: "muted", text: `${n.name}: ${n.outcome} - ${n.detail}` })));
  } catch (e) { box.replaceChildren(h("p", { class: "error", text: e.message })); }
}

async function loadLogs(job, box) {
  clearInterval(state.follow);
  const c = capability(job, "logs");
  if (!c.ok) { box.replaceChildren(h("p", { class: "muted", text: c.reason })); return; }
  const pre = h("pre", { id: "log-text", text: "" });
  const follow = h("input", { type: "checkbox", id: "log-follow" });
  const load = async () => {
    try { const r = await api(`/v1/jobs/${encodeURIComponent(job.id)}/logs?tail=200`); pre.textContent = r.content; pre.scrollTop = pre.scrollHeight; }
    catch (e) { pre.textContent = e.message; }
  };
  follow.addEventListener("change", () => { clearInterval(state.follow); if (follow.checked) state.follow = setInterval(load, 2000); });
  box.replaceChildren(h("label", {}, h("span", {}, follow, " follow")), pre);
  if (job.backend_job_id) load(); else pre.textContent = "not on the backend yet";
}

// -- usage and backends ------------------------------------------------------------------------------------------
async function renderUsage() {
  setActive("usage");
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const groupBy = params.get("group_by") || "backend", since = params.get("since") || "7d";
  const form = h("form", { class: "filters", id: "usage-form" },
    select("group_by", "Group by", [["backend", "backend"], ["project", "project"], ["tenant", "tenant"], ["label:team", "label team"]], groupBy),
    select("since", "Since", [["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"], ["30d", "30 days"]], since),
    h("button", { type: "submit", text: "Show" }));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/usage?${new URLSearchParams(new FormData(form))}`; });
  let u;
  try { u = await api(`/v1/usage?${new URLSearchParams({ group_by: groupBy, since })}`); }
  catch (e) { if (onView("usage")) main(form, h("p", { class: "error", text: e.message })); return; }
  if (!onView("usage")) return;
  const max = Math.max(...u.groups.map((g) => g.gpu_hours), 1e-9);
  const bars = h("svg", { width: 520, height: 24 * u.groups.length + 4 },
    u.groups.map((g, i) => [h("rect", { class: "bar", x: 120, y: 4 + i * 24, height: 16, width: Math.max(1, (g.gpu_hours / max) * 380) }),
      h("text", { x: 0, y: 16 + i * 24, "font-size": 12, text: g.key })]));
  const rows = [...u.groups, { key: "TOTAL", ...u.total }].map((g) => h("tr", {}, h("td", { text: g.key }), h("td", { text: g.jobs }),
    h("td", { text: g.gpu_hours.toFixed(4) }), h("td", { text: g.avg_gpu_utilization == null ? "-" : `${g.avg_gpu_utilization}%` }),
    h("td", { text: `${g.cost.toFixed(2)} ${u.currency}` })));
  main(h("div", { class: "card" }, h("h2", { text: "GPU usage" }), form, bars,
    h("table", { id: "usage" }, h("thead", {}, h("tr", {}, [groupBy, "Jobs", "GPU-hours", "Mean GPU util.", "Cost"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows))));
}

async function renderBackends() {
  setActive("backends");
  state.backends = await api("/v1/backends");
  if (!onView("backends")) return;
  const cannot = (caps) => Object.entries(caps || {}).filter(([, v]) => v !== true).map(([k, v]) => `${k}: ${v.reason}`);
  main(h("div", { class: "card" }, h("h2", { text: "Backends" }), h("table", { id: "backends" },
    h("thead", {}, h("tr", {}, ["Name", "Kind", "Healthy", "Circuit", "Last sync", "Cannot (training)", "Cannot (inference)"].map((t) => h("th", { text: t })))),
    h("tbody", {}, state.backends.map((b) => h("tr", { "data-backend": b.name }, h("td", { text: b.name }), h("td", { text: b.kind }),
      h("td", { text: b.healthy ? "yes" : "no" }), h("td", { text: b.circuit }),
      h("td", { text: b.sync && b.sync.last_ok ? new Date(b.sync.last_ok * 1000).toISOString() : "-" }),
      h("td", {}, cannot(b.capabilities).map((t) => h("div", { class: "reason", text: t }))),
      h("td", {}, cannot(b.inference_capabilities).map((t) => h("div", { class: "reason", text: t })))))))));
}

// -- routing -----------------------------------------------------------------------------------------------------
function route() {
  if (!key()) { renderSignIn(); return; }
  clearInterval(state.follow);
  clearTimeout(reloadTimer);
  const [, view, arg] = location.hash.split("?")[0].split("/");
  if (view === "job" && arg) renderJob(decodeURIComponent(arg));
  else if (view === "usage") renderUsage();
  else if (view === "backends") renderBackends();
  else renderJobs();
}

window.addEventListener("hashchange", route);
document.getElementById("signout").addEventListener("click", () => signOut());
if (key()) start().catch(() => {}); else renderSignIn();
