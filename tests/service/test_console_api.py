"""The server side of the web console (issue 21): its static pages, and the API routes it reads
(browse and search, facets, uploads, a user's leaning, trained encoders, the evaluation report)."""

import pytest
from litestar.testing import TestClient

from service.app import CONSOLE_DIR, create_app
from service.settings import Settings


@pytest.fixture
def client(engine, keys, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", max_batch=50), engine=engine, access_keys=keys)
    with TestClient(app) as c:
        yield c


def test_the_console_is_served_without_a_key_and_the_root_redirects_to_it(client, keys):
    keys.create("ops", ["admin"])  # access control on: the pages stay public
    assert (CONSOLE_DIR / "index.html").is_file()
    for path in ("/console", "/console/", "/console/index.html"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
    assert client.get("/console/no-such-file.js").status_code == 404
    assert client.get("/console/..%2Fapp.py").status_code == 404
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/console/"
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console")]
