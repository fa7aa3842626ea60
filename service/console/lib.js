// The console's shared pieces: the API client (the same HTTP API every client uses, with the key
// the user gave), a DOM helper that never parses data as HTML, errors in words, and item cards.

const KEY_STORE = "hybridrec.apiKey";

export const apiKey = () => sessionStorage.getItem(KEY_STORE) || "";
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

/** An answer that is not 2xx, with the service's own words: detail, extra [{key, message}], request id. */
export class ApiError extends Error {
  constructor(method, path, status, body, retryAfter) {
    const detail = (body && (body.detail || body.message)) || `HTTP ${status}`;
    super(detail);
    Object.assign(this, { method, path, status, detail, retryAfter,
                          extra: Array.isArray(body?.extra) ? body.extra : [], requestId: body?.request_id });
  }
  get refused() { return this.status === 401 || this.status === 403; }
}

export async function api(method, path, { json, body, headers = {}, raw = false } = {}) {
  const sent = { ...headers };
  const key = apiKey();
  if (key) sent["X-API-Key"] = key;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { method, headers: sent, body });
  } catch (err) {
    throw new ApiError(method, path, 0, { detail: `the service did not answer (${err.message}): is it running?` });
  }
  if (!res.ok) {
    const text = await res.text();
    let parsed;
    try { parsed = JSON.parse(text); } catch { parsed = { detail: text.slice(0, 400) || res.statusText }; }
    throw new ApiError(method, path, res.status, parsed, res.headers.get("Retry-After"));
  }
  if (raw) return res;
  if (res.status === 204) return null;
  return (res.headers.get("content-type") || "").includes("json") ? res.json() : res.text();
}

/** h("li", {class: "card", onclick: f}, "text", child, [more]): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "style") el.style.cssText = value; // through the CSSOM: the CSP refuses style attributes
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "value" || name === "checked" || name === "selected") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  return add(el, children);
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children; data-version counts the renders (tests and tools wait on it). */
export function fill(el, ...children) {
  el.replaceChildren();
  el.dataset.version = String(Number(el.dataset.version || 0) + 1);
  return add(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export const money = (n) => (n == null ? "no price" : `$${Number(n).toFixed(2)}`);
export const num = (n, digits = 0) => (n == null || Number.isNaN(n) ? "–"
  : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
export const plural = (n, word) => `${num(n)} ${word}${n === 1 ? "" : "s"}`;
export const leaf = (item) => (item.categories && item.categories.length ? item.categories[item.categories.length - 1] : "");
export const when = (t) => {
  if (t == null) return "–";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
};

export function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// ---- errors in words -----------------------------------------------------------------------------

const SCOPE_HINT = { read: "read", write: "write", admin: "admin" };

/** The sentences an error is shown with: what failed, the service's detail, each field and why. */
export function describe(err, scope) {
  const lines = [];
  if (err.refused) {
    lines.push(err.status === 401
      ? `Refused (401): this needs an API key${scope ? ` with the ${SCOPE_HINT[scope]} scope` : ""}. Enter one in the API key box at the top.`
      : `Refused (403): the key in use lacks the ${scope ? `${SCOPE_HINT[scope]} ` : ""}scope this needs.`);
  }
  return lines;
}

/** Show an error in the page's aria-live error region; op names the action, so a later success clears it. */
export function showError(err, op, scope) {
  const region = $("#errors");
  clearError(op);
  if (!(err instanceof ApiError)) {
    console.error(err);
    err = new ApiError("", "", 0, { detail: String(err && err.message ? err.message : err) });
  }
  const box = h("div", { class: "error", role: "group", "aria-label": "Error", dataset: { op } },
    h("p", {}, h("strong", {}, err.status ? `${err.method} ${err.path} answered ${err.status}` : "Something went wrong"),
      ": ", err.detail),
    describe(err, scope).map((line) => h("p", {}, line)),
    // Each field and why (unless the detail already says just that).
    err.extra.length && !(err.extra.length === 1 && err.detail === `${err.extra[0].key}: ${err.extra[0].message}`)
      ? h("ul", {}, err.extra.map((x) => h("li", {}, h("code", {}, x.key ?? "request"), ": ", x.message))) : null,
    err.retryAfter ? h("p", {}, `Retry after ${err.retryAfter} s.`) : null,
    err.requestId ? h("small", {}, `request id ${err.requestId}`) : null,
    h("button", { type: "button", class: "dismiss small", "aria-label": "Dismiss this error",
                  onclick: () => box.remove() }, "×"));
  region.append(box);
  return box;
}

export function clearError(op) { for (const el of $$(".error", $("#errors"))) if (el.dataset.op === op) el.remove(); }
export function clearErrors() { $("#errors").replaceChildren(); }

/** A page that needs a key it lacks says so, in its own place, instead of breaking. */
export function refusal(where, err, page, scope) {
  fill(where, h("div", { class: "refused", role: "alert" },
    h("p", {}, h("strong", {}, `The ${page} page needs an API key with the ${scope} scope.`)),
    h("p", {}, `The service answered ${err.status}: ${err.detail}`),
    h("p", {}, err.status === 401 ? "Enter a key in the API key box at the top, then use it."
      : "Use a key that has this scope (hybridrec keys create --scopes ...).")));
}

/** Run an API action: clears its old error on success, shows the new one on failure (a refusal
 * too, unless the page shows it in its own place: ``ownRefusal``). */
export async function attempt(op, scope, fn, { ownRefusal = false } = {}) {
  try {
    const out = await fn();
    clearError(op);
    return out;
  } catch (err) {
    if (!(ownRefusal && err instanceof ApiError && err.refused)) showError(err, op, scope);
    else clearError(op);
    throw err;
  }
}

// ---- facets (categories, brands, price range), shared by the pages -------------------------------

let facetsPromise = null;
export function facets() {
  if (!facetsPromise) {
    facetsPromise = api("GET", "/v1/catalogue/facets").catch((err) => { facetsPromise = null; throw err; });
  }
  return facetsPromise;
}
export function resetFacets() { facetsPromise = null; }

/** On a page's visit: its category/brand selects read again (items written since, by anyone, may
 * bring new ones); an error other than a refusal is shown. */
export function refreshFacetSelects() {
  resetFacets();
  fillFacetSelects().catch((err) => { if (!(err instanceof ApiError && err.refused)) showError(err, "facets", "read"); });
}

/** Fill every category/brand select on the page, keeping what is chosen. */
export async function fillFacetSelects() {
  const f = await facets();
  const put = (selects, rows) => {
    for (const sel of selects) {
      const chosen = sel.value;
      fill(sel, h("option", { value: "" }, "any"),
        rows.map((r) => h("option", { value: r.name }, `${r.name} (${r.items})`)));
      sel.value = rows.some((r) => r.name === chosen) ? chosen : "";
    }
  };
  put($$("select.facet-category"), f.categories || []);
  put($$("select.facet-brand"), f.brands || []);
  return f;
}

// ---- item cards --------------------------------------------------------------------------------

const SOURCE_WORDS = {
  dense_query: "meaning of your words", lexical: "your words", dense_profile: "your profile",
  collaborative: "people with your taste", co_occurrence: "bought together", popular: "popular", session: "this session",
  sequence: "what usually comes next after your items, in order",
  interest: "what people who took the categories you named took", popularity_prior: "popular in what you asked for",
};
export const sourceName = (s) => (SOURCE_WORDS[s] ? `${s} (${SOURCE_WORDS[s]})` : s);

/** A card: title, brand, price, category, which sources found it; ``actions`` are appended. */
export function itemCard(item, actions = []) {
  const category = leaf(item);
  const found = Object.entries(item.sources || {}).sort((a, b) => a[1].rank - b[1].rank)
    .map(([name, s]) => `${name} #${s.rank}`).join(", ");
  return h("li", { class: "card", dataset: { itemId: item.id, category, brand: item.brand || "", price: item.price ?? "" } },
    h("h3", {}, item.title),
    h("p", { class: "meta" }, h("span", { class: "brand" }, item.brand || "no brand"), " · ",
      h("span", { class: "price" }, money(item.price)), " · ", h("span", { class: "category" }, category || "uncategorised")),
    found ? h("p", { class: "found" }, `found by ${found}`) : null,
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

// ---- explanations ------------------------------------------------------------------------------

const pct = (x) => `${(100 * x).toFixed(0)}%`;

function constraintLine(c) {
  switch (c.kind) {
    case "price_max": return `price ${money(c.price)} is within the limit of ${money(c.limit)}`;
    case "price_min": return `price ${money(c.price)} is at least ${money(c.limit)}`;
    case "exclude_brand": return `not from ${(c.brands || []).join(", ")}, as asked`;
    case "brand": return `from ${c.brand ?? (c.brands || []).join(", ")}, as asked`;
    case "category": return `in ${c.category ?? (c.categories || []).join(", ")}, as asked`;
    default: return Object.entries(c).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join("; ");
  }
}

/** The explanation of one item: its text, the evidence, the counterfactual, the sources, the ranker. */
export function explanationView(ex, item) {
  const ev = ex.evidence || {};
  const evidence = [];
  const q = ev.query;
  if (q) {
    for (const c of q.constraints || []) evidence.push(constraintLine(c));
    if (q.matched_words?.length) evidence.push(`matches your words: ${q.matched_words.join(", ")}`);
    if (q.anchor) evidence.push(`compared with "${q.anchor.title ?? q.anchor.id}"`);
  }
  for (const r of ev.history || []) {
    evidence.push(`close to "${r.title}" from the history (similarity ${r.similarity}, weight ${r.weight}, contribution ${r.contribution})`);
  }
  for (const c of ev.collaborative || []) evidence.push(`${c.shared_users} people who took "${c.title}" took this too`);
  if (ev.preferences) evidence.push("matches the stated preferences");
  if (ev.popular) evidence.push(`popular (rank ${ev.popular.rank} among popular items)`);
  if (ev.diversity && ev.diversity.moved) {
    // moved: relevance rank minus rank, as the explanation's text reads it (> 0: up).
    evidence.push(`diversity moved it ${ev.diversity.moved > 0 ? "up" : "down"} ${Math.abs(ev.diversity.moved)} place(s)`);
  }
  if (!evidence.length) evidence.push("no specific evidence: it is among the candidates retrieval found");

  let counterfactual = "No counterfactual: it needs a history of at least two items.";
  const cf = ev.counterfactual;
  if (cf) {
    counterfactual = `Without "${cf.without_title}" its score would go from ${cf.score_before} to ${cf.score_after}`
      + (cf.rank_before != null || cf.rank_after != null ? ` (rank ${cf.rank_before ?? "–"} → ${cf.rank_after ?? "–"})` : "")
      + (cf.drop_share != null ? `, a drop of ${pct(cf.drop_share)}.` : ".");
  }

  const sources = item?.sources || ev.sources || {};
  const sourceRows = Object.entries(sources).sort((a, b) => a[1].rank - b[1].rank);
  const noOpinion = item?.no_opinion || [];
  const rr = item?.rerank || (ev.reranker ? { ...ev.reranker } : null);
  let ranker;
  if (rr) {
    const moved = rr.retrieval_rank - rr.rank;
    ranker = [
      h("p", {}, rr.kept_place ? `The ranker${ev.reranker ? ` ${ev.reranker.version}` : ""} kept retrieval's place ${rr.retrieval_rank} (no collaborative evidence).`
        : `The ranker${ev.reranker ? ` ${ev.reranker.version}` : ""} moved it from ${rr.retrieval_rank} to ${rr.rank}`
          + (moved ? ` (${moved > 0 ? "up" : "down"} ${Math.abs(moved)})` : "") + "."),
      rr.drivers?.length ? h("ul", {}, rr.drivers.map((d) => h("li", {}, `${d.evidence}: ${d.effect >= 0 ? "+" : ""}${Number(d.effect).toFixed(3)}`))) : null,
    ];
  } else {
    ranker = h("p", {}, "No learned ranker reordered this list: it is in the order retrieval fused.");
  }

  return h("div", { class: "explanation", role: "region", "aria-label": `Why ${item?.title ?? ex.item_id}` },
    h("p", { class: "text" }, ex.text),
    h("h4", {}, "Evidence"),
    h("ul", { class: "evidence" }, evidence.map((e) => h("li", {}, e))),
    h("h4", {}, "Counterfactual"),
    h("p", { class: "counterfactual" }, counterfactual),
    h("h4", {}, "Which sources found it"),
    sourceRows.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "data sources" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "source"), h("th", { scope: "col", class: "num" }, "rank"),
          h("th", { scope: "col", class: "num" }, "score"), h("th", { scope: "col", class: "num" }, "contribution"))),
        h("tbody", {}, sourceRows.map(([name, s]) => h("tr", {}, h("td", {}, sourceName(name)), h("td", { class: "num" }, s.rank),
          h("td", { class: "num" }, num(s.score, 3)), h("td", { class: "num" }, num(s.contribution, 4)))))))
      : h("p", {}, `No source listed it in its top ${ev.k ?? 100}; the numbers above are computed for it anyway.`),
    noOpinion.length ? h("p", { class: "muted" }, `No opinion (they know nothing of it yet): ${noOpinion.join(", ")}.`) : null,
    h("h4", {}, "What the ranker did"),
    ranker,
    h("p", { class: "muted" }, `Written by the ${ex.generator} generator` + (ex.guard?.fired ? `; the guard replaced a model's text: ${(ex.guard.violations || []).join("; ")}` : "") + "."));
}

/** The explanation request for an item of a list: the list's own request, so that the rank and the
 * evidence are those of the list on screen (every field /v1/recommendations took but ``explain``). */
export function explanationRequest(recommendation) {
  const { explain, ...same } = recommendation;
  return same;
}

/** A "Why?" button that opens (and closes) the item's explanation inside its card. */
export function whyButton(item, request, op, card) {
  const btn = h("button", { type: "button", class: "small why", "aria-expanded": "false",
                            "aria-label": `Why ${item.title}?` }, "Why?");
  btn.addEventListener("click", async () => {
    const li = card();
    const open = li.querySelector(".explanation");
    if (open) {
      open.remove();
      li.classList.remove("open");
      btn.setAttribute("aria-expanded", "false");
      return;
    }
    btn.disabled = true;
    try {
      const ex = await attempt(op, "read", () => api("POST", "/v1/explanations", { json: { ...request(), item_id: item.id } }));
      li.classList.add("open");
      li.append(explanationView(ex, item));
      btn.setAttribute("aria-expanded", "true");
    } catch { /* shown */ } finally {
      btn.disabled = false;
    }
  });
  return btn;
}
