"""The server side of the web console (issue 21): its static pages, and the API routes it reads
(browse and search, facets, uploads, a user's leaning, trained encoders, the evaluation report)."""

import pytest
from litestar.testing import TestClient

from service.app import CONSOLE_DIR, create_app
from service.settings import Settings


@pytest.fixture
def client(engine, keys, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", max_batch=50), engine=engine, access_keys=keys)
    with TestClient(app) as c:
        yield c


def test_the_console_is_served_without_a_key_and_the_root_redirects_to_it(client, keys):
    keys.create("ops", ["admin"])  # access control on: the pages stay public
    assert (CONSOLE_DIR / "index.html").is_file()
    for path in ("/console/", "/console/index.html"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        # Only its own files run, and no other page may frame it (and steer its clicks).
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    # Without the slash its relative links would load /console.js: it is sent to /console/.
    r = client.get("/console", follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/console/"
    assert client.get("/console/no-such-file.js").status_code == 404
    assert client.get("/console/..%2Fapp.py").status_code == 404
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/console/"
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console")]


def test_browsing_pages_through_every_item_exactly_once(client, engine):
    seen, offset, pages = [], None, 0
    while True:
        r = client.get("/v1/items", params={"limit": 47, **({"offset": offset} if offset else {})})
        assert r.status_code == 200
        page = r.json()
        assert page["total"] == engine.catalogue.count() == 360 and len(page["items"]) <= 47
        assert all(item["score"] == 0 and item["title"] for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        pages += 1
        offset = page["next"]
        if offset is None:
            break
    assert len(seen) == len(set(seen)) == 360 and pages == 8


def test_browsing_filters_by_category_and_brand_case_insensitively(client):
    staplers = client.get("/v1/items", params={"category": "staplers", "limit": 100}).json()
    assert len(staplers["items"]) == 30 and staplers["total"] == 360
    assert all(i["categories"][-1] == "Staplers" for i in staplers["items"])
    rapid = client.get("/v1/items", params={"category": "Staplers", "brand": "RAPID", "limit": 100}).json()["items"]
    assert rapid and all(i["brand"] == "Rapid" and i["categories"][-1] == "Staplers" for i in rapid)
    assert client.get("/v1/items", params={"category": "no such shelf"}).json()["items"] == []


def test_search_honours_the_filters_and_the_sentence(client):
    r = client.get("/v1/items", params={"q": "quiet keyboard under $50", "limit": 5, "offset": "ignored"})
    assert r.status_code == 200
    body = r.json()
    assert body["next"] is None and 0 < len(body["items"]) <= 5
    assert all(i["categories"][-1] == "Keyboards" and i["price"] <= 50 and i["score"] > 0 for i in body["items"])
    pens = client.get("/v1/items", params={"q": "something for my desk", "category": "Pens", "brand": "lamy"}).json()
    assert pens["items"] and all(i["categories"][-1] == "Pens" and i["brand"] == "Lamy" for i in pens["items"])
    assert len(client.get("/v1/items", params={"q": "stapler", "limit": 3}).json()["items"]) == 3


def test_browsing_refuses_bad_parameters_and_keys_without_read(client, keys):
    for params, key in (({"offset": "not-a-cursor"}, "offset"), ({"limit": 0}, None), ({"limit": 101}, None),
                        ({"q": "bad\x01text"}, "q"), ({"category": "x" * 201}, None)):
        r = client.get("/v1/items", params=params)
        assert r.status_code == 400, params
        if key:
            assert r.json()["extra"][0]["key"] == key
    writer = keys.create("writer", ["write"]).secret
    reader = keys.create("reader", ["read"]).secret
    assert client.get("/v1/items").status_code == 401
    assert client.get("/v1/items", headers={"X-API-Key": writer}).status_code == 403
    assert client.get("/v1/items", headers={"X-API-Key": reader}).status_code == 200


def test_facets_count_the_catalogue_and_follow_its_writes(client, engine, demo_items):
    facets = client.get("/v1/catalogue/facets").json()
    assert facets["items"] == 360
    by_name = {c["name"]: c["items"] for c in facets["categories"]}
    assert by_name["Office"] == 360 and by_name["Staplers"] == 30 and len(by_name) == 13
    assert [c["items"] for c in facets["categories"]] == sorted(by_name.values(), reverse=True)
    brands = {b["name"]: b["items"] for b in facets["brands"]}
    assert sum(brands.values()) == sum(1 for i in demo_items if i.get("brand"))
    prices = [i["price"] for i in demo_items if i.get("price") is not None]
    assert facets["price"] == {"min": min(prices), "max": max(prices)}
    assert client.get("/v1/catalogue/facets").json() == facets  # kept
    new = {"id": "z-1", "title": "Walnut monitor riser", "brand": "Grovemade", "categories": ["Office", "Risers"],
           "price": 9999.0}
    assert client.put("/v1/items", json={"items": [new]}).json()["upserted"] == 1
    after = client.get("/v1/catalogue/facets").json()
    assert after["items"] == 361 and after["price"]["max"] == 9999.0
    assert {"name": "Risers", "items": 1} in after["categories"] and {"name": "Grovemade", "items": 1} in after["brands"]
    assert client.put("/v1/items", json={"items": [dict(new, brand="Ugmonk")]}).json()["upserted"] == 1  # replaced
    replaced = client.get("/v1/catalogue/facets").json()
    assert {"name": "Ugmonk", "items": 1} in replaced["brands"]
    assert "Grovemade" not in {b["name"] for b in replaced["brands"]}
    assert client.delete("/v1/items/z-1").status_code == 204
    assert client.get("/v1/catalogue/facets").json() == facets


def test_facets_need_the_read_scope(client, keys):
    writer = keys.create("writer", ["write"]).secret
    assert client.get("/v1/catalogue/facets").status_code == 401
    assert client.get("/v1/catalogue/facets", headers={"X-API-Key": writer}).status_code == 403
    reader = keys.create("reader", ["read"]).secret
    assert client.get("/v1/catalogue/facets", headers={"Authorization": f"Bearer {reader}"}).status_code == 200


def wait_for_job(client, job_id, headers=None, timeout=60.0):
    """The job's states while it runs, ending with its final one."""
    import time

    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/ingest/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["state"] != "running":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running: {seen[-1]}")


def test_an_uploaded_jsonl_file_is_ingested_with_its_two_bad_rows_listed(client, engine, tmp_path):
    import json

    good = [{"id": f"up-{i}", "title": f"Recycled paper notebook {i}", "brand": "Leuchtturm",
             "categories": ["Office", "Notebooks"], "price": 5 + i} for i in range(600)]
    lines = [json.dumps(row) for row in good[:300]] + ['{"id": "up-bad", "title": "Pen", "price": -2}']
    lines += [json.dumps(row) for row in good[300:]] + ["{not json"]
    body = ("\n".join(lines) + "\n").encode()
    r = client.post("/v1/ingest", params={"format": "jsonl", "name": "notebooks.jsonl"}, content=body,
                    headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["state"] == "running" and started["name"] == "notebooks.jsonl" and started["lines_total"] == 602
    assert (tmp_path / "data" / "uploads" / f"{started['id']}.jsonl").read_bytes() == body
    states = wait_for_job(client, started["id"])
    done = states[-1]
    assert done["state"] == "done" and done["error"] is None
    assert done["lines_done"] == done["lines_total"] == 602
    assert [s["lines_done"] for s in states] == sorted(s["lines_done"] for s in states)  # progress only grows
    assert done["upserted"] == 600 and done["rejected_count"] == 2
    assert [(x["line"], x["id"], x["field"]) for x in done["rejected"]] == [(301, "up-bad", "price"), (602, None, None)]
    assert ">= 0" in done["rejected"][0]["reason"] and "not valid JSON" in done["rejected"][1]["reason"]
    assert engine.catalogue.count() == 960 and client.get("/v1/items/up-599").json()["brand"] == "Leuchtturm"
    facets = client.get("/v1/catalogue/facets").json()
    assert facets["items"] == 960 and {"name": "Leuchtturm", "items": 600} in facets["brands"]


def test_an_uploaded_csv_file_and_one_that_cannot_be_read(client, engine):
    csv = "id,title,brand,categories,price\nc-1,Oak desk tray,Yamazaki,Office|Organisers,19.5\nc-2,,Yamazaki,,1\n"
    r = client.post("/v1/ingest", params={"name": "trays.csv"}, content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 202 and r.json()["lines_total"] == 3
    done = wait_for_job(client, r.json()["id"])[-1]
    assert (done["state"], done["upserted"], done["rejected_count"]) == ("done", 1, 1)
    assert done["rejected"][0]["line"] == 3 and done["rejected"][0]["field"] == "title"
    assert client.get("/v1/items/c-1").json()["categories"] == ["Office", "Organisers"]
    r = client.post("/v1/ingest", params={"format": "csv"}, content=b"sku,name\n1,x\n",
                    headers={"Content-Type": "application/octet-stream"})
    failed = wait_for_job(client, r.json()["id"])[-1]
    assert failed["state"] == "failed" and "needs id and title" in failed["error"]


def test_uploads_are_refused_as_documented(client, engine, keys):
    assert client.get("/v1/ingest/no-such-job").status_code == 404
    r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "a", "title": "A"}\n',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and r.json()["extra"][0]["key"] == "content-type"
    r = client.post("/v1/ingest", content=b"x\n", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "format"  # nothing says the format
    assert client.post("/v1/ingest", params={"format": "xml"}, content=b"x").status_code == 400
    # One upload at a time, and none while a reindex runs (its items would miss the new collection).
    big = "".join(f'{{"id": "big-{i}", "title": "Desk lamp {i}"}}\n' for i in range(3000)).encode()
    first = client.post("/v1/ingest", params={"format": "jsonl"}, content=big)
    assert first.status_code == 202
    second = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "b", "title": "B"}\n')
    reindex = client.post("/v1/admin/reindex", json={})
    if client.get(f"/v1/ingest/{first.json()['id']}").json()["state"] == "running":
        assert second.status_code == 409 and "already" in second.json()["detail"]
        assert reindex.status_code == 409 and "upload" in reindex.json()["detail"]
    assert wait_for_job(client, first.json()["id"])[-1]["upserted"] == 3000
    reindex_job = client.app.dependencies["reindex_job"].dependency()
    reindex_job.state.state = "running"
    try:
        r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "c", "title": "C"}\n')
        assert r.status_code == 409 and r.headers["retry-after"] == "30" and "reindex" in r.json()["detail"]
    finally:
        reindex_job.state.state = "idle"
    # Scopes: write uploads and follows a job; read does not.
    job = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "d", "title": "D"}\n').json()["id"]
    reader, writer = keys.create("reader", ["read"]).secret, keys.create("writer", ["write"]).secret
    assert client.post("/v1/ingest", params={"format": "jsonl"}, content=b"").status_code == 401
    assert client.get(f"/v1/ingest/{job}", headers={"X-API-Key": reader}).status_code == 403
    assert client.post("/v1/ingest", params={"format": "jsonl"}, content=b"", headers={"X-API-Key": reader}).status_code == 403
    assert wait_for_job(client, job, {"X-API-Key": writer})[-1]["state"] == "done"


def test_a_users_leaning_follows_three_clicks_in_one_category_and_lists_recent_events(client, engine):
    staplers = client.get("/v1/items", params={"category": "Staplers", "limit": 3}).json()["items"]
    pen = client.get("/v1/items", params={"category": "Pens", "limit": 1}).json()["items"][0]
    r = client.post("/v1/events", json={"events": [
        {"user_id": "newbie", "type": "view", "item_id": pen["id"], "timestamp": 1_700_000_000},
        *({"user_id": "newbie", "type": "click", "item_id": s["id"]} for s in staplers),
        {"user_id": "newbie", "type": "search", "query": "heavy duty stapler"},
    ]})
    assert r.json()["accepted"] == 5
    user = client.get("/v1/users/newbie").json()
    assert user["total_events"] == 5 and user["has_profile"] and user["recent_items"][0] == staplers[-1]["id"]
    leaning = user["leaning"]
    assert leaning["categories"][0]["name"] == "Staplers" and leaning["categories"][0]["share"] > 0.9
    assert {c["name"] for c in leaning["categories"]} <= {"Staplers", "Pens"}
    assert abs(sum(c["share"] for c in leaning["categories"]) - 1) < 1e-3
    assert leaning["brands"] and abs(sum(b["share"] for b in leaning["brands"]) - 1) < 1e-3
    assert len(leaning["brands"]) <= 5
    events = user["recent_events"]
    assert [e["type"] for e in events] == ["search", "click", "click", "click", "view"]
    assert events[0] == {"type": "search", "item_id": None, "title": None, "at": events[0]["at"],
                         "query": "heavy duty stapler"}
    assert [(e["item_id"], e["title"]) for e in events[1:4]] == [(s["id"], s["title"]) for s in reversed(staplers)]
    assert events[-1]["at"] == 1_700_000_000 and events[0]["at"] >= events[1]["at"]


def test_a_user_with_only_stated_preferences_leans_nowhere_yet(client, keys):
    r = client.put("/v1/users/quiet", json={"preferences": "fountain pens"})
    assert r.status_code == 200
    assert r.json()["leaning"] == {"categories": [], "brands": []} and r.json()["recent_events"] == []
    assert client.get("/v1/users/nobody").status_code == 404
    writer = keys.create("writer", ["write"]).secret
    assert client.get("/v1/users/quiet", headers={"X-API-Key": writer}).status_code == 403


def test_the_models_page_lists_trained_encoders_and_the_serving_one(client, engine, keys):
    before = client.get("/v1/admin/models").json()
    assert before["serving"] is None and before["versions"] == [] and before["encoders"] == []
    assert before["serving_encoder"] == "all-MiniLM-L6-v2" == engine.encoder.name
    engine.models.encoder_dir.mkdir(parents=True)
    rejected = engine.models.encoders.save(lambda folder: folder.mkdir(), {
        "accepted": False, "reason": "validation NDCG@10 0.31 vs 0.33: not better", "created": "2026-01-01T00:00:00Z"})
    accepted = engine.models.encoders.save(lambda folder: folder.mkdir(), {"accepted": True, "reason": "better"})
    models = client.get("/v1/admin/models").json()
    assert models["encoders"] == [
        {"version": rejected, "accepted": False, "reason": "validation NDCG@10 0.31 vs 0.33: not better",
         "created": "2026-01-01T00:00:00Z"},
        {"version": accepted, "accepted": True, "reason": "better", "created": None}]
    assert models["serving_encoder"] == "all-MiniLM-L6-v2" and models["versions"] == []
    reader = keys.create("reader", ["read", "write"]).secret
    assert client.get("/v1/admin/models", headers={"X-API-Key": reader}).status_code == 403


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def test_the_evaluation_report_and_its_plots(engine, keys, tmp_path):
    import json

    folder = tmp_path / "eval"
    settings = Settings(data_dir=tmp_path / "data", evaluation_dir=folder)
    with TestClient(create_app(settings, engine=engine, access_keys=keys)) as client:
        missing = client.get("/v1/admin/evaluation")
        assert missing.status_code == 404 and "hybridrec evaluate --dataset" in missing.json()["detail"]
        assert str(folder) in missing.json()["detail"]
        folder.mkdir()
        (folder / "report.md").write_text("# Evaluation\n\n| method | NDCG@10 |\n|---|---|\n| hybrid | **0.41** |\n")
        (folder / "results.json").write_text(json.dumps({"seed": 7, "methods": {"hybrid": {"ndcg@10": 0.41}}}))
        (folder / "recall_at_k.png").write_bytes(PNG)
        (folder / "accuracy_vs_diversity.png").write_bytes(PNG)
        (folder / "notes.txt").write_text("not a plot")
        (tmp_path / "secret.png").write_bytes(b"outside the folder")
        report = client.get("/v1/admin/evaluation").json()
        assert report["folder"] == str(folder) and report["report_markdown"].startswith("# Evaluation")
        assert report["results"] == {"seed": 7, "methods": {"hybrid": {"ndcg@10": 0.41}}}
        assert report["plots"] == ["accuracy_vs_diversity.png", "recall_at_k.png"]
        assert report["generated"].endswith("+00:00") and report["generated"][:4].isdigit()
        plot = client.get("/v1/admin/evaluation/plots/recall_at_k.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content == PNG
        for name in ("notes.txt", "..%2Fsecret.png", "%2E%2E%2Fsecret.png", "nope.png", "%2E%2E", "report.md"):
            r = client.get(f"/v1/admin/evaluation/plots/{name}")
            assert r.status_code == 404 and r.content != b"outside the folder", name
        assert client.get("/v1/admin/evaluation/plots/../../secret.png").status_code == 404
        (folder / "results.json").write_text("{broken")
        assert client.get("/v1/admin/evaluation").json()["results"] is None
        writer = keys.create("writer", ["read", "write"]).secret
        for path in ("/v1/admin/evaluation", "/v1/admin/evaluation/plots/recall_at_k.png"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"X-API-Key": writer}).status_code == 403


def test_the_evaluation_folder_defaults_to_the_data_directorys(client, tmp_path):
    r = client.get("/v1/admin/evaluation")
    assert r.status_code == 404 and str(tmp_path / "data" / "evaluation") in r.json()["detail"]


def test_an_upload_larger_than_max_body_bytes_is_refused(engine, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", max_body_bytes=2048)
    with TestClient(create_app(settings, engine=engine)) as client:
        r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "a", "title": "A"}\n' * 200)
        assert r.status_code == 413 and "HYBRIDREC_MAX_BODY_BYTES" in r.json()["detail"]
        assert not (tmp_path / "data" / "uploads").exists() or not any((tmp_path / "data" / "uploads").iterdir())


def test_an_upload_a_killed_process_was_ingesting_is_finished_by_the_next_one(engine, keys, tmp_path):
    import fcntl
    import json

    import msgspec

    from service.api.dependencies import IngestState
    from service.ingest import ingest_file

    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True)
    rows = [{"id": f"kill-{i}", "title": f"Brass desk lamp {i}"} for i in range(700)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (uploads / "20261207-000000-aaaa.jsonl").write_bytes(body)

    class Killed(Exception):
        pass

    def killed_after_the_first_batch(line, summary):
        raise Killed

    # The process that answered 202 got through one batch of its checkpointed job, then died.
    with pytest.raises(Killed):
        ingest_file(engine.catalogue, uploads / "20261207-000000-aaaa.jsonl", "jsonl",
                    rejects=uploads / "20261207-000000-aaaa.jsonl.rejects.jsonl", checkpoint_dir=uploads / ".checkpoints",
                    progress=False, on_batch=killed_after_the_first_batch)
    assert 0 < engine.catalogue.count() - 360 < 700
    state = IngestState("20261207-000000-aaaa", "lamps.jsonl", "running", 700, lines_done=256, format="jsonl")
    (uploads / "20261207-000000-aaaa.jsonl.job.json").write_bytes(msgspec.json.encode(state))
    # Another worker of the data directory runs a second job: it is left to that worker.
    other = IngestState("20261207-000001-bbbb", "other.jsonl", "running", 1, format="jsonl")
    (uploads / "20261207-000001-bbbb.jsonl").write_bytes(b'{"id": "bbbb", "title": "B"}\n')
    (uploads / "20261207-000001-bbbb.jsonl.job.json").write_bytes(msgspec.json.encode(other))
    with open(uploads / "20261207-000001-bbbb.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        app = create_app(Settings(data_dir=tmp_path / "data"), engine=engine, access_keys=keys)
        with TestClient(app) as client:  # its start resumes the killed one
            done = wait_for_job(client, "20261207-000000-aaaa")[-1]
            assert (done["state"], done["lines_done"], done["upserted"], done["rejected_count"]) == ("done", 700, 700, 0)
            assert engine.catalogue.count() == 360 + 700
            assert client.get("/v1/ingest/20261207-000001-bbbb").json()["state"] == "running"  # another's, read
            r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "c", "title": "C"}\n')
            assert r.status_code == 409  # one upload at a time across the workers
    assert engine.catalogue.get("bbbb") is None


def test_an_upload_whose_worker_died_while_this_one_ran_goes_before_the_next(client, engine, tmp_path):
    import json

    import msgspec

    from service.api.dependencies import IngestState

    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps({"id": f"orphan-{i}", "title": f"Walnut pen tray {i}"}) + "\n" for i in range(300))
    (uploads / "20261207-000002-cccc.jsonl").write_text(body)
    state = IngestState("20261207-000002-cccc", "trays.jsonl", "running", 300, format="jsonl")
    (uploads / "20261207-000002-cccc.jsonl.job.json").write_bytes(msgspec.json.encode(state))  # its worker is gone
    r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "next", "title": "Next"}\n')
    assert r.status_code == 409  # the orphan was taken up first
    assert wait_for_job(client, "20261207-000002-cccc")[-1]["upserted"] == 300
    r = client.post("/v1/ingest", params={"format": "jsonl"}, content=b'{"id": "next", "title": "Next"}\n')
    assert r.status_code == 202 and wait_for_job(client, r.json()["id"])[-1]["upserted"] == 1


def test_a_page_of_another_origin_cannot_change_anything_while_no_key_exists(client, engine):
    # A browser sends these without asking first (no preflight): a body without a Content-Type, or
    # text/plain. With no key yet every route is open, so any page the operator visits could write.
    own = client.base_url.netloc.decode() if isinstance(client.base_url.netloc, bytes) else client.base_url.netloc
    for origin in ("http://127.0.0.1:18090", "null", "https://evil.example", "garbage", f"http://{own}.evil.example"):
        item = client.put("/v1/items", content=b'{"items": [{"id": "demo-000007", "title": "PWNED stapler"}]}',
                          headers={"Origin": origin})
        key = client.post("/v1/admin/keys", content=b'{"name": "attacker", "scopes": ["read"]}',
                          headers={"Origin": origin})
        upload = client.post("/v1/ingest?format=jsonl", content=b'{"id": "x", "title": "X"}\n',
                             headers={"Origin": origin, "Content-Type": "text/plain"})
        for refused in (item, key, upload):
            assert refused.status_code == 403 and refused.json()["detail"].startswith("origin:"), refused.text
    assert engine.catalogue.get("x") is None and client.get("/v1/admin/keys").json() == []
    assert "PWNED" not in (engine.catalogue.get("demo-000007").payload["title"] if engine.catalogue.get("demo-000007") else "")
    # Reads from anywhere, and writes from the service's own pages or from non-browser clients, go on.
    assert client.get("/v1/items?limit=1", headers={"Origin": "https://evil.example"}).status_code == 200
    ok = {"items": [{"id": "same-origin", "title": "Brass lamp"}]}
    assert client.put("/v1/items", json=ok, headers={"Origin": f"http://{own}"}).status_code == 200
    # Behind a proxy the Host may name the default port the Origin leaves out, and the other way round.
    assert client.put("/v1/items", json=ok, headers={"Origin": "https://recs.example",
                                                     "Host": "recs.example:443"}).status_code == 200
    assert client.put("/v1/items", json=ok, headers={"Origin": "https://recs.example:8443",
                                                     "Host": "recs.example"}).status_code == 403
    assert client.put("/v1/items", json=ok).status_code == 200
