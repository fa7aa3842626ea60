"""Schemathesis against the service's own OpenAPI document: every operation, with an admin key so
every route is reachable. No answer is a 5xx, every answer is one the document declares (status,
content type, body schema), and nothing invalid is written."""

from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from retrieval.engine import Engine, EngineConfig
from retrieval.limits import TEXT_MAX_CHARS
from retrieval.storage.records import EVENT_TYPES, check_id, check_text, parse_item, parse_preferences
from retrieval.storage.vector_store import scroll_all
from service.access import ADMIN, READ, WRITE, AccessKeys
from service.app import create_app
from service.settings import Settings

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
MAX_EXAMPLES = 10  # per operation and generation mode
ITEM_FIELDS = ("id", "title", "description", "brand", "categories", "price", "attributes")


@dataclass
class Fuzzed:
    engine: Engine
    key: str  # an admin key: every route is reachable
    app: Litestar


@pytest.fixture(scope="module")
def fuzzed(encoder, demo_points, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz")
    engine = Engine.open(EngineConfig(data_dir=data_dir / "data"), encoder=encoder)
    engine.catalogue.write(demo_points)
    keys = AccessKeys(data_dir / "access")
    key = keys.create("fuzz", [READ, WRITE, ADMIN]).secret
    # No rate limits: requests come back to back, and how fast is the machine's, not the schema's, business.
    settings = Settings(data_dir=data_dir / "data", max_batch=20, read_rate_limit=0, write_rate_limit=0)
    app = create_app(settings, engine=engine, access_keys=keys)
    yield Fuzzed(engine, key, app)
    keys.close()
    engine.close()


@pytest.fixture(scope="module")
def api(fuzzed):
    # A reindex re-encodes the whole catalogue in a background thread (and refuses item writes with
    # 409 while it runs): too slow for a fuzz run, and its input rule has its own tests.
    return schemathesis.openapi.from_asgi("/docs/openapi.json", fuzzed.app).exclude(
        method="POST", path="/v1/admin/reindex")


def assert_nothing_invalid_stored(engine: Engine) -> None:
    """Every stored item and user still passes the rules a write is judged by."""
    for page in scroll_all(engine.store, engine.catalogue.collection, batch=1024):
        for point in page:
            payload = {k: point.payload[k] for k in ITEM_FIELDS if k in point.payload}
            assert parse_item(payload).id == point.id
    for user_id in engine.log.user_ids():
        check_id("user_id", user_id)
        stated = engine.log.preferences(user_id)
        if stated is not None:
            assert parse_preferences(stated.preferences, stated.attributes) == (stated.preferences, stated.attributes)
        for event in engine.log.user_events(user_id):
            assert event.type in EVENT_TYPES
            if event.item_id is not None:
                check_id("item_id", event.item_id)
            if event.query is not None:
                check_text("query", event.query, TEXT_MAX_CHARS)


# Bounded so the suite stays fast; no shrinking (a failure prints its request as it was sent), and
# a fixed seed so a run is repeatable.
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def test_every_operation_answers_as_documented(api, fuzzed):
    operations = [result.ok() for result in api.get_all_operations()]
    documented = [(m, path) for path, ops in fuzzed.app.openapi_schema.to_schema()["paths"].items() for m in ops]
    assert len(operations) == len(documented) - 1  # all but the reindex
    headers = {"Authorization": f"Bearer {fuzzed.key}"}
    failures = []  # every operation runs, so one run reports everything it found
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                if case.method.upper() != "GET" and response.status_code < 300:
                    assert_nothing_invalid_stored(fuzzed.engine)

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without input has no invalid one
            except (Exception, BaseExceptionGroup) as err:  # collected, reported below
                failures.append(f"{operation.label} ({mode.value}): {err}")
    assert not failures, "\n\n".join(failures)
