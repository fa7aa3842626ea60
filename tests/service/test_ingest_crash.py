"""A real `hybridrec ingest` killed with SIGKILL half way, twice, then run to the end: every item
of the file is in the catalogue exactly once and every rejected row is in the rejects file once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from retrieval.engine import Engine, EngineConfig
from retrieval.storage.vector_store import scroll_all
from tests.conftest import TEST_DEVICE

pytestmark = pytest.mark.slow

ROWS = 600
BATCH = 8


def catalogue_rows() -> tuple[list[str], set[str], set[int]]:
    """The file's lines, the ids that must land, and the line numbers that must be rejected."""
    lines, good, bad = [], set(), set()
    for n in range(1, ROWS + 1):
        if n % 47 == 0:
            lines.append(json.dumps({"id": f"untitled{n}"}))  # no title: rejected
            bad.add(n)
        else:
            lines.append(json.dumps({"id": f"sku{n}", "title": f"Refill pack {n} for gel pens", "price": n % 40}))
            good.add(f"sku{n}")
    return lines, good, bad


def start_ingest(src, data_dir) -> subprocess.Popen:
    args = [sys.executable, "-m", "service.cli", "ingest", str(src), "--data-dir", str(data_dir),
            "--batch-size", str(BATCH), "--quiet"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYBRIDREC_DEVICE": TEST_DEVICE})


def committed_line(data_dir) -> int:
    """The line the job's checkpoint says is committed (0 before the first batch)."""
    for path in (data_dir / "ingest-checkpoints").glob("*.json"):
        try:
            return json.loads(path.read_text())["line"]
        except (OSError, ValueError, KeyError):
            pass  # being replaced right now
    return 0


def kill_after(proc: subprocess.Popen, data_dir, line: int) -> int:
    """SIGKILL the job once its checkpoint passes ``line``; returns the line committed by then."""
    deadline = time.monotonic() + 300
    while committed_line(data_dir) < line:
        assert proc.poll() is None, f"ingest ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "ingest made no progress in 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no finally blocks, no flush on exit
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return committed_line(data_dir)


def test_an_ingest_killed_twice_and_rerun_has_each_item_exactly_once(tmp_path, encoder):
    lines, good, bad = catalogue_rows()
    src = tmp_path / "catalogue.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_dir = tmp_path / "data"

    first = kill_after(start_ingest(src, data_dir), data_dir, ROWS // 4)
    second = kill_after(start_ingest(src, data_dir), data_dir, ROWS // 2)
    assert ROWS // 4 <= first < second < ROWS  # the second run resumed, and was itself cut short

    done = start_ingest(src, data_dir)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert f"ingested {len(good)} items" in out and f"rejected {len(bad)}" in out and f"resumed after line {second}" in out

    engine = Engine.open(EngineConfig(data_dir=data_dir), encoder=encoder)
    try:
        stored = [p.payload["id"] for page in scroll_all(engine.store, engine.catalogue.collection) for p in page]
        assert len(stored) == len(set(stored)) == engine.catalogue.count()
        assert set(stored) == good
    finally:
        engine.close()
    rejects = [json.loads(line)["line"] for line in open(tmp_path / "catalogue.jsonl.rejects.jsonl")]
    assert rejects == sorted(bad)
    assert not list((data_dir / "ingest-checkpoints").glob("*.json"))
