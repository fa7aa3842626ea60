"""Small shared pieces of the benchmarks: tables, percentiles, result files."""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def alternated_latency(recommend: Callable[[str], object], arms: dict[str, Callable[[], None]], users: list[str],
                       requests: int, seed: int, warm: int = 20) -> dict[str, dict[str, float]]:
    """p50/p99 ms of ``recommend(user)`` under each arm (a callable that sets the pipeline up for
    it), the arms alternated request by request, their order flipped each time, so every arm sees
    the same machine load. The first ``warm`` users are asked once per arm first, untimed."""
    from tqdm import tqdm

    rng = random.Random(seed)
    picked = [rng.choice(users) for _ in range(requests)]
    names = list(arms)
    for user in picked[:warm]:
        for name in names:
            arms[name]()
            recommend(user)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n, user in enumerate(tqdm(picked, desc="latency", unit="request", mininterval=2)):
        for name in (names if n % 2 else names[::-1]):
            arms[name]()
            started = time.perf_counter()
            recommend(user)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": percentile(t, 50), "p99_ms": percentile(t, 99), "requests": len(t)}
            for name, t in times.items()}


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def save(name: str, payload: dict, folder: Path = OUT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                           "platform": platform.platform()}, **payload}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


SHARED_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-office"


def replay_shared_dataset(path: Path, split: str, label: str, encoder=None, points=None, replay: bool = True):
    """The shared dataset's histories for ``split`` replayed into a scratch engine:
    ``(dataset, encoder, points, cases, replay)``, or None (with a message) when it is absent.
    ``replay=False`` only loads and encodes (the replay is then None)."""
    from encoders import BiEncoder
    from retrieval.evaluation.datasets import load_dataset
    from retrieval.evaluation.replay import EvalConfig, Replay, encode_catalogue, leave_one_out

    if not Path(path).exists():
        print(f"skipping: {path} is not here")
        return None
    dataset = load_dataset(path)
    encoder = encoder or BiEncoder()
    points = points if points is not None else encode_catalogue(dataset, encoder)
    cases = leave_one_out(dataset.sequences, split)
    if not replay:
        return dataset, encoder, points, cases, None
    engine = Replay(dataset, encoder, {u: c.history for u, c in cases.items()}, points, EvalConfig(), label)
    return dataset, encoder, points, cases, engine
