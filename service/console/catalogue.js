// Catalogue: browse and search items (paging), open one with its similar items, upload a JSONL or
// CSV file through the batch ingestion path with progress and the rejected rows.
import { $, ApiError, api, attempt, fill, h, leaf, money, num, refreshFacetSelects, refusal, showError } from "./lib.js";

const PAGE = 20;
const state = { cursors: [null], page: 0, next: null, seq: 0, loaded: false };
let els;

export function init() {
  els = {
    form: $("#cat-search"), q: $("#cat-q"), category: $("#cat-category"), brand: $("#cat-brand"),
    count: $("#cat-count"), rows: $("#cat-items tbody"), prev: $("#cat-prev"), next: $("#cat-next"), pageNo: $("#cat-page"),
    detail: $("#cat-detail"), detailBody: $("#cat-detail-body"), similar: $("#cat-similar"),
    upload: $("#cat-upload"), file: $("#cat-file"), format: $("#cat-format"), progress: $("#cat-progress"),
    ingestState: $("#cat-ingest-state"), rejected: $("#cat-rejected"),
  };
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    browse(0, true);
  });
  for (const el of [els.category, els.brand]) el.addEventListener("change", () => browse(0, true));
  els.prev.addEventListener("click", () => browse(state.page - 1));
  els.next.addEventListener("click", () => browse(state.page + 1));
  els.upload.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (state.uploading) return; // one upload at a time from here: a second click would only be refused
    state.uploading = true;
    const sending = els.upload.querySelectorAll("button, input, select");
    for (const el of sending) el.disabled = true;
    try {
      await upload();
    } finally {
      state.uploading = false;
      for (const el of sending) el.disabled = false;
    }
  });
}

export function show({ keyChanged = false } = {}) {
  refreshFacetSelects();
  if (!state.loaded || keyChanged) browse(0, true);
}

async function browse(page, restart = false) {
  if (restart) state.cursors = [null];
  if (page < 0 || page >= state.cursors.length) return;
  const seq = ++state.seq;
  state.loaded = true;
  const params = new URLSearchParams({ limit: String(PAGE) });
  const q = els.q.value.trim();
  if (q) params.set("q", q);
  if (els.category.value) params.set("category", els.category.value);
  if (els.brand.value) params.set("brand", els.brand.value);
  if (!q && state.cursors[page]) params.set("offset", state.cursors[page]);
  let out;
  try {
    out = await attempt("items", "read", () => api("GET", `/v1/items?${params}`), { ownRefusal: true });
  } catch (err) {
    if (seq !== state.seq) return;
    fill(els.rows);
    if (err instanceof ApiError && err.refused) refusal(els.count, err, "Catalogue", "read");
    else fill(els.count, "The items could not be listed: the error above says why.");
    return;
  }
  if (seq !== state.seq) return;
  state.page = page;
  if (out.next && state.cursors.length === page + 1) state.cursors.push(out.next);
  state.next = out.next;
  const first = page * PAGE + 1;
  fill(els.count, q
    ? `${out.items.length} best matches for "${q}" · the catalogue holds ${num(out.total)} items`
    : (out.items.length ? `Items ${first}–${first + out.items.length - 1}` : "No items")
      + (els.category.value || els.brand.value ? " (filtered)" : "") + ` · the catalogue holds ${num(out.total)} items`);
  fill(els.rows, out.items.map((item) => h("tr", { dataset: { itemId: item.id } },
    h("td", {}, h("button", { type: "button", class: "link open-item", onclick: () => openItem(item.id) }, item.title)),
    h("td", {}, item.brand || ""), h("td", {}, leaf(item)), h("td", { class: "num" }, money(item.price)))));
  els.prev.disabled = q || page === 0;
  els.next.disabled = q || !out.next;
  els.pageNo.textContent = q ? "" : `page ${page + 1}`;
}

async function openItem(id) {
  let item, similar;
  try {
    [item, similar] = await attempt("item", "read", () => Promise.all([
      api("GET", `/v1/items/${encodeURIComponent(id)}`),
      api("GET", `/v1/items/${encodeURIComponent(id)}/similar?k=8`),
    ]));
  } catch {
    return;
  }
  els.detail.hidden = false;
  const attrs = Object.entries(item.attributes || {});
  fill(els.detailBody,
    h("h3", { class: "item-title" }, item.title),
    h("p", { class: "meta" }, `${item.brand || "no brand"} · ${money(item.price)} · ${(item.categories || []).join(" › ")}`),
    item.description ? h("p", {}, item.description) : null,
    attrs.length ? h("dl", { class: "counts" }, attrs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])) : null,
    h("p", { class: "muted" }, `id ${item.id}`));
  fill(els.similar, similar.items.map((s) => h("li", { dataset: { itemId: s.id } },
    h("button", { type: "button", class: "link", onclick: () => openItem(s.id) }, s.title),
    h("span", { class: "muted" }, ` · ${leaf(s)} · ${money(s.price)} · text similarity ${num(s.text_similarity, 2)}`
      + ` · from ${Object.keys(s.sources || {}).join(", ") || "text"}`))));
  $("#h-item").focus();
}

function formatOf(file) {
  if (els.format.value) return els.format.value;
  return /\.csv$/i.test(file.name) ? "csv" : "jsonl";
}

async function upload() {
  const file = els.file.files[0];
  if (!file) {
    showError(new ApiError("", "", 0, { detail: "choose a file first", extra: [{ key: "file", message: "no file chosen" }] }), "upload", "write");
    return;
  }
  const format = formatOf(file);
  els.rejected.replaceChildren();
  els.progress.hidden = false;
  els.progress.removeAttribute("value");
  els.ingestState.textContent = `Sending ${file.name} (${num(file.size)} bytes)…`;
  let job;
  try {
    job = await attempt("upload", "write", () => api("POST",
      `/v1/ingest?${new URLSearchParams({ format, name: file.name })}`,
      { body: file, headers: { "Content-Type": format === "csv" ? "text/csv" : "application/x-ndjson" } }), { ownRefusal: true });
  } catch (err) {
    els.progress.hidden = true;
    if (err instanceof ApiError && err.refused) refusal(els.ingestState, err, "upload on the Catalogue", "write");
    else els.ingestState.textContent = "The upload was refused: the error above says why.";
    return;
  }
  render(job);
  await poll(job.id);
}

async function poll(id) {
  for (;;) {
    let job;
    try {
      job = await attempt("ingest", "write", () => api("GET", `/v1/ingest/${encodeURIComponent(id)}`));
    } catch {
      return;
    }
    render(job);
    if (job.state !== "running" && job.state !== "queued") {
      refreshFacetSelects();
      browse(0, true);
      return;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

function render(job) {
  const total = job.lines_total || 0;
  const done = job.lines_done ?? 0;
  if (total) {
    els.progress.max = total;
    els.progress.value = job.state === "done" ? total : done;
  }
  const rejected = job.rejected_count ?? (job.rejected || []).length;
  fill(els.ingestState,
    h("strong", { class: `ingest-${job.state}` }, job.state === "done" ? "Done" : job.state === "failed" ? "Failed" : "Ingesting"),
    ` ${job.name || ""}: ${num(done)} of ${num(total)} lines · ${num(job.upserted ?? 0)} items written · ${num(rejected)} rejected`,
    job.error ? h("span", { class: "error-text" }, ` · ${job.error}`) : null);
  const rows = job.rejected || [];
  fill(els.rejected, rows.length ? [
    h("h3", {}, `Rejected rows (${num(rejected)})`),
    h("div", { class: "table-wrap" }, h("table", { class: "data rejected" },
      h("thead", {}, h("tr", {}, ["line", "id", "field", "reason"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", { class: "num" }, r.line), h("td", {}, r.id ?? ""),
        h("td", {}, r.field ?? ""), h("td", {}, r.reason)))))),
    rejected > rows.length ? h("p", { class: "muted" }, `The first ${rows.length} are shown.`) : null,
  ] : null);
}
