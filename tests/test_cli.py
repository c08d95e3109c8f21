"""The root command, resume, sessions, config and backends: output, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clinvk_lib import execute, render
from clinvk_lib.backends import base, parsing
from clinvk_lib.cli import commands, common
from clinvk_lib.cli import run as run_module
from clinvk_lib.cli.main import main
from tests.conftest import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLINVK = [sys.executable, os.path.join(ROOT, "clinvk.py")]


@pytest.fixture
def env(clinvk_home, fake_path, record, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {"home": clinvk_home, "record": record, "tmp": tmp_path}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*argv, stdin=None, env=None):
    return subprocess.run(CLINVK + list(argv), input=stdin, capture_output=True, env=env,
                          timeout=60)


# -- running a prompt ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_text_output_is_the_reply_on_every_backend(env, capsys, backend):
    code, out, err = run(capsys, "-b", backend, "hello there")
    assert (code, out) == (0, "echo: hello there\n")


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_json_output_has_the_documented_fields(env, capsys, backend):
    code, out, _ = run(capsys, "-b", backend, "-o", "json", "hi")
    d = json.loads(out)
    assert code == 0
    # "model" is there when it is known (codex reports none: see test_cli_frictions).
    assert set(d) - {"model"} == {"backend", "content", "session_id", "backend_session_id",
                                  "duration_ms", "exit_code", "usage"}
    assert d["backend"] == backend and d["content"] == "echo: hi" and d["exit_code"] == 0
    assert d["session_id"] and d["backend_session_id"]
    assert d["usage"]["input_tokens"] > 0


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_stream_json_prints_init_first_done_last_with_our_session_id(env, capsys, backend):
    code, out, _ = run(capsys, "-b", backend, "-o", "stream-json", "hi")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    assert {e["session_id"] for e in events} == {events[0]["session_id"]}
    text = "".join(e["content"]["text"] for e in events if e["type"] == "message")
    assert "echo: hi" in text


def test_prompt_starting_with_dashes_reaches_backend_verbatim(env, capsys):
    code, out, _ = run(capsys, "-b", "codex", "--", "--help --version")
    assert code == 0 and out == "echo: --help --version\n"
    call = records(env["record"])[-1]
    assert call["stdin"] == "--help --version"
    assert "--help --version" not in call["argv"]


def test_large_non_ascii_prompt_on_stdin_reaches_backend_verbatim(env):
    prompt = ("ünïcødé ✓ 漢字 " * 70000)[:1024 * 1024]
    p = run_process("-b", "claude", "-o", "json", stdin=prompt.encode("utf-8"))
    assert p.returncode == 0, p.stderr
    assert records(env["record"])[-1]["stdin"] == prompt
    assert json.loads(p.stdout)["content"] == "echo: " + prompt


def test_dry_run_prints_the_exact_argv_and_runs_nothing(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "--dry-run", "-m", "sonnet", "secret prompt")
    assert code == 0
    assert "would run: " in out and "--model=sonnet" in out
    assert "secret prompt" not in out
    assert records(env["record"]) == []


def test_missing_backend_names_the_command_not_found(env, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code, _, err = run(capsys, "-b", "gemini", "hi")
    assert code == common.EXIT_NOT_INSTALLED
    assert "backend 'gemini' is not installed (no 'gemini' on PATH)" in err


def test_unknown_backend_is_a_usage_error(env, capsys):
    code, _, err = run(capsys, "-b", "gpt", "hi")
    assert code == common.EXIT_USAGE and "invalid choice: 'gpt'" in err


def test_disabled_backend_is_refused(env, capsys):
    (env["home"] / "config.yaml").write_text("backends:\n  codex:\n    enabled: false\n")
    code, _, err = run(capsys, "-b", "codex", "hi")
    assert code == common.EXIT_NOT_INSTALLED and "disabled" in err
    assert records(env["record"]) == []


def test_bad_workdir_names_the_path(env, capsys):
    code, _, err = run(capsys, "-b", "claude", "-w", "/no/such/dir", "hi")
    assert code == common.EXIT_USAGE and "/no/such/dir" in err


def test_workdir_becomes_the_child_cwd(env, capsys, tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    code, _, _ = run(capsys, "-b", "claude", "-w", str(work), "hi")
    assert code == 0 and records(env["record"])[-1]["cwd"] == str(work.resolve())


def test_backend_failure_exits_1_with_its_error_on_stderr(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    code, _, err = run(capsys, "-b", "codex", "hi")
    assert code == common.EXIT_FAILED and "codex" in err


def test_error_reported_with_exit_0_still_fails(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "error_exit0")
    code, out, err = run(capsys, "-b", "claude", "-o", "json", "hi")
    assert code == common.EXIT_FAILED
    assert json.loads(out)["error"]


def test_timeout_kills_the_backend_and_exits_124(env, capsys, monkeypatch, tmp_path):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(pidfile))
    code, _, err = run(capsys, "-b", "gemini", "--timeout", "0.5", "hi")
    assert code == common.EXIT_TIMEOUT and "timed out after 0.5s" in err
    pid = int(pidfile.read_text())
    assert not os.path.exists("/proc/%d" % pid) or "Z" in open("/proc/%d/stat" % pid).read().split()[2]


def test_sigterm_kills_the_backend_and_exits_130(env, tmp_path):
    pidfile = tmp_path / "pid"
    e = dict(os.environ, FAKE_CLI_MODE="hang", FAKE_CLI_PIDFILE=str(pidfile))
    p = subprocess.Popen(CLINVK + ["-b", "claude", "hi"], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        import time
        time.sleep(0.05)
    p.terminate()
    _, err = p.communicate(timeout=20)
    assert p.returncode == common.EXIT_INTERRUPTED and b"interrupted" in err
    assert not os.path.exists("/proc/%s" % pidfile.read_text())


def test_bad_flag_value_is_a_usage_error_without_traceback(env):
    p = run_process("--max-turns", "lots", "hi")
    assert p.returncode == common.EXIT_USAGE
    assert b"--max-turns" in p.stderr and b"Traceback" not in p.stderr


def test_no_prompt_on_a_closed_stdin_is_a_usage_error(env):
    p = run_process("-b", "claude", stdin=b"")
    assert p.returncode == common.EXIT_USAGE and b"prompt" in p.stderr


def test_bad_config_value_names_key_and_file(env, capsys):
    (env["home"] / "config.yaml").write_text("server:\n  port: lots\n")
    code, _, err = run(capsys, "-b", "claude", "hi")
    assert code == common.EXIT_USAGE
    assert "server.port" in err and "config.yaml line 2" in err


def test_nested_claude_variables_are_removed_from_the_child_env(env, capsys, monkeypatch):
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CLAUDE_CODE_ENTRYPOINT", "cli")
    run(capsys, "-b", "claude", "hi")
    child_env = records(env["record"])[-1]["env"]
    assert "CLAUDECODE" not in child_env and "CLAUDE_CODE_ENTRYPOINT" not in child_env


def test_version_command_and_flag(env, capsys):
    assert run(capsys, "version")[1].startswith("clinvk ")
    assert run(capsys, "--version")[1].startswith("clinvk ")


def test_word_after_double_dash_is_a_prompt_not_a_command(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "--", "version")
    assert code == 0 and out == "echo: version\n"


# -- sessions and resume --------------------------------------------------------------------


def test_resume_by_prefix_continues_the_backend_conversation(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "-o", "json", "first")
    sid = json.loads(out)["session_id"]
    code, out, _ = run(capsys, "resume", sid[:6], "second")
    assert code == 0 and out == "[history: 1 turns] echo: second\n"
    assert "--resume=" in " ".join(records(env["record"])[-1]["argv"])
    code, out, _ = run(capsys, "sessions", "show", sid, "--json")
    shown = json.loads(out)
    assert shown["turn_count"] == 2 and shown["status"] == "active"


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_resume_last_picks_the_most_recent_session_of_a_backend(env, capsys, backend):
    run(capsys, "-b", backend, "one")
    run(capsys, "-b", "claude" if backend != "claude" else "codex", "other backend")
    code, out, _ = run(capsys, "resume", "--last", "-b", backend, "two")
    assert code == 0 and out.startswith("[history: 1 turns]")
    assert os.path.basename(records(env["record"])[-1]["argv"][0]) == backend


def test_continue_flag_continues_the_last_session(env, capsys):
    run(capsys, "-b", "gemini", "one")
    code, out, _ = run(capsys, "-c", "two")
    assert code == 0 and out == "[history: 1 turns] echo: two\n"


def test_continue_with_no_session_says_how_to_start_one(env, capsys):
    code, _, err = run(capsys, "-c", "two")
    assert code == common.EXIT_SESSION and "no resumable session" in err


def test_plain_prompt_starts_a_new_session_unless_auto_resume(env, capsys):
    run(capsys, "-b", "claude", "one")
    run(capsys, "-b", "claude", "two")
    assert run(capsys, "sessions", "list", "--json")[1].count('"id"') == 2
    (env["home"] / "config.yaml").write_text("session:\n  auto_resume: true\n")
    code, out, _ = run(capsys, "-b", "claude", "three")
    assert out.startswith("[history: 1 turns]")


def test_auto_resume_only_continues_a_session_of_the_same_workdir(env, capsys, tmp_path):
    (env["home"] / "config.yaml").write_text("session:\n  auto_resume: true\n")
    other = tmp_path / "other"
    other.mkdir()
    run(capsys, "-b", "claude", "-w", str(other), "one")
    code, out, _ = run(capsys, "-b", "claude", "two")
    assert out == "echo: two\n"


def test_ephemeral_run_stores_no_session_and_asks_the_backend_not_to(env, capsys):
    code, _, _ = run(capsys, "-b", "claude", "--ephemeral", "hi")
    assert code == 0
    assert json.loads(run(capsys, "sessions", "list", "--json")[1])["total"] == 0
    assert "--no-session-persistence" in records(env["record"])[-1]["argv"]


def test_resume_of_a_gone_transcript_explains_what_to_do(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "-o", "json", "first")
    sid = json.loads(out)["session_id"]
    for f in os.listdir(os.environ["FAKE_CLI_STATE_DIR"]):
        os.remove(os.path.join(os.environ["FAKE_CLI_STATE_DIR"], f))
    code, _, err = run(capsys, "resume", sid, "again")
    assert code == common.EXIT_SESSION
    assert sid in err and "clinvk sessions delete" in err


def test_a_failed_run_exits_by_its_error_kind_not_by_the_wording_of_its_error():
    lost = execute.Outcome(parsing.Result("claude", error="the conversation is gone"), "s1",
                           error_kind=execute.ErrorKind.SESSION)
    quoting = execute.Outcome(parsing.Result("claude", error="try: clinvk sessions delete s1"),
                              "s1")
    assert run_module.outcome_exit_code(lost) == common.EXIT_SESSION
    assert run_module.outcome_exit_code(quoting) == common.EXIT_FAILED


def test_every_error_kind_has_an_exit_code():
    kinds = {v for k, v in vars(execute.ErrorKind).items() if k.isupper()}
    assert set(run_module.EXIT_BY_KIND) == kinds


def test_every_root_flag_that_takes_a_value_is_skipped_when_finding_the_command():
    takes_value = {flag for action in common.root_parser()._actions if action.nargs != 0
                   for flag in action.option_strings}
    assert takes_value == common.ROOT_VALUE_FLAGS


@pytest.mark.parametrize("argv, never", [
    (["version"], ["execute", "runner", "server", "mcp", "cli.prompt"]),
    (["help"], ["execute", "runner", "server", "mcp", "cli.prompt"]),
    (["-b", "claude", "--dry-run", "hi"], ["orchestrate", "server", "mcp", "cli.fanout",
                                          "cli.manage"]),
    (["sessions", "list"], ["execute", "runner", "orchestrate", "server", "mcp",
                            "cli.prompt"]),
    (["-b", "claude", "-o", "json", "--ephemeral", "hi"], ["sessions", "session_files",
                                                          "session_index", "filelock",
                                                          "orchestrate", "server", "mcp"]),
])
def test_a_command_imports_only_the_modules_it_runs(env, argv, never):
    loaded = modules_loaded_by(argv)
    assert [m for m in never if "clinvk_lib." + m in loaded] == []


def modules_loaded_by(argv):
    """The modules in sys.modules once ``clinvk ARGV`` has run in a fresh interpreter."""
    script = ("import sys; from clinvk_lib.cli.main import main; main(%r); "
              "print(' '.join(sys.modules))" % argv)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    loaded = set(out.stdout.split())
    assert "clinvk_lib.cli.main" in loaded, out.stderr
    return loaded


@pytest.mark.parametrize("argv, starts", [
    ([], True),                                         # the prompt from stdin
    (["-b", "claude", "hi"], True),
    (["--config", "c.yaml", "resume", "--last", "more"], True),
    (["chain", "--file", "steps.json"], True),
    (["-b", "claude", "--dry-run", "hi"], False),
    (["sessions", "list"], False),
    (["serve", "--port", "0"], False),
    (["help", "resume"], False),
    (["resume", "--help"], False),
])
def test_the_entry_point_launches_a_supervisor_ahead_only_for_commands_that_run(argv, starts):
    assert commands.starts_a_run(argv) is starts


def test_a_command_runs_with_the_collector_on_and_the_start_up_objects_frozen():
    script = ("import gc, runpy, sys; import clinvk_lib.cli.main as m; "
              "m.run_main = lambda: print(gc.isenabled(), gc.get_freeze_count() > 0); "
              "sys.argv = ['clinvk', 'help']; runpy.run_path('clinvk.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_a_plain_prompt_skips_the_standard_modules_only_rare_paths_need(env):
    # difflib: a mistyped word's suggestion; tempfile: a run that hands its CLI a file;
    # datetime and calendar: timestamps from other programs, ages in listings.
    loaded = modules_loaded_by(["-b", "claude", "-o", "json", "hi"])
    assert "clinvk_lib.sessions" in loaded
    assert {"difflib", "tempfile", "datetime", "calendar"} & loaded == set()


@pytest.mark.parametrize("command, usage", [("version", "usage: clinvk version"),
                                            ("sessions", "usage: clinvk sessions"),
                                            ("help", "usage: clinvk [flags]")])
def test_help_with_a_command_shows_that_commands_help(env, capsys, command, usage):
    code, out, _ = run(capsys, "help", command)
    assert code == 0 and out.startswith(usage)


def test_resume_unknown_session_is_a_session_error(env, capsys):
    code, _, err = run(capsys, "resume", "deadbeef", "x")
    assert code == common.EXIT_SESSION and "deadbeef" in err


def test_sessions_list_table_fits_80_columns(env, capsys):
    for i in range(3):
        run(capsys, "-b", "codex", "a rather long prompt number %d that goes on and on" % i)
    code, out, _ = run(capsys, "sessions", "list")
    assert code == 0 and len(out.splitlines()) == 4
    assert max(len(line) for line in out.splitlines()) <= 80


def test_sessions_delete_and_clean(env, capsys):
    _, out, _ = run(capsys, "-b", "claude", "-o", "json", "one")
    sid = json.loads(out)["session_id"]
    assert run(capsys, "sessions", "clean", "--older-than", "1d")[1] == \
        "nothing to delete: 0 sessions not used for 1d\n"
    assert run(capsys, "sessions", "clean", "--older-than", "soon")[0] == common.EXIT_USAGE
    code, out, _ = run(capsys, "sessions", "delete", "--yes", sid)
    assert code == 0 and sid in out
    assert run(capsys, "sessions", "show", sid)[0] == common.EXIT_SESSION


def test_sessions_delete_removes_a_damaged_session_file(env, capsys):
    _, out, _ = run(capsys, "-b", "claude", "-o", "json", "one")
    sid = json.loads(out)["session_id"]
    path = env["home"] / "sessions" / (sid + ".json")
    path.write_text("{half a sess")
    code, out, _ = run(capsys, "sessions", "delete", "--yes", sid[:8])
    assert code == 0 and sid in out
    assert not path.exists()


def test_clean_with_retention_zero_keeps_everything(env, capsys):
    (env["home"] / "config.yaml").write_text("session:\n  retention_days: 0\n")
    run(capsys, "-b", "claude", "one")
    code, out, _ = run(capsys, "sessions", "clean")
    assert code == 0 and "keep forever" in out
    assert json.loads(run(capsys, "sessions", "list", "--json")[1])["total"] == 1


# -- config and backends --------------------------------------------------------------------


def test_config_show_names_the_source_of_each_value(env, capsys, monkeypatch):
    (env["home"] / "config.yaml").write_text("server:\n  port: 9000\n")
    monkeypatch.setenv("CLINVK_BACKENDS_CLAUDE_MODEL", "opus")
    code, out, _ = run(capsys, "config", "show", "--json")
    rows = {r["key"]: r for r in json.loads(out)["settings"]}
    assert rows["server.port"] == {"key": "server.port", "value": 9000, "source": "file"}
    assert rows["backends.claude.model"]["source"] == "env"
    assert rows["server.host"]["source"] == "default"


def test_config_set_validates_and_keeps_comments(env, capsys):
    path = env["home"] / "config.yaml"
    path.write_text("# my settings\nserver:\n  port: 9000  # team port\n")
    assert run(capsys, "config", "set", "server.port", "9100")[0] == 0
    assert "# my settings" in path.read_text() and "9100" in path.read_text()
    code, _, err = run(capsys, "config", "set", "server.port", "high")
    assert code == common.EXIT_USAGE and "server.port" in err
    assert "9100" in path.read_text()


def test_config_set_writes_to_the_named_config_file(env, capsys, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("")
    assert run(capsys, "config", "set", "--config", str(other), "default_backend", "codex")[0] == 0
    assert "codex" in other.read_text()
    assert not (env["home"] / "config.yaml").exists()


def test_explicit_missing_config_file_is_an_error(env, capsys):
    code, _, err = run(capsys, "--config", "/no/such.yaml", "-b", "claude", "hi")
    assert code == common.EXIT_USAGE and "/no/such.yaml" in err


def test_backends_json_lists_every_backend_with_paths(env, capsys):
    code, out, _ = run(capsys, "backends", "--json")
    rows = json.loads(out)["backends"]
    assert [r["name"] for r in rows] == list(base.NAMES)
    assert all(r["available"] and r["path"] for r in rows)


def test_new_sessions_get_the_configured_default_tags(env, capsys):
    (env["home"] / "config.yaml").write_text("session:\n  default_tags: [team-a, nightly]\n")
    _, out, _ = run(capsys, "-b", "claude", "-o", "json", "hi")
    sid = json.loads(out)["session_id"]
    assert json.loads(run(capsys, "sessions", "show", sid, "--json")[1])["tags"] == ["team-a", "nightly"]


def test_options_the_backend_cannot_honour_are_warned_about(env, capsys):
    code, out, err = run(capsys, "-b", "codex", "--max-turns", "3", "hi")
    assert code == 0 and out == "echo: hi\n"
    assert "warning:" in err and "max_turns" in err


def test_sessions_list_shows_the_newest_100_by_default_and_all_with_limit_0(env, capsys):
    from clinvk_lib.sessions import SessionStore
    store = SessionStore(str(env["home"]))
    for i in range(103):
        store.create("claude", str(env["tmp"]), initial_prompt="p%d" % i)
    d = json.loads(run(capsys, "sessions", "list", "--json")[1])
    assert (len(d["sessions"]), d["total"], d["limit"]) == (100, 103, 100)
    assert len(json.loads(run(capsys, "sessions", "list", "--json", "--limit", "0")[1])["sessions"]) == 103
    assert "(100 of 103 shown" in run(capsys, "sessions", "list")[1]


def test_age_is_relative_for_recent_times_and_a_date_after_a_week():
    now = 1_800_000_000.0
    assert render.age("2027-01-15T08:00:00Z", now) == "just now"
    assert render.age("2027-01-15T07:55:00.5Z", now) == "5m ago"
    assert render.age("2027-01-15T05:00:00Z", now) == "3h ago"
    assert render.age("2027-01-05T08:00:00Z", now) == "2027-01-05"
    assert render.age("garbage", now) == "?"


def test_nul_byte_in_a_value_bound_for_argv_is_refused_naming_the_field(env, capsys):
    code, _, err = run(capsys, "-b", "claude", "-m", "son\x00net", "hi")
    assert code == common.EXIT_USAGE and "model: must not contain NUL bytes" in err
