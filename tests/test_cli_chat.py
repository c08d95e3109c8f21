"""``clinvk chat``, driven as a person drives it: typed lines, Ctrl-C and Ctrl-D in a
pseudo-terminal (tests/ptyterm.py), against the fake CLIs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

from clinvk_lib.cli import common
from clinvk_lib.sessions import SessionStore
from tests.conftest import records
from tests.ptyterm import CLINVK, Terminal


@pytest.fixture
def env(clinvk_home, fake_path, record, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return dict(os.environ, NO_COLOR="1")


class Chat:
    """A chat in a terminal, one typed line at a time."""

    def __init__(self, args, env):
        self.t = Terminal(args, env=env)
        self.seen = 0               # how much of stdout the test has looked at

    def prompt(self, backend):
        """Wait for the prompt line of ``backend`` after what was seen so far."""
        self.expect(r"%s(?: \([^)]*\))?> $" % backend)

    def expect(self, pattern, stream="out"):
        """Wait for ``pattern``; on stdout, after what was seen, which then ends with it."""
        after = self.seen if stream == "out" else 0
        text = self.t.wait_for(pattern, stream, after=after)
        if stream == "out":
            self.seen = after + re.search(pattern, text[after:]).end()
        return text

    def say(self, line):
        self.t.type(line + "\r")


def sessions(home):
    found, _ = SessionStore(str(home)).list()
    return sorted(found, key=lambda s: s.created_at)


def test_three_turns_continue_one_session_and_a_backend_switch_starts_another(env,
                                                                                clinvk_home):
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("first")
        chat.expect(r"echo: first\r\n")
        chat.prompt("claude")
        chat.say("second")
        chat.expect(r"\[history: 1 turns\] echo: second\r\n")
        chat.prompt("claude")
        chat.say("/backend codex")
        chat.expect("switched to codex: the next prompt starts a new session", "err")
        chat.prompt("codex")
        chat.say("third")
        chat.expect(r"\r\necho: third\r\n")          # a new session: no history
        chat.prompt("codex")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    claude, codex = sessions(clinvk_home)
    assert (claude.backend, claude.turn_count) == ("claude", 2)
    assert (codex.backend, codex.turn_count) == ("codex", 1)


def test_ctrl_c_stops_the_running_answer_and_the_chat_goes_on(env, tmp_path, clinvk_home):
    pidfile = tmp_path / "pid"
    chat = Chat(["chat", "-b", "claude"], dict(env, FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.3",
                                               FAKE_CLI_PIDFILE=str(pidfile)))
    try:
        chat.prompt("claude")
        chat.say("a long question")
        chat.expect(r"echo: ")
        backend = int(pidfile.read_text())
        chat.t.ctrl_c()
        chat.expect("stopped; the session goes on with the next prompt", "err")
        with pytest.raises(ProcessLookupError):
            os.kill(backend, 0)               # the backend's process group was killed
        chat.prompt("claude")
        chat.say("go on")
        chat.expect(r"\[history: 1 turns\] echo: go on")
        chat.prompt("claude")
        chat.say("/quit")
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert [s.turn_count for s in sessions(clinvk_home)] == [2]


def test_each_answer_shows_the_live_status_line_while_it_runs(env, tmp_path):
    pidfile = tmp_path / "pid"
    chat = Chat(["chat", "-b", "claude"], dict(env, FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.3",
                                               FAKE_CLI_PIDFILE=str(pidfile)))
    try:
        for turn in ("first", "second"):
            chat.prompt("claude")
            seen_err = len(chat.t.err)
            chat.say(turn)
            # The init event of this turn's backend (it wrote its pid before it) is drawn...
            chat.t.wait_for(r"claude \u00b7 waiting on the model \u00b7 \d+s", "err",
                            after=seen_err)
            # ... while that backend still has its reply to give (several lines, 0.3 s each).
            os.kill(int(pidfile.read_text()), 0)
            assert "echo: " + turn not in chat.t.out[chat.seen:]
            chat.expect(r"echo: %s\r\n" % turn)
        chat.prompt("claude")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()


def test_ctrl_c_at_the_prompt_drops_the_line_and_keeps_the_chat(env, record):
    chat = Chat(["chat", "-b", "gemini"], env)
    try:
        chat.prompt("gemini")
        chat.t.type("half a thought")
        # Once readline has echoed the text it is back waiting for a key. A Ctrl-C sent before
        # that can land between readline printing the prompt and its first wait, where
        # CPython's readline loop (Modules/readline.c) only notices a signal when the next key
        # comes: no person types that fast, a test does.
        chat.expect(r"half a thought$")
        chat.t.ctrl_c()
        chat.prompt("gemini")
        chat.say("whole")
        # gemini's stderr warning may land mid-answer, and the answer's line is then broken
        # before it (stdout and stderr share the terminal): "echo\r\n: whole".
        chat.expect(r"echo(?:\r\n)?: whole\r\n")
        chat.prompt("gemini")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert [r["stdin"] for r in records(record)] == ["whole"]


def test_blank_lines_are_ignored(env, record):
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("   ")
        chat.prompt("claude")
        chat.say("")
        chat.prompt("claude")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert records(record) == []


def test_model_command_sets_the_model_of_the_next_turns(env, record):
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("/model claude-fake-sonnet")
        chat.prompt("claude")
        chat.say("hi")
        chat.expect(r"echo: hi\r\n")
        chat.prompt("claude")
        chat.say("/model default")
        chat.prompt("claude")
        chat.say("again")
        chat.expect(r"echo: again\r\n")
        chat.prompt("claude")
        chat.say("/quit")
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    first, second = records(record)
    assert "--model=claude-fake-sonnet" in first["argv"]
    assert not any(a.startswith("--model") for a in second["argv"])
    assert any(a.startswith("--resume") for a in second["argv"])


def test_new_starts_a_new_session_on_the_same_backend(env, clinvk_home):
    chat = Chat(["chat", "-b", "codex"], env)
    try:
        chat.prompt("codex")
        chat.say("one")
        chat.expect(r"echo: one\r\n")
        chat.prompt("codex")
        chat.say("/new")
        chat.expect("the next prompt starts a new session on codex", "err")
        chat.prompt("codex")
        chat.say("two")
        chat.expect(r"\r\necho: two\r\n")
        chat.prompt("codex")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert [s.turn_count for s in sessions(clinvk_home)] == [1, 1]


def test_sessions_command_lists_the_recent_sessions_and_names_this_one(env, clinvk_home):
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("remember me")
        chat.expect(r"echo: remember me\r\n")
        chat.prompt("claude")
        chat.say("/sessions")
        out = chat.expect(r"this chat: session \w+")
        chat.prompt("claude")
        chat.t.ctrl_d()
        chat.t.wait()
    finally:
        chat.t.close()
    (only,) = sessions(clinvk_home)
    assert "remember me" in out and "this chat: session %s" % only.id in out


def test_unknown_command_is_refused_with_a_suggestion_and_runs_nothing(env, record):
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("/bakend codex")
        chat.expect(r"unknown command /bakend \(did you mean /backend\?\)", "err")
        chat.prompt("claude")
        chat.say("/backend nope")
        chat.expect(r"unknown backend 'nope'", "err")
        chat.prompt("claude")
        chat.say("//etc/hosts is a file")
        chat.expect(r"echo: /etc/hosts is a file\r\n")
        chat.prompt("claude")
        chat.t.ctrl_d()
        chat.t.wait()
    finally:
        chat.t.close()
    assert [r["stdin"] for r in records(record)] == ["/etc/hosts is a file"]


def test_switching_to_a_backend_that_is_not_installed_keeps_the_current_one(env, tmp_path):
    only_claude = tmp_path / "bin"
    only_claude.mkdir()
    os.symlink(os.path.join(os.path.dirname(__file__), "fakes", "bin", "claude"),
               str(only_claude / "claude"))
    chat = Chat(["chat", "-b", "claude"], dict(env, PATH="%s:/usr/bin:/bin" % only_claude))
    try:
        chat.prompt("claude")
        chat.say("/backend gemini")
        chat.expect(r"backend 'gemini' is not installed \(no 'gemini' on PATH\)", "err")
        chat.prompt("claude")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()


def test_history_is_kept_in_a_private_file_and_recalled_with_the_up_arrow(env, clinvk_home,
                                                                         record):
    pytest.importorskip("readline")
    chat = Chat(["chat", "-b", "claude"], env)
    try:
        chat.prompt("claude")
        chat.say("a secret plan")
        chat.expect(r"echo: a secret plan\r\n")
        chat.prompt("claude")
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    history = clinvk_home / "chat_history"
    assert stat.S_IMODE(os.stat(str(history)).st_mode) == 0o600
    assert "a secret plan" in history.read_text()
    again = Chat(["chat", "-b", "claude"], env)
    try:
        again.prompt("claude")
        again.t.type("\x1b[A\r")              # the up arrow, then Enter
        again.expect(r"echo: a secret plan\r\n")
        again.prompt("claude")
        again.t.ctrl_d()
        again.t.wait()
    finally:
        again.t.close()
    assert [r["stdin"] for r in records(record)] == ["a secret plan", "a secret plan"]


@pytest.mark.parametrize("args, backend", [([], "claude"), (["-b", "codex"], "codex")])
def test_clinvk_with_no_prompt_on_a_terminal_starts_the_chat(env, args, backend):
    chat = Chat(args, env)
    try:
        chat.prompt(backend)
        chat.say("hello")
        chat.expect(r"echo: hello\r\n")
        chat.prompt(backend)
        chat.t.ctrl_d()
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert "/help for commands" in chat.t.err


def test_chat_without_a_terminal_is_a_usage_error(env):
    p = subprocess.run([sys.executable, CLINVK, "chat"], input=b"hello\n", env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == common.EXIT_USAGE
    assert b"clinvk: chat needs a terminal" in p.stderr and p.stdout == b""


def test_help_lists_the_commands_of_the_chat(env):
    p = subprocess.run([sys.executable, CLINVK, "chat", "--help"], env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == 0
    for command in ("/backend NAME", "/model NAME", "/new", "/sessions", "/quit", "/help"):
        assert command.encode() in p.stdout
    root_help = subprocess.run([sys.executable, CLINVK, "--help"], env=env,
                               capture_output=True, timeout=60).stdout
    assert b"  chat " in root_help
