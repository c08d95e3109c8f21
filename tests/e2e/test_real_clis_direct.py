"""The real claude, codex and gemini CLIs, run directly (no clinvk), against the fake model API.

These pin what the drivers rely on: the prompt travels on stdin, the reply comes back in the
documented format, resume carries the earlier turn to the model, and API errors are reported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Dict, List

from tests.e2e import realclis
from tests.fakes.fake_model_api import split_pieces
from tests.e2e.realclis import (CLAUDE_JSON, CLAUDE_STREAM, CODEX_JSON, GEMINI_JSON, GEMINI_STREAM,
                                resume_argv, run_cli, session_id_of)

PROMPT = "--looks-like-a-flag but is the prompt: say hi"


def json_lines(stdout: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_claude_json_answers_prompt_from_stdin(fake_api, real_env, workdir):
    proc = run_cli(CLAUDE_JSON, PROMPT, real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert fake_api.main_requests("anthropic")[-1]["user_text"] == PROMPT
    assert result["type"] == "result" and result["is_error"] is False
    assert result["result"] == "FAKE-REPLY: " + PROMPT[:60]


def test_claude_stream_json_with_partial_messages_streams_text_deltas(fake_api, real_env, workdir):
    fake_api.set_reply("one two three four", pieces=4)
    proc = run_cli(CLAUDE_STREAM, PROMPT, real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)
    deltas = [e["event"]["delta"]["text"] for e in events
              if e["type"] == "stream_event" and e["event"]["type"] == "content_block_delta"]
    assert deltas == split_pieces("one two three four", 4)
    assert events[0]["subtype"] == "init" and events[-1]["type"] == "result"


def test_claude_stream_json_lines_arrive_while_model_is_still_streaming(fake_api, real_env, workdir):
    fake_api.set_reply("abcdefghij", pieces=5, delay_between_chunks=0.4)
    exe = shutil.which("claude", path=real_env["PATH"])
    proc = subprocess.Popen([exe] + CLAUDE_STREAM[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=real_env, cwd=workdir)
    try:
        proc.stdin.write(PROMPT)
        proc.stdin.close()
        for line in proc.stdout:
            if '"content_block_delta"' in line:
                sent_when_first_delta_seen = fake_api.main_requests("anthropic")[-1]["sent_pieces"]
                break
        proc.stdout.read()
    finally:
        proc.wait(timeout=120)
    assert sent_when_first_delta_seen < 5


def test_claude_resume_sends_first_turn_to_model(fake_api, real_env, workdir):
    first = run_cli(CLAUDE_JSON, "remember kumquat", real_env, workdir)
    session = session_id_of(first.stdout)
    second = run_cli(resume_argv(CLAUDE_JSON, session), "which fruit?", real_env, workdir)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["session_id"] == session
    turn2 = fake_api.main_requests("anthropic")[-1]
    assert turn2["user_text"] == "which fruit?"
    assert "remember kumquat" in json.dumps(turn2["json"]["messages"])


def test_claude_calls_tool_the_model_asks_for_and_returns_its_result(fake_api, real_env, workdir):
    with open(os.path.join(workdir, "note.txt"), "w") as f:
        f.write("the secret word is pineapple\n")
    fake_api.queue_tool_use("Read", {"file_path": os.path.join(workdir, "note.txt")})
    proc = run_cli(CLAUDE_STREAM, "read the note", real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    assert "pineapple" in fake_api.main_requests("anthropic")[-1]["tool_results"][0]
    assert "pineapple" in json_lines(proc.stdout)[-1]["result"]


def test_claude_api_error_is_an_error_result_with_exit_1(fake_api, real_env, workdir):
    fake_api.fail_every(500)
    proc = run_cli(CLAUDE_JSON, PROMPT, real_env, workdir)
    result = json.loads(proc.stdout)
    # claude 2.1.197 keeps subtype "success" on API errors; is_error is what tells.
    assert (proc.returncode, result["is_error"], result["api_error_status"]) == (1, True, 500)


def test_codex_exec_json_answers_prompt_from_stdin(fake_api, real_env, workdir):
    proc = run_cli(CODEX_JSON, PROMPT, real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)
    messages = [e["item"]["text"] for e in events
                if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    assert fake_api.main_requests("openai")[-1]["user_text"] == PROMPT
    assert messages == ["FAKE-REPLY: " + PROMPT[:60]]
    assert events[0]["type"] == "thread.started" and events[-1]["type"] == "turn.completed"


def test_codex_exec_resume_sends_first_turn_to_model(fake_api, real_env, workdir):
    first = run_cli(CODEX_JSON, "remember kumquat", real_env, workdir)
    thread = session_id_of(first.stdout)
    second = run_cli(resume_argv(CODEX_JSON, thread), "which fruit?", real_env, workdir)
    assert second.returncode == 0, second.stderr
    assert session_id_of(second.stdout) == thread
    turn2 = fake_api.main_requests("openai")[-1]
    assert turn2["user_text"] == "which fruit?"
    assert "remember kumquat" in json.dumps(turn2["json"]["input"])


def test_codex_api_error_is_turn_failed_with_exit_1(fake_api, real_env, workdir):
    fake_api.fail_every(400)
    proc = run_cli(CODEX_JSON, PROMPT, real_env, workdir)
    assert proc.returncode == 1
    assert json_lines(proc.stdout)[-1]["type"] == "turn.failed"


def test_gemini_json_answers_prompt_from_stdin(fake_api, real_env, workdir):
    proc = run_cli(GEMINI_JSON, PROMPT, real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    assert fake_api.main_requests("gemini")[-1]["user_text"] == PROMPT
    assert json.loads(proc.stdout)["response"] == "FAKE-REPLY: " + PROMPT[:60]


def test_gemini_stream_json_streams_assistant_deltas(fake_api, real_env, workdir):
    fake_api.set_reply("one two three four", pieces=4)
    proc = run_cli(GEMINI_STREAM, PROMPT, real_env, workdir)
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)
    deltas = [e["content"] for e in events if e["type"] == "message" and e["role"] == "assistant"]
    assert deltas == split_pieces("one two three four", 4)
    assert events[0]["type"] == "init" and events[-1]["type"] == "result"


def test_gemini_resume_sends_first_turn_to_model(fake_api, real_env, workdir):
    first = run_cli(GEMINI_JSON, "remember kumquat", real_env, workdir)
    session = session_id_of(first.stdout)
    second = run_cli(resume_argv(GEMINI_JSON, session), "which fruit?", real_env, workdir)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["session_id"] == session
    turn2 = fake_api.main_requests("gemini")[-1]
    assert turn2["user_text"] == "which fruit?"
    assert "remember kumquat" in json.dumps(turn2["json"]["contents"])


def test_gemini_api_error_goes_to_stderr_with_status_as_exit_code(fake_api, real_env, workdir):
    fake_api.fail_every(400)
    proc = run_cli(GEMINI_JSON, PROMPT, real_env, workdir)
    # gemini 0.61.0 exits with the HTTP status modulo 256 and prints the JSON error on stderr.
    assert (proc.returncode, proc.stdout) == (400 % 256, "")
    assert '"code": 400' in proc.stderr


def test_no_egress_env_takes_nothing_from_the_host_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "real-secret")
    env = realclis.no_egress_env("http://127.0.0.1:1234", str(tmp_path))
    assert "CLAUDECODE" not in env and env["OPENAI_API_KEY"] != "real-secret"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:9"
