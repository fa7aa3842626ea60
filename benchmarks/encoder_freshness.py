"""Whether the fine-tuned encoder's own part survives to the test target, by how fresh its training
data is: the shipped trainer (``hybridrec train encoder``, full fine-tuning) run on a log that stops
``gap - 1`` items before each sequence's test target (the cold-items slice's items left out), so
the model has learned every step up to ``gap`` steps before the target. Each model is scored on the
test split with the fused retrieval as it would serve (the fusion weights chosen with it), paired
user by user with the zero-shot encoder at the same weights (the same-run baseline), every slice,
beside its trainer's own verdict.

Gap 3 is the stage run's encoder (the training part stops before the validation target and the
trainer holds out one more item); gap 2 is what a refit on every whole sequence would save there; gap 1 has learned
everything but the test target, the freshest model a service retraining between a user's events
could serve. Gaps 1 and 2 learn from the validation targets: diagnostics, never stage-table
entries. Trained models are kept under ``benchmarks/out/encoder_freshness/`` and reused, so a run
that was stopped resumes where it was (about 25 min per gap on 2 CPU cores, 6 min per evaluation).

    python benchmarks/encoder_freshness.py [--gaps 1 2 3] [--stage-encoder MODEL_DIR]
        [--weights dense_profile_without_query=1.0 ...]

``--weights`` measures every model (and its zero-shot baseline) with these fusion weights over the
ones its trainer chose: how much of a model's own part the weights it serves with let through
(its results go to ``encoder_freshness_weights.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, save, table  # noqa: E402
from encoders import BiEncoder  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.evaluation.replay import (  # noqa: E402
    SLICES,
    EvalConfig,
    Replay,
    cold_slice_items,  # noqa: E402
    encode_catalogue,
    evaluate,
    paired_change,
)
from retrieval.evaluation.stages import training_part  # noqa: E402
from retrieval.pipeline.config import source_weights  # noqa: E402
from retrieval.registry import ModelVersions, read_metadata  # noqa: E402
from retrieval.training.encoder import train_encoder  # noqa: E402
from retrieval.training.settings import EncoderTrainingSettings  # noqa: E402

WORK = Path(__file__).resolve().parent / "out" / "encoder_freshness"
METHOD = "hybrid_retrieval"


def trained_model(gap: int, dataset, base: BiEncoder, points, config: EvalConfig, max_users: int | None
                  ) -> dict:
    """The trainer's metadata for ``gap`` (with ``path``), trained now unless a run before kept it."""
    versions = ModelVersions(WORK / f"gap{gap}" / ("all" if max_users is None else f"users{max_users}"))
    done = versions.all()
    if done:
        path = versions.path(done[-1]["version"])
        print(f"gap {gap}: reusing {path}")
        return {**done[-1], "path": str(path)}
    # The trainer holds out one more item, so it learns every step up to ``gap`` before the target.
    log = training_part(dataset.sequences, cold_slice_items(dataset, config), newest=gap - 1)
    if max_users is not None:
        log = dict(sorted(log.items())[:max_users])
    replay = Replay(dataset, base, log, points, config, f"freshness-gap{gap}")
    try:
        return train_encoder(replay.engine, versions.root, EncoderTrainingSettings(device="cpu"),
                             lambda desc, n: tqdm(total=n, desc=f"gap {gap}: {desc}", mininterval=5))
    finally:
        replay.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--gaps", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--stage-encoder", type=Path,
                        help="a stage run's encoder (gap 3: benchmarks/eval/stages/models/encoder/<version>), "
                             "measured instead of training gap 3 again")
    parser.add_argument("--max-users", type=int, help="train on this many users and test as many (a smoke run)")
    parser.add_argument("--weights", nargs="+", default=[], metavar="SOURCE=WEIGHT",
                        help="fusion weights over each model's chosen ones, e.g. dense_profile_without_query=1.0")
    args = parser.parse_args()
    overrides = {}
    for item in args.weights:
        name, _, value = item.partition("=")
        if name not in source_weights({}):
            parser.error(f"--weights {item!r}: unknown source {name!r}; one of {', '.join(source_weights({}))}")
        try:
            overrides[name] = float(value)
        except ValueError:
            parser.error(f"--weights {item!r}: expected SOURCE=WEIGHT with a number, "
                         "e.g. dense_profile_without_query=1.0")
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0
    models = {}
    if args.stage_encoder:
        meta = read_metadata(args.stage_encoder)
        if meta is None:
            parser.error(f"--stage-encoder {args.stage_encoder}: no saved encoder there (no metadata.json); "
                         "pass benchmarks/eval/stages/models/encoder/<version> from `make eval-stages`")
        models[3] = {**meta, "path": str(args.stage_encoder)}
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    config = EvalConfig(seed=42, split="test", max_users=args.max_users or 5000, methods=(METHOD,))
    base = BiEncoder(device="cpu")
    points = encode_catalogue(dataset, base)
    for gap in sorted(set(args.gaps) - set(models)):
        models[gap] = trained_model(gap, dataset, base, points, config, args.max_users)

    zero_shot: dict[str, dict] = {}  # by fusion weights: the baseline each model is paired with
    rows, runs = [], []
    for gap, meta in sorted(models.items(), reverse=True):
        weights = {**(meta.get("fusion_weights") or {}), **overrides} or None
        at = replace(config, recommend=config.recommend.with_weights(weights))
        key = json.dumps(weights or {}, sort_keys=True)
        if key not in zero_shot:
            zero_shot[key] = evaluate(dataset, base, at, points=points, slices=SLICES)
        baseline = zero_shot[key]
        encoder = BiEncoder(meta["path"], device="cpu")
        tuned = evaluate(dataset, encoder, at, points=encode_catalogue(dataset, encoder), slices=SLICES)
        validation = meta["validation"]
        run = {"gap": gap, "model": meta["path"], "accepted": meta["accepted"], "pairs": meta["pairs"],
               "train_users": meta["train_users"], "fusion_weights": weights,
               "verdict_own_part": validation["encoder_gain_at_chosen_weights"],
               "verdict_standard_error": validation["encoder_gain_standard_error"],
               "verdict_users": validation["users"], "slices": {}}
        for s in SLICES:
            change = paired_change(tuned["ranks"][s][METHOD], baseline["ranks"][s][METHOD])
            a, b = baseline["slices"][s][METHOD], tuned["slices"][s][METHOD]
            run["slices"][s] = {"users": b.get("users"), "zero_shot_ndcg@10": a["ndcg@10"],
                                "fine_tuned_ndcg@10": b["ndcg@10"], "zero_shot_recall@10": a["recall@10"],
                                "fine_tuned_recall@10": b["recall@10"], "own_part": change["ndcg@10"],
                                "standard_error": change["standard_error"]}
            rows.append([gap, s, b.get("users", ""), f"{a['ndcg@10']:.4f}", f"{b['ndcg@10']:.4f}",
                         f"{change['ndcg@10']:+.4f} ± {change['standard_error']:.4f}",
                         f"{b['ndcg@10'] / a['ndcg@10']:.3f}" if a["ndcg@10"] else "-",
                         f"{run['verdict_own_part']:+.4f} ± {run['verdict_standard_error']:.4f}" if s == "all" else ""])
        runs.append(run)
    print(table(["gap", "slice", "users", "zero-shot NDCG@10", "fine-tuned NDCG@10", "own part ± se (test)",
                 "ratio", "trainer's verdict (own part)"], rows,
                "Fine-tuned encoder vs zero-shot at the same fusion weights, test split, by steps of staleness"))
    if args.max_users is None:  # a smoke run's numbers are not kept
        path = save("encoder_freshness_weights" if overrides else "encoder_freshness",
                    {"users": config.max_users, "weights_over_chosen": overrides, "runs": runs,
                                          "seconds": time.perf_counter() - started})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
