// The console's entry: the API key box, the hash routes (#/try, #/shopper, #/catalogue, #/operate)
// and the pages. Each page is a module with init() (once) and show() (each time it is opened).
import { $, $$, ApiError, apiKey, clearErrors, resetFacets, setApiKey, showError } from "./lib.js";
import * as catalogue from "./catalogue.js";
import * as operate from "./operate.js";
import * as shopper from "./shopper.js";
import * as tryIt from "./try.js";

const PAGES = { try: tryIt, shopper, catalogue, operate };
const started = new Set();
let current = null;

/** Which key is in use, by its id (hr_<id>_<secret>); the secret is never put back on the page. */
function keyState() {
  const key = apiKey();
  const id = (key.match(/^hr_([0-9a-f]+)_/) || [])[1];
  $("#key-state").textContent = key ? (id ? `key ${id} in use` : "a key is in use") : "no key";
  $("#api-key").value = "";
  $("#api-key").placeholder = key ? "replace the key" : "none: open service";
}

function route(byUser) {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const page = PAGES[name] ? name : "try";
  if (!PAGES[name] && location.hash !== "#/try") history.replaceState(null, "", "#/try");
  if (current && current !== page) PAGES[current].hide?.();
  if (current !== page) clearErrors();
  current = page;
  for (const section of $$(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of $$(".top nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${$(`#page-${page} h1`).textContent} · hybridrec console`;
  if (!started.has(page)) {
    started.add(page);
    PAGES[page].init();
  }
  PAGES[page].show();
  if (byUser) $(`#page-${page} h1`).focus();
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const typed = $("#api-key").value.trim();
  if (!typed && apiKey()) return; // an empty box keeps the key in use; "Forget key" drops it
  if (typed && !/^[\x21-\x7e]+$/.test(typed)) {
    // A header cannot carry it (a pasted smart quote, a space): every request would fail unsent.
    showError(new ApiError("", "", 0, { detail: "this is not an API key: keys are printable ASCII without spaces "
      + "(hr_<id>_<secret>, as `hybridrec keys create` printed it)", extra: [{ key: "key", message: "not a key" }] }),
    "key", "read");
    return;
  }
  setApiKey(typed);
  keyState();
  resetFacets();
  clearErrors();
  PAGES[current].show({ keyChanged: true });
});
$("#key-clear").addEventListener("click", () => {
  setApiKey("");
  keyState();
  resetFacets();
  clearErrors();
  PAGES[current].show({ keyChanged: true });
});

window.addEventListener("hashchange", () => route(true));
keyState();
route(false);
