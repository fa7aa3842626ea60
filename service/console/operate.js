// Operate: the service's own metrics (catalogue size, events, request rates and latency), the models
// that serve and every trained version with its verdict, reload, reindex with progress, and the
// latest evaluation report with its plots. Every call needs the admin scope.
import { $, ApiError, api, attempt, fill, h, num, refusal, showError, when } from "./lib.js";

const state = { timer: null, soon: null, previous: null, reindexTimer: null, plotUrls: [] };
let els;

export function init() {
  els = {
    refused: $("#op-refused"), tiles: $("#op-tiles"), latency: $("#op-latency"), models: $("#op-models"),
    encoder: $("#op-encoder"), reindexForm: $("#op-reindex"), reindexProgress: $("#op-reindex-progress"),
    reindexState: $("#op-reindex-state"), evaluation: $("#op-eval"),
  };
  $("#op-refresh").addEventListener("click", () => refreshMetrics());
  $("#op-reload").addEventListener("click", reload);
  els.reindexForm.addEventListener("submit", (e) => {
    e.preventDefault();
    startReindex();
  });
}

const panels = () => document.querySelectorAll("#page-operate > .panel");

export function show() {
  els.refused.replaceChildren();
  for (const panel of panels()) panel.hidden = false;
  refreshMetrics();
  loadModels();
  pollReindex();
  loadEvaluation();
  clearInterval(state.timer);
  clearTimeout(state.soon);
  state.soon = setTimeout(refreshMetrics, 2000); // a first rate soon, then every 5 s
  state.timer = setInterval(refreshMetrics, 5000);
}

export function hide() {
  clearInterval(state.timer);
  clearTimeout(state.soon);
  clearTimeout(state.reindexTimer);
}

/** Admin calls on this page: a refusal is shown once, at the top of the page, not per panel. */
async function admin(op, fn) {
  try {
    const out = await attempt(op, "admin", fn, { ownRefusal: true });
    return out;
  } catch (err) {
    if (err instanceof ApiError && err.refused) {
      clearInterval(state.timer);
      clearTimeout(state.soon);
      refusal(els.refused, err, "Operate", "admin");
      for (const panel of panels()) panel.hidden = true; // nothing to show or press without the key
    }
    throw err;
  }
}

// ---- metrics -----------------------------------------------------------------------------------

/** Prometheus text exposition -> [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const sum = (rows) => rows.reduce((a, r) => a + r.value, 0);

/** A quantile from cumulative histogram buckets [{le, count}], interpolated inside its bucket. */
function quantile(buckets, q) {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return lower;
      const inBucket = b.count - below;
      return lower + (b.le - lower) * (inBucket ? (rank - below) / inBucket : 1);
    }
    lower = Number.isFinite(b.le) ? b.le : lower;
    below = b.count;
  }
  return lower;
}

function tile(label, value, title) {
  return h("div", { class: "tile", title }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

async function refreshMetrics() {
  let text;
  try {
    text = await admin("metrics", () => api("GET", "/metrics"));
  } catch {
    return;
  }
  const now = performance.now();
  const rows = parseMetrics(text);
  const pick = (name, f = () => true) => rows.filter((r) => r.name === name && f(r.labels));
  const one = (name) => pick(name)[0]?.value;

  const accepted = sum(pick("hybridrec_events_total", (l) => l.outcome === "accepted"));
  const rejected = sum(pick("hybridrec_events_total", (l) => l.outcome === "rejected"));
  // The API's own requests: the console's static files (and the redirect to them) are left out.
  const isApi = (l) => !(l.path || "").startsWith("/console") && l.path !== "/";
  const requests = sum(pick("hybridrec_requests_total", isApi));
  const errors = sum(pick("hybridrec_requests_total", (l) => isApi(l) && Number(l.status_code) >= 400));
  const prev = state.previous;
  const dt = prev ? (now - prev.at) / 1000 : 0;
  const rate = (x, before) => (prev && dt > 0 ? `${num((x - before) / dt, 2)}/s` : "measuring…");

  // Latency: the request-duration histogram, per route (all statuses together) and overall.
  const routes = new Map();
  const overall = new Map();
  for (const r of pick("hybridrec_request_duration_seconds_bucket", isApi)) {
    const key = `${r.labels.method} ${r.labels.path}`;
    const le = r.labels.le === "+Inf" ? Infinity : Number(r.labels.le);
    if (!routes.has(key)) routes.set(key, new Map());
    const b = routes.get(key);
    b.set(le, (b.get(le) || 0) + r.value);
    overall.set(le, (overall.get(le) || 0) + r.value);
  }
  const asBuckets = (m) => [...m].map(([le, count]) => ({ le, count }));
  const ms = (s) => (s == null ? "–" : `${num(s * 1000, 1)} ms`);
  const p50 = quantile(asBuckets(overall), 0.5);
  const p95 = quantile(asBuckets(overall), 0.95);
  const models = pick("hybridrec_serving_model_info").map((r) => `${r.labels.kind}: ${r.labels.version}`);
  const reindex = pick("hybridrec_reindex_state")[0]?.labels.state;

  fill(els.tiles,
    tile("catalogue items", num(one("hybridrec_catalogue_items"))),
    tile("events in the log", num(one("hybridrec_events_logged"))),
    tile("events accepted since start", num(accepted), "POST /v1/events rows accepted by this process"),
    tile("event rate", rate(accepted, prev?.accepted ?? 0)),
    tile("events rejected", num(rejected)),
    tile("API requests since start", num(requests)),
    tile("request rate", rate(requests, prev?.requests ?? 0)),
    tile("4xx/5xx answers", num(errors)),
    tile("latency p50", ms(p50)),
    tile("latency p95", ms(p95)),
    tile("profile lag (events)", num(one("hybridrec_profile_lag_events"))),
    tile("reindex", reindex ?? "–"),
    models.map((m) => tile("serving", m)));

  const byType = {};
  for (const r of pick("hybridrec_events_total")) {
    byType[r.labels.type] = byType[r.labels.type] || { accepted: 0, rejected: 0 };
    byType[r.labels.type][r.labels.outcome] = (byType[r.labels.type][r.labels.outcome] || 0) + r.value;
  }
  const counts = pick("hybridrec_request_duration_seconds_count");
  const sums = pick("hybridrec_request_duration_seconds_sum");
  const routeRows = [...routes].map(([key, b]) => {
    const [method, path] = key.split(" ");
    const mine = (rs) => sum(rs.filter((r) => r.labels.method === method && r.labels.path === path));
    const n = mine(counts);
    return { key, n, mean: n ? mine(sums) / n : null, p50: quantile(asBuckets(b), 0.5), p95: quantile(asBuckets(b), 0.95) };
  }).sort((a, b) => b.n - a.n);
  fill(els.latency,
    Object.keys(byType).length ? h("p", { class: "muted" }, "Events by type: ",
      Object.entries(byType).map(([t, c]) => `${t} ${num(c.accepted)}${c.rejected ? ` (+${num(c.rejected)} rejected)` : ""}`).join(" · ")) : null,
    h("table", { class: "data latency" },
      h("caption", { class: "visually-hidden" }, "Request latency per route"),
      h("thead", {}, h("tr", {}, ["route", "requests", "mean", "p50", "p95"].map((c, i) => h("th", { scope: "col", class: i ? "num" : null }, c)))),
      h("tbody", {}, routeRows.map((r) => h("tr", {}, h("td", {}, r.key), h("td", { class: "num" }, num(r.n)),
        h("td", { class: "num" }, ms(r.mean)), h("td", { class: "num" }, ms(r.p50)), h("td", { class: "num" }, ms(r.p95)))))),
    h("p", { class: "muted" }, `From GET /metrics at ${new Date().toLocaleTimeString()}; refreshed every 5 s while this page is open.`));
  state.previous = { at: now, accepted, requests };
}

// ---- models ------------------------------------------------------------------------------------

const verdict = (accepted) => h("span", { class: accepted ? "verdict-yes" : "verdict-no" }, accepted ? "accepted" : "rejected");

function versionsTable(caption, rows, serving, extra = []) {
  if (!rows.length) return h("p", { class: "muted" }, `${caption}: none trained yet.`);
  return h("div", { class: "table-wrap" }, h("table", { class: "data versions" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ["version", "created", "verdict", "reason", ...extra.map((e) => e[0])].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((m) => h("tr", { class: m.version === serving ? "serving" : null },
      h("td", {}, m.version, m.version === serving ? h("strong", {}, " (serving)") : null),
      h("td", {}, when(m.created)), h("td", {}, verdict(m.accepted)), h("td", {}, m.reason ?? ""),
      extra.map(([, f]) => h("td", {}, f(m))))))));
}

async function loadModels(after) {
  let m;
  try {
    m = await admin("models", () => api("GET", "/v1/admin/models"));
  } catch {
    return;
  }
  const encoders = m.encoders || [];
  let encoder = m.serving_encoder;
  if (encoder == null) encoder = await api("GET", "/health").then((x) => x.encoder, () => null); // public
  fill(els.models,
    after ? h("div", { class: "notice", role: "status" }, after) : null,
    h("dl", { class: "counts serving-models" },
      h("dt", {}, "encoder"), h("dd", { class: "serving-encoder" }, encoder ?? "unknown"),
      h("dt", {}, "reranker"), h("dd", { class: "serving-reranker" }, m.serving ?? "none: ranked by fused retrieval scores")),
    versionsTable("Rerankers", m.versions || [], m.serving, [["ranker", (v) => v.ranker ?? ""]]),
    "encoders" in m ? versionsTable("Encoders", encoders, m.serving_encoder) : null);
  const chosen = els.encoder.value;
  fill(els.encoder, h("option", { value: "" }, "the newest accepted"),
    encoders.filter((e) => e.accepted).map((e) => h("option", { value: e.version }, e.version)));
  els.encoder.value = [...els.encoder.options].some((o) => o.value === chosen) ? chosen : "";
}

async function reload() {
  const btn = $("#op-reload");
  btn.disabled = true;
  try {
    const out = await admin("reload", () => api("POST", "/v1/admin/reload"));
    const said = `Reloaded: ${out.serving ? `reranker ${out.serving} serves` : "no accepted reranker, retrieval's order serves"}.`;
    await loadModels([said, ...(out.not_loaded || [])].join(" "));
  } catch { /* shown */ } finally {
    btn.disabled = false;
  }
}

// ---- reindex -----------------------------------------------------------------------------------

async function startReindex() {
  const body = els.encoder.value ? { encoder: els.encoder.value } : {};
  try {
    const s = await admin("reindex", () => api("POST", "/v1/admin/reindex", { json: body }));
    renderReindex(s);
  } catch {
    return;
  }
  pollReindex();
}

async function pollReindex() {
  clearTimeout(state.reindexTimer);
  let s;
  try {
    s = await admin("reindex-state", () => api("GET", "/v1/admin/reindex"));
  } catch {
    return;
  }
  renderReindex(s);
  if (s.state === "running" && !$("#page-operate").hidden) state.reindexTimer = setTimeout(pollReindex, 1000);
  else if (s.state === "done" && s.finished && Date.now() / 1000 - s.finished < 10) loadModels();
}

function renderReindex(s) {
  const running = s.state === "running";
  els.reindexProgress.hidden = !running;
  const bits = [];
  if (s.encoder) bits.push(`encoder ${s.encoder}`);
  if (s.items != null) bits.push(`${num(s.items)} items`);
  if (s.users != null) bits.push(`${num(s.users)} profiles`);
  if (s.started) bits.push(`started ${when(s.started)}`);
  if (s.finished) bits.push(`finished ${when(s.finished)}`);
  fill(els.reindexState, h("strong", {}, s.state === "idle" ? "No reindex since start" : `Reindex ${s.state}`),
    bits.length ? `: ${bits.join(" · ")}` : "", s.error ? h("span", {}, ` · error: ${s.error}`) : null);
}

// ---- evaluation --------------------------------------------------------------------------------

/** A small Markdown subset (headings, tables, lists, code, paragraphs) as DOM, never as HTML. */
export function markdown(text) {
  const root = h("div", { class: "report" });
  const inline = (s) => s.split(/(`[^`]+`|\*\*[^*]+\*\*)/).map((part) => part.startsWith("`") && part.endsWith("`") && part.length > 1
    ? h("code", {}, part.slice(1, -1)) : part.startsWith("**") && part.endsWith("**") && part.length > 4 ? h("strong", {}, part.slice(2, -2)) : part);
  const lines = text.split("\n");
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    let m;
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      i++;
      root.append(h("pre", {}, code.join("\n")));
    } else if ((m = line.match(/^(#{1,6})\s+(.*)/))) {
      root.append(h(`h${Math.min(6, m[1].length + 2)}`, {}, inline(m[2])));
      i++;
    } else if (line.trim().startsWith("|")) {
      const rows = [];
      for (; i < lines.length && lines[i].trim().startsWith("|"); i++) rows.push(lines[i].trim());
      const cells = (r) => r.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const body = rows.filter((r, n) => !(n === 1 && /^\|[\s:|-]+\|?$/.test(r)));
      root.append(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, cells(body[0]).map((c) => h("th", { scope: "col" }, inline(c))))),
        h("tbody", {}, body.slice(1).map((r) => h("tr", {}, cells(r).map((c) => h("td", {}, inline(c)))))))));
    } else if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
      const items = [];
      for (; i < lines.length && /^\s*([-*]|\d+\.)\s+/.test(lines[i]); i++) items.push(lines[i].replace(/^\s*([-*]|\d+\.)\s+/, ""));
      root.append(h("ul", {}, items.map((t) => h("li", {}, inline(t)))));
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !/^(#|\||```|\s*([-*]|\d+\.)\s)/.test(lines[i]); i++) para.push(lines[i]);
      if (!para.length) { para.push(line); i++; }
      root.append(h("p", {}, inline(para.join(" "))));
    }
  }
  return root;
}

async function loadEvaluation() {
  for (const url of state.plotUrls) URL.revokeObjectURL(url);
  state.plotUrls = [];
  let ev;
  try {
    ev = await api("GET", "/v1/admin/evaluation");
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      fill(els.evaluation, h("p", { class: "muted no-eval" }, `No evaluation report: ${err.detail}`));
    } else if (err instanceof ApiError && err.refused) {
      els.evaluation.replaceChildren();
    } else {
      showError(err, "evaluation", "admin");
    }
    return;
  }
  const plots = h("div", { class: "plots" });
  fill(els.evaluation,
    h("p", { class: "muted" }, `From ${ev.folder}${ev.generated ? `, generated ${when(ev.generated)}` : ""}.`),
    markdown(ev.report_markdown || ""), plots);
  for (const name of ev.plots || []) {
    try {
      const res = await api("GET", `/v1/admin/evaluation/plots/${encodeURIComponent(name)}`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      state.plotUrls.push(url);
      plots.append(h("figure", {}, h("img", { src: url, alt: `evaluation plot ${name}`, loading: "lazy" }), h("figcaption", {}, name)));
    } catch (err) {
      showError(err, `plot-${name}`, "admin");
    }
  }
}
