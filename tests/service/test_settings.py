from pathlib import Path

import pytest

from service.settings import Settings


def test_defaults_work_offline():
    s = Settings.from_env({})
    assert (s.data_dir, s.host, s.port, s.qdrant_url) == (Path("data"), "127.0.0.1", 8000, None)


def test_environment_wins_over_file_and_overrides_win_over_both(tmp_path):
    cfg = tmp_path / "hybridrec.toml"
    cfg.write_text('port = 9000\ndata_dir = "/srv/a"\n')
    env = {"HYBRIDREC_CONFIG": str(cfg), "HYBRIDREC_DATA_DIR": "/srv/b", "HYBRIDREC_QDRANT_URL": "http://q:6333"}
    s = Settings.from_env(env)
    assert s.port == 9000 and s.data_dir == Path("/srv/b") and s.qdrant_url == "http://q:6333"
    assert Settings.from_env(env, data_dir=Path("/srv/c")).data_dir == Path("/srv/c")
    assert s.engine_config().qdrant_url == "http://q:6333"


def test_bad_values_say_which_setting(tmp_path):
    with pytest.raises(ValueError, match="HYBRIDREC_PORT"):
        Settings.from_env({"HYBRIDREC_PORT": "eighty"})
    cfg = tmp_path / "c.toml"
    cfg.write_text('prot = 1\n')
    with pytest.raises(ValueError, match="prot"):
        Settings.from_env({"HYBRIDREC_CONFIG": str(cfg)})
