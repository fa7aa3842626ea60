"""Access control: API keys with scopes, tried on every route of the app's own route table."""

import re
import sqlite3

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from service.access import ACCESS_FILE, SCOPES, AccessKeys
from service.app import CONSOLE_PATH, DOCS_PATH, create_app
from service.cli import main
from service.settings import Settings

# Routes anyone may call, with or without keys; every other route must declare a scope. The web
# console's static pages are public (they send the user's key to the API), and "/" redirects to them.
PUBLIC = ("/health", "/ready", DOCS_PATH, CONSOLE_PATH)


@pytest.fixture
def client(engine, keys, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused"), engine=engine, access_keys=keys)
    with TestClient(app) as c:
        yield c


def route_table(app):
    """(method, path with its parameters filled, the declared scope) for every route the app serves."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods - {"HEAD", "OPTIONS"}:
                path = re.sub(r"\{(\w+)(:\w+)?\}", "x", route.path)
                yield method, path, handler.opt.get("scope")


def test_every_route_declares_a_scope_or_is_public(client):
    missing = [(m, p) for m, p, scope in route_table(client.app)
               if scope is None and not p.startswith(PUBLIC) and p != "/"]
    assert not missing, f"routes without a scope: {missing}"
    assert {scope for _, _, scope in route_table(client.app)} - {None} == set(SCOPES)


def test_every_route_tried_without_a_key_with_a_wrong_key_and_with_each_scope(client, keys):
    by_scope = {scope: keys.create(f"{scope} only", [scope]).secret for scope in SCOPES}
    revoked = keys.create("gone", list(SCOPES))
    keys.revoke(revoked.id)
    tried = 0
    for method, path, scope in route_table(client.app):
        body = {} if method in ("POST", "PUT") else None
        if scope is None:
            assert client.request(method, path).status_code not in (401, 403), (method, path)
            continue
        for headers in ({}, {"Authorization": "Bearer hr_nope_nope"}, {"X-API-Key": revoked.secret},
                        {"Authorization": "Basic " + by_scope[scope]}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["status_code"] == 401 and "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
        for held, secret in by_scope.items():
            for headers in ({"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
                r = client.request(method, path, json=body, headers=headers)
                if held == scope:
                    assert r.status_code not in (401, 403), (method, path, held, r.text)
                else:
                    assert r.status_code == 403, (method, path, held, r.text)
                    assert f"'{scope}' scope" in r.json()["detail"]
                tried += 1
    assert tried >= 18 * len(SCOPES) * 2


def test_keys_are_stored_as_hashes_shown_once_and_rotate_without_downtime(client, keys, tmp_path):
    admin = keys.create("ops", ["admin"]).secret
    auth = {"Authorization": f"Bearer {admin}"}
    r = client.post("/v1/admin/keys", json={"name": "shop", "scopes": ["read", "write"]}, headers=auth)
    assert r.status_code == 201
    shop = r.json()
    assert shop["secret"].startswith("hr_") and shop["scopes"] == ["read", "write"]
    listed = client.get("/v1/admin/keys", headers=auth).json()
    assert {k["id"] for k in listed} == {shop["id"], keys.list()[0].id} and all("secret" not in k for k in listed)
    assert shop["secret"].encode() not in (tmp_path / "access" / ACCESS_FILE).read_bytes()
    with sqlite3.connect(tmp_path / "access" / ACCESS_FILE) as db:
        assert all(shop["secret"] not in str(row) for row in db.execute("SELECT * FROM api_keys"))
    # Rotation: a second key with the same scopes; both work until the old one is revoked.
    new = client.post("/v1/admin/keys", json={"name": "shop", "scopes": ["read", "write"]}, headers=auth).json()
    for secret in (shop["secret"], new["secret"]):
        assert client.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": secret}).status_code == 200
    assert client.delete(f"/v1/admin/keys/{shop['id']}", headers=auth).status_code == 204
    assert client.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": shop["secret"]}).status_code == 401
    assert client.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": new["secret"]}).status_code == 200
    assert client.delete(f"/v1/admin/keys/{shop['id']}", headers=auth).status_code == 404
    # The last admin key cannot be revoked through the API: with no key left, access control is off.
    ops = keys.list()[0].id
    last = client.delete(f"/v1/admin/keys/{ops}", headers=auth)
    assert last.status_code == 409 and "last active admin key" in last.json()["detail"]
    assert client.get("/v1/admin/keys", headers=auth).status_code == 200
    assert client.get("/v1/admin/keys").status_code == 401
    bad = client.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=auth)
    assert bad.status_code == 400 and bad.json()["extra"][0]["key"] == "scopes[0]"


def test_admin_actions_and_forgotten_users_are_audited(client, keys, demo_items):
    admin = keys.create("ops", ["admin", "write"])
    auth = {"Authorization": f"Bearer {admin.secret}"}
    client.post("/v1/events", json={"events": [{"user_id": "u9", "type": "click", "item_id": demo_items[0]["id"]}]},
                headers=auth)
    assert client.delete("/v1/users/u9", headers=auth).json() == {"id": "u9", "forgotten": True, "events_deleted": 1,
                                                                  "models_trained_on_user": []}
    assert client.post("/v1/admin/reload", headers=auth).status_code == 200
    entries = client.get("/v1/admin/audit", headers=auth).json()["entries"]
    # The forgotten user is named as their tombstone names them, by the log's keyed digest.
    digest = client.app.state.engine.log.user_key("u9")
    assert [(e["action"], e["target"], e["key_id"]) for e in entries[:2]] == [
        ("reload models", None, admin.id), ("forget user", f"user key {digest}", admin.id)]
    assert "u9" not in str(entries)
    assert entries[0]["at"] >= entries[1]["at"]


def test_without_keys_access_control_is_off_and_the_docs_declare_the_schemes(client):
    assert client.post("/v1/recommendations", json={"k": 1}).status_code == 200
    doc = client.get(f"{DOCS_PATH}/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    assert doc["paths"]["/v1/recommendations"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_serving_a_public_address_without_keys_is_refused_unless_said_insecure(tmp_path, capsys):
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "without access control" in err and "hybridrec keys create" in err and "--insecure-no-keys" in err


def test_keys_from_the_command_line(tmp_path, capsys):
    assert main(["keys", "create", "--name", "cli", "--scopes", "read", "--data-dir", str(tmp_path)]) == 0
    secret = capsys.readouterr().out.strip()
    keys = AccessKeys(tmp_path)
    caller = keys.authenticate(secret)
    assert caller is not None and caller.scopes == {"read"}
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert caller.key_id in listing and secret not in listing
    assert main(["keys", "rotate", caller.key_id, "--data-dir", str(tmp_path)]) == 0
    rotated = capsys.readouterr().out.strip()
    assert keys.authenticate(rotated).scopes == {"read"} and keys.authenticate(secret) is not None
    assert main(["keys", "revoke", caller.key_id, "--data-dir", str(tmp_path)]) == 0
    assert keys.authenticate(secret) is None and keys.authenticate(rotated) is not None
    assert main(["keys", "create", "--name", "x", "--scopes", "root", "--data-dir", str(tmp_path)]) == 2
    assert [e.action for e in keys.audit_log()] == ["revoke key", "create key", "create key"]
    keys.close()


def test_the_readme_endpoint_table_lists_every_route_with_its_scope(client):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Endpoints"):readme.index("## Access control")]
    documented = {(m, p.split("?")[0], s) for m, p, s in re.findall(r"^\| `(\w+)` \| `([^`]+)` \| (\w+) \|", section, re.M)}
    served = set()
    for route in client.app.routes:
        if isinstance(route, HTTPRoute) and not route.path.startswith(DOCS_PATH):
            for handler in route.route_handlers:
                for method in handler.http_methods - {"HEAD", "OPTIONS"}:
                    path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path).rstrip("/") or "/"
                    served.add((method, path, handler.opt.get("scope") or "public"))
    assert documented == served


def test_keys_in_postgres_are_shared_by_every_instance(postgres_url, tmp_path):
    """With the record in PostgreSQL the keys are there too: a key made on one instance opens the
    others, and revoking it on any instance closes every one of them at once."""
    one, other = AccessKeys(tmp_path / "a", postgres_url), AccessKeys(tmp_path / "b", postgres_url)
    try:
        created = one.create("frontend", "read,write")
        assert other.enabled() and other.authenticate(created.secret).scopes == {"read", "write"}
        other.audit(other.authenticate(created.secret), "keys.revoke", created.id)
        assert other.revoke(created.id) and not other.revoke(created.id)
        assert one.authenticate(created.secret) is None and not one.enabled()
        assert [e.action for e in one.audit_log()] == ["keys.revoke"]
        assert not (tmp_path / "a" / "access.sqlite3").exists()
    finally:
        one.close(); other.close()


def test_keys_in_postgres_survive_the_database_dropping_every_connection(postgres_url, tmp_path):
    """A PostgreSQL restart or failover drops the connections: the next key check reconnects."""
    import psycopg

    keys = AccessKeys(tmp_path / "a", postgres_url)
    try:
        created = keys.create("frontend", "read")
        assert keys.authenticate(created.secret).scopes == {"read"}
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            dropped = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert dropped >= 1
        assert keys.authenticate(created.secret).scopes == {"read"} and keys.enabled()
        assert keys.revoke(created.id) and keys.authenticate(created.secret) is None
    finally:
        keys.close()
