"""API keys: the sources (environment / config, key file, gopass), constant-time matching
against every key, re-reading the key file when it changes, and errors that never show a key."""

from __future__ import annotations

import os
import stat

import pytest

from clinvk_lib import config
from clinvk_lib.config import ConfigError
from clinvk_lib.server import keys as keys_mod
from clinvk_lib.server.keys import ApiKeys, parse_key_file, read_gopass, split_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- parsing -----------------------------------------------------------------------------------


def test_comma_separated_keys_are_trimmed_and_blanks_dropped():
    assert split_keys(" a, b ,,c,\n") == ["a", "b", "c"]


def test_key_file_skips_blank_lines_and_comments():
    text = "# team keys\n\nalpha\n  beta   # rotated in May\n#gamma\ndelta#not-a-comment\n"
    assert parse_key_file(text, "keys.txt") == ["alpha", "beta", "delta#not-a-comment"]


def test_key_file_line_with_a_space_inside_a_key_is_an_error_naming_the_line_not_the_key():
    with pytest.raises(ConfigError) as info:
        parse_key_file("alpha\nsecret value\n", "keys.txt")
    assert "line 2" in str(info.value) and "secret" not in str(info.value)


# -- matching ----------------------------------------------------------------------------------


def test_each_configured_key_matches_and_nothing_else_does():
    keys = ApiKeys(["sk-one", "sk-two"])
    assert keys.matches("sk-one") and keys.matches("sk-two")
    assert not keys.matches("sk-on") and not keys.matches("sk-one ") and not keys.matches("")


def test_candidate_is_compared_with_every_key_even_after_a_match(monkeypatch):
    calls = []
    real = keys_mod.hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)
    monkeypatch.setattr(keys_mod.hmac, "compare_digest", counting)
    keys = ApiKeys(["k1", "k2", "k3", "k4"])
    for candidate in ("k1", "k4", "nope"):
        calls.clear()
        keys.matches(candidate)
        assert len(calls) == 4


def test_keys_are_not_kept_in_plain_text():
    keys = ApiKeys(["sk-plain-text-key"])
    assert "sk-plain-text-key" not in repr(vars(keys))


def test_no_keys_means_authentication_is_off():
    assert not ApiKeys([])


def test_configured_key_file_turns_authentication_on_even_when_empty(tmp_path):
    keys = ApiKeys([], write(tmp_path / "keys", "# nobody yet\n"))
    assert keys and len(keys) == 0 and not keys.matches("anything")


def test_keys_from_environment_config_and_file_are_merged(tmp_path):
    path = write(tmp_path / "keys", "from-file\n")
    cfg = config.load(None, env={"CLINVK_HOME": str(tmp_path), "CLINVK_API_KEYS": "e1, e2",
                                 "CLINVK_SERVER_API_KEYS_FILE": path})
    keys = ApiKeys.from_config(cfg)
    assert len(keys) == 3 and all(keys.matches(k) for k in ("e1", "e2", "from-file"))


# -- the key file changing ---------------------------------------------------------------------


def test_changed_key_file_is_read_again(tmp_path):
    clock = Clock()
    path = tmp_path / "keys"
    keys = ApiKeys([], write(path, "old-key\n"), clock=clock)
    write(path, "new-key-longer\n")
    clock.now += 1.0
    assert keys.matches("new-key-longer") and not keys.matches("old-key")


def test_key_file_is_looked_at_at_most_once_a_second(tmp_path, monkeypatch):
    clock = Clock()
    path = tmp_path / "keys"
    keys = ApiKeys([], write(path, "old-key\n"), clock=clock)
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(keys_mod.os, "stat", lambda p: stats.append(p) or real_stat(p))
    write(path, "new-key-longer\n")
    clock.now += 0.5
    for _ in range(100):
        assert keys.matches("old-key")
    assert stats == []
    clock.now += 0.5
    assert keys.matches("new-key-longer")
    assert len(stats) == 1


def test_key_file_replaced_by_rename_with_same_size_and_mtime_is_noticed(tmp_path):
    clock = Clock()
    path = tmp_path / "keys"
    keys = ApiKeys([], write(path, "key-aaaa\n"), clock=clock)
    before = os.stat(str(path))
    replacement = tmp_path / "keys.new"
    write(replacement, "key-bbbb\n")
    os.utime(str(replacement), ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(str(replacement), str(path))
    clock.now += 1.0
    assert keys.matches("key-bbbb") and not keys.matches("key-aaaa")


def test_vanished_key_file_revokes_its_keys_and_says_so(tmp_path):
    clock = Clock()
    errors = []
    path = tmp_path / "keys"
    keys = ApiKeys(["fixed"], write(path, "file-key\n"), on_error=errors.append, clock=clock)
    os.unlink(str(path))
    clock.now += 1.0
    assert not keys.matches("file-key") and keys.matches("fixed")
    assert len(errors) == 1 and str(path) in errors[0] and "file-key" not in errors[0]


def test_key_file_that_comes_back_is_used_again(tmp_path):
    clock = Clock()
    path = tmp_path / "keys"
    keys = ApiKeys([], write(path, "first\n"), clock=clock)
    os.unlink(str(path))
    clock.now += 1.0
    assert not keys.matches("first")
    write(path, "second\n")
    clock.now += 1.0
    assert keys.matches("second")


def test_key_file_broken_on_reload_revokes_its_keys(tmp_path):
    clock = Clock()
    errors = []
    path = tmp_path / "keys"
    keys = ApiKeys([], write(path, "good-key\n"), on_error=errors.append, clock=clock)
    write(path, "good-key\nbad key with spaces\n")
    clock.now += 1.0
    assert not keys.matches("good-key")
    assert "line 2" in errors[0] and "spaces" in errors[0]


def test_missing_key_file_at_start_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as info:
        ApiKeys([], missing)
    assert missing in str(info.value) and "no such file" in str(info.value)


# -- gopass ------------------------------------------------------------------------------------


@pytest.fixture
def fake_gopass(tmp_path, monkeypatch):
    """``fake_gopass(stdout, exit_code=0, stderr="", sleep=0)``: a gopass on PATH that records
    its argv in ``tmp_path/gopass.argv``."""
    bin_dir = tmp_path / "gopass-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")

    def make(stdout: str, exit_code: int = 0, stderr: str = "", sleep: float = 0) -> str:
        script = bin_dir / "gopass"
        script.write_text(
            "#!/usr/bin/env python3\nimport sys, time\n"
            "open(%r, 'w').write('\\n'.join(sys.argv[1:]))\n"
            "time.sleep(%r)\nsys.stdout.write(%r)\nsys.stderr.write(%r)\nsys.exit(%d)\n"
            % (str(tmp_path / "gopass.argv"), sleep, stdout, stderr, exit_code))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return str(tmp_path / "gopass.argv")
    return make


def test_gopass_entry_is_read_with_show_o_and_split_on_commas(fake_gopass):
    argv_file = fake_gopass("k1, k2\n")
    assert read_gopass("team/clinvk-keys") == ["k1", "k2"]
    assert open(argv_file).read().split("\n") == ["show", "-o", "team/clinvk-keys"]


def test_gopass_keys_join_the_configured_ones(fake_gopass, tmp_path):
    fake_gopass("from-gopass\n")
    cfg = config.load(None, env={"CLINVK_HOME": str(tmp_path), "CLINVK_API_KEYS": "from-env",
                                 "CLINVK_API_KEYS_GOPASS_PATH": "team/keys"})
    keys = ApiKeys.from_config(cfg)
    assert keys.matches("from-gopass") and keys.matches("from-env")


def test_gopass_failure_is_an_error_with_its_stderr_but_never_its_stdout(fake_gopass):
    fake_gopass("half-printed-secret", exit_code=11, stderr="Error: entry is not in the store\n")
    with pytest.raises(ConfigError) as info:
        read_gopass("team/keys")
    message = str(info.value)
    assert "entry is not in the store" in message and "exit 11" in message
    assert "half-printed-secret" not in message


def test_gopass_that_does_not_answer_in_time_is_an_error(fake_gopass):
    fake_gopass("late", sleep=5)
    with pytest.raises(ConfigError) as info:
        read_gopass("team/keys", timeout=0.3)
    assert "did not answer within" in str(info.value)


def test_missing_gopass_is_an_error_saying_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        read_gopass("team/keys")
    assert "gopass is not installed" in str(info.value)


def test_empty_gopass_entry_is_an_error(fake_gopass):
    fake_gopass("\n")
    with pytest.raises(ConfigError) as info:
        read_gopass("team/keys")
    assert "empty" in str(info.value)


@pytest.mark.parametrize("path", ["-o", "--help", "a b", "team;rm", ""])
def test_gopass_path_that_could_be_read_as_a_flag_is_refused(fake_gopass, path):
    argv_file = fake_gopass("k\n")
    with pytest.raises(ConfigError):
        read_gopass(path)
    assert not os.path.exists(argv_file)
