"""How fast what an encoder learns from the log goes stale: a linear adapter (``benchmarks/adapter.py``)
trained on every user's sequence up to some point, scored with dense
retrieval alone on a target 1, 2 or 3 steps past the end of its training data, paired user by user
with the zero-shot encoder on the same targets (the same-run baseline).

The stage run's test target is two steps past the trainers' data, and the encoder trainer can
judge a model as stale (``validation_gap``). A gap of 2 did not make the trainer's verdict
predict test for full fine-tuning, so the default gap is 1 (docs/research.md, "The validation gap").

    python benchmarks/staleness.py [--epochs 14]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.adapter import adapter_examples, train_adapter  # noqa: E402
from benchmarks.common import SHARED_DATASET, replay_shared_dataset, save, table  # noqa: E402
from retrieval.evaluation.metrics import paired_difference  # noqa: E402
from retrieval.state.profiles import ProfileConfig  # noqa: E402
from retrieval.training.encoder import dense_ndcg  # noqa: E402

# Each sequence's newest items left out of training -> the targets scored (position from the end);
# a target is left_out - position + 1 steps past the end of the training data.
RUNS = {1: [1], 2: [1, 2], 3: [1, 2, 3]}
NAMES = {1: "test (last item)", 2: "validation (second to last)", 3: "third to last"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    loaded = replay_shared_dataset(args.dataset, "test", "encode", replay=False)
    if loaded is None:
        return 0
    dataset, _, points, _, _ = loaded
    started = time.perf_counter()
    decay = ProfileConfig().position_decay
    vectors = {p.id: np.asarray(p.vector, dtype=np.float32) for p in points}
    ids = list(vectors)
    rows = {item: n for n, item in enumerate(ids)}
    matrix = np.stack([vectors[i] for i in ids])
    sequences = dataset.sequences
    users = sorted(sequences)
    cases = {k: [(sequences[u][:-k], sequences[u][-k]) for u in users] for k in NAMES}
    zero_shot = {k: dense_ndcg(vectors, c, decay) for k, c in cases.items()}
    result_rows, results = [], []
    for left_out, targets in RUNS.items():
        examples = adapter_examples({u: sequences[u][:-left_out] for u in users}, rows)
        bar = tqdm(total=args.epochs * len(examples), desc=f"adapter without the newest {left_out}", mininterval=2)
        mapping, _ = train_adapter(matrix, examples, decay, epochs=args.epochs, on_batch=bar.update)
        bar.close()
        mapped = matrix @ mapping.numpy()
        tuned = dict(zip(ids, mapped / np.linalg.norm(mapped, axis=1, keepdims=True)))
        for k in targets:
            steps = left_out - k + 1
            scores = dense_ndcg(tuned, cases[k], decay)
            gain, se = paired_difference(scores, zero_shot[k])
            base = float(np.mean(zero_shot[k]))
            results.append({"left_out": left_out, "target": NAMES[k], "steps_past_training_data": steps,
                            "examples": len(examples), "zero_shot_ndcg@10": base,
                            "adapter_ndcg@10": float(np.mean(scores)), "gain": gain, "standard_error": se})
            result_rows.append([NAMES[k], steps, len(examples), f"{base:.4f}", f"{np.mean(scores):.4f}",
                                f"{gain:+.4f} ± {se:.4f}", f"{np.mean(scores) / base:.3f}"])
    result_rows.sort(key=lambda r: (r[0], r[1]))
    print(table(["target", "steps past training data", "examples", "zero-shot NDCG@10", "adapter NDCG@10",
                 "gain ± se", "ratio"], result_rows,
                f"Dense retrieval alone, every user ({len(users)}), adapter vs zero-shot on the same targets"))
    path = save("staleness", {"users": len(users), "epochs": args.epochs, "runs": results,
                              "seconds": time.perf_counter() - started})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
