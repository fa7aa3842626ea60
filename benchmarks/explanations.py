"""Explanations on the shared dataset: latency per back-end and the local model's guard rate.

For a seeded sample of users, the top recommendation is explained: evidence from the pipeline
(with the counterfactual re-run), then text from each back-end. ``openai`` is timed against a
loopback server that answers at once, so its row is this client's own overhead, not a model's.

    python benchmarks/explanations.py [--users 30]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, percentile, replay_shared_dataset, save, table  # noqa: E402
from prompts import explain_text, make_generator  # noqa: E402
from retrieval.explain.evidence import Explainer  # noqa: E402
from retrieval.pipeline.request import RecommendRequest  # noqa: E402
from tests.prompts.fake_openai import FakeOpenAI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    args = parser.parse_args()
    loaded = replay_shared_dataset(args.dataset, "test", "explain")
    if loaded is None:
        return
    _, _, _, cases, replay = loaded
    recommender = replay.engine.recommender
    explainer = Explainer(recommender)
    vocabulary = replay.engine.catalogue.facets().vocabulary()
    users = sorted(random.Random(args.seed).sample(sorted(cases), args.users))

    timings: dict[str, list[float]] = {"evidence (with counterfactual)": [], "template": [], "local": [],
                                       "openai (loopback, instant reply)": []}
    fired, violations, examples = 0, Counter(), []
    local = make_generator("local", max_new_tokens=60)
    local_load = time.perf_counter()
    local._load()
    local_load = time.perf_counter() - local_load
    with FakeOpenAI([(200, "It is close to what you bought before.", 0)]) as api:
        remote = make_generator("openai", base_url=api.base_url, model="bench")
        for u in users:
            req = RecommendRequest(user_id=u, k=10)
            top = recommender.recommend(req).items[0]
            started = time.perf_counter()
            evidence = explainer.evidence(req, top.id)
            timings["evidence (with counterfactual)"].append((time.perf_counter() - started) * 1000)
            for name, generator in (("template", make_generator("template")), ("local", local),
                                    ("openai (loopback, instant reply)", remote)):
                out = explain_text(evidence, generator, vocabulary)
                timings[name].append(out["ms"])
                if name == "local":
                    fired += out["guard"]["fired"]
                    for v in out["guard"]["violations"]:
                        violations[v.split(",")[0].split(" '")[0].split(" 1")[0][:40]] += 1
                    if len(examples) < 3:
                        examples.append({"generated": out.get("generated_text"), "guard": out["guard"]})
    replay.close()
    rows = [[name, len(v), percentile(v, 50), percentile(v, 95), percentile(v, 50) / percentile(timings["template"], 50)]
            for name, v in timings.items()]
    print(table(["step", "n", "p50 ms", "p95 ms", "p50 / template p50"], rows,
                title=f"Explanation latency, {len(users)} users' top item (local model load: {local_load:.1f} s, once)"))
    rate = fired / len(users)
    print(f"\nlocal model (SmolLM2-135M-Instruct, CPU): guard fired on {fired}/{len(users)} = {rate:.0%}; "
          f"kinds: {dict(violations.most_common(5))}")
    print(f"wrote {save('explanations', {'users': len(users), 'timings_ms': timings, 'local_load_s': local_load, 'local_guard_fired': fired, 'local_guard_rate': rate, 'violation_kinds': dict(violations), 'examples': examples})}")


if __name__ == "__main__":
    main()
