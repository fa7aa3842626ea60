"""Load: requests per second, p50/p99 and the server's CPU for recommendations, single-event writes
and a mix of both, at 1, 8 and 32 concurrent clients (issue 20, "Writes under load").

A real server per workload (`hybridrec serve --demo`: the bundled 360-item catalogue, or
--catalogue FILE) on a free loopback port, with a fresh data directory and the same seeded users,
no API keys (loopback needs none), its default settings and logging, but no rate limits (every
client here has the same address). Clients are asyncio tasks, each with its own connection; each
sends its next request as soon as the last one is answered, for --duration seconds per phase.
Workloads:
- recommend: POST /v1/recommendations, half for a random known user (200 users seeded with 10
  events each), half a distinct query text (so no cache helps);
- events: POST /v1/events with ONE event per request (what most clients send), a random user of
  1,000 and a random item; an event the server rejects counts as an error;
- mix: N/2 readers and N/2 writers at once, each kind on its own row. The same N/2 readers run
  alone right before, so "reads with concurrent writers vs reads alone" compares like with like.
The baseline is in the same run: one client, one request at a time (each kind's 1-client row).
The server's CPU time is read from /proc/<pid>/stat around each phase (Linux). The client runs on
the same cores as the server, so its own CPU is reported too, and so is what every other process of
the machine used meanwhile (/proc/stat): a shared machine's noise shows in the table. After each
phase, /ready says how many logged events are not in their users' profiles yet. --profile
runs one more phase with py-spy attached to the server and prints the functions that take the time;
--sync-calls one with strace, counting the calls that force data to disk per request.

    python benchmarks/load.py [--duration 30] [--clients 1,8,32] [--workloads recommend,events,mix]
                              [--profile [WORKLOAD:CLIENTS]] [--sync-calls [WORKLOAD:CLIENTS]]
                              [--catalogue FILE] [--no-save]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, save, table  # noqa: E402
from scripts.make_demo_catalogue import CATEGORIES  # noqa: E402
from service.cli import demo_catalogue_path  # noqa: E402
from service.settings import PREFIX, Settings  # noqa: E402

READ, WRITE = "recommend", "events"
ENDPOINTS = {READ: "/v1/recommendations", WRITE: "/v1/events"}
WORKLOADS = (READ, WRITE, "mix")
MIX_ALONE, MIX_LOADED = "mix: reads alone", "mix: reads + writes"
SEEDED_USERS = 200  # users with events before the first phase: the readers ask for them
EVENTS_PER_SEEDED_USER = 10
USERS = 1000  # writers pick from these; most of them get their first event under load
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
WORDS = ["quiet", "wireless", "ergonomic", "compact", "black", "cheap", "premium", "for travel", "for students",
         "heavy duty", "rechargeable", "USB-C", "adjustable", "large", "small", "silent", "fast", "refillable"]
REQUEST_TIMEOUT_S = 300  # a slow answer is a measurement, not an error
STARTUP_TIMEOUT_S = 900  # loading the encoder and ingesting the catalogue on 2 shared cores
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One timed run: how many clients of each kind send requests at the same time."""

    workload: str
    clients: dict[str, int]

    def label(self) -> str:
        return " + ".join(str(n) for n in self.clients.values())


@dataclass
class KindSamples:
    """What the clients of one kind saw: latencies of answered requests, and every failure."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # HTTP status, "rejected" or exception name -> count


def plan(workloads: list[str], clients: list[int]) -> dict[str, list[Phase]]:
    """Each workload's phases, in the order they run: one per client count."""
    phases = {}
    for workload in workloads:
        phases[workload] = []
        for n in clients:
            if workload in ENDPOINTS:
                phases[workload].append(Phase(workload, {workload: n}))
            elif n >= 2:  # a mix needs at least one reader and one writer
                readers = n // 2
                phases[workload] += [Phase(MIX_ALONE, {READ: readers}),
                                     Phase(MIX_LOADED, {READ: readers, WRITE: n - readers})]
    return phases


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may contain spaces): field 3 (state) first."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads together."""
    # utime (field 14) and stime (field 15) are at 11 and 12 after the command name.
    after_name = _stat_fields(pid)
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """The process and every live descendant (``serve --workers N``'s worker processes), by pid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])  # field 4: ppid
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    tree, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants together."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += process_cpu_seconds(member)
        except OSError:
            continue  # exited between the listing and the read
    return total


def without_rate_limits() -> dict[str, str]:
    """The environment that turns the per-address rate limits off, where the server has them: every
    client here comes from one address, and the benchmark measures capacity, not the limiter."""
    return {f"{PREFIX}{name.upper()}": "0" for name in ("read_rate_limit", "write_rate_limit")
            if name in Settings.__dataclass_fields__}


def machine_cpu_seconds() -> float:
    """CPU time every process of the machine has used (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Server:
    """`hybridrec serve` as a subprocess on a free loopback port with its own data directory;
    ``serve_args`` and ``env`` are added to its command line and environment (e.g. ``--workers 2``
    and ``HYBRIDREC_DATABASE_URL``)."""

    def __init__(self, workdir: Path, catalogue: Path | None = None, serve_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.catalogue = catalogue
        self.serve_args = tuple(serve_args)
        self.env = dict(env or {})
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        if self.catalogue is not None:
            self._cli("ingest", str(self.catalogue), "--quiet")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--demo", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), *self.serve_args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **without_rate_limits(), **self.env})
        self._wait_until_healthy()

    def _cli(self, *args: str) -> None:
        with open(self.log_path, "ab") as log:
            subprocess.run([sys.executable, "-m", "service.cli", *args, "--data-dir", str(self.data_dir)],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, env={**os.environ, **self.env})

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer /health in {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """The server's CPU time, its worker processes included."""
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- what the clients send ----------------------------------------------------------------------


def catalogue_ids(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix == ".csv":
            return [row["id"] for row in csv.DictReader(fh)]
        return [json.loads(line)["id"] for line in fh if line.strip()]


def user_id(n: int) -> str:
    return f"load-user-{n}"


def random_event(rng: random.Random, item_ids: list[str], user: str | None = None) -> dict:
    return {"user_id": user or user_id(rng.randrange(USERS)), "type": rng.choice(EVENT_TYPES),
            "item_id": rng.choice(item_ids)}


def recommend_body(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        return {"user_id": user_id(rng.randrange(SEEDED_USERS))}
    category = rng.choice(list(CATEGORIES)).lower()
    return {"query": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {category} {rng.randrange(10**6)}"}


def request_body(kind: str, rng: random.Random, item_ids: list[str]) -> dict:
    return recommend_body(rng) if kind == READ else {"events": [random_event(rng, item_ids)]}


def failure(kind: str, response: httpx.Response) -> str | None:
    """Why an answer does not count as served, or None when it does."""
    if response.status_code != 200:
        return str(response.status_code)
    if kind == WRITE and response.json().get("accepted") != 1:
        return "rejected"
    return None


def seed_users(base_url: str, item_ids: list[str], rng: random.Random) -> None:
    """The readers' users, with a history each, through the real event path."""
    events = [random_event(rng, item_ids, user=user_id(u))
              for u in range(SEEDED_USERS) for _ in range(EVENTS_PER_SEEDED_USER)]
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
        for start in range(0, len(events), 500):
            response = http.post(ENDPOINTS[WRITE], json={"events": events[start:start + 500]})
            response.raise_for_status()
            assert response.json()["accepted"] == len(events[start:start + 500]), response.text


def warm_up(base_url: str, item_ids: list[str], rng: random.Random, requests: int = 10) -> None:
    """First requests load lazy state (query parser, caches); none of them is measured."""
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
        for kind in (READ, WRITE):
            for _ in range(requests):
                http.post(ENDPOINTS[kind], json=request_body(kind, rng, item_ids)).raise_for_status()


# --- running a phase ----------------------------------------------------------------------------


async def client(http: httpx.AsyncClient, kind: str, deadline: float, samples: KindSamples,
                 rng: random.Random, item_ids: list[str]) -> None:
    """One client: a request, wait for its answer, the next one, until the deadline."""
    while time.perf_counter() < deadline:
        body = request_body(kind, rng, item_ids)
        started = time.perf_counter()
        try:
            why = failure(kind, await http.post(ENDPOINTS[kind], json=body))
        except httpx.HTTPError as err:
            why = type(err).__name__
        if why is None:
            samples.latencies_ms.append((time.perf_counter() - started) * 1000)
        else:
            samples.errors[why] += 1


@dataclass
class CpuClock:
    """CPU seconds used so far by the server, by this client and by the whole machine."""

    server: float
    client: float
    machine: float

    @classmethod
    def read(cls, server: Server) -> CpuClock:
        return cls(server.cpu_seconds(), time.process_time(), machine_cpu_seconds())

    def __sub__(self, earlier: CpuClock) -> CpuClock:
        return CpuClock(self.server - earlier.server, self.client - earlier.client, self.machine - earlier.machine)


def new_client(base_url: str) -> httpx.AsyncClient:
    # One connection per client, as separate clients have: a pool shared by 32 tasks cost the
    # client 3 ms of CPU per request against 1 ms, on the cores the server needs.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits)


async def drive(server: Server, phase: Phase, duration: float, item_ids: list[str],
                seed: int) -> tuple[dict[str, KindSamples], float, CpuClock]:
    """Every client of the phase at once: what they saw, the wall time until the last answer and
    the CPU used meanwhile. The clients are made before the clocks start (each builds an SSL
    context, which costs more than many requests)."""
    samples = {kind: KindSamples() for kind in phase.clients}
    clients = [(kind, new_client(server.base_url)) for kind, count in phase.clients.items() for _ in range(count)]
    try:
        cpu, started = CpuClock.read(server), time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(client(http, kind, deadline, samples[kind], random.Random(seed * 1000 + n), item_ids)
                               for n, (kind, http) in enumerate(clients)))
        return samples, time.perf_counter() - started, CpuClock.read(server) - cpu
    finally:
        await asyncio.gather(*(http.aclose() for _, http in clients))


def profile_lag(base_url: str) -> int | None:
    """Logged events whose users' profiles are not refreshed yet (/ready), None where it is not said."""
    try:
        return httpx.get(base_url + "/ready", timeout=REQUEST_TIMEOUT_S).json().get("profile_lag")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def measure(server: Server, phase: Phase, duration: float, item_ids: list[str], seed: int) -> dict:
    """One phase, as a result record."""
    samples, wall, cpu = asyncio.run(drive(server, phase, duration, item_ids, seed))
    # The cores are shared: what else ran during the phase says how far to trust its numbers.
    others_cpu = max(0.0, cpu.machine - cpu.server - cpu.client)
    served = sum(len(s.latencies_ms) for s in samples.values())
    per_request = (lambda seconds: 1000 * seconds / served) if served else (lambda seconds: float("nan"))
    return {
        "workload": phase.workload, "clients": phase.clients, "wall_s": wall,
        "server_cpu_s": cpu.server, "client_cpu_s": cpu.client,
        "server_cpu_ms_per_request": per_request(cpu.server), "server_cores_busy": cpu.server / wall,
        "client_cpu_ms_per_request": per_request(cpu.client), "other_processes_cores_busy": others_cpu / wall,
        "profile_lag_after": profile_lag(server.base_url),
        "kinds": {kind: summarise(s, wall) for kind, s in samples.items()},
    }


def summarise(samples: KindSamples, wall: float) -> dict:
    return {"requests": len(samples.latencies_ms), "requests_per_s": len(samples.latencies_ms) / wall,
            "p50_ms": percentile(samples.latencies_ms, 50), "p99_ms": percentile(samples.latencies_ms, 99),
            "errors": sum(samples.errors.values()), "errors_by_cause": dict(samples.errors)}


# --- profiling ----------------------------------------------------------------------------------


SYNC_CALLS = ("fsync", "fdatasync", "msync", "sync_file_range")  # what makes a write durable, and slow
PROJECT_PACKAGES = ("retrieval/", "service/", "encoders/", "prompts/")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def py_spy_path() -> str | None:
    beside_python = Path(sys.executable).with_name("py-spy")
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def measured_under(tool: list[str], server: Server, phase: Phase, duration: float, item_ids: list[str],
                   seed: int) -> tuple[dict, str]:
    """The phase with a sampling or tracing tool attached to the server, interrupted after it (py-spy
    and strace write their output then): the phase's result and what the tool said on stderr."""
    attached = subprocess.Popen(tool, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)  # attaching
    result = measure(server, phase, duration, item_ids, seed)
    attached.send_signal(signal.SIGINT)
    _, err = attached.communicate(timeout=120)
    return result, err.decode(errors="replace").strip()[-300:]


def profiled(server: Server, phase: Phase, duration: float, item_ids: list[str], seed: int,
             raw_path: Path) -> dict | None:
    """The phase with py-spy sampling the server's threads that are not idle; None without py-spy.
    A thread waiting inside native code (a flush in Qdrant's Rust code, SQLite's fsync) counts as
    busy, so this shows where the requests' time goes, not only the CPU's."""
    py_spy = py_spy_path()
    if py_spy is None:
        print("skipping the profile: py-spy is not installed (pip install py-spy)")
        return None
    tool = [py_spy, "record", "--pid", str(server.pid), "--rate", "100", "--nonblocking", "--format", "raw",
            "--output", str(raw_path)]
    result, err = measured_under(tool, server, phase, duration, item_ids, seed)
    if not raw_path.exists():
        print(f"skipping the profile: py-spy wrote nothing ({err})")
        return None
    return {"phase": result, **top_functions(raw_path.read_text())}


def counted_sync_calls(server: Server, phase: Phase, duration: float, item_ids: list[str], seed: int,
                       summary_path: Path) -> dict | None:
    """The phase with strace counting the server's calls that force data to disk, per request served;
    None without strace. strace stops the server at every system call, so its speed here means nothing."""
    strace = shutil.which("strace")
    if strace is None:
        print("skipping the sync-call count: strace is not installed")
        return None
    tool = [strace, "-f", "-c", "-w", "-e", "trace=" + ",".join(SYNC_CALLS), "-o", str(summary_path),
            "-p", str(server.pid)]
    result, err = measured_under(tool, server, phase, duration, item_ids, seed)
    if not summary_path.exists():
        print(f"skipping the sync-call count: strace wrote nothing ({err})")
        return None
    served = max(1, sum(kind["requests"] for kind in result["kinds"].values()))
    calls = {name: {"calls": n, "seconds": seconds, "per_request": n / served,
                    "ms_per_request": 1000 * seconds / served}
             for name, (n, seconds) in strace_summary(summary_path.read_text()).items()}
    return {"phase": result, "calls": calls}


def strace_summary(text: str) -> dict[str, tuple[int, float]]:
    """`strace -c -w`'s table as {call: (calls, seconds spent in them)}."""
    calls = {}
    for line in text.splitlines():
        fields = line.split()  # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[-1] in SYNC_CALLS:
            calls[fields[-1]] = (int(fields[3]), float(fields[1]))
    return calls


def function_of(frame: str) -> str:
    """A py-spy frame, "name (path:line)", as "name (file)" with the path shortened."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", str(ROOT) + "/"):
        path = path.split(marker, 1)[-1]
    return f"{match['function']} ({path})"


def is_project_code(function: str) -> bool:
    return function.rsplit(" (", 1)[-1].startswith(PROJECT_PACKAGES)


def top_functions(raw: str, n: int = 15) -> dict:
    """From py-spy's collapsed stacks: the functions with the most samples on top of the stack (own
    time), and the project's functions with the most samples anywhere in it (total time; threads'
    and the event loop's frames are in every stack, so they would say nothing), as shares of all samples."""
    own, total, samples = Counter(), Counter(), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        functions = [function_of(f) for f in stack.split(";")]
        samples += int(count)
        own[functions[-1]] += int(count)
        for function in set(functions):
            if is_project_code(function) and not function.startswith("<module>"):
                total[function] += int(count)
    share = (lambda c: [(f, k / samples) for f, k in c.most_common(n)]) if samples else (lambda c: [])
    return {"samples": samples, "own": share(own), "total": share(total)}


# --- the whole run and its report ---------------------------------------------------------------


def git_commit() -> dict:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


@contextmanager
def fresh_server(workdir: Path, catalogue: Path | None, item_ids: list[str], seed: int) -> Iterator[Server]:
    """A server on a new data directory with the seeded users, warmed up. Each workload gets its
    own, so that all start from the same data whatever an earlier one wrote (a recommendation costs
    4x more CPU once users have ~50 events each)."""
    server = Server(workdir, catalogue)
    try:
        server.start()
        rng = random.Random(seed)
        seed_users(server.base_url, item_ids, rng)
        warm_up(server.base_url, item_ids, rng)
        yield server
    finally:
        server.stop()


def run(duration: float = 30.0, clients: list[int] = (1, 8, 32), workloads: list[str] = WORKLOADS,
        profile: Phase | None = None, sync_calls: Phase | None = None, catalogue: Path | None = None,
        workdir: Path | None = None, seed: int = 0) -> dict:
    """Every workload's phases against a fresh server, then the profile and the sync-call count
    (each on its own fresh server too): the results as one JSON-able dict."""
    item_ids = catalogue_ids(catalogue or demo_catalogue_path())
    results, profile_result, sync_result = [], None, None
    with tempfile.TemporaryDirectory(prefix="hybridrec-load-") as scratch:
        workdir = Path(workdir or scratch)
        for workload, phases in plan(list(workloads), list(clients)).items():
            with fresh_server(workdir / workload, catalogue, item_ids, seed) as server:
                for phase in phases:
                    print(f"{phase.workload} with {phase.label()} clients for {duration:g} s", flush=True)
                    results.append(measure(server, phase, duration, item_ids, seed + len(results) + 1))
        if profile:
            with fresh_server(workdir / "profile", catalogue, item_ids, seed) as server:
                profile_result = profiled(server, profile, duration, item_ids, seed, workdir / "py-spy.txt")
        if sync_calls:
            with fresh_server(workdir / "sync-calls", catalogue, item_ids, seed) as server:
                sync_result = counted_sync_calls(server, sync_calls, duration, item_ids, seed, workdir / "strace.txt")
    return {**git_commit(), "duration_s": duration, "catalogue": str(catalogue or "demo"),
            "catalogue_items": len(item_ids), "seeded_users": SEEDED_USERS, "users": USERS,
            "phases": results, "reads_with_writers": reads_with_writers(results), "profile": profile_result,
            "sync_calls": sync_result}


def baselines(phases: list[dict]) -> dict[str, float]:
    """Each kind's requests/s with one client, one request at a time."""
    return {p["workload"]: p["kinds"][p["workload"]]["requests_per_s"]
            for p in phases if p["workload"] in ENDPOINTS and p["clients"] == {p["workload"]: 1}}


def reads_with_writers(phases: list[dict]) -> list[dict]:
    """Each mix against its readers alone (the phase right before it)."""
    pairs = []
    for alone, loaded in zip(phases, phases[1:]):
        if alone["workload"] == MIX_ALONE and loaded["workload"] == MIX_LOADED:
            reads_alone, reads_loaded = alone["kinds"][READ], loaded["kinds"][READ]
            pairs.append({
                "readers": alone["clients"][READ], "writers": loaded["clients"][WRITE],
                "alone_requests_per_s": reads_alone["requests_per_s"],
                "with_writers_requests_per_s": reads_loaded["requests_per_s"],
                "ratio": ratio(reads_loaded["requests_per_s"], reads_alone["requests_per_s"]),
                "alone_p50_ms": reads_alone["p50_ms"], "with_writers_p50_ms": reads_loaded["p50_ms"],
                "writes_per_s": loaded["kinds"][WRITE]["requests_per_s"]})
    return pairs


def ratio(value: float, baseline: float | None) -> float:
    return value / baseline if baseline else float("nan")


def one_decimal(value: float) -> str:
    return f"{value:.1f}"


def times(value: float) -> str:
    return f"{value:.2f}x" if value == value else "-"


def load_table(results: dict) -> str:
    base = baselines(results["phases"])
    rows = [[phase["workload"], phase["clients"][kind], kind, one_decimal(s["requests_per_s"]),
             one_decimal(s["p50_ms"]), one_decimal(s["p99_ms"]), s["errors"],
             one_decimal(phase["server_cpu_ms_per_request"]), f"{phase['server_cores_busy']:.2f}",
             one_decimal(phase["client_cpu_ms_per_request"]), f"{phase['other_processes_cores_busy']:.2f}",
             "-" if phase.get("profile_lag_after") is None else phase["profile_lag_after"],
             times(ratio(s["requests_per_s"], base.get(kind)))]
            for phase in results["phases"] for kind, s in phase["kinds"].items()]
    commit = results["commit"][:10] + (" + uncommitted changes" if results["uncommitted_changes"] else "")
    return table(["workload", "clients", "kind", "req/s", "p50 ms", "p99 ms", "errors", "server CPU ms/req",
                  "server cores busy", "client CPU ms/req", "other processes' cores busy", "profile lag after",
                  "req/s vs 1 client"], rows,
                 title=f"Load at commit {commit}, {results['duration_s']:g} s per phase, "
                       f"{results['catalogue_items']} items")


def reads_table(pairs: list[dict]) -> str:
    rows = [[p["readers"], p["writers"], one_decimal(p["alone_requests_per_s"]),
             one_decimal(p["with_writers_requests_per_s"]), times(p["ratio"]), one_decimal(p["alone_p50_ms"]),
             one_decimal(p["with_writers_p50_ms"]), one_decimal(p["writes_per_s"])] for p in pairs]
    return table(["readers", "writers", "reads alone req/s", "with writers req/s", "ratio", "p50 ms alone",
                  "p50 ms with writers", "writes/s"], rows, title="Reads with concurrent writers vs reads alone")


def report(results: dict) -> str:
    """The run's tables, as Markdown."""
    parts = [load_table(results)]
    if results["reads_with_writers"]:
        parts.append(reads_table(results["reads_with_writers"]))
    if results.get("profile"):
        parts.append(profile_report(results["profile"]))
    if results.get("sync_calls"):
        parts.append(sync_calls_report(results["sync_calls"]))
    return "\n\n".join(parts)


def clients_in_words(phase: dict) -> str:
    return " + ".join(f"{n} {kind}" for kind, n in phase["clients"].items())


def profile_report(profile: dict) -> str:
    title = (f"Where the server's time goes: {clients_in_words(profile['phase'])} clients, "
             f"{profile['samples']} py-spy samples of threads that were not idle")
    own = dict(profile["own"])
    total = dict(profile["total"])
    names = list(own) + [f for f in total if f not in own]
    return table(["function", "own %", "total %"],
                 [[f, f"{100 * own[f]:.1f}" if f in own else "", f"{100 * total[f]:.1f}" if f in total else ""]
                  for f in names], title=title)


def sync_calls_report(sync: dict) -> str:
    served = sum(kind["requests"] for kind in sync["phase"]["kinds"].values())
    rows = [[name, c["calls"], f"{c['per_request']:.2f}", f"{c['ms_per_request']:.2f}"]
            for name, c in sync["calls"].items()]
    return table(["call", "calls", "per request", "ms in it per request"], rows,
                 title=f"Calls that force data to disk: {clients_in_words(sync['phase'])} clients, {served} requests "
                       f"under strace")


def parse_phase(text: str) -> Phase:
    """ "events:8" -> 8 writers; "mix:8" -> 4 readers and 4 writers."""
    workload, _, n = text.partition(":")
    clients = int(n or 8)
    if workload == "mix":
        return Phase(MIX_LOADED, {READ: clients // 2, WRITE: clients - clients // 2})
    if workload not in ENDPOINTS:
        raise argparse.ArgumentTypeError(f"expected WORKLOAD:CLIENTS with a workload of {', '.join(WORKLOADS)}")
    return Phase(workload, {workload: clients})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase (default: %(default)s)")
    parser.add_argument("--clients", type=lambda s: [int(n) for n in s.split(",")], default=[1, 8, 32],
                        help="concurrent clients, comma-separated (default: 1,8,32)")
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS),
                        help="comma-separated, of recommend, events, mix (default: all)")
    parser.add_argument("--profile", nargs="?", const="events:8", type=parse_phase,
                        help="also run WORKLOAD:CLIENTS (default events:8) under py-spy and print where the time goes")
    parser.add_argument("--sync-calls", nargs="?", const="events:8", type=parse_phase,
                        help="also run WORKLOAD:CLIENTS (default events:8) under strace and count fsync, fdatasync "
                             "and msync per request")
    parser.add_argument("--catalogue", type=Path, help="a JSONL or CSV catalogue to ingest (default: the demo one)")
    parser.add_argument("--no-save", action="store_true", help="do not write results/load.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server is stopped too
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    results = run(args.duration, args.clients, args.workloads, args.profile, args.sync_calls, args.catalogue)
    print("\n" + report(results))
    if not args.no_save:
        print(f"\nwrote {save('load', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
