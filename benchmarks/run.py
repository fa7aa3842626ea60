"""`make bench`: every benchmark, in one run, printed as tables with ratios to baselines.

Quality is measured by `make eval` (hybridrec evaluate on the shared dataset); the learning
stages by `make eval-stages`. The ones that read the shared dataset skip cleanly without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    for script, args in (("ingest_throughput.py", ["--items", "3000"]),
                         ("latency.py", ["--sizes", "10000", "100000", "--requests", "300"]),
                         # recommend, single-event writes and a mix at 1, 8, 32 clients, 30 s each; where a
                         # loaded server's time goes (py-spy) and its calls to the disk per request (strace).
                         ("load.py", ["--profile", "events:8", "--sync-calls", "events:8"]),
                         # Issue 22: recommend and single-event writes at 1 and 2 workers on PostgreSQL against
                         # single-process SQLite, 8 clients, 20 s each (~6 min).
                         ("workers.py", []),
                         # Bytes per row in each store; start-up at 10^5 and 10^6 events on SQLite and
                         # PostgreSQL; dense search at 10^4 and 10^5 items (~10 min). The heavy scales are
                         # opt-in flags of the script (--startup-events 10000000, --dense-items 1000000).
                         ("storage_scale.py", ["--startup-backends", "sqlite,postgres"]),
                         # BM25 after deletes: drift until a segment is rewritten, at 2,420 / 10^4 / 3 x 10^4 items (~2 min).
                         ("bm25_deletes.py", []),
                         # Ranker training, a cross-encoder epoch on 200 groups, rerank latency at 20..200.
                         ("rerank.py", ["--cross-encoder-epoch-groups", "200"]),
                         ("diversity.py", ["--users", "1000"]),
                         # The collaborative source on a dense log, exact against bounded lists, by history
                         # length; and whole recommendations through an Engine on that log.
                         ("dense_log.py", ["--pipeline"]),
                         ("eval_dense.py", []),  # issue 23: hybridrec evaluate on a dense set, per method (~3 min)
                         ("explanations.py", ["--users", "30"]),
                         ("similar_items.py", ["--users", "1000"]),
                         # The fusion against each of its sources alone, every slice, every validation user.
                         ("fusion_sources.py", ["--split", "valid"]),
                         # How fast an encoder adapter's gain goes stale (the encoder trainer's validation_gap).
                         ("staleness.py", [])):
        print(f"\n== {script} {' '.join(args)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
