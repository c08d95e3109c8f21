"""The command line's frictions, each as the behaviour that removes it: typos refused with what
was meant, flags before or after a command, which session -c continues, blank prompts,
interrupted runs, help references and the pager, environment booleans, serve's busy port,
mcp on a terminal, codex's model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from clinvk_lib import execute, orchestrate
from clinvk_lib.backends import base
from clinvk_lib.cli import common, helptext
from clinvk_lib.cli.commands import PARSERS, entry_point
from clinvk_lib.config import SETTINGS, load
from tests.conftest import records
from tests.ptyterm import Terminal
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)
from tests.test_cli import CLINVK, env, run, run_process  # noqa: F401 (env: a fixture)
from tests.test_mcp import mcp, start  # noqa: F401 (fixtures)

WAIT = 30.0


def sessions_json(capsys):
    return json.loads(run(capsys, "sessions", "list", "--json")[1])["sessions"]


def wait_for_file(path, seconds=WAIT):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(str(path)) and open(str(path)).read().strip():
            return
        time.sleep(0.02)
    raise AssertionError("%s never appeared" % path)


# -- a mistyped command is refused, not sent to an agent ----------------------------------------


def test_a_mistyped_command_is_refused_with_the_command_it_meant_and_runs_nothing(env, capsys):
    code, out, err = run(capsys, "verison")
    assert (code, out) == (common.EXIT_USAGE, "")
    assert err == ('clinvk: unknown command "verison" \u2014 did you mean "version"? '
                   '(to send it as a prompt: clinvk -- verison)\n')
    assert records(env["record"]) == []


@pytest.mark.parametrize("word, meant", [("sesions", '"sessions"'), ("backend", '"backends"'),
                                         ("confg", '"config"'), ("Version", '"version"'),
                                         ("hlep", '"help"'),
                                         ("status", '"sessions list" or "backends"'),
                                         ("list", '"sessions list"')])
def test_words_that_read_as_a_command_are_refused_naming_it(env, capsys, word, meant):
    code, _, err = run(capsys, "-b", "claude", word)
    assert code == common.EXIT_USAGE
    assert "did you mean %s?" % meant in err and "clinvk -- %s" % word in err
    assert records(env["record"]) == []


@pytest.mark.parametrize("prompt", ["what version of python is this?", "hello", "again",
                                    "that", "refactor", "sessions?"])
def test_real_prompts_still_run(env, capsys, prompt):
    code, out, _ = run(capsys, "-b", "codex", prompt)
    assert (code, out) == (0, "echo: %s\n" % prompt)


def test_a_command_like_word_after_double_dash_is_sent_as_the_prompt(env, capsys):
    code, out, _ = run(capsys, "-b", "codex", "--", "verison")
    assert (code, out) == (0, "echo: verison\n")


@pytest.mark.parametrize("argv, hint", [
    (["sessions", "list", "--jsn"], 'unknown flag "--jsn"; did you mean "--json"? '
                                    "(see: clinvk sessions list --help)"),
    (["-b", "codex", "--dryrun", "hi"], 'unknown flag "--dryrun"; did you mean "--dry-run"?'),
    (["sessions", "lst"], 'did you mean "list"?'),
    (["-b", "cluade", "hi"], 'did you mean "claude"?'),
])
def test_a_mistyped_flag_or_choice_gets_the_closest_one(env, capsys, argv, hint):
    code, _, err = run(capsys, *argv)
    assert code == common.EXIT_USAGE and hint in err


@pytest.mark.parametrize("argv, typed, flag", [
    (["--tim", "3", "hi"], "--tim", "--timeout"),
    (["sessions", "list", "--js"], "--js", "--json"),
    (["serve", "--po", "1"], "--po", "--port"),
    (["jobs", "list", "--lim", "1"], "--lim", "--limit"),
])
def test_an_abbreviated_flag_is_refused_not_guessed(env, capsys, argv, typed, flag):
    # A prefix unique today would change meaning the day a flag sharing it is added.
    code, _, err = run(capsys, *argv)
    assert code == common.EXIT_USAGE
    assert 'unknown flag "%s"; did you mean "%s"?' % (typed, flag) in err


@pytest.mark.parametrize("argv", [["sessions", "list", "--jsn"], ["resume"],
                                  ["compare", "hi"], ["--max-turns", "x", "hi"],
                                  ["config", "set", "server.port", "high"],
                                  ["sessions", "clean", "--older-than", "soon"], ["verison"]])
def test_every_error_has_one_clinvk_prefix(env, argv):
    p = run_process(*argv, stdin=b"")
    lines = p.stderr.decode().splitlines()
    assert p.returncode == common.EXIT_USAGE and lines
    assert all(line.startswith("clinvk: ") and "clinvk: clinvk" not in line
               and not line.startswith("clinvk: clinvk ") for line in lines), lines


@pytest.mark.parametrize("argv", [["serve", "--prot", "1"], ["mcp", "--confg", "x"]])
def test_serve_and_mcp_word_their_errors_like_every_command(env, argv):
    p = run_process(*argv, stdin=b"")
    assert p.returncode == common.EXIT_USAGE
    assert p.stderr.decode().startswith('clinvk: unknown flag "%s"; did you mean' % argv[1])


# -- flags before or after the command ----------------------------------------------------------


@pytest.mark.parametrize("command", [["config", "show"], ["sessions", "list"],
                                     ["backends"], ["config", "show", "--json"]])
def test_config_before_or_after_the_command_is_read_and_a_broken_one_fails(env, capsys,
                                                                            command):
    broken = env["tmp"] / "broken.yaml"
    broken.write_text("server:\n  port: lots\n")
    before = run(capsys, "--config", str(broken), *command)
    after = run(capsys, *command, "--config", str(broken))
    assert before == after
    assert before[0] == common.EXIT_USAGE and "broken.yaml line 2" in before[2]


def test_config_path_prints_the_file_named_before_or_after_the_command(env, capsys):
    named = str(env["tmp"] / "team.yaml")
    assert run(capsys, "--config", named, "config", "path")[1] == named + "\n"
    assert run(capsys, "config", "--config", named, "path")[1] == named + "\n"
    assert run(capsys, "config", "path", "--config", named)[1] == named + "\n"


def test_config_show_uses_the_file_named_before_the_command(env, capsys):
    named = env["tmp"] / "team.yaml"
    named.write_text("default_backend: gemini\n")
    code, out, _ = run(capsys, "--config", str(named), "config", "show", "--json")
    rows = {r["key"]: r for r in json.loads(out)["settings"]}
    assert code == 0 and rows["default_backend"] == {"key": "default_backend",
                                                      "value": "gemini", "source": "file"}


@pytest.mark.parametrize("flags", [["-b", "codex"], ["-o", "json"], ["-w", "WORK"],
                                   ["--json", "-b", "claude"]])
def test_global_flags_mean_the_same_before_and_after_sessions_list(env, capsys, flags):
    work = env["tmp"] / "work"
    work.mkdir()
    run(capsys, "-b", "codex", "-w", str(work), "one")
    run(capsys, "-b", "claude", "two")
    flags = [str(work) if f == "WORK" else f for f in flags]
    before = run(capsys, *flags, "sessions", "list")
    after = run(capsys, "sessions", "list", *flags)
    assert before == after and before[0] == 0
    assert len(before[1].splitlines()) == (1 if "--json" in flags or "json" in flags else 2)


def test_output_format_before_a_command_applies_to_it(env, capsys):
    code, out, _ = run(capsys, "-o", "json", "backends")
    assert code == 0 and [b["name"] for b in json.loads(out)["backends"]] == list(base.NAMES)


# -- which session -c and resume --last continue --------------------------------------------------


def test_continue_names_the_session_it_continues_on_stderr(env, capsys):
    _, out, _ = run(capsys, "-b", "gemini", "-o", "json", "one")
    sid = json.loads(out)["session_id"]
    code, out, err = run(capsys, "-c", "two")
    assert code == 0 and out == "[history: 1 turns] echo: two\n"
    assert "continuing session %s (gemini, 1 turn, last used just now) in %s" % (
        sid[:8], os.getcwd()) in err


def test_continue_picks_the_latest_session_of_this_directory_not_a_newer_elsewhere(env, capsys):
    other = env["tmp"] / "other"
    other.mkdir()
    run(capsys, "-b", "claude", "here")
    run(capsys, "-b", "codex", "-w", str(other), "elsewhere, newer")
    code, _, err = run(capsys, "-c", "--any-dir", "wider")
    assert code == 0 and "(codex, 1 turn" in err
    code, out, err = run(capsys, "-c", "again")
    assert code == 0 and out == "[history: 1 turns] echo: again\n"
    assert os.path.basename(records(env["record"])[-1]["argv"][0]) == "claude"


def test_continue_with_a_backend_never_falls_back_to_another_backends_session(env, capsys):
    _, out, _ = run(capsys, "-b", "codex", "-o", "json", "codex's")
    codex_sid = json.loads(out)["session_id"]
    code, out, err = run(capsys, "-c", "-b", "claude", "more")
    assert (code, out) == (common.EXIT_SESSION, "")
    assert "no resumable claude session in %s" % os.getcwd() in err
    assert "codex's %s" % codex_sid[:8] in err
    assert len(records(env["record"])) == 1
    run(capsys, "-b", "claude", "claude's")
    run(capsys, "-b", "codex", "codex again, newest")
    code, out, err = run(capsys, "-c", "-b", "claude", "more")
    assert code == 0 and "(claude, 1 turn" in err
    assert os.path.basename(records(env["record"])[-1]["argv"][0]) == "claude"


def test_resume_last_looks_in_the_current_directory_unless_any_dir(env, capsys):
    other = env["tmp"] / "other"
    other.mkdir()
    run(capsys, "-b", "claude", "-w", str(other), "elsewhere")
    code, _, err = run(capsys, "resume", "--last", "more")
    assert code == common.EXIT_SESSION and "--any-dir" in err
    code, out, err = run(capsys, "resume", "--last", "--any-dir", "more")
    assert code == 0 and out.startswith("[history: 1 turns]") and str(other) in err


def test_continue_says_when_it_skips_a_newer_session_that_cannot_be_resumed(env, capsys):
    run(capsys, "-b", "claude", "resumable")
    store = common.open_store(load())
    doomed = store.create("claude", os.getcwd(), initial_prompt="interrupted")
    store.mark_cancelled(doomed.id, "claude run was interrupted before it finished")
    code, _, err = run(capsys, "-c", "more")
    assert code == 0
    assert "skipping the more recent session %s (claude, cancelled)" % doomed.id[:8] in err


def test_continue_after_an_interrupted_first_run_never_picks_another_projects_session(
        env, capsys):
    other = env["tmp"] / "other"
    other.mkdir()
    run(capsys, "-b", "codex", "-w", str(other), "an older codex session elsewhere")
    store = common.open_store(load())
    doomed = store.create("claude", os.getcwd(), initial_prompt="interrupted")
    store.mark_cancelled(doomed.id, "claude run was interrupted before it finished")
    code, out, err = run(capsys, "-c", "more")
    assert (code, out) == (common.EXIT_SESSION, "")
    assert "no resumable session in %s (the latest is %s (claude, cancelled)" % (
        os.getcwd(), doomed.id[:8]) in err
    assert len(records(env["record"])) == 1


# -- empty prompts --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", base.NAMES)
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_an_empty_or_blank_prompt_is_one_usage_error_on_every_backend(env, capsys, backend,
                                                                     prompt):
    code, out, err = run(capsys, "-b", backend, prompt)
    assert (code, out) == (common.EXIT_USAGE, "")
    assert len(err.splitlines()) == 1 and "the prompt is empty" in err
    assert records(env["record"]) == [] and sessions_json(capsys) == []


@pytest.mark.parametrize("stdin", [b"", b"  \n  "])
def test_an_empty_stdin_is_a_usage_error_not_the_help(env, stdin):
    p = run_process(stdin=stdin)
    assert p.returncode == common.EXIT_USAGE and p.stdout == b""
    assert p.stderr.decode().count("\n") == 1 and "the prompt on stdin is empty" in \
        p.stderr.decode()


@pytest.mark.parametrize("argv", [["resume", "--last", " "],
                                  ["compare", "--backends", "claude,codex", "  "]])
def test_other_commands_refuse_a_blank_prompt_too(env, capsys, argv):
    run(capsys, "-b", "claude", "first")
    code, _, err = run(capsys, *argv)
    assert code == common.EXIT_USAGE and "prompt" in err
    assert len(records(env["record"])) == 1


@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("argv", [["resume", "--last", " "], ["resume", "--last", "--any-dir", ""],
                                  ["-c", " "]])
def test_a_blank_prompt_to_continue_is_refused_before_any_session_is_picked(env, capsys, argv,
                                                                            seeded):
    # The usage error comes first, the one line every command gives: no "continuing session"
    # before it, and no "no resumable session" (exit 4) when there is none.
    if seeded:
        run(capsys, "-b", "claude", "first")
    code, out, err = run(capsys, *argv)
    assert (code, out) == (common.EXIT_USAGE, "")
    assert len(err.splitlines()) == 1 and "the prompt is empty" in err
    assert "continuing" not in err and "session" not in err
    assert len(records(env["record"])) == int(seeded)


def test_the_engine_refuses_a_blank_prompt_for_every_front_end(clinvk_home, fake_path):
    req = execute.Request(backend="gemini", prompt=" \n ")
    with pytest.raises(execute.ExecError) as caught:
        execute.prepare(req, load())
    assert caught.value.kind == execute.ErrorKind.INVALID and caught.value.field == "prompt"


# -- interrupted runs -----------------------------------------------------------------------------


def start_hanging(env_vars, *argv):
    pidfile = os.path.join(env_vars["tmp"], "pid")
    e = dict(os.environ, FAKE_CLI_MODE="hang", FAKE_CLI_PIDFILE=pidfile)
    p = subprocess.Popen(CLINVK + list(argv), env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_for_file(pidfile)
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_first_run_interrupted_before_the_backend_reported_its_session_is_cancelled(
        env, capsys, sig):
    p = start_hanging(env, "-b", "claude", "-o", "json", "hi")
    p.send_signal(sig)
    p.communicate(timeout=WAIT)
    assert p.returncode == common.EXIT_INTERRUPTED
    [s] = sessions_json(capsys)
    assert (s["status"], s["turn_count"], s["backend_session_id"]) == ("cancelled", 0, "")
    assert "interrupted" in s["last_error"]


@pytest.mark.parametrize("backend", base.NAMES)
def test_stream_json_ends_with_done_and_exit_code_130_on_ctrl_c(env, capsys, backend):
    p = start_hanging(env, "-b", backend, "-o", "stream-json", "hi")
    time.sleep(0.3)         # the first line (the backend's init) is read
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=WAIT)
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert p.returncode == common.EXIT_INTERRUPTED
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    assert events[-1]["content"]["exit_code"] == 130
    assert [e["content"]["code"] for e in events if e["type"] == "error"] == ["cancelled"]
    [s] = sessions_json(capsys)
    assert s["status"] == "cancelled"


def test_stream_json_ends_with_done_when_ctrl_c_lands_while_a_line_is_written(
        clinvk_home, fake_path, monkeypatch, tmp_path):
    from clinvk_lib.cli import run as cli_run
    from clinvk_lib.sessions import SessionStore
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    written = []

    def write(text):
        written.append(json.loads(text))
        if len(written) == 1:
            raise KeyboardInterrupt     # Ctrl-C while the consumer writes the first line
    monkeypatch.setattr(cli_run, "write", write)
    cfg = load()
    store = SessionStore(cfg.home)
    prepared = execute.prepare(execute.Request(backend="claude", prompt="hi",
                                               workdir=str(tmp_path)), cfg, store, stream=True)
    with pytest.raises(KeyboardInterrupt):
        cli_run.write_events(execute.stream(prepared, store))
    assert written[0]["type"] == "init"
    assert written[-1]["type"] == "done" and written[-1]["content"]["exit_code"] == 130


def test_a_run_the_server_cancels_leaves_its_session_cancelled_not_error(clinvk_home, fake_path,
                                                                        monkeypatch, tmp_path):
    from clinvk_lib.sessions import SessionStore
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(pidfile))
    cfg = load()
    store = SessionStore(cfg.home)
    cancel = execute.Cancel()
    threading.Thread(target=lambda: (wait_for_file(pidfile), cancel.fire()),
                     daemon=True).start()
    prepared = execute.prepare(execute.Request(backend="claude", prompt="hi",
                                               workdir=str(tmp_path)), cfg, store)
    outcome = execute.run(prepared, store, cancel=cancel)
    assert outcome.cancelled
    assert store.get(outcome.session_id).status == "cancelled"


def test_a_cancelled_fan_out_task_shows_the_time_it_ran(clinvk_home, fake_path, monkeypatch,
                                                        tmp_path):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(pidfile))
    cancel = execute.Cancel()

    def fire_later():
        wait_for_file(pidfile)
        time.sleep(0.3)
        cancel.fire()

    threading.Thread(target=fire_later, daemon=True).start()
    summary = orchestrate.run_parallel([{"backend": "codex", "prompt": "hi"}], load(),
                                       cancel=cancel)
    [r] = summary.results
    assert r.status == "cancelled" and r.duration_ms >= 300


# -- help references and the pager ----------------------------------------------------------------


def test_help_modes_shows_every_backends_mode_table_offline(env, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, _ = run(capsys, "help", "modes")
    assert code == 0
    for name in base.NAMES:
        assert "%s (%s)" % (name, base.get(name).display_name) in out
        for notes in base.get(name).mode_notes.values():
            for text in notes.values():
                assert " ".join(text.split()) in " ".join(out.split())


def test_help_config_lists_every_setting_with_its_default_and_meaning(env, capsys):
    code, out, _ = run(capsys, "help", "config")
    assert code == 0
    for row in SETTINGS:
        assert "\n%s = " % row.key in out and row.env_var in out
    assert '\nserver.port = 8080  (CLINVK_SERVER_PORT)\n' in out


def test_help_of_an_unknown_topic_suggests_one(env, capsys):
    code, _, err = run(capsys, "help", "mode")
    assert code == common.EXIT_USAGE and 'did you mean "modes"?' in err


def test_no_help_text_points_to_a_readme_a_copied_pyz_does_not_carry():
    texts = [common.root_parser().format_help(), helptext.modes_text(), helptext.config_text()]
    for target in PARSERS.values():
        parser = entry_point(target)()
        texts.extend(p.format_help() for p in parser.walk())
    assert [t[:80] for t in texts if "README" in t] == []


def test_long_help_goes_through_the_pager_on_a_terminal_only(env, tmp_path):
    log = tmp_path / "paged"
    pager = tmp_path / "pager"
    pager.write_text("#!/bin/sh\ncat > %s\n" % log)
    pager.chmod(0o755)
    e = dict(os.environ, PAGER=str(pager))
    with Terminal(["help", "config"], env=e) as term:
        assert term.wait() == 0
    assert "server.port = 8080" in log.read_text()
    log.unlink()
    p = subprocess.run(CLINVK + ["help", "config"], env=e, capture_output=True, timeout=WAIT)
    assert b"server.port = 8080" in p.stdout and not log.exists()


def test_the_pager_defaults_to_less_and_cat_turns_it_off(monkeypatch):
    from clinvk_lib.cli import pager
    monkeypatch.delenv("PAGER", raising=False)
    assert pager.pager_command() == ["less", "-FRX"]
    monkeypatch.setenv("PAGER", "cat")
    assert pager.pager_command() == []


# -- smaller ones ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, value", [("1", True), ("yes", True), ("On", True),
                                        ("TRUE", True), ("0", False), ("no", False),
                                        ("OFF", False), ("false", False)])
def test_environment_booleans_accept_the_usual_words(clinvk_home, monkeypatch, raw, value):
    monkeypatch.setenv("CLINVK_SERVER_METRICS_ENABLED", raw)
    assert load().get("server.metrics_enabled") is value


def test_a_bad_environment_boolean_names_the_variable(clinvk_home, monkeypatch):
    monkeypatch.setenv("CLINVK_OUTPUT_SHOW_TOKENS", "maybe")
    with pytest.raises(Exception, match="environment variable CLINVK_OUTPUT_SHOW_TOKENS: "
                                        "output.show_tokens: expected true or false"):
        load()


def test_serve_on_a_busy_port_suggests_another_with_port(env):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        p = run_process("serve", "--port", str(port), stdin=b"")
    finally:
        busy.close()
    err = p.stderr.decode()
    assert p.returncode == 1
    assert err.startswith("clinvk: cannot listen on 127.0.0.1:%d" % port)
    assert "--port" in err and "--port 0" in err


def test_mcp_on_a_terminal_says_it_speaks_mcp_on_stdin(env):
    with Terminal(["mcp"], stdout_tty=False, stderr_tty=False) as term:
        term.wait_for("serving MCP", stream="err")
        term.ctrl_d()
        assert term.wait() == 0
    p = run_process("mcp", stdin=b"")
    assert p.returncode == 0 and b"serving MCP" not in p.stderr


def test_codex_json_has_the_model_it_was_asked_for_and_no_empty_model(env, capsys):
    _, out, _ = run(capsys, "-b", "codex", "-m", "gpt-5.5", "-o", "json", "hi")
    assert json.loads(out)["model"] == "gpt-5.5"
    _, out, _ = run(capsys, "-b", "codex", "-o", "json", "hi")
    assert "model" not in json.loads(out)
    (env["home"] / "config.yaml").write_text("backends:\n  codex:\n    model: o4\n")
    _, out, _ = run(capsys, "-b", "codex", "-o", "stream-json", "hi")
    done = [json.loads(line) for line in out.splitlines()][-1]
    assert done["type"] == "done" and done["content"]["model"] == "o4"


# -- blank prompts over HTTP and MCP -------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["   ", "\n\t"])
def test_the_native_api_answers_400_to_a_blank_prompt_and_runs_nothing(server, record, prompt):
    reply = server.post("/api/v1/prompt", {"backend": "gemini", "prompt": prompt})
    assert reply.status == 400
    assert reply.json() == {"error": "invalid_request", "field": "prompt",
                            "message": "prompt: must not be empty or only whitespace"}
    assert records(record) == []


def test_the_mcp_prompt_tool_refuses_a_blank_prompt(mcp, record):
    result = mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "  "})["result"]
    assert result["isError"] and "must not be empty or only whitespace" in \
        result["content"][0]["text"]
    assert records(record) == []
