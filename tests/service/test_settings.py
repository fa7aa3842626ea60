from pathlib import Path

import pytest

from service.settings import Settings, convert


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


def test_max_batch_defaults_to_the_engine_limit():
    from retrieval.limits import MAX_BATCH

    assert Settings.from_env({}).max_batch == Settings().max_batch == MAX_BATCH


def test_nested_environment_values_are_converted_by_type():
    s = Settings.from_env({
        "HYBRIDREC_PROFILES__MAX_EVENTS": "50",
        "HYBRIDREC_PROFILES__HALF_LIFE_DAYS": "7",
        "HYBRIDREC_RECOMMEND__DIVERSITY": "0.2",
        "HYBRIDREC_RECOMMEND__WEIGHTS": '{"lexical": 0.5, "lexical_history": 2}',
        "HYBRIDREC_RECOMMEND__SOURCES": "lexical, dense_query",
        "HYBRIDREC_TRAIN_RERANKER__CANDIDATES": "20",
        "HYBRIDREC_TRAIN_ENCODER__VALIDATION_GAP": "2",
        "HYBRIDREC_TRAIN_ENCODER__LEXICAL_WEIGHTS": "[1, 0.25]",
        "HYBRIDREC_TEST_DEVICE": "cuda",  # the test suite's own variable: not a setting, not an error
    })
    assert s.profiles.max_events == 50 and s.profiles.half_life_days == 7.0
    assert isinstance(s.profiles.half_life_days, float) and s.profiles.position_decay == 0.5  # others keep defaults
    assert s.recommend.diversity == 0.2
    # A table names the keys it changes; the others keep their defaults.
    assert s.recommend.weights == {"dense_query": 1.0, "dense_profile": 0.5, "lexical": 0.5, "collaborative": 1.0,
                                   "popular": 1.0, "interest": 4.0, "lexical_history": 2.0}
    assert s.recommend.sources == ("lexical", "dense_query")
    assert s.train_reranker.candidates == 20 and s.train_reranker.max_lists == 6000
    assert s.train_encoder.validation_gap == 2 and s.train_encoder.lexical_weights == (1.0, 0.25)
    assert Settings.from_env({"HYBRIDREC_TRAIN_RERANKER__CANDIDATES": "none"}).train_reranker.candidates is None
    # Booleans from the environment read as people write them.
    assert [convert(v, bool, True) for v in ("yes", "true", "1", "no", "false", "0")] == [True] * 3 + [False] * 3


def test_toml_tables_set_sections_and_the_environment_wins(tmp_path):
    cfg = tmp_path / "hybridrec.toml"
    cfg.write_text('max_batch = 10\n\n[recommend]\ndiversity = 0.1\nsources = ["lexical"]\n\n'
                   '[recommend.weights]\ncollaborative = 0\n\n[train_reranker]\nmax_lists = 100\nepochs = 2\n')
    s = Settings.from_env({"HYBRIDREC_CONFIG": str(cfg), "HYBRIDREC_TRAIN_RERANKER__EPOCHS": "3"})
    assert s.max_batch == 10 and s.recommend.diversity == 0.1 and s.recommend.sources == ("lexical",)
    assert s.recommend.weights["collaborative"] == 0.0 and s.recommend.weights["lexical"] == 1.0
    assert (s.train_reranker.max_lists, s.train_reranker.epochs) == (100, 3)


def test_bad_nested_values_name_the_variable_the_type_and_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__DIVERSITY must be a number.*got 'lots'"):
        Settings.from_env({"HYBRIDREC_RECOMMEND__DIVERSITY": "lots"})
    with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__DIVERSITY must be a number between 0 and 1"):
        Settings.from_env({"HYBRIDREC_RECOMMEND__DIVERSITY": "1.5"})
    with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__WEIGHTS must be a table of numbers.*values >= 0"):
        Settings.from_env({"HYBRIDREC_RECOMMEND__WEIGHTS": '{"lexical": -1}'})
    with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__WEIGHTS must be a table"):
        Settings.from_env({"HYBRIDREC_RECOMMEND__WEIGHTS": "lexical=1"})
    # Request weights name request types and sources; a misspelt one is not silently ignored.
    for bad in ('{"histroy": {"lexical": 2}}', '{"history": {"lexcal": 2}}', '{"history": {"lexical": -1}}'):
        with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__REQUEST_WEIGHTS .*keys among history, session"):
            Settings.from_env({"HYBRIDREC_RECOMMEND__REQUEST_WEIGHTS": bad})
    good = Settings.from_env({"HYBRIDREC_RECOMMEND__REQUEST_WEIGHTS": '{"session": {"interest": 0, "lexical": 2}}'})
    assert good.recommend.request_weights == {"session": {"interest": 0.0, "lexical": 2.0}}
    with pytest.raises(ValueError, match=r"HYBRIDREC_TRAIN_RERANKER__SEQUENCE must be a string among 'off', 'auto', 'only'"):
        Settings.from_env({"HYBRIDREC_TRAIN_RERANKER__SEQUENCE": "always"})
    with pytest.raises(ValueError, match=r"HYBRIDREC_RECOMMEND__SOURCES .*one or more of"):
        Settings.from_env({"HYBRIDREC_RECOMMEND__SOURCES": "lexical,telepathy"})
    with pytest.raises(Exception, match="true or false"):
        convert("maybe", bool, True)
    with pytest.raises(ValueError, match=r"HYBRIDREC_PORT must be an integer between 1 and 65535, got '0'"):
        Settings.from_env({"HYBRIDREC_PORT": "0"})
    with pytest.raises(ValueError, match=r"HYBRIDREC_QUERY_PARSER must be one of 'rules', 'model'"):
        Settings.from_env({"HYBRIDREC_QUERY_PARSER": "llm"})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train_reranker]\nmax_lists = "many"\n')
    with pytest.raises(ValueError, match=r"train_reranker.max_lists in .*c.toml must be an integer, got 'many'"):
        Settings.from_env({"HYBRIDREC_CONFIG": str(cfg)})


def test_settings_that_cannot_go_together_stop_serve_before_it_starts(tmp_path, monkeypatch, capsys):
    from service.cli import main

    for env, said in ((("HYBRIDREC_QUERY_PARSER", "model"),), "QUERY_PARSER=model needs a model"), \
                     ((("HYBRIDREC_EXPLAIN_BACKEND", "openai"),), "needs HYBRIDREC_OPENAI_BASE_URL"):
        with pytest.raises(ValueError, match=said):
            Settings.from_env(dict(env))
        for name, value in env:
            monkeypatch.setenv(name, value)
        # With several workers each one failed on it after the banner, and was restarted for ever.
        assert main(["serve", "--workers", "2", "--data-dir", str(tmp_path / "d")]) == 2
        assert said in capsys.readouterr().err
        for name, _ in env:
            monkeypatch.delenv(name)


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ValueError) as err:
        Settings.from_env({"HYBRIDREC_PORT": "x", "HYBRIDREC_PROFILES__MAX_EVENTS": "0"})
    assert "HYBRIDREC_PORT" in str(err.value) and "HYBRIDREC_PROFILES__MAX_EVENTS" in str(err.value)


@pytest.mark.parametrize("environ, toml, named", [
    ({"HYBRIDREC_RECOMENDD__DIVERSITY": "0.2"}, None, "HYBRIDREC_RECOMENDD__DIVERSITY"),
    ({"HYBRIDREC_RECOMMEND__DIVERSTY": "0.2"}, None, "did you mean HYBRIDREC_RECOMMEND__DIVERSITY"),
    ({"HYBRIDREC_RECOMMEND__RANKER_POOL_WEIGHTS": "{}"}, None, "RANKER_POOL_WEIGHTS"),  # the engine's, not a setting
    ({"HYBRIDREC_PROT": "1"}, None, "did you mean HYBRIDREC_PORT"),
    ({"HYBRIDREC_RECOMMEND": "{}"}, None, "HYBRIDREC_RECOMMEND is a section"),
    ({}, "[recomend]\ndiversity = 0.2\n", "recomend"),
    ({}, "[recommend]\ndiverstiy = 0.2\n", "did you mean recommend.diversity"),
    ({}, "recommend = 0.2\n", r"recommend in .* must be a table"),
    # A replaced setting says what to set instead.
    ({"HYBRIDREC_RECOMMEND__PREFERENCE_INTEREST": "2"}, None, "the \"interest\" key of recommend.weights"),
    ({}, "[recommend]\npreference_interest = 2\n", "the \"interest\" key of recommend.weights"),
])
def test_unknown_sections_and_keys_fail(tmp_path, environ, toml, named):
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        environ = {**environ, "HYBRIDREC_CONFIG": str(tmp_path / "c.toml")}
    with pytest.raises(ValueError, match=named):
        Settings.from_env(environ)


def test_the_engine_built_from_settings_uses_the_configured_sections():
    s = Settings.from_env({"HYBRIDREC_RECOMMEND__DIVERSITY": "0.2", "HYBRIDREC_RECOMMEND__WEIGHTS": '{"lexical": 0.5}',
                           "HYBRIDREC_PROFILES__MAX_EVENTS": "20"})
    config = s.engine_config()
    assert config.recommend.diversity == 0.2 and config.recommend.weights["lexical"] == 0.5
    assert config.recommend.weights["dense_profile"] == 0.5 and config.profiles.max_events == 20


def test_every_setting_has_a_meaning_and_a_type_the_loader_reads():
    from service.settings import SECTION_HELP, describe, knobs

    all_knobs = knobs()
    assert [k.key for k in all_knobs if not k.help] == []
    assert sorted(set(SECTION_HELP) - {k.key for k in all_knobs}) == []  # no help for a field that is gone
    for k in all_knobs:
        describe(k.type)  # raises for a type the loader cannot convert


def test_the_readme_table_is_current():
    from service.settings import render_settings_table

    readme = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    start = readme.index("<!-- settings-table -->\n") + len("<!-- settings-table -->\n")
    assert readme[start:readme.index("<!-- /settings-table -->")] == render_settings_table(), (
        "docs/configuration.md's settings table is stale: paste `python -m service.settings` between its markers")


def test_cli_defaults_are_the_settings_and_flags_win():
    from retrieval.training.settings import EncoderTrainingSettings, TrainingSettings
    from service.cli import build_parser

    defaults = build_parser(Settings.from_env({}))
    args = defaults.parse_args(["train", "reranker"])
    r = TrainingSettings()
    assert (args.epochs, args.max_lists, args.max_groups, args.cross_encoder, args.device, args.seed) == (
        r.epochs, r.max_lists, r.max_groups, r.cross_encoder, r.device, r.seed)
    args = defaults.parse_args(["train", "encoder"])
    e = EncoderTrainingSettings()
    assert (args.max_pairs, args.validation_gap, args.epochs) == (e.max_pairs, e.validation_gap, e.epochs)
    args = defaults.parse_args(["evaluate", "--dataset", "d", "--out", "o"])
    assert (args.epochs, args.reranker_lists, args.reranker_groups, args.encoder_pairs, args.encoder_epochs) == (
        r.epochs, r.max_lists, r.max_groups, e.max_pairs, e.epochs)

    configured = build_parser(Settings.from_env({"HYBRIDREC_TRAIN_RERANKER__MAX_LISTS": "100",
                                                 "HYBRIDREC_TRAIN_ENCODER__MAX_PAIRS": "500"}))
    assert configured.parse_args(["train", "reranker"]).max_lists == 100
    assert configured.parse_args(["train", "reranker", "--max-lists", "7"]).max_lists == 7
    assert configured.parse_args(["evaluate", "--dataset", "d", "--out", "o"]).reranker_lists == 100
    assert configured.parse_args(["train", "encoder"]).max_pairs == 500
    assert configured.parse_args(["train", "encoder", "--max-pairs", "9"]).max_pairs == 9


def test_a_source_list_that_leaves_out_the_interest_source_is_warned_about_at_start(tmp_path):
    import logging
    from dataclasses import replace

    from service.app import create_app

    class Kept(logging.Handler):  # the app's logging set-up replaces the root's handlers (caplog's)
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    kept = Kept()
    logging.getLogger("hybridrec.service").addHandler(kept)
    try:
        create_app(Settings(data_dir=tmp_path))
        assert not any("interest" in line for line in kept.lines)
        recommend = Settings().recommend
        create_app(Settings(data_dir=tmp_path, recommend=replace(recommend, sources=("lexical", "collaborative"))))
        [warned] = [line for line in kept.lines if "interest" in line]
        assert warned.startswith('recommend.sources leaves out "interest"') and 'add "interest"' in warned
        kept.lines.clear()
        create_app(Settings(data_dir=tmp_path, recommend=replace(recommend, sources=("lexical",),
                                                                 weights={**recommend.weights, "interest": 0.0})))
        assert not any("interest" in line for line in kept.lines)  # turned off on purpose
    finally:
        logging.getLogger("hybridrec.service").removeHandler(kept)
