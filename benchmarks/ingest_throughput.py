"""Ingestion throughput: the `hybridrec ingest` job against the raw bi-encoder on the same texts.

Both are measured in this run, on this machine: the job's target is at least 90% of the encoder's
rate (encoding is the floor; parsing, BM25, upserts and checkpoints should hide behind it).

    python benchmarks/ingest_throughput.py [--items 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save, table  # noqa: E402
from encoders import BiEncoder, item_text  # noqa: E402
from retrieval.engine import Engine, EngineConfig  # noqa: E402
from retrieval.storage.records import parse_item  # noqa: E402
from scripts.make_demo_catalogue import make_items  # noqa: E402
from service.ingest import ingest_file  # noqa: E402


def run(n_items: int, encoder: BiEncoder | None = None) -> dict:
    encoder = encoder or BiEncoder()
    rows = list(make_items(n_items, seed=11))
    work = Path(tempfile.mkdtemp(prefix="hybridrec-bench-ingest-"))
    src = work / "catalogue.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [item_text(parse_item(r).payload()) for r in rows]
    encoder.encode(texts[:128])  # warm-up: first batches pay for lazy initialisation

    started = time.perf_counter()
    encoder.encode(texts, batch_size=64)
    raw_seconds = time.perf_counter() - started

    engine = Engine.open(EngineConfig(data_dir=work / "data"), encoder=encoder)
    summary = ingest_file(engine.catalogue, src, batch_size=256, checkpoint_dir=work / "ck", progress=False)
    assert engine.catalogue.count() == n_items and summary.rejected == 0
    engine.close()

    raw_rate = n_items / raw_seconds
    job_rate = n_items / summary.seconds
    result = {"items": n_items, "encoder_items_per_s": raw_rate, "job_items_per_s": job_rate,
              "job_over_encoder": job_rate / raw_rate, "job_seconds": summary.seconds, "encoder_seconds": raw_seconds,
              "device": encoder.device}
    print(table(["what", "items", "seconds", "items/s", "ratio to encoder"], [
        ["raw bi-encoder (baseline)", n_items, raw_seconds, raw_rate, 1.0],
        ["hybridrec ingest job", n_items, summary.seconds, job_rate, job_rate / raw_rate],
    ], title=f"Ingestion throughput ({encoder.device})"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3000)
    args = parser.parse_args()
    result = run(args.items)
    print(f"\nwrote {save('ingest_throughput', result)}")


if __name__ == "__main__":
    main()
