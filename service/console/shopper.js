// Be a shopper: pick or create a user, state preferences, act on the cards (click, like, dislike,
// buy) and watch the list and the profile change after each action; forget the user.
import { $, ApiError, api, attempt, explanationRequest, fill, h, itemCard, num, plural, refusal, showError, when,
  whyButton } from "./lib.js";

const USER_STORE = "hybridrec.shopper";
const ACTIONS = [["click", "Click"], ["like", "Like"], ["dislike", "Dislike"], ["purchase", "Buy"]];
const state = { user: null, seq: 0, gone: null };
let els;

export function init() {
  els = {
    pick: $("#shopper-pick"), user: $("#shopper-user"), body: $("#shopper-body"), prefsForm: $("#shopper-prefs"),
    prefs: $("#shopper-preferences"), search: $("#shopper-search"), query: $("#shopper-query"),
    summary: $("#shopper-summary"), results: $("#shopper-results"), profile: $("#shopper-profile-body"),
    forget: $("#shopper-forget"),
  };
  els.pick.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = els.user.value.trim();
    if (id) open(id);
  });
  $("#shopper-new").addEventListener("click", () => {
    const id = `shopper-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
    els.user.value = id;
    open(id, true);
  });
  els.prefsForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const preferences = els.prefs.value.trim() || null;
    try {
      await attempt("prefs", "write", () => api("PUT", `/v1/users/${encodeURIComponent(state.user)}`, { json: { preferences } }));
      state.gone = null;
      await reload();
    } catch { /* shown */ }
  });
  els.search.addEventListener("submit", (e) => {
    e.preventDefault();
    reload();
  });
  els.forget.addEventListener("click", askForget);
}

export function show({ keyChanged = false } = {}) {
  const saved = sessionStorage.getItem(USER_STORE);
  if (!state.user && saved) {
    els.user.value = saved;
    open(saved);
  } else if (state.user && keyChanged) {
    reload();
  }
}

function open(id, fresh = false) {
  state.user = id;
  state.gone = null;
  sessionStorage.setItem(USER_STORE, id);
  els.body.hidden = false;
  $("#shopper-empty").hidden = true;
  els.prefs.value = "";
  els.query.value = "";
  if (fresh) fill(els.summary, "");
  reload(true);
}

async function reload(first = false) {
  await Promise.all([loadProfile(first), loadList()]);
}

async function loadList() {
  const seq = ++state.seq;
  const body = { user_id: state.user, k: 12 };
  const query = els.query.value.trim();
  if (query) body.query = query;
  els.results.setAttribute("aria-busy", "true");
  let out;
  try {
    out = await attempt("shopper-list", "read", () => api("POST", "/v1/recommendations", { json: body }), { ownRefusal: true });
  } catch (err) {
    if (seq !== state.seq) return;
    els.results.removeAttribute("aria-busy");
    fill(els.results);
    if (err instanceof ApiError && err.refused) refusal(els.summary, err, "Shopper", "read");
    else fill(els.summary, "The list could not be made: the error above says why.");
    return;
  }
  if (seq !== state.seq) return;
  els.results.removeAttribute("aria-busy");
  const cold = out.profile === "none" && !query;
  fill(els.summary,
    h("strong", {}, `For ${state.user}`), query ? ` looking for "${query}"` : "", ": ",
    `${out.items.length} items · profile: ${out.profile}${cold ? " (cold start: nothing known yet, so popular items)" : ""}`,
    ` · ${num(out.took_ms, 1)} ms`, out.notes.length ? ` · ${out.notes.join("; ")}` : "");
  const explain = explanationRequest(body);
  fill(els.results, out.items.map((item) => {
    let card;
    const buttons = ACTIONS.map(([type, label]) => h("button", {
      type: "button", class: `small act-${type}`, "aria-label": `${label} ${item.title}`,
      onclick: (e) => act(type, item, e.currentTarget),
    }, label));
    card = itemCard(item, [...buttons, whyButton(item, () => explain, "explain", () => card)]);
    return card;
  }));
}

async function act(type, item, button) {
  button.disabled = true;
  try {
    const out = await attempt("event", "write", () => api("POST", "/v1/events",
      { json: { events: [{ user_id: state.user, type, item_id: item.id }] } }));
    if (out.rejected.length) {
      throw new ApiError("POST", "/v1/events", 200, { detail: `the event was rejected: ${out.rejected[0].error}` });
    }
    state.gone = null;
    await reload();
  } catch (err) {
    if (err instanceof ApiError && err.status === 200) showError(err, "event", "write");
    button.disabled = false;
  }
}

function bars(title, rows) {
  if (!rows || !rows.length) return null;
  return [h("h3", {}, title), h("ul", { class: "bars", "aria-label": title }, rows.slice(0, 6).map((r) =>
    h("li", {}, h("span", {}, r.name), h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${Math.round(100 * r.share)}%` })),
      h("span", { class: "num" }, `${Math.round(100 * r.share)}%`))))];
}

async function loadProfile(first) {
  const user = state.user;
  let p;
  try {
    p = await attempt("profile", "read", () => api("GET", `/v1/users/${encodeURIComponent(user)}`), { ownRefusal: true });
  } catch (err) {
    if (user !== state.user) return;
    if (err instanceof ApiError && err.status === 404) {
      // 404 is an answer, not an error: a new user, or one forgotten just now.
      $("#errors").querySelector('[data-op="profile"]')?.remove();
      fill(els.profile, state.gone
        ? h("div", { class: "notice gone", role: "status" },
          h("p", {}, h("strong", {}, `${user} is gone.`), ` GET /v1/users/${user} now answers 404: ${err.detail}.`),
          h("p", {}, `Deleted ${plural(state.gone.events_deleted, "event")} with the preferences and the profile.`),
          state.gone.models_trained_on_user.length
            ? h("p", {}, `Trained models that learned from this user (retrain to take them out): ${state.gone.models_trained_on_user.map((m) => `${m.kind} ${m.version}`).join(", ")}.`)
            : h("p", {}, "No trained model learned from this user."))
        : h("p", { class: "cold" }, h("strong", {}, `${user} is new: `), "no events, no preferences, no profile (cold start). Act on a card or state preferences to begin."));
      return;
    }
    if (err instanceof ApiError && err.refused) refusal(els.profile, err, "Shopper", "read");
    return;
  }
  if (user !== state.user) return;
  if (first && p.preferences) els.prefs.value = p.preferences;
  const counts = Object.entries(p.event_counts || {});
  const leaning = p.leaning || {};
  fill(els.profile,
    h("p", {}, h("strong", {}, p.id), ` · ${plural(p.total_events, "event")} · `, p.has_profile ? "has a profile" : "no profile yet"),
    p.preferences ? h("p", {}, "Stated: ", h("q", {}, p.preferences)) : null,
    counts.length ? h("dl", { class: "counts" }, counts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
    bars("Leans to categories", leaning.categories),
    bars("Leans to brands", leaning.brands),
    p.recent_events?.length
      ? [h("h3", {}, "Recent events"), h("ol", { class: "compact recent" }, p.recent_events.slice(0, 10).map((e) =>
        h("li", {}, h("strong", {}, e.type), " ", e.title || (e.query ? `"${e.query}"` : e.item_id) || "", h("span", { class: "muted" }, ` · ${when(e.at)}`))))]
      : (p.recent_items?.length ? [h("h3", {}, "Recent items"), h("ol", { class: "compact recent" }, p.recent_items.map((id) => h("li", {}, id)))] : null));
}

function askForget() {
  const user = state.user;
  const box = h("div", { class: "refused", role: "alertdialog", "aria-label": "Confirm forgetting" },
    h("p", {}, `Forget ${user}? This deletes their events, preferences and profile (it needs the admin scope).`),
    h("div", { class: "row" },
      h("button", { type: "button", class: "danger", onclick: () => { box.remove(); forget(user); } }, `Forget ${user} for good`),
      h("button", { type: "button", onclick: () => { box.remove(); els.forget.focus(); } }, "Cancel")));
  els.forget.after(box);
  box.querySelector("button").focus();
}

async function forget(user) {
  try {
    state.gone = await attempt("forget", "admin", () => api("DELETE", `/v1/users/${encodeURIComponent(user)}`));
  } catch {
    return;
  }
  await reload();
}
