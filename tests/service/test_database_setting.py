"""The database setting: a data directory whose record is in PostgreSQL is never opened without it,
and its password is never printed."""

import pytest

from retrieval.storage.event_log import RECORD_FILE, DatabaseUnavailable, database_where, without_secrets
from retrieval.storage.records import parse_event
from service.access import AccessKeys
from service.cli import main
from service.settings import Settings, SettingsError


def test_a_data_directory_on_postgresql_is_refused_without_the_database_url(make_engine, postgres_url, tmp_path,
                                                                            capsys, monkeypatch):
    data_dir = tmp_path / "d"
    engine = make_engine(data_dir=data_dir, database_url=postgres_url)
    engine.log.append([parse_event({"user_id": "carol", "type": "click", "item_id": "nothing-yet"}, 0.0)])
    engine.close()
    assert (data_dir / RECORD_FILE).is_file()
    monkeypatch.delenv("HYBRIDREC_DATABASE_URL", raising=False)
    # Without the setting, this used to open an empty SQLite log and say "nothing to forget".
    assert main(["forget-user", "carol", "--data-dir", str(data_dir)]) == 2
    said = capsys.readouterr().err
    assert "keeps its events, users and keys in the PostgreSQL database at" in said and "HYBRIDREC_DATABASE_URL" in said
    assert main(["keys", "create", "--name", "ops", "--scopes", "admin", "--data-dir", str(data_dir)]) == 2
    assert not (data_dir / "events.sqlite3").exists() and not (data_dir / "access.sqlite3").exists()
    with pytest.raises(DatabaseUnavailable):
        AccessKeys(data_dir)
    # With it, everything is where it was.
    monkeypatch.setenv("HYBRIDREC_DATABASE_URL", postgres_url)
    assert main(["forget-user", "carol", "--data-dir", str(data_dir)]) == 0
    assert "forgot 'carol': 1 events" in capsys.readouterr().out


def test_a_database_password_is_never_printed():
    url = "postgresql://app:S3cretPW@db.internal:5433/recs"
    assert database_where(url) == "db.internal:5433/recs"
    driver_said = f'connection failed: missing "=" after "{url}" in connection info string'
    shown = str(DatabaseUnavailable.at(url, RuntimeError(driver_said)))
    assert "S3cretPW" not in shown and "db.internal:5433/recs" in shown
    assert without_secrets("password authentication failed (password S3cretPW)", url).count("S3cretPW") == 0
    # A URL psycopg cannot read: its words may quote any part of it, the password included.
    for unreadable, driver_said in (("postgresql://app:S3c%zzret@db/recs", 'invalid percent-encoded token: "S3c%zzret"'),
                                    ("postgresql://app:S3c ret@db/recs", 'unexpected spaces found in "S3c ret"')):
        shown = str(DatabaseUnavailable.at(unreadable, RuntimeError(driver_said)))
        assert "S3c" not in shown and "percent-encoded" in shown
    for bad in ("mysql://app:S3cretPW@db/recs", "postgresql//app:S3cretPW@db/recs", "password=S3cretPW host=db"):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({"HYBRIDREC_DATABASE_URL": bad})
        assert "S3cretPW" not in str(err.value) and "postgresql://" in str(err.value)


def test_device_names_are_checked_with_the_settings():
    with pytest.raises(SettingsError, match="HYBRIDREC_DEVICE must be .* auto, cpu, cuda or cuda:N, got 'gpu'"):
        Settings.from_env({"HYBRIDREC_DEVICE": "gpu"})
    assert Settings.from_env({"HYBRIDREC_DEVICE": "cuda:1"}).device == "cuda:1"


def test_a_url_that_never_connected_does_not_mark_the_directory(tmp_path):
    data_dir = tmp_path / "d"
    with pytest.raises(DatabaseUnavailable):
        AccessKeys(data_dir, "postgresql://app:secret@127.0.0.1:1/nothing")  # a typo: nothing listens there
    assert not (data_dir / RECORD_FILE).exists()
    AccessKeys(data_dir).close()  # the directory is still the SQLite one it was
    (data_dir / RECORD_FILE).write_text("[1, 2]")
    with pytest.raises(DatabaseUnavailable, match="cannot be read"):
        AccessKeys(data_dir)
