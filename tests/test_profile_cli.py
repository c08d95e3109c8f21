"""The chat profile on the command line: ``--profile agent|chat`` on every command that runs a
backend (the argv each fake CLI got)."""

from __future__ import annotations

import json
import os

import pytest

from clinvk_lib.cli import common
from clinvk_lib.cli.main import main
from tests.conftest import records
from tests.test_cli_chat import Chat

CHAT_FLAG = "--tools="          # what only claude's chat profile passes
QWEN_CHAT_FLAG = "--safe-mode"  # what only qwen's chat profile passes


@pytest.fixture
def env(clinvk_home, fake_path, record, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return record


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def argvs(record):
    return [r["argv"] for r in records(record)]


def test_a_prompt_with_profile_chat_runs_the_chat_flags(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "--profile", "chat", "hi")
    assert code == 0 and out == "echo: hi\n"
    argv = argvs(env)[-1]
    assert CHAT_FLAG in argv and "--max-turns=1" in argv and "--strict-mcp-config" in argv


def test_a_prompt_without_the_flag_runs_the_agent_profile(env, capsys):
    assert run(capsys, "-b", "claude", "hi")[0] == 0
    assert run(capsys, "-b", "claude", "--profile", "agent", "hi")[0] == 0
    first, second = argvs(env)
    assert first == second and CHAT_FLAG not in first


def test_the_flag_may_come_before_the_prompt_without_taking_it(env, capsys):
    code, out, _ = run(capsys, "--profile", "chat", "-b", "qwen", "hello there")
    assert code == 0 and out == "echo: hello there\n"
    assert QWEN_CHAT_FLAG in argvs(env)[-1]


def test_an_unknown_profile_is_a_usage_error_naming_the_flag_and_the_choices(env, capsys):
    code, _, err = run(capsys, "-b", "claude", "--profile", "lean", "hi")
    assert code == common.EXIT_USAGE
    assert "--profile" in err and "'agent', 'chat'" in err and "'lean'" in err
    assert records(env) == []


def test_resume_with_profile_chat_continues_the_session_in_the_chat_profile(env, capsys):
    code, out, _ = run(capsys, "-b", "claude", "-o", "json", "first")
    sid = json.loads(out)["session_id"]
    code, out, _ = run(capsys, "resume", "--profile", "chat", sid[:6], "second")
    assert code == 0 and out == "[history: 1 turns] echo: second\n"
    argv = argvs(env)[-1]
    assert CHAT_FLAG in argv and any(w.startswith("--resume") for w in argv)


def test_compare_with_profile_chat_runs_every_backend_in_it(env, capsys):
    code, _, _ = run(capsys, "compare", "--backends", "claude,qwen", "--profile", "chat",
                     "--json", "hi")
    assert code == 0
    by_name = {a[0].rsplit("/", 1)[-1]: a for a in argvs(env)}
    assert CHAT_FLAG in by_name["claude"] and QWEN_CHAT_FLAG in by_name["qwen"]


@pytest.mark.parametrize("command, spec", [
    ("parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                            {"backend": "qwen", "prompt": "b"}]}),
    ("chain", {"steps": [{"backend": "claude", "prompt": "a"},
                         {"backend": "qwen", "prompt": "{{previous}}"}]}),
])
def test_parallel_and_chain_with_profile_chat_run_every_item_in_it(env, capsys, tmp_path,
                                                                    command, spec):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code, _, _ = run(capsys, command, "--file", str(path), "--profile", "chat", "--json")
    assert code == 0
    claude_argv, qwen_argv = sorted(argvs(env), key=lambda a: a[0])
    assert CHAT_FLAG in claude_argv and QWEN_CHAT_FLAG in qwen_argv


def test_parallel_without_the_flag_runs_the_agent_profile(env, capsys, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"tasks": [{"backend": "claude", "prompt": "a"}]}))
    assert run(capsys, "parallel", "--file", str(path), "--json")[0] == 0
    assert CHAT_FLAG not in argvs(env)[-1]


def test_the_chat_repl_runs_each_turn_in_the_profile_of_its_flag(env, capsys):
    chat = Chat(["chat", "-b", "claude", "--profile", "chat"], dict(os.environ, NO_COLOR="1"))
    try:
        chat.prompt("claude")
        chat.say("hi")
        chat.expect(r"echo: hi\r\n")
        chat.prompt("claude")
        chat.say("/quit")
        assert chat.t.wait() == common.EXIT_OK
    finally:
        chat.t.close()
    assert CHAT_FLAG in argvs(env)[-1]


def test_every_command_that_runs_a_backend_offers_the_flag_in_completion(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert script.count("--profile") >= 6 and "agent chat" in script
