"""Settings table, loading with precedence, errors, and `config set` (clinvk_lib/config.py)."""

from __future__ import annotations

import os
import stat

import pytest

from clinvk_lib import config
from clinvk_lib.config import ConfigError, load, parse_value, set_in_file


@pytest.fixture
def home(tmp_path):
    """An empty CLINVK_HOME and the env that points at it (nothing from the real host)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def env_for(home, **extra):
    env = {"CLINVK_HOME": str(home), "HOME": str(home.parent)}
    env.update(extra)
    return env


def write_config(home, text):
    path = home / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the table ---------------------------------------------------------------------------

def test_every_key_appears_once():
    keys = [s.key for s in config.SETTINGS]
    assert len(keys) == len(set(keys))


def test_every_default_passes_its_own_type():
    for row in config.SETTINGS:
        value = row.default_value()
        assert row.kind.check(value) == value, row.key


def test_env_var_name_is_derived_from_the_key():
    assert config.setting("server.port").env_var == "CLINVK_SERVER_PORT"
    assert config.setting("backends.claude.model").env_var == "CLINVK_BACKENDS_CLAUDE_MODEL"
    assert config.setting("default_backend").env_var == "CLINVK_DEFAULT_BACKEND"


def test_max_concurrent_runs_default_grows_with_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert config.setting("server.max_concurrent_runs").default_value() == 32
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert config.setting("server.max_concurrent_runs").default_value() == 4


# --- defaults and precedence -----------------------------------------------------------------

def test_defaults_apply_without_file_env_or_flags(home):
    cfg = load(env=env_for(home))
    assert cfg.get("server.port") == 8080
    assert cfg.get("session.auto_resume") is False
    assert cfg.get("output.format") == "text"
    assert cfg.get("server.blocked_workdir_prefixes") == ["/etc", "/proc", "/sys", "/dev",
                                                          "/boot", "/root"]
    assert cfg.source("server.port") == "default"


def test_file_overrides_default(home):
    write_config(home, "server:\n  port: 9000\n")
    cfg = load(env=env_for(home))
    assert (cfg.get("server.port"), cfg.source("server.port")) == (9000, "file")


def test_env_overrides_file(home):
    write_config(home, "server:\n  port: 9000\n")
    cfg = load(env=env_for(home, CLINVK_SERVER_PORT="9100"))
    assert (cfg.get("server.port"), cfg.source("server.port")) == (9100, "env")


def test_flag_overrides_env(home):
    cfg = load(env=env_for(home, CLINVK_SERVER_PORT="9100"), flags={"server.port": 9200})
    assert (cfg.get("server.port"), cfg.source("server.port")) == (9200, "flag")


def test_flag_given_as_none_means_not_given(home):
    cfg = load(env=env_for(home, CLINVK_SERVER_PORT="9100"), flags={"server.port": None})
    assert cfg.get("server.port") == 9100


def test_flag_given_as_text_is_parsed_like_the_env(home):
    cfg = load(env=env_for(home), flags={"server.port": "9300"})
    assert cfg.get("server.port") == 9300


def test_file_section_keeps_defaults_for_keys_it_omits(home):
    write_config(home, "server:\n  port: 9000\n")
    assert load(env=env_for(home)).get("server.host") == "127.0.0.1"


def test_empty_value_in_file_keeps_the_default(home):
    write_config(home, "server:\n  port:\nsession:\n")
    cfg = load(env=env_for(home))
    assert (cfg.get("server.port"), cfg.source("server.port")) == (8080, "default")


def test_quoted_number_in_file_is_read_like_env_text(home):
    # The Go clinvoker's `config set` wrote numbers as strings.
    write_config(home, 'session:\n  retention_days: "7"\n')
    assert load(env=env_for(home)).get("session.retention_days") == 7


# --- environment -------------------------------------------------------------------------

def test_nested_keys_have_env_vars(home):
    cfg = load(env=env_for(home, CLINVK_BACKENDS_CLAUDE_MODEL="opus",
                           CLINVK_UNIFIED_FLAGS_DRY_RUN="true"))
    assert cfg.get("backends.claude.model") == "opus"
    assert cfg.get("unified_flags.dry_run") is True


def test_list_env_vars_are_comma_separated(home):
    cfg = load(env=env_for(home, CLINVK_SERVER_TRUSTED_PROXIES=" 10.0.0.1, 192.168.0.0/16 ,"))
    assert cfg.get("server.trusted_proxies") == ["10.0.0.1", "192.168.0.0/16"]


def test_clinvk_backend_is_an_alias_of_default_backend(home):
    assert load(env=env_for(home, CLINVK_BACKEND="gemini")).get("default_backend") == "gemini"


def test_derived_name_wins_over_its_alias(home):
    env = env_for(home, CLINVK_BACKEND="gemini", CLINVK_DEFAULT_BACKEND="codex")
    assert load(env=env).get("default_backend") == "codex"


def test_clinvk_api_keys_sets_server_api_keys(home):
    cfg = load(env=env_for(home, CLINVK_API_KEYS="k1,k2"))
    assert (cfg.get("server.api_keys"), cfg.source("server.api_keys")) == (["k1", "k2"], "env")


def test_empty_env_var_counts_as_unset(home):
    write_config(home, "server:\n  port: 9000\n")
    assert load(env=env_for(home, CLINVK_SERVER_PORT="")).get("server.port") == 9000


def test_bad_env_value_names_the_variable_key_and_expectation(home):
    with pytest.raises(ConfigError) as caught:
        load(env=env_for(home, CLINVK_SERVER_PORT="abc"))
    assert str(caught.value) == ("environment variable CLINVK_SERVER_PORT: server.port: "
                                 "expected an integer from 1 to 65535, got 'abc'")


# --- file location -----------------------------------------------------------------------

def test_default_file_missing_is_fine(home):
    cfg = load(env=env_for(home))
    assert cfg.path == str(home / "config.yaml")
    assert cfg.loaded is False


def test_explicit_path_missing_is_an_error(home):
    missing = str(home / "nope.yaml")
    with pytest.raises(ConfigError) as caught:
        load(path=missing, env=env_for(home))
    assert str(caught.value) == "config file not found: %s (named by --config)" % missing


def test_clinvk_config_missing_is_an_error(home):
    with pytest.raises(ConfigError, match=r"not found: .*nope.yaml \(named by CLINVK_CONFIG\)"):
        load(env=env_for(home, CLINVK_CONFIG=str(home / "nope.yaml")))


def test_path_argument_wins_over_clinvk_config(home, tmp_path):
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text("server:\n  port: 7001\n")
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 7002\n")
    cfg = load(path=str(chosen), env=env_for(home, CLINVK_CONFIG=str(other)))
    assert (cfg.path, cfg.get("server.port")) == (str(chosen), 7001)


def test_clinvk_config_wins_over_the_default_file(home, tmp_path):
    write_config(home, "server:\n  port: 7000\n")
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 7002\n")
    assert load(env=env_for(home, CLINVK_CONFIG=str(other))).get("server.port") == 7002


def test_home_dir_defaults_to_dot_clinvk_under_home(tmp_path):
    assert config.home_dir({"HOME": str(tmp_path)}) == str(tmp_path / ".clinvk")


def test_home_dir_honours_clinvk_home(tmp_path):
    assert config.home_dir({"CLINVK_HOME": str(tmp_path / "x")}) == str(tmp_path / "x")


# --- file errors -------------------------------------------------------------------------

def test_bad_file_value_names_file_line_key_and_expectation(home):
    path = write_config(home, "# c\nserver:\n  host: x\n  port: abc\n")
    with pytest.raises(ConfigError) as caught:
        load(env=env_for(home))
    assert str(caught.value) == ("config %s line 4: server.port: expected an integer from 1 "
                                 "to 65535, got 'abc'" % path)


def test_out_of_range_number_is_an_error(home):
    write_config(home, "server:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"line 2: server.port: expected an integer from 1 "
                                          r"to 65535, got 70000"):
        load(env=env_for(home))


def test_unknown_choice_lists_the_choices(home):
    write_config(home, "output:\n  format: yaml\n")
    with pytest.raises(ConfigError, match=r"output.format: expected one of text, json, "
                                          r"stream-json, got 'yaml'"):
        load(env=env_for(home))


def test_a_switch_word_in_the_file_is_read_like_the_same_text_in_the_environment(home):
    write_config(home, "parallel:\n  fail_fast: yes\n")
    assert load(env=env_for(home)).get("parallel.fail_fast") is True
    write_config(home, "parallel:\n  fail_fast: maybe\n")
    with pytest.raises(ConfigError, match=r"parallel.fail_fast: expected true or false"):
        load(env=env_for(home))


def test_number_where_a_string_belongs_asks_for_quotes(home):
    write_config(home, "backends:\n  claude:\n    model: 4\n")
    with pytest.raises(ConfigError, match=r"line 3: backends.claude.model: expected a string "
                                          r"\(put the value in quotes\), got 4"):
        load(env=env_for(home))


def test_unknown_key_is_an_error_with_a_suggestion(home):
    path = write_config(home, "server:\n  prot: 1\n")
    with pytest.raises(ConfigError) as caught:
        load(env=env_for(home))
    assert str(caught.value) == ("config %s line 2: unknown key 'server.prot'; did you mean "
                                 "'server.port'?" % path)


def test_unknown_top_level_key_is_an_error(home):
    write_config(home, "port: 1\n")
    with pytest.raises(ConfigError, match=r"line 1: unknown key 'port'; did you mean "
                                          r"'server.port'\?"):
        load(env=env_for(home))


def test_unknown_backend_is_an_error(home):
    write_config(home, "backends:\n  aider:\n    model: x\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'backends.aider'"):
        load(env=env_for(home))


def test_section_given_a_scalar_is_an_error(home):
    write_config(home, "server: 8080\n")
    with pytest.raises(ConfigError, match=r"line 1: server: expected a section of settings"):
        load(env=env_for(home))


def test_yaml_syntax_error_is_reported_with_file_and_line(home):
    path = write_config(home, "a: 1\nb: *alias\n")
    with pytest.raises(ConfigError) as caught:
        load(env=env_for(home))
    assert str(caught.value) == "config %s line 2: aliases (*name) are not supported" % path


def test_list_of_non_strings_is_an_error(home):
    write_config(home, "session:\n  default_tags: [a, 1]\n")
    with pytest.raises(ConfigError, match=r"session.default_tags: expected a list of strings"):
        load(env=env_for(home))


def test_trusted_proxies_must_be_addresses_or_networks(home):
    with pytest.raises(ConfigError, match=r"expected a list of IP addresses or CIDR networks"):
        load(env=env_for(home, CLINVK_SERVER_TRUSTED_PROXIES="10.0.0.1,proxy.local"))


def test_bad_flag_value_is_an_error(home):
    with pytest.raises(ConfigError, match=r"command line: server.port: expected an integer"):
        load(env=env_for(home), flags={"server.port": 0})


# --- parse_value ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, raw, value", [
    ("server.port", "8081", 8081),
    ("server.rate_limit_rps", "2.5", 2.5),
    ("server.rate_limit_rps", "3", 3.0),
    ("server.metrics_enabled", "TRUE", True),
    ("server.metrics_enabled", "false", False),
    ("server.api_keys", "a, b", ["a", "b"]),
    ("server.api_keys", "", []),
    ("backends.codex.approval_mode", "", ""),
    ("unified_flags.sandbox_mode", "read-only", "read-only"),
    ("backends.gemini.system_prompt", " keep spaces ", " keep spaces "),
])
def test_parse_value_converts_text_to_the_setting_type(key, raw, value):
    assert parse_value(key, raw) == value


@pytest.mark.parametrize("key, raw", [
    ("server.port", "0"), ("server.port", "1.5"), ("parallel.max_workers", "0"),
    ("session.retention_days", "-1"), ("server.rate_limit_rps", "0"),
    ("server.rate_limit_rps", "inf"), ("server.metrics_enabled", "maybe"),
    ("default_backend", "aider"),
])
def test_parse_value_rejects_values_outside_the_type(key, raw):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": expected"):
        parse_value(key, raw)


def test_parse_value_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown setting 'server.hots'; did you mean "
                                          r"'server.host'\?"):
        parse_value("server.hots", "x")


# --- Config API --------------------------------------------------------------------------

def test_rows_mask_api_keys(home):
    cfg = load(env=env_for(home, CLINVK_API_KEYS="secret-one,secret-two"))
    rows = {key: (value, source) for key, value, source, _ in cfg.rows()}
    assert rows["server.api_keys"] == (["****", "****"], "env")
    assert "secret-one" not in repr(cfg.rows())
    assert cfg.get("server.api_keys") == ["secret-one", "secret-two"]


def test_rows_follow_the_table_and_carry_meanings(home):
    rows = load(env=env_for(home)).rows()
    assert [r[0] for r in rows] == [s.key for s in config.SETTINGS]
    assert all(r[3] for r in rows)


def test_backend_settings_collects_one_backends_keys(home):
    write_config(home, "backends:\n  codex:\n    model: o3\n    extra_flags: [--x]\n")
    settings = load(env=env_for(home)).backend_settings("codex")
    assert settings == {"model": "o3", "allowed_tools": "", "approval_mode": "",
                        "sandbox_mode": "", "extra_flags": ["--x"], "enabled": True,
                        "system_prompt": ""}


def test_to_dict_nests_by_section(home):
    tree = load(env=env_for(home)).to_dict()
    assert tree["server"]["port"] == 8080
    assert tree["backends"]["gemini"]["enabled"] is True


def test_get_returns_a_copy_of_lists(home):
    cfg = load(env=env_for(home))
    cfg.get("server.blocked_workdir_prefixes").append("/tmp")
    assert "/tmp" not in cfg.get("server.blocked_workdir_prefixes")


def test_get_of_an_unknown_key_is_an_error(home):
    with pytest.raises(ConfigError, match="unknown setting"):
        load(env=env_for(home)).get("server.prot")


# --- set_in_file ---------------------------------------------------------------------------

def test_set_in_file_keeps_comments_and_other_keys(home):
    original = ("# my settings\ndefault_backend: codex  # work\n\nserver:\n"
                "  # where to listen\n  host: 0.0.0.0\n  port: 8080 # default\n")
    path = write_config(home, original)
    set_in_file(str(path), "server.port", "9000")
    assert path.read_text() == original.replace("port: 8080 # default", "port: 9000 # default")


def test_set_in_file_round_trips_through_load(home):
    path = home / "config.yaml"
    set_in_file(str(path), "server.api_keys", "k1,k2")
    set_in_file(str(path), "backends.claude.model", "opus")
    set_in_file(str(path), "server.rate_limit_enabled", "true")
    cfg = load(env=env_for(home))
    assert cfg.get("server.api_keys") == ["k1", "k2"]
    assert cfg.get("backends.claude.model") == "opus"
    assert cfg.get("server.rate_limit_enabled") is True
    assert cfg.source("backends.claude.model") == "file"


def test_set_in_file_creates_the_file_and_directory_private(tmp_path):
    path = tmp_path / "new" / "dir" / "config.yaml"
    set_in_file(str(path), "session.retention_days", "7")
    assert path.read_text() == "session:\n  retention_days: 7\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_set_in_file_writes_typed_values_not_strings(home):
    path = home / "config.yaml"
    set_in_file(str(path), "session.retention_days", "7")
    assert "retention_days: 7\n" in path.read_text()


def test_set_in_file_keeps_the_file_mode(home):
    path = write_config(home, "server:\n  port: 1\n")
    path.chmod(0o640)
    set_in_file(str(path), "server.port", "2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_set_in_file_rejects_a_bad_value_and_leaves_the_file_alone(home):
    path = write_config(home, "server:\n  port: 1\n")
    with pytest.raises(ConfigError, match="server.port: expected an integer"):
        set_in_file(str(path), "server.port", "http")
    assert path.read_text() == "server:\n  port: 1\n"


def test_set_in_file_rejects_an_unknown_key(home):
    with pytest.raises(ConfigError, match="unknown setting"):
        set_in_file(str(home / "config.yaml"), "server.prot", "1")
    assert not (home / "config.yaml").exists()


def test_set_in_file_can_fix_a_bad_value(home):
    path = write_config(home, "server:\n  port: abc\n")
    set_in_file(str(path), "server.port", "8081")
    assert load(env=env_for(home)).get("server.port") == 8081


def test_set_in_file_refuses_to_edit_a_file_outside_the_subset(home):
    path = write_config(home, "server: &s\n  port: 1\n")
    with pytest.raises(ConfigError, match=r"line 1: anchors .*; fix the file, then set "):
        set_in_file(str(path), "server.port", "2")


def test_set_in_file_through_a_symlink_edits_the_target(home, tmp_path):
    target = tmp_path / "dotfiles.yaml"
    target.write_text("server:\n  port: 1\n")
    link = home / "config.yaml"
    link.symlink_to(target)
    set_in_file(str(link), "server.port", "2")
    assert link.is_symlink()
    assert target.read_text() == "server:\n  port: 2\n"


def test_set_in_file_leaves_no_temporary_files(home):
    set_in_file(str(home / "config.yaml"), "server.port", "2")
    assert os.listdir(str(home)) == ["config.yaml"]
