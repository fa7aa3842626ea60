"""The storage and workers benchmarks (benchmarks/storage_scale.py, benchmarks/workers.py) at tiny sizes."""

import pytest

from benchmarks.storage_scale import child_build, child_dense, child_load, measure_bytes, prepare_data_dir, report
from benchmarks.workers import Configuration, configurations, workers_table
from tests.postgres_server import postgres_bindir

pytestmark = pytest.mark.slow


@pytest.mark.skipif(postgres_bindir() is None, reason="no PostgreSQL server binaries on this machine")
def test_bytes_per_row_are_measured_in_every_store():
    part = measure_bytes(items=50, events=500, users=20)

    for store in ("sqlite", "postgres"):
        assert all(part[store]["per_row"][kind] > 0 for kind in ("items", "events", "users")), part[store]
    assert part["postgres"]["tables"]["events"]["indexes"] > 0
    assert part["qdrant"]["items"]["per_row"] > 0 and part["qdrant"]["users"]["per_row"] > 0
    assert "| events | 500 |" in " ".join(report({"bytes": part}).split())


def test_the_cooccurrence_index_built_from_a_log_loads_back_from_its_snapshot(tmp_path):
    prepare_data_dir(tmp_path / "data", events=2_000, database_url=None, seed=0)

    built = child_build(str(tmp_path / "data"), "", str(tmp_path / "index.npz"))
    loaded = child_load(str(tmp_path / "index.npz"))

    assert built["snapshot_bytes"] > 0 and built["build_s"] > 0 and loaded["load_s"] > 0


def test_dense_search_is_timed_with_and_without_filters(tmp_path):
    row = child_dense("300", "5", str(tmp_path))

    assert set(row["searches"]) == {"none", "category (1 of 20)", "brand (1 of 200)"}
    assert all(s["p50_ms"] > 0 for s in row["searches"].values())
    assert "| 300 | none |" in " ".join(report({"dense": {"limit": 100, "rows": [row]}}).split())


def test_the_baseline_comes_first_and_rows_are_compared_with_it():
    assert configurations([1, 2]) == [Configuration(1, False), Configuration(1, True), Configuration(2, True)]
    kinds = lambda rps, p50: {"requests_per_s": rps, "p50_ms": p50, "p99_ms": 2 * p50, "errors": 0}  # noqa: E731
    phase = lambda config, kind, rps, p50: {  # noqa: E731
        "configuration": config.name, "database": "postgresql" if config.postgres else "sqlite", "kind": kind,
        "kinds": {kind: kinds(rps, p50)}, "server_cpu_ms_per_request": 1.0, "postgres_cpu_ms_per_request": 0.5,
        "server_cores_busy": 1.0, "postgres_cores_busy": 0.1, "client_cpu_ms_per_request": 0.2,
        "other_processes_cores_busy": 0.3, "load_average_1m": 2.0}
    base, two = configurations([2])
    results = {"commit": "0" * 40, "uncommitted_changes": False, "clients": 8, "seconds_per_phase": 1, "cpu_count": 2,
               "catalogue_items": 360,
               "phases": [phase(base, "recommend", 50.0, 100.0), phase(two, "recommend", 75.0, 80.0),
                          phase(base, "events", 300.0, 20.0), phase(two, "events", 150.0, 40.0)]}

    text = " ".join(workers_table(results).split())
    assert "| recommend | postgresql, 2 workers | 75.0 |" in text and "| 1.50x | 0.80x |" in text
    assert "| events | postgresql, 2 workers | 150.0 |" in text and "| 0.50x | 2.00x |" in text
