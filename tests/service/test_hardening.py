"""Found when hybridrec was tried as a hostile client or a careless operator would (issue 20): each
case keeps its test here."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from litestar.testing import TestClient

from retrieval.engine import lock_data_dir
from service.app import create_app
from service.settings import Settings


@pytest.mark.slow
def test_every_command_on_a_locked_data_directory_says_so_in_one_line(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    src = tmp_path / "cat.jsonl"
    src.write_text('{"id": "a", "title": "Pen"}\n', encoding="utf-8")
    commands = [["serve"], ["rebuild-profiles"], ["ingest", str(src), "--quiet"], ["recommend", "--query", "pen"],
                ["train", "reranker"], ["train", "encoder"], ["reindex", "--encoder", str(tmp_path)]]
    lock = lock_data_dir(data_dir)  # as a running `hybridrec serve` holds it
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "service.cli", *command, "--data-dir", str(data_dir)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "HYBRIDREC_DEVICE": "cpu"})
                for command in commands]
        for command, run in zip(commands, runs):
            out, err = run.communicate(timeout=300)
            said = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
            assert run.returncode == 2, (command, err)
            assert len(said) == 1 and "Traceback" not in err, (command, err)
            assert f"data directory {data_dir} is in use by pid {os.getpid()}; stop it first" in said[0], command
    finally:
        lock.close()
    not_a_model = subprocess.run([sys.executable, "-m", "service.cli", "reindex", "--encoder", str(tmp_path),
                                  "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "HYBRIDREC_DEVICE": "cpu"})
    assert not_a_model.returncode == 2 and "Traceback" not in not_a_model.stderr
    assert f"error: --encoder {tmp_path} cannot be loaded as a sentence-transformers model" in not_a_model.stderr


def wait_for_reindex(client) -> dict:
    deadline = time.monotonic() + 300
    while (state := client.get("/v1/admin/reindex").json())["state"] == "running":
        assert time.monotonic() < deadline, "reindex still running after 300 s"
        time.sleep(0.2)
    return state


@pytest.mark.slow
def test_reindex_names_only_encoders_the_service_keeps_and_never_probes_the_disk(make_engine, encoder, tmp_path):
    engine = make_engine()
    engine.catalogue.upsert([{"id": f"p{n}", "title": f"Gel pen {n}"} for n in range(3)])
    engine.models.encoder_dir.mkdir(parents=True)
    kept = engine.models.encoders.save(encoder.save, {"accepted": True})
    rejected = engine.models.encoders.save(encoder.save, {"accepted": False})
    listed = tmp_path / "operator-approved"
    encoder.save(listed)
    stray_model = tmp_path / "stray-model"
    encoder.save(stray_model)
    (tmp_path / "not-a-model").mkdir()
    app = create_app(Settings(data_dir=tmp_path / "unused", reindex_encoders=(listed,)), engine=engine)
    with TestClient(app) as client:
        refused = [client.post("/v1/admin/reindex", json={"encoder": name})
                   for name in (str(tmp_path / "missing"), str(tmp_path / "not-a-model"), str(stray_model),
                                rejected, str(engine.models.encoders.path(rejected)), "/etc", "../models/encoder",
                                f"{kept}/..", str(listed) + "/", "")]
        bodies = [{k: v for k, v in r.json().items() if k != "request_id"} for r in refused]
        assert {r.status_code for r in refused} == {400}
        assert all(body == bodies[0] for body in bodies), bodies  # one answer, whatever is on disk
        assert f"accepted encoder version ({kept})" in bodies[0]["detail"]
        assert str(listed) in bodies[0]["detail"] and bodies[0]["extra"][0]["key"] == "encoder"

        for name, folder in ((kept, engine.models.encoders.path(kept)), (str(listed), listed)):
            started = client.post("/v1/admin/reindex", json={"encoder": name})
            assert started.status_code == 202 and started.json()["encoder"] == str(folder)
            assert wait_for_reindex(client)["state"] == "done"
        assert engine.layout.encoder == str(listed)


def test_reindex_without_any_kept_encoder_says_what_could_be_named(make_engine, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused"), engine=make_engine())
    with TestClient(app) as client:
        for body in ({}, {"encoder": str(tmp_path)}):
            r = client.post("/v1/admin/reindex", json=body)
            assert r.status_code == 400
            assert "accepted encoder version (none yet)" in r.json()["detail"]
            assert "HYBRIDREC_REINDEX_ENCODERS (none set)" in r.json()["detail"]


@pytest.fixture
def broken_client(make_engine, tmp_path, monkeypatch):
    """An app whose recommender fails as a broken store would. Built before the test runs: the
    app's logging set-up replaces the root logger's handlers, and caplog's are added per phase."""
    engine = make_engine()

    def broken_store(request):
        raise OSError("shard /srv/hybridrec/collections/items is gone")  # what a client must not read

    monkeypatch.setattr(engine.recommender, "recommend", broken_store)
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine),
                    raise_server_exceptions=False) as client:
        yield client


def test_an_unexpected_error_is_logged_with_its_traceback_and_answered_without_its_text(broken_client, caplog):
    with caplog.at_level(logging.INFO, logger="hybridrec"):
        r = broken_client.post("/v1/recommendations", json={"query": "gel pen"},
                               headers={"X-Request-ID": "trace-me-42"})
    assert r.status_code == 500
    assert r.json() == {"status_code": 500, "request_id": "trace-me-42", "detail": (
        "internal server error; the service's log has what went wrong under request_id trace-me-42")}
    assert "/srv" not in r.text and "OSError" not in r.text
    [logged] = [rec for rec in caplog.records if rec.name == "hybridrec.service" and rec.levelno == logging.ERROR]
    assert json.loads(logged.getMessage()) == {"request_id": "trace-me-42", "method": "POST",
                                               "route": "/v1/recommendations", "error": "OSError"}
    assert logged.exc_info[1].args == ("shard /srv/hybridrec/collections/items is gone",)
    assert "broken_store" in caplog.text  # the traceback, down to the frame that raised


def test_a_data_directory_that_cannot_be_used_is_named_in_one_line(tmp_path, capsys):
    from retrieval.storage.sqlite_log import connect_file
    from service.cli import main

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    assert main(["keys", "list", "--data-dir", str(a_file)]) == 2  # a traceback before
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and str(a_file) in said[0] and "a file is where a folder must be" in said[0]
    with pytest.raises(OSError, match="cannot open .*access.sqlite3 .*must be writable"):
        connect_file(a_file / "access.sqlite3")  # as a read-only folder or a full disk fails


def test_a_gpu_asked_for_on_a_machine_without_one_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    import torch

    from service.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("HYBRIDREC_DEVICE", "cuda")
    assert main(["recommend", "--query", "pen", "--data-dir", str(tmp_path / "d")]) == 2  # a traceback before
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert said == ["error: device 'cuda' requested but CUDA is not available on this machine; set HYBRIDREC_DEVICE "
                    "(or the command's --device) to cpu or auto"]
