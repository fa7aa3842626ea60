// Try it: a sentence in, its understood constraints as removable chips, the results as cards with
// their explanations; a diversity slider and filters change the list live.
import { $, ApiError, api, attempt, debounce, explanationRequest, fill, h, itemCard, money, num, refreshFacetSelects,
         refusal, whyButton } from "./lib.js";

const state = { sentence: "", interp: null, removed: new Set(), seq: 0, loaded: false };
let els;

export function init() {
  els = {
    form: $("#try-form"), query: $("#try-query"), diversity: $("#try-diversity"), diversityOut: $("#try-diversity-out"),
    category: $("#try-category"), brand: $("#try-brand"), priceMin: $("#try-price-min"), priceMax: $("#try-price-max"),
    understood: $("#try-understood"), summary: $("#try-summary"), results: $("#try-results"),
  };
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    ask(els.query.value.trim());
  });
  for (const btn of els.form.querySelectorAll(".example")) {
    btn.addEventListener("click", () => {
      els.query.value = btn.textContent;
      ask(btn.textContent);
    });
  }
  const live = debounce(run, 250);
  els.diversity.addEventListener("input", () => {
    els.diversityOut.textContent = Number(els.diversity.value).toFixed(2);
    live();
  });
  for (const el of [els.category, els.brand]) el.addEventListener("change", live);
  for (const el of [els.priceMin, els.priceMax]) el.addEventListener("input", live);
}

export function show({ keyChanged = false } = {}) {
  refreshFacetSelects();
  if (!state.loaded || keyChanged) run();
}

function ask(sentence) {
  state.sentence = sentence;
  state.interp = null;
  state.removed.clear();
  run();
}

/** The filters chosen in the panel. */
function panel() {
  const f = {};
  if (els.category.value) f.categories = [els.category.value];
  if (els.brand.value) f.brands = [els.brand.value];
  const lo = parseFloat(els.priceMin.value);
  const hi = parseFloat(els.priceMax.value);
  if (!Number.isNaN(lo)) f.price_min = lo;
  if (!Number.isNaN(hi)) f.price_max = hi;
  return f;
}

/** The chips of an interpretation: [{key, label}] for each constraint and the anchor. */
function chips(interp) {
  const c = interp.constraints || {};
  const out = [];
  if (c.price_min != null) out.push({ key: "price_min", label: `from ${money(c.price_min)}` });
  if (c.price_max != null) out.push({ key: "price_max", label: `under ${money(c.price_max)}` });
  for (const v of c.categories || []) out.push({ key: `categories:${v}`, label: `category ${v}` });
  for (const v of c.brands || []) out.push({ key: `brands:${v}`, label: `brand ${v}` });
  for (const v of c.exclude_brands || []) out.push({ key: `exclude_brands:${v}`, label: `not from ${v}` });
  if (interp.anchor) {
    out.push({ key: "anchor", label: `like "${interp.anchor.title}"${interp.relative_price ? ` (${interp.relative_price})` : ""}` });
  }
  return out;
}

/** What is left of the understood constraints once chips are removed, as explicit filters. */
function remaining() {
  const c = state.interp.constraints || {};
  const f = {};
  for (const field of ["price_min", "price_max"]) if (c[field] != null && !state.removed.has(field)) f[field] = c[field];
  for (const field of ["categories", "brands", "exclude_brands"]) {
    const kept = (c[field] || []).filter((v) => !state.removed.has(`${field}:${v}`));
    if (kept.length) f[field] = kept;
  }
  return f;
}

function merge(understood, chosen) {
  const f = { ...understood };
  if (chosen.categories) f.categories = chosen.categories;
  if (chosen.brands) f.brands = chosen.brands;
  if (chosen.price_min != null) f.price_min = Math.max(chosen.price_min, f.price_min ?? -Infinity);
  if (chosen.price_max != null) f.price_max = Math.min(chosen.price_max, f.price_max ?? Infinity);
  return f;
}

/** The recommendation request for what is on screen. */
function request() {
  const body = { k: 12, diversity: Number(els.diversity.value) };
  const chosen = panel();
  if (state.interp && state.removed.size) {
    // The sentence is not read again: its meaning and the constraints left are sent as they are.
    body.understand_query = false;
    if (state.interp.semantic_text) body.query = state.interp.semantic_text;
    if (state.interp.anchor && !state.removed.has("anchor")) body.history = [state.interp.anchor.id];
    const f = merge(remaining(), chosen);
    if (Object.keys(f).length) body.filters = f;
  } else {
    if (state.sentence) body.query = state.sentence;
    if (Object.keys(chosen).length) body.filters = chosen;
  }
  return body;
}

async function run() {
  const seq = ++state.seq;
  state.loaded = true;
  const body = request();
  els.results.setAttribute("aria-busy", "true");
  let out;
  try {
    out = await attempt("try", "read", () => api("POST", "/v1/recommendations", { json: body }), { ownRefusal: true });
  } catch (err) {
    if (seq !== state.seq) return;
    els.results.removeAttribute("aria-busy");
    if (err instanceof ApiError && err.refused) {
      refusal(els.summary, err, "Try it", "read");
      fill(els.results);
    } else {
      fill(els.summary, "The list could not be made: the error above says why. The list below is the previous one.");
      els.results.classList.add("stale");
    }
    return;
  }
  if (seq !== state.seq) return; // a newer request is on its way
  els.results.removeAttribute("aria-busy");
  els.results.classList.remove("stale");
  if (out.interpreted && !state.removed.size) state.interp = out.interpreted;
  if (!body.query && !state.removed.size) state.interp = null;
  renderUnderstood(body);
  renderSummary(out, body);
  const ex = explanationRequest(body);
  fill(els.results, out.items.map((item) => {
    let card;
    card = itemCard(item, [whyButton(item, () => ex, "explain", () => card)]);
    return card;
  }));
  if (out.items.length && !performance.getEntriesByName("hybridrec:first-results").length) {
    performance.mark("hybridrec:first-results"); // the page load time the console reports
  }
}

function renderUnderstood(body) {
  const interp = state.interp;
  if (!interp) {
    fill(els.understood, state.sentence ? null : h("p", { class: "muted" }, "Nothing asked yet: these are popular items. Ask in a sentence above."));
    return;
  }
  const all = chips(interp);
  const shown = all.filter((c) => !state.removed.has(c.key));
  const gone = all.filter((c) => state.removed.has(c.key));
  fill(els.understood,
    h("p", {}, "Understood: ", interp.semantic_text ? h("span", {}, `searching for "${interp.semantic_text}"`)
      : h("span", { class: "muted" }, "no words left to search by meaning"),
      shown.length ? ", with these constraints:" : (all.length ? ", every constraint removed." : "; no constraints in the sentence.")),
    shown.length ? h("ul", { class: "chips", "aria-label": "Understood constraints" }, shown.map((c) =>
      h("li", { class: "chip", dataset: { key: c.key } }, h("span", {}, c.label),
        h("button", { type: "button", "aria-label": `remove constraint ${c.label}`, title: `remove constraint ${c.label}`,
                      onclick: () => removeChip(c.key) }, "×")))) : null,
    gone.length ? h("p", { class: "muted" }, `Removed: ${gone.map((c) => c.label).join(", ")}. `,
      h("button", { type: "button", class: "link", onclick: () => { state.removed.clear(); run(); } }, "Put them back")) : null,
    body.understand_query === false ? h("p", { class: "muted" },
      "Re-asked without reading the sentence again: its meaning and the constraints left are sent as filters.") : null);
}

function removeChip(key) {
  state.removed.add(key);
  run().then(() => {
    // Keep the keyboard user in the chip row (or on the search box when no chip is left).
    const next = els.understood.querySelector(".chip button") || els.query;
    next.focus();
  });
}

function renderSummary(out, body) {
  const parts = [`${out.items.length} items`, `${num(out.took_ms, 1)} ms`, `sources: ${out.sources.join(", ") || "none"}`,
                 out.models.reranker ? `ranker ${out.models.reranker}` : "no ranker"];
  if (body.filters) {
    const f = body.filters;
    const said = [];
    if (f.categories) said.push(f.categories.join("/"));
    if (f.brands) said.push(`from ${f.brands.join("/")}`);
    if (f.exclude_brands) said.push(`not ${f.exclude_brands.join("/")}`);
    if (f.price_min != null) said.push(`≥ ${money(f.price_min)}`);
    if (f.price_max != null) said.push(`≤ ${money(f.price_max)}`);
    parts.push(`filters: ${said.join(", ")}`);
  }
  fill(els.summary, parts.join(" · "), out.notes.length ? h("span", { class: "notes" }, ` · ${out.notes.join("; ")}`) : null);
}
