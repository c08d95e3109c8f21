"""backends/claude.py: argv for claude 2.1.197, and its json / stream-json output."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from clinvk_lib import events as ev
from clinvk_lib.backends import options
from tests.backendutil import BackendKit, fixture, help_flags

KIT = BackendKit("claude")
BACKEND, FAKE = KIT.backend, KIT.fake
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, ["claude", "-p", "--output-format=json"]),
    ({"output_format": "stream-json"},
     ["claude", "-p", "--output-format=stream-json", "--verbose", "--include-partial-messages"]),
    ({"output_format": "stream-json", "verbose": True},
     ["claude", "-p", "--output-format=stream-json", "--verbose", "--include-partial-messages"]),
    ({"verbose": True}, ["claude", "-p", "--output-format=json", "--verbose"]),
    ({"resume_id": "3f0c-uuid"}, ["claude", "-p", "--resume=3f0c-uuid", "--output-format=json"]),
    ({"model": "sonnet"}, ["claude", "-p", "--output-format=json", "--model=sonnet"]),
    ({"approval_mode": "auto"},
     ["claude", "-p", "--output-format=json", "--permission-mode=acceptEdits"]),
    ({"approval_mode": "none"},
     ["claude", "-p", "--output-format=json", "--permission-mode=bypassPermissions"]),
    ({"approval_mode": "always"},
     ["claude", "-p", "--output-format=json", "--permission-mode=default"]),
    ({"sandbox_mode": "read-only"}, ["claude", "-p", "--output-format=json"]),
    ({"sandbox_mode": "full"}, ["claude", "-p", "--output-format=json"]),
    ({"max_turns": 5}, ["claude", "-p", "--output-format=json", "--max-turns=5"]),
    ({"system_prompt": "-be brief"},
     ["claude", "-p", "--output-format=json", "--system-prompt=-be brief"]),
    ({"allowed_tools": "Bash(git *) Edit"},
     ["claude", "-p", "--output-format=json", "--allowedTools=Bash(git *) Edit"]),
    ({"ephemeral": True}, ["claude", "-p", "--output-format=json", "--no-session-persistence"]),
    ({"extra": ["--add-dir", "/srv/docs"], "max_turns": 2},
     ["claude", "-p", "--output-format=json", "--max-turns=2", "--add-dir", "/srv/docs"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_resume_with_every_option_keeps_the_resume_id_and_puts_extras_last():
    got = argv(resume_id="abc", model="opus", approval_mode="auto", max_turns=3,
               system_prompt="S", ephemeral=True, output_format="stream-json",
               extra=["--effort", "high"])
    assert got == ["claude", "-p", "--resume=abc", "--output-format=stream-json", "--verbose",
                   "--include-partial-messages", "--model=opus",
                   "--permission-mode=acceptEdits", "--max-turns=3", "--system-prompt=S",
                   "--no-session-persistence", "--effort", "high"]


def test_argv_has_no_positional_so_the_prompt_is_read_from_stdin():
    got = argv(resume_id="-x", model="-m", approval_mode="none", max_turns=1,
               system_prompt="--help", allowed_tools="Read", ephemeral=True,
               output_format="stream-json")
    assert all(a.startswith("-") for a in got[1:])


@pytest.mark.parametrize("kw, field", [
    ({"approval_mode": "yolo"}, "approval_mode"),
    ({"sandbox_mode": "docker"}, "sandbox_mode"),
    ({"output_format": "text"}, "output_format"),
])
def test_unknown_option_values_are_refused_with_the_choices(kw, field):
    with pytest.raises(ValueError, match=field + " must be one of"):
        argv(**kw)


def flag_names(args) -> set:
    return {a.split("=", 1)[0] for a in args if a.startswith("-")}


def test_every_emitted_flag_is_in_claude_help_except_the_hidden_max_turns():
    emitted = set()
    for approval in options.APPROVAL_MODES:
        emitted |= flag_names(argv(resume_id="r", model="m", approval_mode=approval,
                                   max_turns=2, system_prompt="s", allowed_tools="Read",
                                   ephemeral=True, verbose=True, output_format="stream-json"))
    # --max-turns is accepted by claude 2.1.197 (checked) although --help does not list it.
    assert emitted - help_flags("claude.txt") == {"--max-turns"}


def test_every_allowed_extra_flag_is_in_claude_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("claude.txt") == set()


@pytest.mark.parametrize("flag", [
    "--dangerously-skip-permissions", "--allow-dangerously-skip-permissions",
    "--permission-mode", "--allowedTools", "--allowed-tools", "--settings", "--mcp-config",
    "--resume", "--continue", "--session-id", "--output-format", "--plugin-dir", "--model",
    "--max-turns", "--system-prompt",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)
    assert "root" in BACKEND.mode_notes["approval_mode"]["none"]


def test_sandbox_request_is_reported_as_not_enforced():
    warnings = BACKEND.ignored_options(options.Options(sandbox_mode="read-only"))
    assert len(warnings) == 1 and "not enforced" in warnings[0]
    assert BACKEND.ignored_options(options.Options()) == []


def test_child_env_drops_the_nested_claude_session_markers():
    env = BACKEND.child_env({"CLAUDECODE": "1", "CLAUDE_CODE_ENTRYPOINT": "cli", "HOME": "/h"})
    assert env == {"HOME": "/h"}


# -- stream-json -------------------------------------------------------------------------

def test_every_line_type_gives_the_right_events_in_order():
    events, _ = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    kinds = [(e.type, e.content.get("is_partial")) for e in events]
    assert kinds == [("init", None), ("thinking", True), ("thinking", True), ("message", True),
                     ("message", True), ("tool_use", None), ("tool_result", None),
                     ("error", None), ("message", True), ("done", None)]
    assert events[7].content == {"message": "model API 529 overloaded; retrying (1 of 10) in "
                                            "0.6s", "fatal": False, "code": "retry"}


def test_init_line_gives_session_id_and_model():
    events, result = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    assert events[0].content == {"model": "claude-opus-4-7[1m]",
                                 "backend_session_id": "sess-claude-1"}
    assert result.backend_session_id == "sess-claude-1"


def test_text_streamed_as_deltas_is_not_repeated_by_the_whole_assistant_message():
    _, result = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    assert result.text == "Hello\n\nDone."


def test_thinking_deltas_are_partial_thinking_events():
    events, _ = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    assert [e.content["text"] for e in events if e.type == ev.THINKING] == ["Let me ", "look."]


def test_tool_use_and_its_result_carry_id_name_input_and_text_output():
    events, _ = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    use = next(e for e in events if e.type == ev.TOOL_USE)
    res = next(e for e in events if e.type == ev.TOOL_RESULT)
    assert use.content == {"tool_id": "toolu_1", "tool_name": "Bash", "input": {"command": "ls"}}
    assert res.content == {"tool_id": "toolu_1", "tool_name": "Bash", "output": "README.md",
                           "is_error": False}


def test_sub_agent_text_is_not_part_of_the_reply():
    events, _ = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    assert all("sub-agent" not in e.content.get("text", "") for e in events)


def test_result_usage_counts_cache_tokens_as_input_and_keeps_the_cost():
    events, result = stream(fixture("synthetic", "claude", "every_line_type.stdout"))
    assert result.usage == ev.Usage(330, 42, 300, 0, 0.0125)
    assert events[-1].content["usage"] == result.usage.to_dict()


def test_whole_assistant_message_gives_an_event_for_every_block():
    events, result = stream(fixture("synthetic", "claude", "whole_messages.stdout"))
    assert [e.type for e in events] == ["init", "message", "tool_use", "tool_result", "message",
                                        "done"]
    assert result.text == "I will list the files.\n\nThe directory is not readable."


def test_failed_tool_result_is_marked_as_error():
    events, _ = stream(fixture("synthetic", "claude", "whole_messages.stdout"))
    assert next(e for e in events if e.type == ev.TOOL_RESULT).content["is_error"] is True


def test_error_result_with_exit_code_zero_is_an_error():
    events, result = stream(fixture("synthetic", "claude", "error_max_turns.stdout"))
    assert not result.ok and result.exit_code == 0
    assert [e.content["code"] for e in events if e.type == ev.ERROR] == ["error_max_turns"]


def test_non_json_lines_in_the_stream_are_ignored():
    text = fixture("synthetic", "claude", "whole_messages.stdout")
    noisy = "\n".join("warning: noise\n" + line for line in text.splitlines())
    assert stream(noisy)[1].text == stream(text)[1].text


def test_resume_of_a_lost_session_reports_claudes_message_once():
    out, err = (fixture("synthetic", "claude", "probe_resume_unknown_stream_json." + s)
                for s in ("stdout", "stderr"))
    events, result = stream(out, err, 1)
    assert [e.type for e in events] == ["error", "done"]
    assert result.error.startswith("No conversation found with session ID: 2f0c8f51")
    assert BACKEND.missing_session_markers[0] in result.error.lower()


def test_real_stream_with_partial_messages_streams_pieces_only():
    events, result = stream(*real("stream_json_ok"))
    messages = [e for e in events if e.type == ev.MESSAGE]
    assert len(messages) == 3 and all(e.content["is_partial"] for e in messages)
    assert result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.usage.output_tokens == 9 and result.usage.cost_usd == 0.000255


def test_real_stream_without_partial_messages_gives_one_whole_message():
    events, result = stream(*real("stream_json_no_partial_ok"))
    assert [e.content["is_partial"] for e in events if e.type == ev.MESSAGE] == [False]
    assert result.text == "FAKE-REPLY: Say hello to the fixture"


def test_real_tool_use_stream_gives_the_tool_call_its_result_and_the_reply():
    out = real("tool_use_stream_json")
    events, result = stream(*out)
    use = next(e for e in events if e.type == ev.TOOL_USE)
    res = next(e for e in events if e.type == ev.TOOL_RESULT)
    assert use.content["tool_name"] == "Read" and res.content["tool_name"] == "Read"
    assert "pineapple" in res.content["output"]
    assert result.text == json.loads(out[0].splitlines()[-1])["result"]


def test_real_api_error_is_reported_as_the_error_not_as_reply_text():
    events, result = stream(*real("api_error_400_stream_json"))
    assert result.text == ""
    assert result.error == "API Error: 400 fake model API: injected failure 400"
    assert [e.content["code"] for e in events if e.type == ev.ERROR] == ["api_error_400"]


# -- json --------------------------------------------------------------------------------

def test_json_result_object_gives_text_session_usage_and_model():
    out, err, code = real("json_ok")
    result = BACKEND.parse_json_output(out, err, code)
    assert result.ok and result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.backend_session_id == json.loads(out)["session_id"]
    assert result.model == "claude-opus-4-8[1m]"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6, 9)


def test_json_array_form_of_verbose_gives_the_final_result_text():
    lines = fixture("synthetic", "claude", "whole_messages.stdout").splitlines()
    array = json.dumps([json.loads(line) for line in lines])
    result = BACKEND.parse_json_output(array, "", 0)
    assert result.text == "The directory is not readable."
    assert result.backend_session_id == "sess-claude-2"


def test_json_given_as_ndjson_takes_the_last_result():
    result = BACKEND.parse_json_output(fixture("synthetic", "claude", "every_line_type.stdout"),
                                       "", 0)
    assert result.text == "Done." and result.usage.cached_tokens == 300


def test_json_error_result_with_exit_code_zero_is_an_error():
    result = BACKEND.parse_json_output(fixture("synthetic", "claude", "error_max_turns.stdout"),
                                       "", 0)
    assert not result.ok and result.error == "claude reported an error (error_max_turns)"


def test_json_api_error_takes_the_message_from_the_result():
    result = BACKEND.parse_json_output(*real("api_error_500_json"))
    assert result.error.startswith("API Error: 500 fake model API") and result.text == ""


def test_json_without_any_json_and_exit_zero_is_an_error():
    result = BACKEND.parse_json_output("Hello there\n", "", 0)
    assert result.error == "claude printed no JSON result: Hello there"


def test_refusal_to_bypass_permissions_as_root_reaches_the_user():
    result = BACKEND.parse_json_output(*real("bypass_permissions_as_root"))
    assert result.error == ("claude exited with code 1: --dangerously-skip-permissions cannot "
                            "be used with root/sudo privileges for security reasons")


def test_json_resume_of_a_lost_session_reports_claudes_stderr():
    out, err = (fixture("synthetic", "claude", "probe_resume_unknown_json." + s)
                for s in ("stdout", "stderr"))
    result = BACKEND.parse_json_output(out, err, 1)
    assert "no conversation found with session id" in result.error.lower()


# -- against the fake claude -------------------------------------------------------------

def test_fake_stream_reaches_the_parser_as_deltas_with_the_prompt_verbatim(tmp_path):
    events, result = stream(*run_fake(tmp_path, "--help me", {"FAKE_CLI_CHUNKS": "4"},
                                      output_format="stream-json"))
    assert result.ok and result.text == "echo: --help me"
    assert len([e for e in events if e.type == ev.MESSAGE]) == 4


def test_fake_json_carries_a_large_non_ascii_prompt_verbatim(tmp_path):
    prompt = "é日本-" * 200000
    result = BACKEND.parse_json_output(*run_fake(tmp_path, prompt))
    assert result.text == "echo: " + prompt


def test_fake_resume_continues_the_same_session_with_its_history(tmp_path):
    first = BACKEND.parse_json_output(*run_fake(tmp_path, "one"))
    second = BACKEND.parse_json_output(*run_fake(tmp_path, "two",
                                                 resume_id=first.backend_session_id))
    assert second.backend_session_id == first.backend_session_id
    assert second.text == "[history: 1 turns] echo: two"


def test_fake_resume_of_an_unknown_session_fails_like_claude(tmp_path):
    result = BACKEND.parse_json_output(*run_fake(tmp_path, "x", resume_id="no-such-id"))
    assert "no conversation found with session id: no-such-id" in result.error.lower()


def test_fake_verbose_json_array_is_parsed(tmp_path):
    result = BACKEND.parse_json_output(*run_fake(tmp_path, "hi", {"FAKE_CLI_TOOL": "1"},
                                                 verbose=True))
    assert result.ok and result.text == "echo: hi"
    assert [e.type for e in result.events if e.type.startswith("tool")] == ["tool_use",
                                                                           "tool_result"]


def test_fake_error_with_exit_zero_is_an_error(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "error_exit0"})
    result = BACKEND.parse_json_output(out, err, code)
    assert code == 0 and not result.ok and "fake failure" in result.error


def test_fake_invalid_json_is_reported_as_no_result(tmp_path):
    out = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "invalid_json"})
    result = BACKEND.parse_json_output(*out)
    assert result.error.startswith("claude printed no JSON result")


def test_fake_hang_prints_init_then_keeps_running_under_its_pidfile(tmp_path):
    pidfile = tmp_path / "pid"
    env = BACKEND.child_env(dict(os.environ, FAKE_CLI_MODE="hang", FAKE_CLI_PIDFILE=str(pidfile),
                                 FAKE_CLI_STATE_DIR=str(tmp_path / "state")))
    proc = subprocess.Popen(BACKEND.build_argv(options.Options(output_format="stream-json"), FAKE),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(tmp_path),
                            env=env)
    try:
        proc.stdin.close()
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "system" and first["subtype"] == "init"
        assert proc.poll() is None and pidfile.read_text() == str(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.text.startswith("FAKE-REPLY: ") and result.backend_session_id
    else:
        assert not result.ok and result.error
