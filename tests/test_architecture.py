"""The import rule, read from the code itself: serving never imports training or evaluation, the
engine never imports the service, and controllers share through the dependency module only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVING = ("retrieval.storage", "retrieval.state", "retrieval.query", "retrieval.pipeline", "retrieval.ranking",
           "retrieval.explain", "retrieval.engine", "retrieval.registry", "retrieval.reindex", "retrieval.limits")
OFFLINE = ("retrieval.training", "retrieval.evaluation", "encoders.training")
# The HTTP app reads the trainers' settings (service/settings.py), never their code.
SERVICE_SERVING = ("service.app", "service.api", "service.settings", "service.explanation")
SETTINGS_ONLY = ("retrieval.training.settings",)
ENGINE = ("encoders", "retrieval", "prompts")
# What controllers may import from service.api: shared pieces, not each other.
SHARED_API = ("service.api.dependencies", "service.api.errors", "service.api.schemas")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path, name: str | None = None) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too); relative
    imports are resolved against the file's package (``name``: the file's module name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = (name or module_name(path)).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[:len(package) - (node.level - 1)]
                module = ".".join(package + ([module] if module else []))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def modules(*packages: str) -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if ".venv" not in p.parts and within(module_name(p), packages))


def test_every_engine_module_is_covered_by_the_rule():
    """A new package under retrieval/ must be placed on one side of the rule."""
    for path in modules("retrieval"):
        name = module_name(path)
        assert name == "retrieval" or within(name, SERVING + OFFLINE), f"{name}: serving or offline?"


@pytest.mark.parametrize("path", modules(*SERVING), ids=module_name)
def test_serving_never_imports_training_or_evaluation(path):
    bad = sorted(name for name in imports(path) if within(name, OFFLINE))
    assert not bad, f"{module_name(path)} (serving) imports {bad}"


@pytest.mark.parametrize("path", modules(*SERVICE_SERVING), ids=module_name)
def test_the_http_app_imports_no_training_or_evaluation_code(path):
    bad = sorted(name for name in imports(path) if within(name, OFFLINE) and not within(name, SETTINGS_ONLY))
    assert not bad, f"{module_name(path)} imports {bad}"


def test_the_trainers_settings_load_no_training_code():
    bad = sorted(name for name in imports(ROOT / "retrieval" / "training" / "settings.py")
                 if within(name, OFFLINE) or within(name, ("torch", "sklearn")))
    assert not bad, f"retrieval.training.settings imports {bad}"


@pytest.mark.parametrize("path", modules(*ENGINE), ids=module_name)
def test_the_engine_never_imports_the_service(path):
    bad = sorted(name for name in imports(path) if within(name, ("service",)))
    assert not bad, f"{module_name(path)} imports {bad}"


@pytest.mark.parametrize("path", modules("service.api"), ids=module_name)
def test_controllers_share_through_the_dependency_module_not_each_other(path):
    bad = sorted(name for name in imports(path)
                 if within(name, ("service.api",)) and not within(name, SHARED_API) and name != "service.api")
    assert not bad, f"{module_name(path)} imports another controller: {bad}"


def loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``code`` in the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import tempfile\nfrom service.app import create_app\nfrom service.settings import Settings\n"
    "create_app(Settings(data_dir=tempfile.mkdtemp()))",
    "from service.cli import build_parser\nbuild_parser()",
], ids=["the HTTP app", "the CLI's parser"])
def test_serving_processes_load_no_training_or_evaluation_code(code):
    """What actually loads, whatever the import statements look like: serving a request or
    parsing a command line (before a command runs) brings in no trainer and no evaluation."""
    bad = [m for m in loaded_by(code) if within(m, OFFLINE) and not within(m, SETTINGS_ONLY)
           and m != "retrieval.training"]
    assert not bad, f"loaded {bad}"


def test_the_rule_catches_a_forbidden_import(tmp_path):
    """The checker itself: a serving module importing a trainer is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from retrieval.training.encoder import train_encoder\n")
    assert any(within(name, OFFLINE) for name in imports(sample))
    # A relative import is resolved against the package it is written in.
    sample.write_text("from ..training import encoder\n")
    assert "retrieval.training.encoder" in imports(sample, name="retrieval.pipeline.sample")
