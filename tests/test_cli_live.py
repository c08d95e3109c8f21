"""The live view of a run on a terminal, and the backend's diagnostics in text mode, driven in
pseudo-terminals (tests/ptyterm.py) against the fake CLIs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from clinvk_lib import runner
from clinvk_lib.cli import common
from clinvk_lib.cli.main import main
from tests.ptyterm import CLINVK, Terminal

# Slow enough that a run lasts well after its first piece of text (9+ lines for claude).
SLOW = {"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.3"}


@pytest.fixture
def env(clinvk_home, fake_path, tmp_path, monkeypatch):
    """The environment for a clinvk process: fake CLIs, a private home, colour allowed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return dict(os.environ, TERM="xterm-256color")


def in_terminal(env, args, columns=100, **kw):
    """Run clinvk ARGS in a terminal to its end: (exit code, stdout, stderr)."""
    t = Terminal(args, env=env, columns=columns, **kw)
    code = t.wait()
    return code, t.out, t.err


def status_lines(err):
    """Each status line drawn on stderr, as the terminal ends up showing it."""
    return [re.sub(r"\x1b\[[0-9;]*[mK]", "", piece).strip()
            for piece in err.replace("\r\n", "\n").split("\r")
            if " \u00b7 " in piece and "\n" not in piece]


# -- the reply, as it streams -------------------------------------------------------------


def backend_alive(pidfile):
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.mark.parametrize("backend", ["claude", "gemini"])
def test_reply_reaches_the_terminal_while_the_backend_still_runs(env, backend, tmp_path):
    pidfile = tmp_path / "pid"
    t = Terminal(["-b", backend, "hello there"], env=dict(env, FAKE_CLI_PIDFILE=str(pidfile),
                                                          **SLOW))
    try:
        t.wait_for("echo: ")
        still_running = backend_alive(pidfile)   # several lines, 0.3 s each, still to come
        assert t.wait() == 0
    finally:
        t.close()
    assert still_running, "the text appeared only once the run was over"
    assert "echo: hello there" in t.out


def test_codex_message_is_shown_as_soon_as_it_arrives(env, tmp_path):
    pidfile = tmp_path / "pid"
    t = Terminal(["-b", "codex", "hello"], env=dict(env, FAKE_CLI_MODE="slow",
                                                    FAKE_CLI_DELAY="1.5",
                                                    FAKE_CLI_PIDFILE=str(pidfile)))
    try:
        t.wait_for("echo: hello")
        still_running = backend_alive(pidfile)   # turn.completed is still 1.5 s away
        assert t.wait() == 0
    finally:
        t.close()
    assert still_running


def test_the_streamed_reply_is_printed_once_and_ends_with_a_newline(env):
    code, out, err = in_terminal(env, ["-b", "claude", "hi"])
    assert code == 0
    assert any("claude \u00b7 " in s for s in status_lines(err))     # shown live...
    assert out == "echo: hi\r\n"          # ... and not again (the pty shows "\n" as "\r\n")
    assert "echo" not in err


def test_status_line_names_backend_and_activity_with_a_timer_and_is_cleared(env):
    code, out, err = in_terminal(env, ["-b", "claude", "hi"])
    assert code == 0
    assert any(re.search(r"claude \u00b7 waiting on the model \u00b7 \d+s$", s)
               for s in status_lines(err)), err
    assert err.endswith("\r\x1b[K")       # the last thing written: the line cleared


def test_status_line_says_thinking_while_the_model_thinks(env):
    # claude's thinking block (streamed as thinking_delta, then whole in its message).
    code, out, err = in_terminal(dict(env, FAKE_CLI_THINKING="weighing it up"),
                                 ["-b", "claude", "hi"])
    assert code == 0
    assert any(re.search(r"claude \u00b7 thinking \u00b7 \d+s$", s)
               for s in status_lines(err)), err
    assert out == "echo: hi\r\n" and "weighing it up" not in err


def test_tool_calls_and_results_are_one_line_each_on_stderr(env):
    code, out, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-b", "claude", "hi"])
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;]*[mK]", "", err)
    assert "\u2192 Read note.txt\r\n" in plain
    assert "\u2713 Read: 1 line of output\r\n" in plain
    assert any("running Read: note.txt" in s for s in status_lines(err))
    assert "Read" not in out


def test_quiet_hides_tool_calls(env):
    code, out, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-q", "-b", "codex", "hi"])
    assert code == 0 and "echo: hi" in out
    assert "command_execution" not in err.replace("running command_execution", "")


def test_verbose_shows_tool_input_and_output_in_full(env):
    code, _, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-v", "-b", "claude", "hi"])
    plain = re.sub(r"\x1b\[[0-9;]*[mK]", "", err)
    assert code == 0
    assert '\u2192 Read {"file_path": "note.txt"}' in plain
    assert "\r\n    fake file content" in plain


def test_escape_sequences_in_the_reply_are_shown_escaped_on_a_terminal(env):
    # A model that repeats what it read could otherwise set the clipboard (OSC 52).
    code, out, _ = in_terminal(env, ["-b", "claude", "x \x1b]52;c;aGk=\x07 y"])
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]52;c;aGk=\\x07" in out


# -- none of it without a terminal ----------------------------------------------------------


def test_nothing_live_when_stdout_is_not_a_terminal(env):
    code, out, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-b", "claude", "hi"],
                                 stdout_tty=False)
    assert (code, out, err) == (0, "echo: hi\n", "")


def test_nothing_live_when_stderr_is_not_a_terminal(env):
    code, out, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-b", "claude", "hi"],
                                 stderr_tty=False)
    assert (code, out, err) == (0, "echo: hi\r\n", "")


def test_without_a_terminal_the_backend_runs_with_its_json_output(env, record):
    p = subprocess.run([sys.executable, CLINVK, "-b", "claude", "hi"], env=dict(
        env, FAKE_CLI_RECORD=str(record)), capture_output=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, b"echo: hi\n")
    argv = json.loads(record.read_text().splitlines()[-1])["argv"]
    assert "--output-format=json" in argv and "--include-partial-messages" not in argv


# -- colour --------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [{"NO_COLOR": "1"}, {"CLINVK_OUTPUT_COLOR": "never"},
                                     {"TERM": "dumb"}])
def test_no_escape_codes_when_colour_is_off(env, setting):
    code, out, err = in_terminal(dict(env, FAKE_CLI_TOOL="1", **setting),
                                 ["-b", "claude", "hi"])
    assert code == 0
    assert "\x1b" not in out + err
    assert any("claude \u00b7 " in s for s in status_lines(err))
    assert err.endswith("\r")             # cleared with spaces, not with an escape code


def test_colour_when_the_terminal_has_it(env):
    _, _, err = in_terminal(dict(env, FAKE_CLI_TOOL="1"), ["-b", "claude", "hi"])
    assert "\x1b[2m" in err


# -- narrow terminals ------------------------------------------------------------------------


def test_status_line_is_cut_to_a_narrow_terminal_but_keeps_its_timer(env):
    code, _, err = in_terminal(dict(env, NO_COLOR="1", FAKE_CLI_TOOL="1", **SLOW),
                               ["-b", "claude", "hi"], columns=30)
    lines = [s for s in status_lines(err) if s]
    assert code == 0 and lines
    assert all(len(s) <= 29 for s in lines), lines
    assert all(re.search(r"\u00b7 \d+s$", s) for s in lines), lines
    assert any("running R" in s for s in lines)


def test_parallel_status_line_keeps_its_timer_on_a_narrow_terminal(env, tmp_path):
    tasks = tmp_path / "t.json"
    tasks.write_text(json.dumps({"tasks": [{"backend": "claude", "prompt": "a long task"},
                                           {"backend": "codex", "prompt": "another one"}]}))
    code, _, err = in_terminal(dict(env, **SLOW), ["parallel", "--file", str(tasks)],
                               columns=24)
    # A status line is redrawn ("\r" follows it); a finished task's line ends with "\r\n".
    drawn = [re.sub(r"\x1b\[[0-9;]*m", "", d)
             for d in re.findall(r"\x1b\[K([^\r\n]+)(?=\r(?!\n))", err)]
    assert code == 0 and drawn
    assert all(len(d) <= 23 and re.search(r"\d+\.\ds elapsed$", d) for d in drawn), drawn


# -- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_clears_the_status_line_before_saying_interrupted(env, tmp_path):
    pidfile = tmp_path / "pid"
    t = Terminal(["-b", "claude", "hi"], env=dict(env, FAKE_CLI_MODE="hang",
                                                  FAKE_CLI_PIDFILE=str(pidfile)))
    try:
        t.wait_for("waiting on the model", "err")
        t.ctrl_c()
        code = t.wait()
    finally:
        t.close()
    assert code == common.EXIT_INTERRUPTED
    assert re.search(r"\r\x1b\[K(\r\n)?clinvk: interrupted", t.err), repr(t.err[-200:])
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


# -- the backend's warnings and stderr -------------------------------------------------------


def test_backend_warnings_are_shown_on_a_terminal_as_they_come(env):
    t = Terminal(["-b", "codex", "hi"], env=dict(env, NO_COLOR="1", FAKE_CLI_WARNINGS="2",
                                                 FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.5"))
    try:
        t.wait_for(r"codex: warning: Reconnecting\.\.\. 1/2 \(stream disconnected", "err")
        shown_while_running = t.proc.poll() is None
        assert t.wait() == 0
    finally:
        t.close()
    assert shown_while_running
    assert "codex: warning: Reconnecting... 2/2" in t.err and "echo: hi" in t.out


def test_backend_warnings_are_shown_on_stderr_without_a_terminal(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_WARNINGS", "2")
    code = main(["-b", "codex", "hi"])
    out, err = capsys.readouterr()
    assert (code, out) == (0, "echo: hi\n")
    assert err.splitlines() == [
        "codex: warning: Reconnecting... 1/2 (stream disconnected before completion: "
        "Connection refused)",
        "codex: warning: Reconnecting... 2/2 (stream disconnected before completion: "
        "Connection refused)"]


def test_the_same_warning_twice_in_a_row_is_shown_once(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "error_exit0")
    monkeypatch.setattr("clinvk_lib.backends.codex.CodexStreamParser.parse_line",
                        _twice_the_same_warning)
    main(["-b", "codex", "hi"])
    assert capsys.readouterr().err.count("warning: same thing") == 1


def _twice_the_same_warning(self, obj, line):
    from clinvk_lib import events as ev
    if obj.get("type") == "turn.started":
        return [ev.error("codex", "same thing", fatal=False)] * 2
    return []


def test_timeout_message_repeats_the_last_backend_warning(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_WARNINGS", "2")
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_HANG_AFTER", "4")      # after both warnings
    code = main(["-b", "codex", "--timeout", "1", "hi"])
    err = capsys.readouterr().err
    assert code == common.EXIT_TIMEOUT
    assert ("clinvk: codex timed out after 1s and was stopped; last backend message: "
            "Reconnecting... 2/2 (stream disconnected before completion: Connection "
            "refused)") in err


def test_timeout_message_repeats_the_last_stderr_line_when_there_was_no_warning(
        env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_STDERR", "retrying: connect ECONNREFUSED 127.0.0.1:443")
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    code = main(["-b", "claude", "--timeout", "1", "hi"])
    err = capsys.readouterr().err
    assert code == common.EXIT_TIMEOUT
    assert "last backend message: retrying: connect ECONNREFUSED 127.0.0.1:443" in err


def test_live_timeout_message_repeats_the_last_backend_warning(env):
    code, _, err = in_terminal(dict(env, FAKE_CLI_WARNINGS="1", FAKE_CLI_MODE="hang",
                                    FAKE_CLI_HANG_AFTER="3"), ["-b", "codex", "--timeout",
                                                               "1", "hi"])
    assert code == common.EXIT_TIMEOUT
    assert "timed out after 1s and was stopped; last backend message: Reconnecting... 1/1" \
        in err


def test_a_failure_after_warnings_names_the_last_one(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_WARNINGS", "1")
    monkeypatch.setenv("FAKE_CLI_MODE", "error_exit0")
    code = main(["-b", "codex", "-o", "json", "hi"])
    out = json.loads(capsys.readouterr().out)
    assert code == common.EXIT_FAILED
    assert out["error"] == ("fake failure (FAKE_CLI_MODE=error_exit0) (last backend message: "
                            "Reconnecting... 1/1 (stream disconnected before completion: "
                            "Connection refused))")


def test_backend_stderr_lines_are_shown_with_its_name(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_STDERR", "careful: \x1b[31mdisk almost full")
    assert main(["-b", "claude", "hi"]) == 0
    assert capsys.readouterr().err == "claude: careful: \\x1b[31mdisk almost full\n"


def test_quiet_hides_backend_stderr_lines_but_not_its_warnings(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_STDERR", "careful: disk almost full")
    monkeypatch.setenv("FAKE_CLI_WARNINGS", "1")
    assert main(["-q", "-b", "codex", "hi"]) == 0
    err = capsys.readouterr().err
    assert "disk almost full" not in err and "warning: Reconnecting... 1/1" in err


def test_verbose_passes_the_backend_stderr_through_as_it_is(env, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_STDERR", "careful: disk almost full")
    assert main(["--verbose", "-b", "gemini", "hi"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert "careful: disk almost full" in lines
    assert lines[-1].startswith("Warning: 256-color support not detected")


@pytest.mark.parametrize("fmt", ["json", "stream-json"])
def test_verbose_passes_the_backend_stderr_through_in_json_formats(env, capsys, monkeypatch,
                                                                   fmt):
    monkeypatch.setenv("FAKE_CLI_STDERR", "careful: disk almost full")
    assert main(["-v", "-o", fmt, "-b", "codex", "hi"]) == 0
    out, err = capsys.readouterr()
    assert err == "careful: disk almost full\n" and "careful" not in out


def test_backend_stderr_lines_are_shown_on_a_terminal_as_they_come(env):
    t = Terminal(["-b", "claude", "hi"], env=dict(env, FAKE_CLI_STDERR="careful: low disk",
                                                  **SLOW))
    try:
        t.wait_for("claude: careful: low disk", "err")
        shown_while_running = t.proc.poll() is None
        assert t.wait() == 0
    finally:
        t.close()
    assert shown_while_running


# -- the runner's stderr lines ---------------------------------------------------------------


def test_stderr_lines_reach_the_callback_whole_and_in_order():
    got = []
    proc = runner.Process([sys.executable, "-c", "import sys; sys.stderr.write('one\\ntw'); "
                           "sys.stderr.flush(); sys.stderr.write('o\\nthree')"],
                          on_stderr=got.append)
    list(proc.lines())
    out = proc.wait()
    assert got == ["one", "two", "three"]
    assert out.stderr == "one\ntwo\nthree"


def test_a_long_stderr_line_is_handed_over_in_bounded_pieces():
    got = []
    proc = runner.Process([sys.executable, "-c", "import sys; sys.stderr.write('x' * 100000)"],
                          on_stderr=got.append)
    list(proc.lines())
    proc.wait()
    assert "".join(got) == "x" * 100000
    assert max(len(g) for g in got) <= runner.STDERR_LINE_LIMIT


def test_a_failing_stderr_callback_never_stalls_the_backend(fake_path):
    def broken(line):
        raise RuntimeError("display gone")

    proc = runner.Process(["claude", "-p", "--output-format=json"], "hi",
                          env=dict(os.environ, FAKE_CLI_MODE="stderr_flood"),
                          on_stderr=broken)
    started = time.monotonic()
    out = "\n".join(proc.lines())
    outcome = proc.wait()
    assert outcome.exit_code == 0 and "echo: hi" in out
    assert time.monotonic() - started < 60
