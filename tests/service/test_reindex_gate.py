"""A reindex and the writes it would miss (item writes, an upload's start, a forget) never overlap:
a write checked just before a reindex started used to land in the collection being replaced."""

import threading

from litestar.testing import TestClient

from service.api.dependencies import ReindexJob, ReindexState
from service.app import create_app
from service.settings import Settings

ITEM = {"id": "gate-1", "title": "Brass desk lamp", "categories": ["Lighting"]}


def _client(engine, tmp_path) -> TestClient:
    encoder_folder = tmp_path / "encoder"
    encoder_folder.mkdir()
    return TestClient(create_app(Settings(data_dir=tmp_path / "data", reindex_encoders=[encoder_folder]),
                                 engine=engine))


def _held(monkeypatch, owner, name: str, in_flight: threading.Event, release: threading.Event) -> None:
    """``owner.name`` waits for ``release`` (a bounded wait) after saying it is in flight."""
    original = getattr(owner, name)

    def held(*args, **kwargs):
        in_flight.set()
        release.wait(timeout=3)
        try:
            return original(*args, **kwargs)
        finally:
            in_flight.clear()

    monkeypatch.setattr(owner, name, held)


def _reindex_observed(monkeypatch, in_flight: threading.Event) -> tuple[list[bool], threading.Event]:
    """Replace the reindex's work: note whether a write was in flight when it began."""
    seen: list[bool] = []
    began = threading.Event()

    def run(self, engine, encoder_path):
        seen.append(in_flight.is_set())
        began.set()
        self.state = ReindexState("done", encoder_path, self.state.started)

    monkeypatch.setattr(ReindexJob, "_run", run)
    return seen, began


def test_a_reindex_starts_only_after_the_item_write_in_flight_has_ended(engine, tmp_path, monkeypatch):
    in_flight, release = threading.Event(), threading.Event()
    _held(monkeypatch, engine.catalogue, "upsert", in_flight, release)
    seen, began = _reindex_observed(monkeypatch, in_flight)
    with _client(engine, tmp_path) as client:
        answers: dict[str, object] = {}
        writer = threading.Thread(target=lambda: answers.update(put=client.put("/v1/items", json={"items": [ITEM]})))
        writer.start()
        assert in_flight.wait(timeout=30)
        starter = threading.Thread(target=lambda: answers.update(reindex=client.post(
            "/v1/admin/reindex", json={"encoder": str(tmp_path / "encoder")})))
        starter.start()
        began.wait(timeout=3)  # the old code began here, with the write still to land in the old collection
        release.set()
        writer.join(timeout=60)
        starter.join(timeout=60)
    assert answers["put"].status_code == 200 and answers["put"].json()["upserted"] == 1
    assert answers["reindex"].status_code == 202
    assert seen == [False]


def test_an_upload_started_while_a_reindex_waited_for_it_refuses_the_reindex(engine, tmp_path, monkeypatch):
    in_flight, release = threading.Event(), threading.Event()
    with _client(engine, tmp_path) as client:
        jobs = client.app.dependencies["ingest_jobs"].dependency()
        _held(monkeypatch, jobs, "start", in_flight, release)
        ingest, may_ingest = jobs._run, threading.Event()  # the job runs on once the reindex is answered
        monkeypatch.setattr(jobs, "_run", lambda catalogue, job: (may_ingest.wait(30), ingest(catalogue, job)))
        seen, began = _reindex_observed(monkeypatch, in_flight)
        answers: dict[str, object] = {}
        uploader = threading.Thread(target=lambda: answers.update(upload=client.post(
            "/v1/ingest?name=lamps.jsonl", content=b'{"id": "gate-2", "title": "Arc floor lamp"}\n',
            headers={"content-type": "application/x-ndjson"})))
        uploader.start()
        assert in_flight.wait(timeout=30)
        starter = threading.Thread(target=lambda: answers.update(reindex=client.post(
            "/v1/admin/reindex", json={"encoder": str(tmp_path / "encoder")})))
        starter.start()
        began.wait(timeout=3)
        release.set()
        uploader.join(timeout=60)
        starter.join(timeout=60)
        may_ingest.set()
        assert answers["upload"].status_code == 202
        refused = answers["reindex"]
        assert refused.status_code == 409 and "upload" in refused.json()["detail"], refused.text
        assert seen == [] and client.get("/v1/admin/reindex").json()["state"] == "idle"


def test_writes_are_refused_while_a_reindex_runs_and_taken_once_it_is_done(engine, tmp_path):
    with _client(engine, tmp_path) as client:
        job = client.app.dependencies["reindex_job"].dependency()
        job.state = ReindexState("running")
        try:
            for refused in (client.put("/v1/items", json={"items": [ITEM]}), client.delete("/v1/items/gate-1"),
                            client.delete("/v1/users/u1")):
                assert refused.status_code == 409 and refused.headers["retry-after"] == "30", refused.text
        finally:
            job.state = ReindexState("done")
        assert client.put("/v1/items", json={"items": [ITEM]}).json()["upserted"] == 1
        assert client.delete("/v1/items/gate-1").status_code == 204
