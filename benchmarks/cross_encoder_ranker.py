"""The fine-tuned cross-encoder as a feature of the learned ranker, against the ranker without it, in
the same run: quality on every slice of the evaluation (test), and the whole request's latency at
50 and 100 candidates. Meant for a GPU machine (issue 23, "The cross-encoder on a GPU"); on a CPU
it runs at small sizes only (the cross-encoder scores about 30 pairs a second on 2 cores).

1. On the evaluation's training part (``stage_training_sequences``, as ``hybridrec evaluate
   --stages`` trains), one training run fits the ranker twice on the same lists: without the
   cross-encoder, and reading one fine-tuned on other cases than those lists
   (``cross_encoder="only"``: a measuring run, never served; as served, the ranker reading it is
   kept only where clearly better on validation than the ranker without it, and that comparison
   is printed). Both fits are evaluated on test as fitted (not blended with retrieval's order,
   which the trainer may do to a ranker that concentrates exposure; the blend it chose is
   printed), on every slice, paired user by user.
2. Latency: the same history requests through ``Recommender.recommend``, each ranker over the top
   50 and 100 candidates, the four arms alternated request by request.

``scripts/device_check.sh`` runs it on a GPU loan at sizes estimated to fit one 10-minute call
(never yet run on a GPU); ``--max-users 0`` judges every test user. The comparison is saved as soon
as it is printed, so a run stopped during the latency part keeps it.

    python benchmarks/cross_encoder_ranker.py [--max-users 2000] [--lists 3000] [--groups 3000]
        [--validation-users 2000] [--epochs 1] [--requests 200] [--candidates 50,100] [--device auto]
        [--seed 42] [--name NAME] [--no-save]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, alternated_latency, save, table  # noqa: E402
from benchmarks.sequence_ranker import compared_on_slices  # noqa: E402
from encoders import BiEncoder  # noqa: E402
from encoders.device import resolve_device  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.evaluation.replay import RERANKED, EvalConfig, Replay, encode_catalogue, evaluate, leave_one_out  # noqa: E402
from retrieval.evaluation.stages import stage_training_sequences  # noqa: E402
from retrieval.pipeline.request import RecommendRequest  # noqa: E402
from retrieval.ranking.rerank import LoadedReranker  # noqa: E402
from retrieval.registry import RerankerVersions  # noqa: E402
from retrieval.training.reranker import train_reranker  # noqa: E402
from retrieval.training.settings import TrainingSettings  # noqa: E402

BASE, WITH = "ranker", "ranker + cross-encoder"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--max-users", type=int, default=2000, help="test users judged (0: every one)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--lists", type=int, default=3000, help="ranking lists each ranker learns from")
    parser.add_argument("--groups", type=int, default=3000, help="cross-encoder training groups")
    parser.add_argument("--validation-users", type=int, default=2000,
                        help="users whose newest item the trainer's validation judges")
    parser.add_argument("--epochs", type=int, default=1, help="cross-encoder epochs")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per arm")
    parser.add_argument("--candidates", default="50,100", help="how many of the top each ranker reorders, timed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--name", default="cross_encoder_ranker", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--copy-to", type=Path, default=None,
                        help="also write each saved result into this folder (the device tool's $OUT)")
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        if args.dataset != SHARED_DATASET:
            print(f"--dataset {args.dataset} is not here", file=sys.stderr)
            return 2
        print(f"skipping: {args.dataset} is not here")
        return 0
    device = resolve_device(args.device)
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    encoder = BiEncoder(device=device)
    points = encode_catalogue(dataset, encoder)
    config = EvalConfig(seed=args.seed, split=args.split, max_users=args.max_users)
    work = Path(tempfile.mkdtemp(prefix="hybridrec-bench-cross-encoder-"))
    progress = lambda d, n: tqdm(total=n, desc=d, mininterval=5)  # noqa: E731

    train = stage_training_sequences(dataset, config)
    settings = TrainingSettings(max_lists=args.lists, max_groups=args.groups, epochs=args.epochs, device=device,
                                seed=args.seed, max_validation_users=args.validation_users, cross_encoder="only")
    # One training run fits both: the ranker alone and the ranker reading the cross-encoder, on the
    # same lists (cross_encoder="only" saves the second; the first is the same fit an "off" run makes).
    versions = RerankerVersions(work / "reranker")
    replay = Replay(dataset, encoder, train, points, config, "train")
    clock = time.perf_counter()
    try:
        report = train_reranker(replay.engine.recommender, versions, settings, progress)
    finally:
        replay.close()
    train_seconds = time.perf_counter() - clock
    if report.version is None:
        print(f"no model trained: {report.reason}")
        return 1
    saved = versions.load(report.version, device=device, allow_rejected=True)
    rankers = {BASE: LoadedReranker(f"{report.version}: ranker", report.variants["ranker"], None, {}),
               WITH: LoadedReranker(f"{report.version}: ranker+cross_encoder", report.variants["ranker+cross_encoder"],
                                    saved.cross_encoder, {})}
    ce = report.metadata["cross_encoder"]
    payload = {"config": {**vars(args), "dataset": str(args.dataset), "copy_to": str(args.copy_to) if args.copy_to else None,
                          "device": device},
               "training": {"version": report.version, "accepted": report.accepted, "reason": report.reason,
                            "ranker": report.metadata.get("ranker"), "cross_encoder": ce,
                            "validation": report.metadata.get("validation"), "seconds": train_seconds},
               "slices": None, "latency": None}
    keep(args, payload)  # the training's verdict survives a run stopped later

    clock = time.perf_counter()
    results = {arm: evaluate(dataset, encoder, replace(config, methods=("hybrid_retrieval", RERANKED)), points=points,
                             reranker=loaded) for arm, loaded in rankers.items()}
    evaluate_seconds = time.perf_counter() - clock
    slices, comparison = compared_on_slices(results, BASE, WITH, args.split, args.seed)
    print(comparison)
    payload.update(slices=slices, evaluate_seconds=evaluate_seconds)
    keep(args, payload)

    sizes = [int(n) for n in args.candidates.split(",")]
    replay = Replay(dataset, encoder, {u: c.history for u, c in leave_one_out(dataset.sequences, args.split).items()},
                    points, config, "latency")
    recommender = replay.engine.recommender
    configs = {n: replace(recommender.config, rerank_candidates=n) for n in sizes}

    def serving(arm: str, n: int):
        def arrange() -> None:
            recommender.reranker, recommender.config = rankers[arm], configs[n]
        return arrange

    arms = {f"{arm}, top {n}": serving(arm, n) for n in sizes for arm in rankers}
    try:
        timing = alternated_latency(lambda user: recommender.recommend(RecommendRequest(user_id=user, k=10)), arms,
                                    sorted(replay.engine.index.user_ids()), args.requests, args.seed)
    finally:
        replay.close()
    print()
    rows = []
    for n in sizes:
        alone = timing[f"{BASE}, top {n}"]["p50_ms"]
        rows += [[f"{arm}, top {n}", t["requests"], round(t["p50_ms"], 2), round(t["p99_ms"], 2),
                  f"{t['p50_ms'] / alone:.2f}x"] for arm in rankers for t in [timing[f"{arm}, top {n}"]]]
    print(table(["ranker serving", "requests", "p50 ms", "p99 ms", "p50 against the ranker alone"], rows,
                title=f"Recommend latency, history requests (k=10), whole request, alternated in one run, {device}"))

    against = (ce.get("compared") or {}).get("ranker+cross_encoder") or {}
    print(f"\ncross-encoder: {ce.get('groups')} groups, {ce.get('pairs_per_epoch')} pairs per epoch, "
          f"{len(ce.get('epochs') or [])} epochs on {device}; both rankers trained in {train_seconds:.0f} s")
    blend = report.metadata["ranker"].get("retrieval_blend")
    if blend:
        print(f"the trainer blended {report.metadata['ranker']['variant']} with retrieval's order at {blend} "
              "(exposure); the table compares the fits as fitted")
    if against:
        said = "" if against["competes"] else ": not clearly better (as served, it would not be kept)"
        print(f"validation: {WITH} {against['ndcg@10']:.4f} against {BASE} {against['without']:.4f} "
              f"({against['gain']:+.4f} ± {against['standard_error']:.4f}){said}")
    judged = (report.metadata.get("measured") or {}).get("judged_accepted", report.accepted)
    print(f"{WITH} as judged against retrieval (a measuring run, never served): "
          f"{'accepted' if judged else 'refused'}: {report.reason}")
    print(f"evaluation {evaluate_seconds:.0f} s; whole run {time.perf_counter() - started:.0f} s")
    payload.update(latency=timing, seconds=time.perf_counter() - started)
    keep(args, payload)
    return 0


def keep(args: argparse.Namespace, payload: dict) -> None:
    """Save the results so far (unless --no-save), and into --copy-to where given."""
    if not args.no_save:
        print(f"wrote {save(args.name, payload)}")
    if args.copy_to is not None:
        save(args.name, payload, folder=args.copy_to)


if __name__ == "__main__":
    raise SystemExit(main())
