"""The web console end to end: a real browser on the real service (conftest.py starts both)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from tests.console.conftest import EVALUATION, REQUIRED, why_skip

if (reason := why_skip()) is not None:  # one line that says how to enable these tests
    if REQUIRED:
        raise RuntimeError(f"CONSOLE_TESTS_REQUIRED=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "service" / "console"
SENTENCE = "a quiet keyboard under $50, not from Logitech"


def version(page, selector: str) -> str | None:
    return page.get_attribute(selector, "data-version")


def wait_render(page, selector: str, before: str | None) -> None:
    """Wait until the element is rendered again (its data-version moves past ``before``)."""
    page.wait_for_function("([sel, v]) => { const el = document.querySelector(sel);"
                           " return el && el.dataset.version && el.dataset.version !== v; }", arg=[selector, before])


def cards(page, selector: str = "#try-results") -> list[dict]:
    return page.locator(f"{selector} > li.card").evaluate_all(
        "els => els.map(e => ({id: e.dataset.itemId, category: e.dataset.category, brand: e.dataset.brand,"
        " price: e.dataset.price === '' ? null : Number(e.dataset.price), title: e.querySelector('h3').textContent}))")


def ask(page, sentence: str) -> None:
    """Ask the Try page a sentence and wait for its list."""
    page.wait_for_selector("#try-results[data-version]")  # the first list (popular items) is in
    before = version(page, "#try-results")
    page.get_by_label("What are you looking for?").fill(sentence)
    page.get_by_role("button", name="Recommend", exact=True).click()
    wait_render(page, "#try-results", before)


def test_a_sentence_shows_its_chips_and_constrained_results(open_console, shot):
    page = open_console("#/try")
    ask(page, SENTENCE)
    chips = page.locator("#try-understood .chip")
    expect(chips).to_have_count(3)
    for label in ("under $50.00", "not from Logitech", "category Keyboards"):
        expect(page.get_by_role("button", name=f"remove constraint {label}", exact=True)).to_be_visible()
    expect(page.locator("#try-understood")).to_contain_text('searching for "a quiet keyboard"')
    found = cards(page)
    assert found, "no results"
    assert all(c["price"] <= 50 and c["category"] == "Keyboards" and c["brand"] != "Logitech" for c in found), found
    shot(page, "try-chips")


def test_removing_a_chip_widens_the_results(open_console, shot):
    page = open_console("#/try")
    ask(page, SENTENCE)
    narrow = cards(page)
    before = version(page, "#try-results")
    # By keyboard: the chip's remove button takes focus and Enter, like any button.
    page.get_by_role("button", name="remove constraint under $50.00", exact=True).focus()
    page.keyboard.press("Enter")
    wait_render(page, "#try-results", before)
    wide = cards(page)
    assert len(wide) > len(narrow), (narrow, wide)
    assert any(c["price"] > 50 for c in wide), wide
    # The constraints left still hold: keyboards, none from Logitech.
    assert all(c["category"] == "Keyboards" and c["brand"] != "Logitech" for c in wide), wide
    expect(page.locator("#try-understood .chip")).to_have_count(2)
    expect(page.locator("#try-understood")).to_contain_text("Removed: under $50.00")
    # Focus stays in the chip row for the next removal.
    assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith("remove constraint")
    shot(page, "try-chip-removed")


def test_an_explanation_opens_with_its_evidence(open_console, shot):
    page = open_console("#/try")
    ask(page, SENTENCE)
    first = page.locator("#try-results > li.card").first
    title = first.locator("h3").inner_text()
    why = first.get_by_role("button", name=f"Why {title}?", exact=True)
    why.click()
    panel = first.locator(".explanation")
    expect(panel).to_be_visible()
    expect(why).to_have_attribute("aria-expanded", "true")
    expect(panel.locator(".text")).to_contain_text("is recommended because")
    evidence = panel.locator("ul.evidence > li")
    expect(evidence.first).to_be_visible()
    texts = evidence.all_inner_texts()
    assert any("within the limit of $50.00" in t for t in texts), texts
    assert any("not from Logitech" in t for t in texts), texts
    expect(panel.locator(".counterfactual")).not_to_be_empty()
    expect(panel.locator("table.sources tbody tr").first).to_be_visible()  # which sources found it
    expect(panel).to_contain_text("What the ranker did")
    shot(page, "try-explanation")
    why.click()  # closes again
    expect(panel).to_have_count(0)


def test_why_explains_the_rank_the_card_is_shown_at(open_console):
    page = open_console("#/try")  # diversity is on (0.3): it reorders the list, and the explanation must follow
    ask(page, "something for my home office")
    shown = page.locator("#try-results > li.card")
    count = shown.count()
    assert count == 12, count
    for position in (1, 2, 5, count - 1, count):  # the last two lie past the API's default of 10
        card = shown.nth(position - 1)
        with page.expect_response("**/v1/explanations") as answered:
            card.locator("button.why").click()
        evidence = answered.value.json()["evidence"]
        assert answered.value.request.post_data_json["k"] == count
        assert evidence["rank"] == position, (position, evidence["rank"])
        panel = card.locator(".explanation")
        expect(panel).to_be_visible()
        moved = (evidence.get("diversity") or {}).get("moved")
        if moved:  # the evidence line says what the text says
            direction = "up" if moved > 0 else "down"
            expect(panel.locator(".text")).to_contain_text(f"moved {direction}")
            expect(panel.locator("ul.evidence")).to_contain_text(f"diversity moved it {direction}")


def test_a_key_no_header_can_carry_is_refused_in_words(open_console):
    page = open_console("#/try", key=None)
    page.locator("#api-key").fill("\u201chr_abc_def\u201d")  # pasted with smart quotes
    page.locator("#key-form button[type=submit]").click()
    expect(page.locator("#errors .error")).to_contain_text("this is not an API key")
    expect(page.locator("#key-state")).to_have_text("no key")


def test_filters_and_diversity_change_the_list_live(open_console):
    page = open_console("#/try")
    ask(page, "a desk lamp")
    page.wait_for_selector("#try-category option[value='Desk Lamps']", state="attached")  # facets are in
    before = version(page, "#try-results")
    page.locator("#page-try").get_by_label("Max price ($)", exact=True).fill("60")
    wait_render(page, "#try-results", before)
    assert all(c["price"] <= 60 for c in cards(page))
    before = version(page, "#try-results")
    page.locator("#page-try").get_by_label("Category", exact=True).select_option("Desk Lamps")
    wait_render(page, "#try-results", before)
    assert {c["category"] for c in cards(page)} == {"Desk Lamps"}
    before = version(page, "#try-results")
    page.locator("#page-try").get_by_label(re.compile("^Diversity")).fill("0.9")
    wait_render(page, "#try-results", before)
    expect(page.locator("#try-summary")).to_contain_text("diversity 0.9")


def test_api_errors_are_shown_in_words(open_console, shot):
    page = open_console("#/try")
    page.wait_for_selector("#try-results[data-version]")
    page.locator("#page-try").get_by_label("Min price ($)", exact=True).fill("-5")
    error = page.locator("#errors .error")
    expect(error).to_contain_text("answered 400")
    expect(error).to_contain_text("filters.price_min")  # the field...
    expect(error).to_contain_text("must be >= 0")  # ...and why
    expect(page.locator("#try-summary")).to_contain_text("could not be made")
    shot(page, "try-error")
    page.locator("#page-try").get_by_label("Min price ($)", exact=True).fill("")
    expect(error).to_have_count(0)  # the next success clears it


def test_a_new_user_clicks_three_of_one_category_and_the_list_leans_to_it(open_console, shot):
    page = open_console("#/shopper")
    page.get_by_role("button", name="New random user").click()
    profile = page.locator("#shopper-profile-body")
    expect(profile).to_contain_text("cold start")
    expect(page.locator("#shopper-summary")).to_contain_text("cold start")
    shot(page, "shopper-cold-start")
    before = version(page, "#shopper-results")
    page.get_by_label("Looking for (optional)").fill("desk lamp")
    page.get_by_role("button", name="Show", exact=True).click()
    wait_render(page, "#shopper-results", before)
    clicked = []
    for _ in range(3):
        card = page.locator("#shopper-results > li.card[data-category='Desk Lamps']").first
        title = card.locator("h3").inner_text()
        before = version(page, "#shopper-results")
        card.get_by_role("button", name=f"Click {title}", exact=True).click()
        wait_render(page, "#shopper-results", before)  # the list reloads after each action
        clicked.append(title)
    expect(profile).to_contain_text("3 events")
    expect(profile.locator("dl.counts")).to_contain_text("click")
    # The profile made visible: it leans to the category clicked, and the recent events name the items.
    expect(profile.locator("ul.bars[aria-label='Leans to categories'] > li").first).to_contain_text("Desk Lamps")
    recent = profile.locator("ol.recent > li")
    expect(recent).to_have_count(3)
    assert {t.split(" · ")[0].removeprefix("click ") for t in recent.all_inner_texts()} == set(clicked)
    before = version(page, "#shopper-results")
    page.get_by_label("Looking for (optional)").fill("")
    page.get_by_role("button", name="Show", exact=True).click()
    wait_render(page, "#shopper-results", before)
    found = cards(page, "#shopper-results")
    assert sum(c["category"] == "Desk Lamps" for c in found) >= len(found) * 0.6, found
    assert not {c["title"] for c in found} & set(clicked)  # what was seen is not shown again
    expect(page.locator("#shopper-summary")).to_contain_text("profile: ")
    expect(page.locator("#shopper-summary")).not_to_contain_text("cold start")
    shot(page, "shopper-leaning")


def test_forget_me_removes_the_user_and_shows_it_is_gone(open_console, shot):
    page = open_console("#/shopper")
    page.get_by_role("button", name="New random user").click()
    user = page.get_by_label("User id").input_value()
    first = page.locator("#shopper-results > li.card").first
    before = version(page, "#shopper-profile-body")
    first.locator("button.act-like").click()
    wait_render(page, "#shopper-profile-body", before)
    expect(page.locator("#shopper-profile-body")).to_contain_text("1 event ·")
    page.get_by_role("button", name="Forget me").click()
    page.get_by_role("button", name=f"Forget {user} for good").click()
    gone = page.locator("#shopper-profile-body .gone")
    expect(gone).to_contain_text(f"{user} is gone")
    expect(gone).to_contain_text("404")
    expect(gone).to_contain_text("Deleted 1 event with")
    shot(page, "shopper-forgotten")


def test_catalogue_pages_and_opens_an_item_with_similar_items(open_console):
    page = open_console("#/catalogue")
    count = page.locator("#cat-count")
    expect(count).to_contain_text("Items 1–20")
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    first_page = page.locator("#cat-items tbody tr").all_inner_texts()
    page.get_by_role("button", name="Next page").click()
    expect(count).to_contain_text("Items 21–40")
    assert page.locator("#cat-items tbody tr").all_inner_texts() != first_page
    page.get_by_role("button", name="Previous page").click()
    expect(count).to_contain_text("Items 1–20")
    page.locator("#page-catalogue").get_by_label("Search", exact=True).fill("stapler")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(count).to_contain_text('best matches for "stapler"')
    row = page.locator("#cat-items tbody tr").first
    expect(row).to_contain_text("Staplers")
    title = row.locator("button").inner_text()
    row.locator("button").click()
    detail = page.locator("#cat-detail")
    expect(detail.locator(".item-title")).to_have_text(title)
    expect(detail.locator("#cat-similar > li").first).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "h-item"


def test_uploading_a_file_with_two_bad_rows_lists_both(open_console, tmp_path, shot):
    rows = [
        {"id": "console-up-1", "title": "Console upload pen, violet", "brand": "Lamy", "categories": ["Office", "Pens"],
         "price": 12.5},
        {"id": "console-up-bad-1", "brand": "Lamy", "price": 3},  # line 2: no title
        {"id": "console-up-2", "title": "Console upload notebook, dotted", "brand": "Leuchtturm",
         "categories": ["Office", "Notebooks"], "price": 19},
        {"id": "console-up-bad-2", "title": "Console upload stapler", "price": -4},  # line 4: negative price
        {"id": "console-up-3", "title": "Console upload lamp, brass", "brand": "IKEA",
         "categories": ["Office", "Desk Lamps"], "price": 45},
    ]
    upload = tmp_path / "items.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    page = open_console("#/catalogue")
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/v1/ingest" in r.url else None)
    page.get_by_label("Catalogue file", exact=True).set_input_files(str(upload))
    # An impatient double click sends it once (the second used to be refused and left an error up).
    page.get_by_role("button", name="Upload", exact=True).dblclick()
    state = page.locator("#cat-ingest-state")
    expect(state).to_contain_text("Done", timeout=60_000)
    assert len(posts) == 1, posts
    expect(page.locator("#errors .error")).to_have_count(0)
    expect(page.get_by_role("button", name="Upload", exact=True)).to_be_enabled()
    expect(state).to_contain_text("3 items written")
    expect(state).to_contain_text("2 rejected")
    rejected = page.locator("#cat-rejected table.rejected tbody tr")
    expect(rejected).to_have_count(2)
    lines = [rejected.nth(n).locator("td").first.inner_text() for n in range(2)]
    assert lines == ["2", "4"], lines
    expect(rejected.nth(0)).to_contain_text("console-up-bad-1")
    expect(rejected.nth(0)).to_contain_text("title")
    expect(rejected.nth(1)).to_contain_text("console-up-bad-2")
    expect(rejected.nth(1)).to_contain_text("price")
    assert page.evaluate("document.querySelector('#cat-progress').value") == page.evaluate(
        "document.querySelector('#cat-progress').max")
    shot(page, "catalogue-upload")


def test_the_operator_page_shows_the_serving_models(open_console, shot):
    page = open_console("#/operate")
    expect(page.locator(".serving-encoder")).to_have_text("all-MiniLM-L6-v2")
    expect(page.locator(".serving-reranker")).to_contain_text("none")
    tiles = page.locator("#op-tiles")
    expect(tiles).to_contain_text("catalogue items")
    items = tiles.locator(".tile", has_text="catalogue items").locator(".value").inner_text()
    assert int(items.replace(",", "")) >= 360
    expect(page.locator("#op-latency table.latency tbody tr").first).to_be_visible()
    # The latest evaluation report, its tables and its plots (fetched with the key, shown as images).
    evaluation = page.locator("#op-eval")
    expect(evaluation.locator(".report h3").first).to_contain_text("Evaluation")
    expect(evaluation.locator(".report table").first).to_be_visible()
    plots = evaluation.locator(".plots img")
    expect(plots).to_have_count(len(list(EVALUATION.glob("*.png"))))
    for n in range(plots.count()):
        plots.nth(n).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plots.nth(n).element_handle())
    page.get_by_role("button", name="Reload models").click()
    expect(page.locator("#op-models .notice")).to_contain_text("Reloaded")
    expect(page.locator("#op-reindex-state")).to_contain_text("reindex")
    shot(page, "operate")
    # No encoder has been trained here: starting a reindex is refused, and the page says why in words.
    page.get_by_role("button", name="Start reindex").click()
    error = page.locator("#errors .error")
    expect(error).to_contain_text("POST /v1/admin/reindex answered 400")
    expect(error).to_contain_text("no accepted encoder")


def test_a_page_without_the_needed_key_is_refused(open_console, server, shot):
    page = open_console("#/operate", key=None)
    refused = page.locator("#op-refused .refused")
    expect(refused).to_contain_text("The Operate page needs an API key with the admin scope")
    expect(refused).to_contain_text("401")
    expect(page.locator("#op-tiles .tile")).to_have_count(0)  # nothing shown without the key
    expect(page.get_by_role("button", name="Reload models")).to_be_hidden()
    shot(page, "operate-refused-401")
    page.get_by_role("link", name="Try it").click()
    expect(page.locator("#try-summary .refused")).to_contain_text("401")
    # A read key: recommendations work, the operator page is still refused (403).
    page.get_by_label("API key").fill(server.read_key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-state")).to_have_text(f"key {server.read_key.split('_')[1]} in use")
    assert page.get_by_label("API key").input_value() == ""  # the secret is not left on the page
    expect(page.locator("#try-results > li.card").first).to_be_visible()
    page.get_by_role("link", name="Operate").click()
    expect(refused).to_contain_text("403")
    expect(refused).to_contain_text("lacks the 'admin' scope")
    shot(page, "operate-refused-403")


def test_usable_at_phone_width(open_console, shot):
    page = open_console("#/try", width=390, height=844)
    ask(page, SENTENCE)
    expect(page.locator("#try-understood .chip").first).to_be_visible()
    for name in ("Try it", "Shopper", "Catalogue", "Operate"):
        expect(page.get_by_role("link", name=name)).to_be_visible()
    shot(page, "phone-try")
    for route in ("#/try", "#/catalogue", "#/operate", "#/shopper"):
        page.goto(page.url.split("#")[0] + route)
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{route} scrolls sideways at 390 px: {width} px wide"
    shot(page, "phone-shopper")


def test_page_load_time_and_shipped_size(open_console, tmp_path):
    """What the console ships and how fast it loads; the numbers are printed for the record."""
    files = sorted(p for p in CONSOLE_DIR.iterdir() if p.is_file())
    raw = sum(p.stat().st_size for p in files)
    gz = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    page = open_console("#/try")
    page.wait_for_selector("#try-results > li.card")
    page.wait_for_function("performance.getEntriesByName('hybridrec:first-results').length > 0")
    timing = page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const resources = performance.getEntriesByType('resource').filter(r => r.name.includes('/console/'));
        return {load_ms: nav.loadEventEnd - nav.startTime, dom_ms: nav.domContentLoadedEventEnd - nav.startTime,
                first_results_ms: performance.getEntriesByName('hybridrec:first-results')[0].startTime,
                transferred: nav.transferSize + resources.reduce((a, r) => a + r.transferSize, 0),
                requests: 1 + resources.length};
    }""")
    print(f"\nconsole: {len(files)} files, {raw} bytes ({gz} gzipped); load event {timing['load_ms']:.0f} ms, "
          f"first results {timing['first_results_ms']:.0f} ms, {timing['requests']} requests, "
          f"{timing['transferred']} bytes transferred")
    assert raw < 150_000, f"the console ships {raw} bytes"
    assert timing["load_ms"] < 5000 and timing["first_results_ms"] < 8000, timing


def test_every_control_is_labelled_and_the_keyboard_reaches_the_pages(open_console):
    page = open_console("#/try")
    page.wait_for_selector("#try-results[data-version]")
    # Keyboard: from the top of the page, Tab reaches the navigation, and Enter on a link opens its page.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Shopper":
            break
    else:
        raise AssertionError("Tab never reached the Shopper link")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"  # focus is visible
    page.keyboard.press("Enter")
    expect(page.locator("#page-shopper")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "h-shopper"  # focus moves to the page's heading
    for route in ("#/shopper", "#/catalogue", "#/operate", "#/try"):
        page.goto(page.url.split("#")[0] + route)
        page.wait_for_timeout(300)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => !el.labels.length && !el.getAttribute('aria-label'))
            .map(el => el.id || el.outerHTML)""")
        assert not unlabelled, f"{route}: controls without a label: {unlabelled}"
        nameless = page.evaluate("""() => [...document.querySelectorAll('button, a[href]')]
            .filter(el => el.offsetParent !== null && !(el.getAttribute('aria-label') || el.textContent.trim()))
            .map(el => el.outerHTML)""")
        assert not nameless, f"{route}: buttons or links without a name: {nameless}"
        no_alt = page.evaluate("() => [...document.querySelectorAll('img:not([alt])')].map(el => el.src)")
        assert not no_alt, f"{route}: images without alt text: {no_alt}"
