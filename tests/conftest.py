"""Shared fixtures: one real encoder per session, engines on fresh data directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from encoders import BiEncoder
from retrieval.engine import Engine, EngineConfig
from service.cli import demo_catalogue_path

# The model tests run on CPU in CI; HYBRIDREC_TEST_DEVICE=cuda runs the same tests on a GPU machine.
TEST_DEVICE = os.environ.get("HYBRIDREC_TEST_DEVICE", "cpu")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon-office"


@pytest.fixture(scope="session")
def encoder() -> BiEncoder:
    return BiEncoder(device=TEST_DEVICE)


@pytest.fixture(scope="session")
def demo_items() -> list[dict]:
    with open(demo_catalogue_path(), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="session")
def demo_points(encoder, demo_items, tmp_path_factory):
    """The demo catalogue encoded once; engines load these instead of re-encoding per test."""
    engine = Engine.open(EngineConfig(data_dir=tmp_path_factory.mktemp("encode")), encoder=encoder)
    items, rejected = engine.catalogue.validate(demo_items)
    assert not rejected
    points = engine.catalogue.encode(items)
    engine.close()
    return points


@pytest.fixture
def make_engine(encoder, tmp_path):
    """Open (or reopen) an engine on this test's data directory."""
    opened: list[Engine] = []

    def make(data_dir: Path | None = None, **config) -> Engine:
        engine = Engine.open(EngineConfig(data_dir=data_dir or tmp_path / "data", **config), encoder=encoder)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        try:
            engine.close()
        except Exception:
            pass


@pytest.fixture
def engine(make_engine, demo_points):
    """An engine holding the demo catalogue (360 items over 12 categories), no events."""
    eng = make_engine()
    eng.catalogue.write(demo_points)
    return eng


def category_of(payload: dict) -> str:
    return payload["categories"][-1]


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session, from the machine's binaries; skips (or fails, where
    ``POSTGRES_TESTS_REQUIRED`` is set, as in CI) when there are none."""
    from tests.postgres_server import PostgresServer, postgres_bindir

    if postgres_bindir() is None:
        if os.environ.get("POSTGRES_TESTS_REQUIRED"):
            pytest.fail("POSTGRES_TESTS_REQUIRED is set but this machine has no PostgreSQL server (initdb, pg_ctl)")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres_server.create_database(name)
