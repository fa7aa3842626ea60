"""Found when hybridrec was tried as a hostile client or a careless operator would (issue 20): each
case keeps its test here."""

import os
import subprocess
import sys

import pytest

from retrieval.engine import lock_data_dir


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
