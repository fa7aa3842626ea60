"""Settings: one typed object read from ``HYBRIDREC_*`` environment variables, an optional TOML
file and defaults that work offline on a laptop.

A top-level field ``x`` is read from ``HYBRIDREC_X`` (TOML: ``x = ...``); a field ``x`` of a section
``s`` (``profiles``, ``recommend``, ``train_reranker``, ``train_encoder``) from ``HYBRIDREC_S__X``
(TOML: ``[s]`` then ``x = ...``). ``HYBRIDREC_CONFIG`` names the TOML file; the environment wins
over the file. Values are converted by the field's annotation: numbers, booleans (true/false, 1/0,
yes/no, on/off), paths, optional values ("none"), lists (JSON or comma-separated in the
environment) and tables (a JSON object in the environment; the keys given replace the default's).
An unknown name, a value of the wrong type or out of range stops the start with a message naming
the variable, what it expects and what it got. ``render_settings_table()`` writes the configuration
table (``python -m service.settings``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

from encoders.device import is_device_name
from retrieval.engine import EngineConfig
from retrieval.limits import MAX_BATCH, MAX_BODY_BYTES
from retrieval.pipeline.config import REQUEST_TYPES, SOURCE_NAMES, RecommendConfig
from retrieval.state.profiles import ProfileConfig
from retrieval.training.settings import EncoderTrainingSettings, SequenceTrainingSettings, TrainingSettings

PREFIX = "HYBRIDREC_"
CONFIG_VARIABLE = "HYBRIDREC_CONFIG"
# Variables with the prefix that belong to something else than the service (the test suite's
# HYBRIDREC_TEST_DEVICE): not settings, so not "unknown" either.
FOREIGN_PREFIXES = ("HYBRIDREC_TEST_",)


class SettingsError(ValueError):
    """A setting that is unknown, of the wrong type or out of range."""

    @classmethod
    def of(cls, problems: list[str]) -> SettingsError:
        """One error saying every problem (each on its line when there are several)."""
        return cls(problems[0] if len(problems) == 1 else "invalid settings:\n  " + "\n  ".join(problems))


def _s(default: Any = None, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A settings field with its one-line meaning (docs/configuration.md shows it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Settings:
    """Everything a deployer may set; see the module docstring for the names and docs/configuration.md's
    "Configuration" table for each field."""

    data_dir: Path = _s(Path("data"), "where the collections, the event log and the models live")
    host: str = _s("127.0.0.1", "address `hybridrec serve` binds")
    port: int = _s(8000, "port `hybridrec serve` listens on")
    database_url: str | None = _s(None, "PostgreSQL (postgresql://...) as the system of record, shared by every worker "
                                        "and instance; none: the SQLite file in the data directory, for one process")
    workers: int = _s(1, "processes `hybridrec serve` runs on its port (more than 1 needs `database_url`); each "
                         "allows its share of the rate limits, and /metrics sums them all")
    qdrant_url: str | None = _s(None, "a Qdrant server to use instead of the embedded store in the data directory")
    qdrant_api_key: str | None = _s(None, "the Qdrant server's API key")
    encoder: str | None = _s(None, "the bi-encoder (folder or model name); default: the data directory's own")
    device: str = _s("auto", "where models run: auto, cpu or cuda")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = _s(
        "info", "the server's log level")
    max_batch: int = _s(MAX_BATCH, "rows per item or event write through the API")
    max_body_bytes: int = _s(MAX_BODY_BYTES, "largest request body the API reads (413 above it)")
    read_rate_limit: int = _s(200, "read requests (recommend, explain, similar, item and user reads) one API key, or "
                                   "one client address without a key, may make per second (429 above it; 0: no limit)")
    write_rate_limit: int = _s(2000, "write requests (items, events, preferences) per key or address per second "
                                     "(429 above it; 0: no limit)")
    engine_threads: int = _s(8, "threads that run engine work (recommend, explain, item writes) at once")
    engine_queue: int = _s(64, "requests that may wait for an engine thread; past it the API answers 503 with "
                               "Retry-After")
    reindex_encoders: tuple[Path, ...] = _s((), "encoder folders `POST /v1/admin/reindex` may name, besides the "
                                                "accepted versions under `data_dir`/models/encoder")
    evaluation_dir: Path | None = _s(None, "the folder `hybridrec evaluate --out` wrote, which `GET /v1/admin/evaluation` "
                                           "shows; none: `data_dir`/evaluation")
    explain_backend: Literal["template", "local", "openai"] = _s(
        "template", "explanations: template (no model), local (SmolLM2) or openai (an OpenAI-compatible server)")
    openai_base_url: str | None = _s(None, "the OpenAI-compatible server of the openai back-end")
    openai_model: str = _s("gpt-4o-mini", "the model the openai back-end asks for")
    openai_api_key: str | None = _s(None, "the openai back-end's API key")
    openai_timeout_s: float = _s(10.0, "seconds the openai back-end waits for an answer")
    explain_timeout_s: float = _s(5.0, "seconds an explanation waits for its model's words before it answers with "
                                       "the template text (local and openai back-ends)")
    query_parser: Literal["rules", "model"] = _s(
        "rules", "query constraints: rules (deterministic), or model (the explanation back-end's model fills "
                 "what the rules missed, validated against the catalogue)")
    profiles: ProfileConfig = _s(factory=ProfileConfig, help="how user profiles are built from events")
    recommend: RecommendConfig = _s(factory=RecommendConfig, help="the recommend pipeline: fusion, pools, diversity")
    train_reranker: TrainingSettings = _s(factory=TrainingSettings, help="defaults of `hybridrec train reranker`")
    train_encoder: EncoderTrainingSettings = _s(factory=EncoderTrainingSettings,
                                                help="defaults of `hybridrec train encoder`")
    train_sequence: SequenceTrainingSettings = _s(factory=SequenceTrainingSettings,
                                                  help="defaults of `hybridrec train sequence`")

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default: ``os.environ``) and the TOML file it names;
        ``overrides`` (top-level fields; None: not given) win over both."""
        return _load(cls, dict(os.environ if environ is None else environ), overrides)

    def conflicts(self) -> list[str]:
        """Settings valid one by one that cannot go together: said when the settings are read, before
        anything starts (a worker process that failed on them was restarted for ever)."""
        out = []
        if self.explain_backend == "openai" and not self.openai_base_url:
            out.append("HYBRIDREC_EXPLAIN_BACKEND=openai needs HYBRIDREC_OPENAI_BASE_URL (the server's OpenAI-compatible "
                       "/v1 URL)")
        if self.query_parser == "model" and self.explain_backend == "template":
            out.append("HYBRIDREC_QUERY_PARSER=model needs a model: set HYBRIDREC_EXPLAIN_BACKEND to local or openai")
        return out

    def explanation_generator(self):
        """The configured explanation back-end (``prompts.make_generator``)."""
        from prompts import make_generator
        from prompts.generators import TimeLimitedGenerator

        if self.explain_backend == "openai":
            return TimeLimitedGenerator(make_generator(
                "openai", base_url=self.openai_base_url, model=self.openai_model, api_key=self.openai_api_key,
                timeout_s=self.openai_timeout_s), self.explain_timeout_s)
        if self.explain_backend == "local":
            return TimeLimitedGenerator(make_generator("local", device="cuda" if self.device == "cuda" else "cpu"),
                                        self.explain_timeout_s)
        return make_generator(self.explain_backend)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            data_dir=self.data_dir,
            database_url=self.database_url,
            qdrant_url=self.qdrant_url,
            qdrant_api_key=self.qdrant_api_key,
            encoder_path=self.encoder,
            device=self.device,
            profiles=self.profiles,
            recommend=self.recommend,
        )


# The meaning of the sections' fields: their dataclasses live in the engine, which cannot say
# how the service names them. A field's own ``metadata={"help": ...}`` wins over this.
SECTION_HELP: dict[str, str] = {
    "profiles.half_life_days": "an event's weight halves every this many days",
    "profiles.position_decay": "weight factor per newer event in the user's sequence (1: position does not count)",
    "profiles.preference_prior": "weight of stated preferences against events (fades as events accumulate)",
    "profiles.max_events": "the user's newest events a profile reads",
    "recommend.weights": "fusion weight per source (dense_query, dense_profile, lexical, collaborative, popular, "
                         "interest, lexical_history, dense_profile_without_query; 0: off); keys given replace "
                         "the default's",
    "recommend.rrf_k": "k of reciprocal-rank fusion, 1 / (k + rank)",
    "recommend.no_opinion_credit": "credit for an item a source cannot judge (1: the other sources' mean, 0: plain RRF)",
    "recommend.min_pool": "fewest candidates each source returns (at least 4 x k)",
    "recommend.lexical_history_items": "newest history titles BM25 searches with",
    "recommend.collaborative_decay": "weight factor per older history item in co-occurrence",
    "recommend.collaborative_proximity": "how much co-occurrence prefers items near each other in a sequence (0: plain item-kNN)",
    "recommend.collaborative_backward": "weight of co-occurring items that came before rather than after",
    "recommend.sources": "the candidate sources a request uses",
    "recommend.rerank_candidates": "the top of the fused list the reranker reorders",
    "recommend.preference_popularity_prior": "popularity's weight for a profile made only of stated preferences, where "
                                             "the interest source has nothing (0: none)",
    "recommend.preference_prior_within_categories": "that prior counts only the items of the catalogue categories "
                                                    "the preferences name, where they name any",
    "recommend.interest_lift": "how strongly the interest source (for stated preferences alone that name catalogue "
                               "categories: what the people who took them took) favours what sets those people "
                               "apart over what everyone takes (0: their most taken)",
    "recommend.diversity": "MMR diversity when a request does not say (0: pure relevance .. 1)",
    "recommend.reranked_diversity": "the same, for lists the learned ranker ordered",
    "recommend.diversity_pool": "the top the diverse list is picked from",
    "train_reranker.epochs": "cross-encoder training epochs",
    "train_reranker.positions_per_user": "training positions taken from the end of each user's sequence",
    "train_reranker.validation_users": "share of the users whose newest item validation judges",
    "train_reranker.max_validation_users": "at most this many validation users",
    "train_reranker.device": "where training runs: auto, cpu or cuda",
    "train_reranker.seed": "random seed",
    "train_reranker.max_lists": "ranking lists the ranker learns from",
    "train_reranker.cross_encoder": "train the cross-encoder as a ranker feature: auto (on a GPU only), on or off; "
                                    "read where clearly better on validation than without it; only (measuring it, never served)",
    "train_reranker.max_groups": "cross-encoder training groups (one positive and its negatives each)",
    "train_reranker.sequence": "whether the ranker may read a sequence encoder: off, auto (where clearly better "
                               "on validation than without it) or only (only variants reading it: measuring it, never served)",
    "train_reranker.hard_negatives": "negatives per group taken from retrieval's top",
    "train_reranker.random_negatives": "negatives per group drawn from the catalogue",
    "train_reranker.candidates": "the top of retrieval that is reranked; none: recommend.rerank_candidates",
    "train_encoder.epochs": "fine-tuning epochs",
    "train_encoder.positions_per_user": "training pairs taken from the end of each user's sequence",
    "train_encoder.validation_users": "share of the users whose newest item validation judges",
    "train_encoder.max_validation_users": "at most this many validation users",
    "train_encoder.device": "where training runs: auto, cpu or cuda",
    "train_encoder.seed": "random seed",
    "train_encoder.max_pairs": "training pairs (item -> next item)",
    "train_encoder.batch_size": "training batch size",
    "train_encoder.lr": "learning rate",
    "train_encoder.lexical_weights": "history BM25 weights tried with each encoder (never 0)",
    "train_encoder.dense_profile_weights": "profile weights tried for requests without a query",
    "train_encoder.validation_gap": "each user's newest items left out of training",
    "train_encoder.long_tail_head": "share of the most taken items outside which the long tail is judged",
    "train_sequence.epochs": "training epochs at most (it stops earlier when early-stopping users stop improving)",
    "train_sequence.validation_users": "share of the users whose newest item validation judges",
    "train_sequence.max_validation_users": "at most this many validation users",
    "train_sequence.device": "where training runs: auto, cpu or cuda",
    "train_sequence.seed": "random seed",
    "train_sequence.patience": "epochs without improvement before training stops",
    "train_sequence.batch_size": "training windows per batch",
    "train_sequence.lr": "learning rate",
    "train_sequence.weight_decay": "AdamW weight decay",
    "train_sequence.hidden": "width of the transformer",
    "train_sequence.layers": "transformer layers",
    "train_sequence.heads": "attention heads",
    "train_sequence.max_length": "newest history items the model reads",
    "train_sequence.dropout": "dropout in the transformer",
    "train_sequence.drop_residual": "share of learned item residuals hidden in training (so text alone is read too)",
    "train_sequence.temperature": "softmax temperature over cosine similarities",
    "train_sequence.popularity_correction": "popularity prior in training: this times each item's log share of the "
                                            "targets is added to its logit, and left out when serving (0: none)",
    "train_sequence.max_softmax_items": "every item is a negative up to this catalogue size; above it, a sample",
    "train_sequence.early_stop_users": "share of the users whose second-newest item decides when training stops",
    "train_sequence.max_early_stop_users": "at most this many early-stopping users",
    "train_sequence.fusion_weights": "fusion weights tried for the sequence source",
    "train_sequence.long_tail_head": "share of the most taken items outside which the long tail is judged",
    "train_sequence.left_out": "each user's newest items not trained on: the newest (validation judges it) and the "
                               "steps a learned ranker trains on, so a ranker never reads it on steps it learned",
}

# Fields of the sections that the engine sets itself: not settings.
INTERNAL = frozenset({"recommend.ranker_pool_weights"})


# --- checks beyond the type ----------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    expected: str  # what the value must be, after its type ("an integer" + " >= 1")
    ok: Callable[[Any], bool]


def _at_least(low: float) -> Check:
    return Check(f">= {low}", lambda v: v is None or v >= low)


def _above(low: float) -> Check:
    return Check(f"> {low}", lambda v: v is None or v > low)


def _between(low: float, high: float) -> Check:
    return Check(f"between {low} and {high}", lambda v: low <= v <= high)


def _shown(key: str, value: Any) -> str:
    """A bad value as an error repeats it: a secret one by its kind only."""
    if key in SECRET_SETTINGS:
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]{0,19}://", str(value))
        return f"a value starting {scheme.group(0)!r} (the rest is not shown)" if scheme else "a value not shown here"
    return repr(value)


def _one_of(*choices: str) -> Check:
    return Check("among " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


WEIGHT_NAMES = (*SOURCE_NAMES, "lexical_history", "dense_profile_without_query")

# Settings whose values an error never repeats.
SECRET_SETTINGS = {"database_url", "qdrant_api_key", "openai_api_key"}

CHECKS: dict[str, Check] = {
    "port": _between(1, 65535),
    "database_url": Check("that is a postgresql:// URL (postgresql://user:password@host:5432/database)",
                          lambda v: v is None or v.startswith(("postgresql://", "postgres://"))),
    "device": Check("that is auto, cpu, cuda or cuda:N", is_device_name),
    "max_batch": _at_least(1),
    "max_body_bytes": _at_least(1024),
    "read_rate_limit": _at_least(0),
    "write_rate_limit": _at_least(0),
    "engine_threads": _at_least(1),
    "engine_queue": _at_least(0),
    "explain_timeout_s": _above(0),
    "openai_timeout_s": _above(0),
    "profiles.half_life_days": _above(0),
    "profiles.position_decay": _between(0, 1),
    "profiles.preference_prior": _at_least(0),
    "profiles.max_events": _at_least(1),
    "recommend.weights": Check("with keys among " + ", ".join(WEIGHT_NAMES) + " and values >= 0",
                               lambda v: all(k in WEIGHT_NAMES and w >= 0 for k, w in v.items())),
    # A misspelt request type or source would otherwise be silently ignored.
    "recommend.request_weights": Check(
        "with keys among " + ", ".join(REQUEST_TYPES) + ", each holding weights >= 0 for sources among "
        + ", ".join(SOURCE_NAMES),
        lambda v: all(t in REQUEST_TYPES and isinstance(ws, dict)
                      and all(k in SOURCE_NAMES and w >= 0 for k, w in ws.items()) for t, ws in v.items())),
    "recommend.rrf_k": _at_least(0),
    "recommend.no_opinion_credit": _at_least(0),
    "recommend.min_pool": _at_least(1),
    "recommend.lexical_history_items": _at_least(1),
    "recommend.collaborative_decay": _between(0, 1),
    "recommend.collaborative_proximity": _at_least(0),
    "recommend.collaborative_backward": _at_least(0),
    "recommend.sources": Check("with one or more of " + ", ".join(SOURCE_NAMES),
                               lambda v: bool(v) and all(s in SOURCE_NAMES for s in v)),
    "recommend.rerank_candidates": _at_least(1),
    "recommend.preference_popularity_prior": _at_least(0),
    "recommend.interest_lift": _at_least(0),
    "recommend.diversity": _between(0, 1),
    "recommend.reranked_diversity": _between(0, 1),
    "recommend.diversity_pool": _at_least(1),
    **{f"{section}.{name}": check for section in ("train_reranker", "train_encoder", "train_sequence")
       for name, check in {
        "epochs": _at_least(1), "validation_users": _between(0, 1), "max_validation_users": _at_least(1)}.items()},
    **{f"{section}.positions_per_user": _at_least(1) for section in ("train_reranker", "train_encoder")},
    "train_reranker.max_lists": _at_least(1),
    "train_reranker.cross_encoder": _one_of("auto", "on", "off", "only"),
    "train_reranker.sequence": _one_of("off", "auto", "only"),
    "train_reranker.max_groups": _at_least(0),
    "train_reranker.hard_negatives": _at_least(0),
    "train_reranker.random_negatives": _at_least(0),
    "train_reranker.candidates": _at_least(1),
    "train_encoder.max_pairs": _at_least(1),
    "train_encoder.batch_size": _at_least(1),
    "train_encoder.lr": _above(0),
    "train_encoder.lexical_weights": Check("with one or more values, all > 0", lambda v: bool(v) and min(v) > 0),
    "train_encoder.dense_profile_weights": Check("with one or more values, all >= 0", lambda v: bool(v) and min(v) >= 0),
    "train_encoder.validation_gap": _at_least(1),
    "train_encoder.long_tail_head": _between(0, 1),
    **{f"train_sequence.{name}": _at_least(1) for name in ("patience", "batch_size", "hidden", "layers", "heads",
                                                            "max_length", "max_softmax_items",
                                                            "max_early_stop_users")},
    "train_sequence.lr": _above(0),
    "train_sequence.temperature": _above(0),
    "train_sequence.popularity_correction": _at_least(0),
    "train_sequence.weight_decay": _at_least(0),
    "train_sequence.dropout": _between(0, 1),
    "train_sequence.drop_residual": _between(0, 1),
    "train_sequence.early_stop_users": _between(0, 1),
    "train_sequence.fusion_weights": Check("with one or more values, all > 0", lambda v: bool(v) and min(v) > 0),
    "train_sequence.long_tail_head": _between(0, 1),
    "train_sequence.left_out": _at_least(1),
}


# --- names and types -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Knob:
    """One settable field: ``section`` None for a top-level one."""

    section: str | None
    name: str
    type: Any
    default: Any
    help: str

    @property
    def key(self) -> str:
        return self.name if self.section is None else f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return PREFIX + (self.name if self.section is None else f"{self.section}__{self.name}").upper()


def sections(cls: type = Settings) -> dict[str, type]:
    """The sections of ``cls``: its fields whose type is a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}


def knobs(cls: type = Settings) -> list[Knob]:
    """Every settable field, top-level ones first, then each section's."""
    defaults = cls()
    out: list[Knob] = []
    hints = typing.get_type_hints(cls)
    parts = sections(cls)
    for f in fields(cls):
        if f.name not in parts:
            out.append(Knob(None, f.name, hints[f.name], getattr(defaults, f.name), f.metadata.get("help", "")))
    for section, section_cls in parts.items():
        section_hints = typing.get_type_hints(section_cls)
        default = getattr(defaults, section)
        for f in fields(section_cls):
            key = f"{section}.{f.name}"
            if key not in INTERNAL:
                out.append(Knob(section, f.name, section_hints[f.name], getattr(default, f.name),
                                f.metadata.get("help") or SECTION_HELP.get(key, "")))
    return out


class _Bad(Exception):
    """A value that does not convert; ``args[0]`` says what was expected."""


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _optional_inner(tp: Any) -> Any | None:
    """``X`` of ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def describe(tp: Any) -> str:
    """What a value of ``tp`` looks like, for messages."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{describe(inner)} or none"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_plural(args[0])} (JSON or comma-separated)"
    if origin is dict:
        return f"a table of {_plural(args[1])} (a JSON object in the environment)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}[tp]


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings", Path: "paths"}.get(tp, str(tp))


def type_name(tp: Any) -> str:
    """The type as the README's table shows it."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{type_name(inner)}, optional"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " / ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"table of {type_name(args[1])}"
    return "path" if tp is Path else tp.__name__


def convert(value: Any, tp: Any, from_env: bool) -> Any:
    """``value`` as a ``tp``: from the environment it is a string, from TOML already typed."""
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None or (from_env and inner is not str and str(value).strip().lower() in ("none", "null")):
            return None
        try:
            return convert(value, inner, from_env)
        except _Bad:
            raise _Bad(describe(tp)) from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value in args:
            return value
        raise _Bad(describe(tp))
    if origin is tuple:
        if from_env and isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
            except json.JSONDecodeError:
                raise _Bad(describe(tp)) from None
        if not isinstance(value, (list, tuple)):
            raise _Bad(describe(tp))
        element_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(element_types) != len(value):
            raise _Bad(f"a list of {len(args)} values")
        try:
            return tuple(convert(v, t, from_env) for v, t in zip(value, element_types))
        except _Bad:
            raise _Bad(describe(tp)) from None
    if origin is dict:
        if from_env and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _Bad(describe(tp)) from None
        if not isinstance(value, dict):
            raise _Bad(describe(tp))
        # JSON values are typed already: convert them as TOML's.
        try:
            return {convert(k, args[0], from_env): convert(v, args[1], False) for k, v in value.items()}
        except _Bad:
            raise _Bad(describe(tp)) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _Bad(describe(tp))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _Bad(describe(tp))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise _Bad(describe(tp))
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Bad(describe(tp))
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad(describe(tp))
    raise TypeError(f"settings cannot convert to {tp!r}")


# --- loading -------------------------------------------------------------------------------------

# Settings that were replaced, by key and by variable: what to set instead.
REPLACED = {
    "recommend.preference_interest": "the interest source is an ordinary source now: set its weight as "
                                     "the \"interest\" key of recommend.weights, or leave \"interest\" out of "
                                     "recommend.sources to turn it off",
}
REPLACED.update({PREFIX + key.upper().replace(".", "__"): why for key, why in REPLACED.items()})


def _unknown(label: str, name: str, known: typing.Iterable[str]) -> str:
    if name in REPLACED:
        return f"unknown setting {label}: {REPLACED[name]}"
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown setting {label}" + (f" (did you mean {close[0]}?)" if close else "")


def _load(cls: type, environ: dict[str, str], overrides: dict[str, Any]) -> Settings:
    by_key = {k.key: k for k in knobs(cls)}
    parts = sections(cls)
    top = {k.name for k in by_key.values() if k.section is None}
    # key -> (raw value, where it came from, whether it is an environment string)
    raw: dict[str, tuple[Any, str, bool]] = {}
    errors: list[str] = []

    config_file = environ.get(CONFIG_VARIABLE)
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                document = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SettingsError(f"{CONFIG_VARIABLE}={config_file}: cannot read it: {err}") from None
        for name, value in document.items():
            if name in parts:
                if not isinstance(value, dict):
                    errors.append(f"{name} in {config_file} must be a table ([{name}]), got {value!r}")
                    continue
                for sub, sub_value in value.items():
                    key = f"{name}.{sub}"
                    if key in by_key:
                        raw[key] = (sub_value, f"{key} in {config_file}", False)
                    else:
                        errors.append(_unknown(f"{key!r} in {config_file}", key, by_key))
            elif name in top:
                raw[name] = (value, f"{name} in {config_file}", False)
            else:
                errors.append(_unknown(f"{name!r} in {config_file}", name, by_key))

    env_names = {k.env: k for k in by_key.values()}
    for variable, value in sorted(environ.items()):
        if (not variable.startswith(PREFIX) or variable == CONFIG_VARIABLE or value == ""
                or variable.startswith(FOREIGN_PREFIXES)):
            continue
        knob = env_names.get(variable)
        if knob is not None:
            raw[knob.key] = (value, variable, True)
        elif variable[len(PREFIX):].lower() in parts:
            errors.append(f"{variable} is a section: set {variable}__<FIELD>, e.g. "
                          f"{next(k.env for k in by_key.values() if k.section == variable[len(PREFIX):].lower())}")
        else:
            errors.append(_unknown(variable, variable, env_names))

    for name, value in overrides.items():
        if value is None:
            continue
        if name not in top:
            raise TypeError(f"Settings.from_env() got an unknown override {name!r}")
        raw[name] = (value, name, False)

    values: dict[str, Any] = {}
    for key, (value, label, from_env) in raw.items():
        knob = by_key[key]
        try:
            converted = convert(value, knob.type, from_env)
        except _Bad as bad:
            errors.append(f"{label} must be {bad.args[0]}, got {_shown(key, value)}")
            continue
        check = CHECKS.get(key)
        if check is not None and not check.ok(converted):
            inner = _optional_inner(knob.type)
            what = (f"{describe(knob.type)} {check.expected}" if inner is None
                    else f"{describe(inner)} {check.expected} or none")
            errors.append(f"{label} must be {what}, got {_shown(key, value)}")
            continue
        if isinstance(converted, dict) and isinstance(knob.default, dict):
            converted = {**knob.default, **converted}  # a table names the keys it changes
        values[key] = converted
    if errors:
        raise SettingsError.of(errors)

    defaults = cls()
    kwargs: dict[str, Any] = {name: values[name] for name in top if name in values}
    for section in parts:
        given = {k.name: values[k.key] for k in by_key.values() if k.section == section and k.key in values}
        kwargs[section] = replace(getattr(defaults, section), **given)
    settings = cls(**kwargs)
    if conflicts := settings.conflicts():
        raise SettingsError.of(conflicts)
    return settings


# --- the README's table --------------------------------------------------------------------------

def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(_show(v) for v in value) if value else "[]"  # an empty list, as the environment writes it
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def render_settings_table(cls: type = Settings) -> str:
    """The settings as a Markdown table: name, environment variable, type, default, meaning."""
    rows = ["| Setting | Environment variable | Type | Default | Meaning |", "|---|---|---|---|---|"]
    for k in knobs(cls):
        cells = [f"`{k.key}`", f"`{k.env}`", type_name(k.type), f"`{_show(k.default)}`", k.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_settings_table())
