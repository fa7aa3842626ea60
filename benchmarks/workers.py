"""Workers: requests per second and p50/p99 of recommendations and of single-event writes with
PostgreSQL as the system of record, at 1 and 2 `serve --workers N`, against the single-process
embedded default (SQLite) measured in the same run (issue 22, "Measured (benchmark, not tests)").

Each configuration is a real `hybridrec serve --demo` (load.py's `Server`) on a fresh data
directory, and for PostgreSQL on a fresh database of one throwaway PostgreSQL 15 server started
here (tests/postgres_server.py). The same 200 seeded users (10 events each) and the same clients
as load.py: asyncio tasks, each with its own connection, sending the next request when the last
one is answered, --clients of them for --seconds per phase. The recommend phase runs first, on the
fresh data; the events phase (one event per request, a random user of 1,000) after it.

The machine's cores are shared: the load generator, every worker and PostgreSQL run on them, so
with 2 cores a second worker competes with its sibling, the clients and the database for the same
CPU. The server's CPU (all its worker processes), PostgreSQL's, what every other process used, and
the 1-minute load average are reported beside every row, so that a number can be judged by what
else ran.

    python benchmarks/workers.py [--seconds 20] [--clients 8] [--workers 1,2] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import save, table  # noqa: E402
from benchmarks.load import (  # noqa: E402
    ENDPOINTS,
    READ,
    REQUEST_TIMEOUT_S,
    WRITE,
    Phase,
    Server,
    catalogue_ids,
    git_commit,
    measure,
    request_body,
    seed_users,
    tree_cpu_seconds,
)
from service.cli import demo_catalogue_path  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

WORKER_START_TIMEOUT_S = 900  # every worker loads the encoder on the same 2 cores


@dataclass(frozen=True)
class Configuration:
    """One way of serving: how many worker processes, and on which system of record."""

    workers: int
    postgres: bool

    @property
    def name(self) -> str:
        if not self.postgres:
            return "sqlite, 1 process (baseline)"
        return f"postgresql, {self.workers} worker{'s' if self.workers > 1 else ''}"


def configurations(workers: list[int]) -> list[Configuration]:
    """The baseline first, then PostgreSQL at each worker count."""
    return [Configuration(1, postgres=False)] + [Configuration(n, postgres=True) for n in workers]


# --- machine and database CPU -------------------------------------------------------------------


def postmaster_pid(pg: PostgresServer) -> int:
    """The PostgreSQL server's main process (the first line of its postmaster.pid)."""
    return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])


def postgres_cpu_seconds(pg: PostgresServer | None) -> float:
    """CPU time of the PostgreSQL server and its backends (0 without one)."""
    return tree_cpu_seconds(postmaster_pid(pg)) if pg is not None else 0.0


# --- starting a configuration -------------------------------------------------------------------


def instances_answering(base_url: str, workers: int, timeout: float = WORKER_START_TIMEOUT_S) -> set[str]:
    """Wait until /health has been answered by ``workers`` distinct instances (each request on a new
    connection, which any worker may accept); the instance names seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.add(str(httpx.get(base_url + "/health", timeout=10).json()["log"]["instance"]))
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if len(seen) >= workers:
            return seen
        time.sleep(0.2)
    raise RuntimeError(f"only {len(seen)} of {workers} workers answered in {timeout:.0f} s: {sorted(seen)}")


def warm_every_worker(base_url: str, item_ids: list[str], rng: random.Random, workers: int,
                      requests: int = 10) -> None:
    """Unmeasured first requests of each kind on new connections, so that every worker (not only
    the one a kept-alive connection reaches) has loaded its lazy state."""
    for kind in (READ, WRITE):
        for _ in range(requests * workers):
            with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
                http.post(ENDPOINTS[kind], json=request_body(kind, rng, item_ids)).raise_for_status()


def serve_environment(config: Configuration, pg: PostgresServer | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """The serve arguments and environment of a configuration, on a fresh database."""
    if not config.postgres:
        return (), {}
    url = pg.create_database(f"workers_{config.workers}")
    return ("--workers", str(config.workers)), {"HYBRIDREC_DATABASE_URL": url}


@contextmanager
def started(config: Configuration, pg: PostgresServer | None, workdir: Path, item_ids: list[str],
            seed: int) -> Iterator[Server]:
    """The configuration's server on a fresh data directory, every worker up, users seeded, warmed."""
    serve_args, env = serve_environment(config, pg)
    server = Server(workdir, serve_args=serve_args, env=env)
    try:
        server.start()
        instances_answering(server.base_url, config.workers)
        rng = random.Random(seed)
        seed_users(server.base_url, item_ids, rng)
        warm_every_worker(server.base_url, item_ids, rng, config.workers)
        yield server
    finally:
        server.stop()


# --- measuring ----------------------------------------------------------------------------------


def measured_phase(server: Server, pg: PostgresServer | None, config: Configuration, kind: str, clients: int,
                   seconds: float, item_ids: list[str], seed: int) -> dict:
    """One phase (load.py's ``measure``) with PostgreSQL's CPU and the load average beside it."""
    pg_before = postgres_cpu_seconds(pg)
    result = measure(server, Phase(kind, {kind: clients}), seconds, item_ids, seed)
    pg_cpu = postgres_cpu_seconds(pg) - pg_before
    served = result["kinds"][kind]["requests"]
    result.update({
        "configuration": config.name, "workers": config.workers, "database": "postgresql" if config.postgres
        else "sqlite", "kind": kind, "postgres_cpu_s": pg_cpu,
        "postgres_cpu_ms_per_request": 1000 * pg_cpu / served if served else float("nan"),
        "postgres_cores_busy": pg_cpu / result["wall_s"],
        # load.py counts PostgreSQL among "other processes": here it is part of the system measured.
        "other_processes_cores_busy": max(0.0, result["other_processes_cores_busy"] - pg_cpu / result["wall_s"]),
        "load_average_1m": os.getloadavg()[0]})
    return result


def run(seconds: float = 20.0, clients: int = 8, workers: list[int] = (1, 2), workdir: Path | None = None,
        seed: int = 0) -> dict:
    """Every configuration's recommend and events phases: the results as one JSON-able dict."""
    item_ids = catalogue_ids(demo_catalogue_path())
    phases = []
    pg = PostgresServer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="hybridrec-workers-") as scratch:
            workdir = Path(workdir or scratch)
            for n, config in enumerate(configurations(list(workers))):
                with started(config, pg, workdir / f"config-{n}", item_ids, seed) as server:
                    for kind in (READ, WRITE):
                        print(f"{config.name}: {kind} with {clients} clients for {seconds:g} s", flush=True)
                        phases.append(measured_phase(server, pg if config.postgres else None, config, kind, clients,
                                                     seconds, item_ids, seed + len(phases) + 1))
    finally:
        pg.stop()
    return {**git_commit(), "seconds_per_phase": seconds, "clients": clients, "cpu_count": os.cpu_count(),
            "catalogue_items": len(item_ids), "phases": phases}


# --- report -------------------------------------------------------------------------------------


def baseline_of(phases: list[dict], kind: str) -> dict | None:
    """The single-process SQLite phase of a kind."""
    return next((p for p in phases if p["kind"] == kind and p["database"] == "sqlite"), None)


def ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


def workers_table(results: dict) -> str:
    """One row per configuration and kind, with req/s and p50 against the baseline of that kind."""
    rows = []
    for kind in (READ, WRITE):
        base = baseline_of(results["phases"], kind)
        for p in (p for p in results["phases"] if p["kind"] == kind):
            s = p["kinds"][kind]
            rows.append([kind, p["configuration"], f"{s['requests_per_s']:.1f}", f"{s['p50_ms']:.1f}",
                         f"{s['p99_ms']:.1f}", s["errors"], f"{p['server_cpu_ms_per_request']:.1f}",
                         f"{p['postgres_cpu_ms_per_request']:.1f}", f"{p['server_cores_busy']:.2f}",
                         f"{p['postgres_cores_busy']:.2f}", f"{p['client_cpu_ms_per_request']:.1f}",
                         f"{p['other_processes_cores_busy']:.2f}", f"{p['load_average_1m']:.2f}",
                         ratio(s["requests_per_s"], base and base["kinds"][kind]["requests_per_s"]),
                         ratio(s["p50_ms"], base and base["kinds"][kind]["p50_ms"])])
    commit = results["commit"][:10] + (" + uncommitted changes" if results["uncommitted_changes"] else "")
    return table(["kind", "configuration", "req/s", "p50 ms", "p99 ms", "errors", "server CPU ms/req",
                  "PostgreSQL CPU ms/req", "server cores busy", "PostgreSQL cores busy", "client CPU ms/req",
                  "other processes' cores busy", "load avg 1m", "req/s vs baseline", "p50 vs baseline"], rows,
                 title=f"Workers at commit {commit}: {results['clients']} clients, {results['seconds_per_phase']:g} s "
                       f"per phase, {results['catalogue_items']} items, {results['cpu_count']} CPU cores shared by "
                       f"the clients, every worker and PostgreSQL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per phase (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--workers", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2],
                        help="worker counts with PostgreSQL, comma-separated (default: 1,2)")
    parser.add_argument("--no-save", action="store_true", help="do not write results/workers.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the servers are stopped too
    results = run(args.seconds, args.clients, args.workers)
    print("\n" + workers_table(results))
    if not args.no_save:
        print(f"\nwrote {save('workers', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
