"""The load benchmark (benchmarks/load.py), run for a moment against a real server."""

import pytest

from benchmarks.load import (
    MIX_ALONE,
    MIX_LOADED,
    READ,
    ROOT,
    WRITE,
    Phase,
    plan,
    report,
    run,
    strace_summary,
    top_functions,
)

pytestmark = pytest.mark.slow


def test_the_plan_runs_each_workload_at_each_client_count_and_each_mix_after_its_readers_alone():
    assert plan(["recommend", "events", "mix"], [1, 8]) == {
        "recommend": [Phase(READ, {READ: 1}), Phase(READ, {READ: 8})],
        "events": [Phase(WRITE, {WRITE: 1}), Phase(WRITE, {WRITE: 8})],
        "mix": [Phase(MIX_ALONE, {READ: 4}), Phase(MIX_LOADED, {READ: 4, WRITE: 4})],  # no mix with one client
    }


def test_a_profile_counts_own_time_at_the_top_of_each_stack_and_total_time_for_the_project_only():
    raw = (f"_bootstrap (/usr/lib/python3.12/threading.py:1032);record ({ROOT}/service/api/events.py:45);"
           f"append ({ROOT}/retrieval/storage/event_log.py:80) 3\n"
           "_bootstrap (/usr/lib/python3.12/threading.py:1032);select (/usr/lib/python3.12/selectors.py:468) 1\n")
    profile = top_functions(raw)
    assert profile["samples"] == 4
    assert dict(profile["own"]) == {"append (retrieval/storage/event_log.py)": 0.75,
                                    "select (/usr/lib/python3.12/selectors.py)": 0.25}
    assert dict(profile["total"]) == {"record (service/api/events.py)": 0.75,
                                      "append (retrieval/storage/event_log.py)": 0.75}


def test_strace_summary_reads_the_calls_and_seconds_of_each_sync_call():
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 90.00    0.900000        1000       900           fdatasync
 10.00    0.100000         100      1000         3 msync
------ ----------- ----------- --------- --------- ----------------
100.00    1.000000         526      1900         3 total
"""
    assert strace_summary(text) == {"fdatasync": (900, 0.9), "msync": (1000, 0.1)}


def test_a_short_run_reports_every_workload_without_errors(tmp_path):
    results = run(duration=0.3, clients=[1, 2], workloads=["recommend", "events", "mix"], workdir=tmp_path)

    served = {(p["workload"], kind): s for p in results["phases"] for kind, s in p["kinds"].items()}
    assert set(served) == {(READ, READ), (WRITE, WRITE), (MIX_ALONE, READ), (MIX_LOADED, READ), (MIX_LOADED, WRITE)}
    assert all(s["requests"] > 0 and s["errors"] == 0 for s in served.values())
    assert sum(p["server_cpu_s"] for p in results["phases"]) > 0
    assert len(results["commit"]) == 40

    text = report(results)
    for row in ("| recommend | 1 | recommend |", "| recommend | 2 | recommend |", "| events | 1 | events |",
                "| events | 2 | events |", "| mix: reads alone | 1 | recommend |",
                "| mix: reads + writes | 1 | recommend |", "| mix: reads + writes | 1 | events |"):
        assert row in " ".join(text.split()), row
    assert "Reads with concurrent writers vs reads alone" in text
