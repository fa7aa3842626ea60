"""The ``hybridrec`` command line: serve the API, ingest a catalogue file, rebuild profiles."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path

from encoders.device import DeviceUnavailable
from retrieval.storage.event_log import DatabaseUnavailable, database_where
from retrieval.storage.sqlite_log import UnusableFile
from service.settings import Settings, SettingsError

log = logging.getLogger("hybridrec.cli")


def demo_catalogue_path() -> Path:
    return Path(str(resources.files("service") / "demo" / "catalogue.jsonl"))


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        workers=getattr(args, "workers", None),
    )


class CommandFailed(Exception):
    """A command cannot run; its message says why and what to do next, and ``main`` prints it as
    one line (no traceback: nothing in the program is wrong)."""


def _open_engine(settings: Settings, instance: str | None = None):
    from retrieval.engine import DataDirectoryInUse, Engine

    try:
        return Engine.open(replace(settings.engine_config(), instance=instance))
    except DataDirectoryInUse as err:  # another hybridrec process has it: say who, in one line
        raise CommandFailed(str(err)) from None


@contextmanager
def _trainer_engine(settings: Settings):
    """An engine for a trainer: opened, held still while it trains (``Engine.held_still``: on a
    shared log, what other instances write meanwhile waits), then closed."""
    engine = _open_engine(settings)
    try:
        with engine.held_still():
            yield engine
    finally:
        engine.close()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.access import AccessKeys, is_loopback
    from service.app import DOCS_PATH, create_app

    settings = _settings(args)
    if settings.workers < 1:
        raise CommandFailed(f"--workers must be at least 1, got {settings.workers}")
    if settings.workers > 1 and not settings.database_url:
        raise CommandFailed(f"--workers {settings.workers} needs a shared system of record: set HYBRIDREC_DATABASE_URL="
                            "postgresql://... (the SQLite event log serves one process)")
    keys = AccessKeys(settings.data_dir, settings.database_url)
    protected = keys.enabled()
    if not protected and not is_loopback(settings.host) and not args.insecure_no_keys:
        print(f"error: refusing to serve on {settings.host} without access control: anyone who can reach it could "
              f"write, delete and reindex. Create a key first (hybridrec keys create --name admin --scopes "
              f"read,write,admin --data-dir {settings.data_dir}), or pass --insecure-no-keys to serve it open anyway",
              file=sys.stderr)
        return 2
    try:
        # Several workers each open their own engine; this one loads the demo and builds the
        # indexes first, in worker-0's slot, and closes before they start.
        engine = _open_engine(settings, instance="worker-0" if settings.workers > 1 else None)
    except BaseException:
        keys.close()
        raise
    if args.demo and engine.catalogue.count() == 0:
        from service.ingest import ingest_file

        summary = ingest_file(engine.catalogue, demo_catalogue_path(),
                              checkpoint_dir=settings.data_dir / "ingest-checkpoints", progress=True)
        print(f"demo catalogue: {summary.line()}", flush=True)
    # Items written through the API since the last bulk load sit in unindexed segments; build their
    # HNSW now, before taking traffic (Qdrant Edge's optimizer blocks queries while it runs).
    started = time.perf_counter()
    engine.catalogue.optimize()
    log.info("indexes ready in %.1f s", time.perf_counter() - started)
    base = f"http://{settings.host}:{settings.port}"
    print(f"hybridrec serving {engine.catalogue.count()} items from {settings.data_dir.resolve()} "
          f"at {base}\n  try it in the console: {base}/console/\n"
          f"  API docs: {base}{DOCS_PATH}/swagger  (OpenAPI JSON: {base}{DOCS_PATH}/openapi.json)\n"
          + (f"  workers: {settings.workers}, sharing {database_where(settings.database_url)}\n"
             if settings.workers > 1 else "")
          + (f"  access control: on ({len(keys.list())} active API keys; send 'Authorization: Bearer <key>')"
             if protected else "  access control: OFF, every route is open (turn it on: hybridrec keys create "
                               "--name admin --scopes read,write,admin)"), flush=True)
    if settings.workers > 1:
        engine.close()
        keys.close()
        # The workers are new processes: they read their settings from the environment.
        os.environ.update({"HYBRIDREC_DATA_DIR": str(settings.data_dir), "HYBRIDREC_HOST": settings.host,
                           "HYBRIDREC_PORT": str(settings.port), "HYBRIDREC_WORKERS": str(settings.workers)})
        # /metrics sums every worker's counters from files here (prometheus_client's multiprocess mode).
        metrics_dir = settings.data_dir / "instances" / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # Requests are logged by the app's RequestLog, by route template: uvicorn's own access log
        # would write every path, user ids included.
        uvicorn.run("service.app:worker_app", factory=True, workers=settings.workers, host=settings.host,
                    port=settings.port, log_level=settings.log_level, access_log=False)
        return 0
    try:
        uvicorn.run(create_app(settings, engine=engine, access_keys=keys), host=settings.host, port=settings.port,
                    log_level=settings.log_level, access_log=False)
    finally:
        engine.close()
        keys.close()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys of a data directory; works while the service runs (keys live beside the event log)."""
    from service.access import AccessKeys, Caller

    settings = _settings(args)
    keys = AccessKeys(settings.data_dir, settings.database_url)
    operator = Caller("cli", frozenset())  # the audit log's "who" for the command line
    try:
        if args.action == "list":
            for k in keys.list(include_revoked=args.all):
                state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(k.revoked))}" if k.revoked else "active"
                print(f"{k.id}  {','.join(k.scopes):<16} {state:<24} {k.name}")
            return 0
        if args.action == "revoke":
            if not keys.revoke(args.key_id):
                print(f"error: no active key {args.key_id!r} (hybridrec keys list shows them)", file=sys.stderr)
                return 2
            keys.audit(operator, "revoke key", args.key_id)
            print(f"revoked {args.key_id}" + ("" if keys.enabled() else
                                                "; no active key is left: access control is OFF"))
            return 0
        if args.action == "rotate":
            old = next((k for k in keys.list() if k.id == args.key_id), None)
            if old is None:
                print(f"error: no active key {args.key_id!r} (hybridrec keys list shows them)", file=sys.stderr)
                return 2
            name, scopes = old.name, old.scopes
        else:
            name, scopes = args.name, args.scopes
        try:
            created = keys.create(name, scopes)
        except ValueError as err:
            print(f"error: --scopes: {err}", file=sys.stderr)
            return 2
        keys.audit(operator, "create key", created.id, f"{name}: {','.join(created.scopes)}")
        print(created.secret)
        print(f"key {created.id} ({','.join(created.scopes)}) for {name!r}: the line above is the whole key, shown "
              "this once; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'", file=sys.stderr)
        if args.action == "rotate":
            print(f"when every client uses the new key: hybridrec keys revoke {args.key_id}", file=sys.stderr)
        return 0
    finally:
        keys.close()


def cmd_ingest(args: argparse.Namespace) -> int:
    from service.ingest import FatalIngestError, ingest_file

    settings = _settings(args)
    try:
        engine = _open_engine(settings)
    except Exception as err:  # the data dir or the store cannot be opened: nothing to resume
        print(f"error: cannot open the data directory {settings.data_dir}: {err}", file=sys.stderr)
        return 2
    try:
        summary = ingest_file(
            engine.catalogue, args.file, fmt=args.format, rejects=args.rejects, batch_size=args.batch_size,
            checkpoint_dir=settings.data_dir / "ingest-checkpoints", progress=not args.quiet,
        )
    except FatalIngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last committed batch", file=sys.stderr)
        return 130
    finally:
        engine.close()
    print(summary.line())
    return 0


def cmd_rebuild_profiles(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    engine = _open_engine(_settings(args))
    try:
        users = engine.log.user_ids()
        with tqdm(total=len(users), unit="user", desc="rebuild profiles") as bar:
            engine.profiles.rebuild(users, progress=bar)
    finally:
        engine.close()
    print(f"rebuilt {len(users)} user profiles from the event log")
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    """The item index again from the system of record's stored vectors: nothing is re-encoded."""
    from tqdm import tqdm

    engine = _open_engine(_settings(args))
    try:
        with tqdm(unit="item", desc="rebuild item index") as bar:
            n = engine.rebuild_item_index(progress=bar)
    finally:
        engine.close()
    print(f"rebuilt the item index from {n} stored items (vectors as stored, nothing re-encoded)")
    return 0


def cmd_forget_user(args: argparse.Namespace) -> int:
    """The API's forgetting, offline: also reaches ids the API's paths cannot carry (a `/` in an id
    stored before the id rule)."""
    from service.access import AccessKeys, Caller

    settings = _settings(args)
    engine = _open_engine(settings)
    keys = AccessKeys(settings.data_dir, settings.database_url)
    try:
        done = engine.forget_user(args.user_id)
        keys.audit(Caller("cli", frozenset()), "forget user", done.audit_target, done.describe())
    finally:
        engine.close()
        keys.close()
    if not done.forgotten:
        print(f"nothing to forget: no events or preferences of {args.user_id!r}")
        return 0
    models = ", ".join(f"{m['kind']} {m['version']}" for m in done.models_trained_on_user) or "no model"
    print(f"forgot {args.user_id!r}: {done.events_deleted} events, preferences and profile deleted; trained on by "
          f"{models}" + (" (retrain them to take the user out of their weights)" if done.models_trained_on_user else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from encoders import BiEncoder
    from retrieval.evaluation.datasets import load_dataset
    from retrieval.evaluation.replay import METHODS, RERANKED, SEQUENCE, EvalConfig, encode_catalogue, evaluate
    from retrieval.evaluation.report import write_report

    try:
        dataset = load_dataset(args.dataset)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: cannot load the dataset: {err}", file=sys.stderr)
        return 2
    trained = (RERANKED, SEQUENCE)  # methods of a trained model: --stages measures them
    unknown = [m for m in args.methods or () if m not in METHODS or m in trained]
    if unknown:
        print(f"error: --methods: unknown {', '.join(unknown)}; choose from "
              f"{', '.join(m for m in METHODS if m not in trained)}", file=sys.stderr)
        return 2
    peers = tuple(p.strip() for p in (args.peers or "").split(",") if p.strip())
    if peers:
        from retrieval.evaluation.peers import PEERS, require_recbole

        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            print(f"error: --peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}", file=sys.stderr)
            return 2
        try:
            require_recbole()
        except ImportError as err:
            print(f"error: --peers: {err}", file=sys.stderr)
            return 2
    settings = _settings(args)
    # The engine evaluated is the one configured: its profile and recommend sections.
    given = {"seed": args.seed, "split": args.split, "max_users": args.max_users}
    config = EvalConfig(**{k: v for k, v in given.items() if v is not None},
                        recommend=settings.recommend, profiles=settings.profiles)
    if args.methods:
        config.methods = tuple(args.methods)
    encoder = BiEncoder(settings.encoder, device=settings.device)
    points = encode_catalogue(dataset, encoder)
    results = evaluate(dataset, encoder, config, points=points)
    if peers:
        from retrieval.evaluation.peers import PREFIX, PeerSettings, evaluate_peers

        # Published models (RecBole) trained on the training part, ranked for the same users: their
        # rows join the methods' as peer_<name>, their training records and caveats go beside them.
        peer_results = evaluate_peers(dataset, config, peers=peers, points=points,
                                      settings=PeerSettings(**({"epochs": args.peer_epochs} if args.peer_epochs else {}),
                                                            work_dir=args.out / "peers"))
        for s in results["slices"]:
            results["slices"][s].update(peer_results["slices"].get(s, {}))
            results["ranks"][s].update(peer_results["ranks"].get(s, {}))
        results["config"]["methods"] = (*results["config"]["methods"], *(PREFIX + p for p in peers))
        results["peers"] = {k: peer_results[k] for k in ("peers", "settings", "notes", "fallback_users", "seconds")}
        results["seconds"] += peer_results["seconds"]
    if args.stages:
        from tqdm import tqdm

        from retrieval.evaluation.stages import StageSettings, evaluate_stages

        stage_settings = StageSettings(
            encoder=replace(settings.train_encoder, epochs=args.encoder_epochs, max_pairs=args.encoder_pairs,
                            device=settings.device, seed=config.seed),
            reranker=replace(settings.train_reranker, epochs=args.epochs, max_lists=args.reranker_lists,
                             max_groups=args.reranker_groups, cross_encoder=args.cross_encoder,
                             device=settings.device, seed=config.seed),
            sequence=replace(settings.train_sequence, epochs=args.sequence_epochs, device=settings.device,
                             seed=config.seed),
            work_dir=args.out / "models")
        results["stages"] = evaluate_stages(
            dataset, encoder, config, stage_settings, points=points, zero_shot=results,
            progress_factory=lambda desc, total: tqdm(total=total, desc=desc, mininterval=2))
        results["seconds"] += results["stages"]["seconds"]
    for path in write_report(results, args.out):
        print(f"wrote {path}")
    return 0


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from retrieval.training.reranker import learned_steps, serving_sequence, train_reranker

    settings = _settings(args)
    with _trainer_engine(settings) as engine:
        sequence = stand_in = None
        if args.sequence == "off" and args.sequence_version:
            print("--sequence-version needs --sequence auto or only", file=sys.stderr)
            return 2
        space = engine.item_space()
        needs = settings.train_reranker.sequence_left_out
        # The newest encoder that never learned the ranker's steps: offered as a feature, and in the
        # place of a serving sequence source that learned them while the training lists are built.
        newest = engine.sequences.newest_fitting(space, accepted_only=False, left_out=needs)
        serving = serving_sequence(engine.recommender)
        if serving is not None and learned_steps(serving, settings.train_reranker) and newest is not None:
            stand_in = engine.sequences.load(newest["version"], space, device=args.device, allow_rejected=True)
        if args.sequence != "off":
            version = args.sequence_version or (newest["version"] if newest else None)
            if version is None:
                print(f"--sequence: no sequence encoder is trained over the items as they are now without each user's "
                      f"{needs} newest items; train one with `HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT={needs} hybridrec "
                      "train sequence`", file=sys.stderr)
                return 2
            try:
                sequence = engine.sequences.load(version, space, device=args.device, allow_rejected=True)
            except ValueError as err:
                print(f"--sequence-version {version}: {err}", file=sys.stderr)
                return 2
        try:
            report = train_reranker(
                engine.recommender, engine.rerankers,
                replace(settings.train_reranker, epochs=args.epochs, max_lists=args.max_lists,
                        cross_encoder=args.cross_encoder, max_groups=args.max_groups, device=args.device,
                        seed=args.seed, sequence=args.sequence),
                progress_factory=lambda desc, total: tqdm(total=total, desc=desc),
                sequence=sequence, stand_in=stand_in,
            )
        except ValueError as err:
            print(f"no model trained: {err}", file=sys.stderr)
            return 2
    if report.version is None:
        print(f"no model trained: {report.reason}", file=sys.stderr)
        return 1
    verdict = "accepted" if report.accepted else "rejected (never served)"
    print(f"reranker {report.version} {verdict}: {report.reason}")
    for name, v in report.metadata["validation"].items():
        print(f"  validation {name:<22} NDCG@10 {v['ndcg@10']:.4f}  Recall@10 {v['recall@10']:.4f}  "
              f"coverage@10 {v['coverage@10']:.3f}")
    source = report.metadata.get("sequence_source")
    if source and source["training_lists"] != source["version"]:
        print(f"  sequence encoder {source['training_lists']} stood in for {source['version']} (the sequence source, "
              "which learned the steps the ranker trains on) on the training lists")
    compared = (report.metadata.get("cross_encoder") or {}).get("compared") or {}
    if compared:
        kept = "reads it" if report.metadata["cross_encoder"]["kept"] else "does not read it"
        print(f"  cross-encoder trained: the saved ranker {kept}")
        for name, v in compared.items():
            print(f"    {name}: {v['gain']:+.4f} ± {v['standard_error']:.4f} NDCG@10 against {v['against']}"
                  f"{'' if v['competes'] else ' (not clearly better)'}")
    offered = report.metadata.get("sequence")
    if offered:
        kept = "reads it" if offered["kept"] else "does not read it"
        print(f"  sequence encoder {offered['version']} offered as a feature: the saved ranker {kept}")
        for name, v in offered["variants"].items():
            print(f"    {name}: {v['gain']:+.4f} ± {v['standard_error']:.4f} NDCG@10 against {v['against']}"
                  f"{'' if v['competes'] else ' (not clearly better: not chosen)'}")
    if report.accepted:
        print("a running service picks it up with: curl -X POST http://HOST:PORT/v1/admin/reload")
    return 0


def cmd_train_sequence(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from retrieval.registry import sequence_left_out
    from retrieval.training.sequence import train_sequence

    settings = _settings(args)
    with _trainer_engine(settings) as engine:
        try:
            meta = train_sequence(engine, engine.sequences,
                                  replace(settings.train_sequence, epochs=args.epochs, device=args.device,
                                          seed=args.seed),
                                  progress_factory=lambda desc, total: tqdm(total=total, desc=desc, unit="window"))
        except ValueError as err:
            print(f"no model trained: {err}", file=sys.stderr)
            return 1
    verdict = "accepted" if meta["accepted"] else "rejected (never served)"
    print(f"sequence encoder {meta['version']} {verdict}: {meta['reason']}")
    for name, v in meta["validation"].items():
        print(f"  validation {name:<12} NDCG@10 {v['new']:.4f} with, {v['old']:.4f} without "
              f"({v['gain']:+.4f} ± {v['se']:.4f}, {v['cases']} cases)")
    print(f"  trained {len(meta['epochs'])} epochs in {meta['train_seconds']:.0f} s on {meta['device']}; "
          f"an interrupted run resumes where it stopped")
    if not meta["accepted"]:
        print("it is not served as a source; `hybridrec train reranker` may still read it as a feature, where "
              "that wins validation")
    needs = settings.train_reranker.sequence_left_out
    if meta["accepted"] and "sequence" in settings.recommend.sources and sequence_left_out(meta) < needs:
        print(f"it learned the steps a ranker trains on: while it serves as a source, `hybridrec train reranker` "
              f"needs an encoder trained without them to stand in for it (HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT={needs} "
              "hybridrec train sequence; it need not be accepted)")
    if meta["accepted"]:
        print("a running service picks it up with: curl -X POST http://HOST:PORT/v1/admin/reload")
    return 0


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from retrieval.registry import ModelRegistry
    from retrieval.training.encoder import train_encoder

    settings = _settings(args)
    models_dir = ModelRegistry(settings.data_dir).encoder_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    with _trainer_engine(settings) as engine:
        try:
            meta = train_encoder(engine, models_dir,
                                 replace(settings.train_encoder, epochs=args.epochs, max_pairs=args.max_pairs,
                                         validation_gap=args.validation_gap, device=args.device, seed=args.seed),
                                 progress_factory=lambda desc, total: tqdm(total=total, desc=desc, unit="pair"))
        except ValueError as err:
            print(f"no model trained: {err}", file=sys.stderr)
            return 1
    print(f"encoder {meta['version']} {'accepted' if meta['accepted'] else 'rejected'}: {meta['reason']}")
    if meta["accepted"]:
        print(f"serve it with: hybridrec reindex --data-dir {settings.data_dir}   (or POST /v1/admin/reindex)")
        print("it was judged on retrieval alone: where a reranker serves, retrain the reranker after the reindex "
              "(hybridrec train reranker) and compare it with the one serving now")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from encoders import BiEncoder
    from retrieval.registry import ModelRegistry
    from retrieval.reindex import reindex

    settings = _settings(args)
    if settings.database_url:
        from retrieval.reindex import SHARED_REINDEX

        raise CommandFailed(SHARED_REINDEX)
    path = args.encoder or ModelRegistry(settings.data_dir).latest_accepted_encoder()
    if path is None:
        print("error: no accepted encoder under models/encoder; train one or pass --encoder", file=sys.stderr)
        return 2
    engine = _open_engine(settings)  # first: a directory in use is said before a model loads for nothing
    try:
        try:
            encoder = BiEncoder(str(path), device=settings.device)
        except (OSError, ValueError) as err:
            raise CommandFailed(f"--encoder {path} cannot be loaded as a sentence-transformers model: "
                                f"{str(err).splitlines()[0]}") from None
        report = reindex(engine, encoder, str(path),
                         progress=lambda desc, total: tqdm(total=total, desc=desc, unit="item"))
    finally:
        engine.close()
    print(f"reindexed {report.items} items and {report.users} profiles with {path} in {report.seconds:.0f} s; "
          f"now serving {report.layout.items} / {report.layout.users}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """One recommendation request from the shell (the data directory must not be served meanwhile)."""
    import json

    from retrieval.pipeline.request import RecommendRequest
    from retrieval.storage.records import InvalidRecord
    from service.explanation import explain_item

    settings = _settings(args)
    engine = _open_engine(settings)
    try:
        req = RecommendRequest(user_id=args.user_id, query=args.query, history=args.history or [], k=args.k,
                               diversity=args.diversity, max_per_category=args.max_per_category,
                               rerank=not args.no_rerank)
        try:
            result = engine.recommender.recommend(req)
        except InvalidRecord as err:
            print(f"error: {err.field}: {err.reason}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"interpreted": result.interpreted, "notes": result.notes,
                              "items": [{"id": i.id, "score": i.score, **i.payload} for i in result.items]}, indent=1))
            return 0
        if result.interpreted:
            i = result.interpreted
            print(f"showing results for: {i['semantic_text'] or '(no free text)'}  constraints: "
                  f"{json.dumps(i['constraints'])}" + (f"  like: {i['anchor']['title']}" if i["anchor"] else ""))
        generator = settings.explanation_generator() if args.explain else None
        understood = engine.recommender.understand(req) if args.explain else None  # parsed once for the list
        for n, item in enumerate(result.items, start=1):
            p = item.payload
            price = f"${p['price']:.2f}" if p.get("price") is not None else "-"
            print(f"{n:>3}. {item.id}  {p['title']}  ({p.get('brand') or '-'}, {price})")
            if generator is not None:
                explanation = explain_item(engine.recommender, generator, req, item.id, trace=item.trace, rank=n,
                                           counterfactual=False, understood=understood)
                print(f"     why: {explanation['text']}")
        for note in result.notes:
            print(f"  note: {note}")
    finally:
        engine.close()
    return 0


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The command line; its defaults are the settings' (``settings``, default: read from the
    environment and $HYBRIDREC_CONFIG), and a flag given wins over them."""
    s = settings or Settings.from_env()
    reranking, encoding = s.train_reranker, s.train_encoder
    parser = argparse.ArgumentParser(prog="hybridrec", description="Hybrid recommender service.")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help=f"data directory (default: the data_dir setting, now {s.data_dir})")

    serve = sub.add_parser("serve", help="start the REST API")
    serve.add_argument("--host", help=f"bind address (default: the host setting, now {s.host})")
    serve.add_argument("--port", type=int, help=f"port (default: the port setting, now {s.port})")
    serve.add_argument("--workers", type=int, help=f"processes serving the port, sharing the PostgreSQL back-end "
                                                   f"(default: the workers setting, now {s.workers})")
    serve.add_argument("--demo", action="store_true", help="load the bundled demo catalogue if the store is empty")
    serve.add_argument("--insecure-no-keys", action="store_true",
                       help="serve a non-loopback address although no API key exists (every route open to anyone)")
    data_dir(serve)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys: create, list, rotate, revoke (stored as hashes)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="a new key, printed once; the first one turns access control on")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'shop frontend'")
    create.add_argument("--scopes", required=True, help="comma-separated: read, write, admin")
    data_dir(create)
    listing = keys_sub.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    data_dir(listing)
    rotate = keys_sub.add_parser("rotate", help="a new key with the same name and scopes; the old one stays valid "
                                                "until revoked, so clients switch without downtime")
    rotate.add_argument("key_id")
    data_dir(rotate)
    revoke = keys_sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id")
    data_dir(revoke)
    keys.set_defaults(func=cmd_keys)

    ingest = sub.add_parser("ingest", help="load items from a JSONL or CSV file (resumable)")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file extension")
    ingest.add_argument("--rejects", type=Path, help="where rejected rows go (default FILE.rejects.jsonl)")
    ingest.add_argument("--batch-size", type=int, default=256, help="rows per encode+upsert batch")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir(ingest)
    ingest.set_defaults(func=cmd_ingest)

    evaluate = sub.add_parser("evaluate", help="offline evaluation (leave-one-out, full ranking, slices, baselines)")
    evaluate.add_argument("--dataset", type=Path, required=True,
                          help="a folder with *.inter.json + *.item.json, or items.jsonl + interactions.jsonl|csv")
    evaluate.add_argument("--out", type=Path, required=True, help="where report.md, results.json and plots go")
    evaluate.add_argument("--max-users", type=int, help="evaluate a seeded sample of this many users")
    evaluate.add_argument("--seed", type=int, help="seeds the user sample, the cold items and the stages' training "
                                                   "(default: the evaluation's own, EvalConfig.seed)")
    evaluate.add_argument("--split", choices=["test", "valid"], help="(default: the evaluation's own, test)")
    evaluate.add_argument("--methods", nargs="+", help="only these methods (default: every baseline and stage)")
    evaluate.add_argument("--peers", metavar="NAMES",
                          help="also train and rank published sequential models beside the methods, "
                               "comma-separated: sasrec, gru4rec (rows peer_<name>; needs pip install -e '.[peers]')")
    evaluate.add_argument("--peer-epochs", type=int, help="each peer's epoch cap (default: PeerSettings.epochs)")
    evaluate.add_argument("--stages", action="store_true",
                          help="also train the encoder, the sequence encoder and the reranker on the training part "
                               "and report zero-shot -> + fine-tuned encoder -> + sequence encoder -> + reranker "
                               "(about an hour on 2 CPU cores)")
    evaluate.add_argument("--sequence-epochs", type=int, default=s.train_sequence.epochs,
                          help="sequence encoder epochs at most (--stages; default: %(default)s)")
    evaluate.add_argument("--epochs", type=int, default=reranking.epochs,
                          help="cross-encoder training epochs (--stages; default: %(default)s)")
    evaluate.add_argument("--encoder-epochs", type=int, default=encoding.epochs,
                          help="encoder epochs (--stages; default: %(default)s)")
    evaluate.add_argument("--encoder-pairs", type=int, default=encoding.max_pairs,
                          help="encoder training pairs (--stages; default: %(default)s)")
    evaluate.add_argument("--reranker-lists", type=int, default=reranking.max_lists,
                          help="ranker training lists (--stages; default: %(default)s)")
    evaluate.add_argument("--reranker-groups", type=int, default=reranking.max_groups,
                          help="cross-encoder training groups (--stages; default: %(default)s)")
    evaluate.add_argument("--cross-encoder", choices=["auto", "on", "off"], default=reranking.cross_encoder,
                          help="train the cross-encoder as a ranker feature (--stages; auto: on a GPU only; "
                               "default: %(default)s)")
    evaluate.set_defaults(func=cmd_evaluate)

    train = sub.add_parser("train", help="learn from the event log")
    train_sub = train.add_subparsers(dest="what", required=True)
    reranker = train_sub.add_parser(
        "reranker", help="train the reranker on the event log: a learned ranker over retrieval evidence, "
                         "with a fine-tuned cross-encoder as one of its features where that is clearly better on "
                         "validation than the ranker without it")
    reranker.add_argument("--epochs", type=int, default=reranking.epochs,
                          help="cross-encoder epochs (default: %(default)s)")
    reranker.add_argument("--max-lists", type=int, default=reranking.max_lists,
                          help="ranking lists the ranker learns from (default: %(default)s)")
    reranker.add_argument("--cross-encoder", choices=["auto", "on", "off", "only"], default=reranking.cross_encoder,
                          help="train the cross-encoder too (auto: only on a GPU, where it is affordable: docs/research.md; "
                               "the ranker reads it where clearly better on validation than without it; only: always, "
                               "to measure it, never served; default: %(default)s)")
    reranker.add_argument("--max-groups", "--max-pairs", dest="max_groups", type=int, default=reranking.max_groups,
                          help=f"cross-encoder training groups (one positive and "
                               f"{reranking.hard_negatives + reranking.random_negatives} negatives each; "
                               "default: %(default)s)")
    reranker.add_argument("--sequence", choices=["off", "auto", "only"], default=reranking.sequence,
                          help="whether the ranker may read a sequence encoder's similarity to each candidate (auto: "
                               "where clearly better on validation than without it; only: always, to measure it, never served; "
                               "default: %(default)s)")
    reranker.add_argument("--sequence-version", default=None, metavar="VERSION",
                          help="which sequence encoder (default: the newest trained over the items as they are now, "
                               "accepted as a source or not)")
    reranker.add_argument("--device", default=reranking.device, help="auto, cpu or cuda (default: %(default)s)")
    reranker.add_argument("--seed", type=int, default=reranking.seed, help="(default: %(default)s)")
    data_dir(reranker)
    reranker.set_defaults(func=cmd_train_reranker)

    sequencing = s.train_sequence
    seq = train_sub.add_parser("sequence", help="train the sequence encoder: a transformer that reads a history in "
                                                "order and answers with a vector in the item space")
    seq.add_argument("--epochs", type=int, default=sequencing.epochs,
                     help="at most; it stops when early-stopping users stop improving (default: %(default)s)")
    seq.add_argument("--device", default=sequencing.device, help="auto, cpu or cuda (default: %(default)s)")
    seq.add_argument("--seed", type=int, default=sequencing.seed, help="(default: %(default)s)")
    data_dir(seq)
    seq.set_defaults(func=cmd_train_sequence)

    enc = train_sub.add_parser("encoder", help="fine-tune the bi-encoder on the event log")
    enc.add_argument("--epochs", type=int, default=encoding.epochs, help="(default: %(default)s)")
    enc.add_argument("--max-pairs", type=int, default=encoding.max_pairs,
                     help="training pairs (default: %(default)s)")
    enc.add_argument("--validation-gap", type=int, default=encoding.validation_gap,
                     help="each user's newest items left out of training (1 or more: the newest is what "
                          "validation judges), so that the model is judged this many steps past its data (1: the "
                          "next item; why not 2: docs/research.md; default: %(default)s)")
    enc.add_argument("--device", default=encoding.device, help="auto, cpu or cuda (default: %(default)s)")
    enc.add_argument("--seed", type=int, default=encoding.seed, help="(default: %(default)s)")
    data_dir(enc)
    enc.set_defaults(func=cmd_train_encoder)

    reindex = sub.add_parser("reindex", help="re-encode items and profiles with an encoder, switch atomically")
    reindex.add_argument("--encoder", type=Path, help="default: the newest accepted one under models/encoder")
    data_dir(reindex)
    reindex.set_defaults(func=cmd_reindex)

    rec = sub.add_parser("recommend", help="recommend from the shell: a sentence, a user, a history")
    rec.add_argument("--query", help='a sentence, e.g. "a stapler under $15, not from Swingline"')
    rec.add_argument("--user-id")
    rec.add_argument("--history", nargs="+", help="item ids, oldest first")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--diversity", type=float, help="0 (pure relevance) .. 1")
    rec.add_argument("--max-per-category", type=int)
    rec.add_argument("--explain", action="store_true", help="say why, for each item")
    rec.add_argument("--no-rerank", action="store_true")
    rec.add_argument("--json", action="store_true", help="machine-readable output")
    data_dir(rec)
    rec.set_defaults(func=cmd_recommend)

    index = sub.add_parser("rebuild-index", help="write the item index again from the stored items and vectors "
                                                 "(no re-encoding)")
    data_dir(index)
    index.set_defaults(func=cmd_rebuild_index)
    rebuild = sub.add_parser("rebuild-profiles", help="recompute every user profile from the event log")
    data_dir(rebuild)
    rebuild.set_defaults(func=cmd_rebuild_profiles)

    forget = sub.add_parser("forget-user", help="forget a user (as DELETE /v1/users/{id}, with the service stopped)")
    forget.add_argument("user_id", help="the user's id, exactly as it was stored")
    data_dir(forget)
    forget.set_defaults(func=cmd_forget_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = build_parser(Settings.from_env()).parse_args(argv)
        if getattr(args, "batch_size", 1) < 1:
            print("error: --batch-size must be >= 1", file=sys.stderr)
            return 2
        return args.func(args)
    # A bad setting or flag, a directory in use, a database or device that is not there.
    except (SettingsError, CommandFailed, DatabaseUnavailable, DeviceUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, PermissionError, FileNotFoundError, UnusableFile) as err:
        # A path the command cannot use (a file where a folder goes, no permission): which, and why.
        hint = "; a file is where a folder must be" if isinstance(err, (FileExistsError, NotADirectoryError)) else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
