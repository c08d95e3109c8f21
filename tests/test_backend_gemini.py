"""backends/gemini.py: argv for gemini 0.61.0, and its json / stream-json output."""

from __future__ import annotations

import json

import pytest

from clinvk_lib import events as ev
from clinvk_lib.backends import options
from tests.backendutil import BackendKit, fixture, help_flags

KIT = BackendKit("gemini")
BACKEND = KIT.backend
HEAD = ["gemini", "--skip-trust"]
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, HEAD + ["--output-format=json"]),
    ({"output_format": "stream-json"}, HEAD + ["--output-format=stream-json"]),
    ({"resume_id": "98e342bb"}, HEAD + ["--output-format=json", "--resume=98e342bb"]),
    ({"model": "flash"}, HEAD + ["--output-format=json", "--model=flash"]),
    ({"approval_mode": "auto"}, HEAD + ["--output-format=json", "--approval-mode=auto_edit"]),
    ({"approval_mode": "none"}, HEAD + ["--output-format=json", "--approval-mode=yolo"]),
    ({"approval_mode": "always"}, HEAD + ["--output-format=json", "--approval-mode=default"]),
    ({"sandbox_mode": "read-only"}, HEAD + ["--output-format=json", "--sandbox"]),
    ({"sandbox_mode": "workspace"}, HEAD + ["--output-format=json", "--sandbox"]),
    ({"sandbox_mode": "full"}, HEAD + ["--output-format=json"]),
    ({"verbose": True}, HEAD + ["--output-format=json", "--debug"]),
    ({"system_prompt": "S", "max_turns": 3, "ephemeral": True, "allowed_tools": "x"},
     HEAD + ["--output-format=json"]),
    ({"extra": ["--include-directories", "/srv"], "verbose": True},
     HEAD + ["--output-format=json", "--debug", "--include-directories", "/srv"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_resume_with_every_option_keeps_the_resume_id_and_puts_extras_last():
    got = argv(resume_id="uuid-1", model="pro", approval_mode="auto", sandbox_mode="workspace",
               output_format="stream-json", extra=["-e", "none"])
    assert got == HEAD + ["--output-format=stream-json", "--resume=uuid-1", "--model=pro",
                          "--approval-mode=auto_edit", "--sandbox", "-e", "none"]


def test_argv_has_no_positional_so_the_prompt_is_read_from_stdin():
    got = argv(resume_id="-1", model="-x", approval_mode="none", sandbox_mode="workspace",
               verbose=True, output_format="stream-json")
    assert all(a.startswith("-") for a in got[1:])


@pytest.mark.parametrize("kw, field", [
    ({"approval_mode": "auto_edit"}, "approval_mode"),
    ({"sandbox_mode": "docker"}, "sandbox_mode"),
    ({"output_format": "text"}, "output_format"),
])
def test_unknown_option_values_are_refused_with_the_choices(kw, field):
    with pytest.raises(ValueError, match=field + " must be one of"):
        argv(**kw)


def test_every_emitted_flag_is_in_gemini_help():
    emitted = set()
    for approval in options.APPROVAL_MODES:
        emitted |= {a.split("=", 1)[0] for a in argv(resume_id="r", model="m",
                                                     approval_mode=approval,
                                                     sandbox_mode="workspace", verbose=True)}
    assert emitted - help_flags("gemini.txt") == {"gemini"}


def test_every_allowed_extra_flag_is_in_gemini_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("gemini.txt") == set()


@pytest.mark.parametrize("flag", [
    "-y", "--yolo", "--approval-mode", "--policy", "--admin-policy", "--allowed-tools",
    "--sandbox", "--resume", "--session-id", "--output-format", "--raw-output", "-m", "--model",
    "--debug",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)
    assert "NOT read-only" in BACKEND.mode_notes["sandbox_mode"]["read-only"]


def test_options_gemini_cannot_honour_are_reported():
    warnings = BACKEND.ignored_options(options.Options(
        sandbox_mode="read-only", system_prompt="S", max_turns=2, ephemeral=True,
        allowed_tools="x"))
    assert len(warnings) == 4             # ephemeral is honoured: the session is deleted after
    assert not any("ephemeral" in w for w in warnings)
    assert BACKEND.ignored_options(options.Options(sandbox_mode="workspace")) == []


def test_child_env_trusts_the_workspace_and_drops_nested_claude_markers():
    env = BACKEND.child_env({"CLAUDECODE": "1", "HOME": "/h"})
    assert env == {"HOME": "/h", "GEMINI_CLI_TRUST_WORKSPACE": "true"}


# -- stream-json -------------------------------------------------------------------------

def test_every_line_type_gives_the_right_events_in_order():
    events, _ = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    assert [e.type for e in events] == ["init", "message", "tool_use", "tool_result",
                                        "tool_use", "tool_result", "error", "message", "done"]


def test_echoed_user_prompt_is_never_output():
    events, result = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    assert result.text == "Thinking... Final answer."
    assert all("Stream test" not in e.content.get("text", "") for e in events)


def test_assistant_deltas_are_partial_messages():
    events, _ = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    assert {e.content["is_partial"] for e in events if e.type == ev.MESSAGE} == {True}


def test_tool_events_use_gemini_snake_case_fields():
    events, _ = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    uses = [e.content for e in events if e.type == ev.TOOL_USE]
    results = [e.content for e in events if e.type == ev.TOOL_RESULT]
    assert uses[0] == {"tool_id": "tool-1", "tool_name": "testTool",
                       "input": {"arg1": "value1"}}
    assert results[0] == {"tool_id": "tool-1", "tool_name": "testTool",
                          "output": "Tool executed successfully", "is_error": False}
    assert results[1] == {"tool_id": "tool-2", "tool_name": "run_shell_command",
                          "output": "Tool execution denied by policy.", "is_error": True}


def test_warning_error_line_is_not_fatal():
    events, result = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    assert [e.content["fatal"] for e in events if e.type == ev.ERROR] == [False]
    assert result.ok


def test_init_and_result_give_session_model_and_usage():
    events, result = stream(fixture("synthetic", "gemini", "every_line_type.stdout"))
    assert events[0].content == {"model": "test-model", "backend_session_id": "test-session-id"}
    assert result.usage == ev.Usage(150, 30, 100)
    assert result.model == "test-model"


def test_result_with_status_error_and_exit_zero_is_an_error():
    events, result = stream(fixture("synthetic", "gemini", "max_turns_error.stdout"))
    assert result.error == "Reached max session turns for this session."
    assert [e.content["code"] for e in events if e.type == ev.ERROR] == ["MaxSessionTurnsError"]
    assert not result.ok and result.exit_code == 0


def test_real_stream_gives_deltas_and_the_model_that_answered():
    events, result = stream(*real("stream_json_ok"))
    assert events[0].content["model"] == "auto"
    assert result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.model == "gemini-fake" and result.usage.input_tokens == 56


def test_real_stream_api_error_is_unwrapped_and_reported_once():
    events, result = stream(*real("api_error_400_stream_json"))
    assert result.error == "fake model API: injected failure 400"
    assert len([e for e in events if e.type == ev.ERROR]) == 1 and result.text == ""


def test_non_json_lines_are_ignored():
    text = fixture("synthetic", "gemini", "every_line_type.stdout")
    noisy = "\n".join("Loaded cached credentials.\n" + l for l in text.splitlines())
    assert stream(noisy)[1].text == stream(text)[1].text


# -- json --------------------------------------------------------------------------------

def test_pretty_printed_json_with_noise_around_it_is_read():
    result = BACKEND.parse_json_output(fixture("synthetic", "gemini", "json_with_noise.stdout"),
                                       "", 0)
    assert result.ok and result.text == "Hello from Gemini!"
    assert result.backend_session_id == "g-1"


def test_json_usage_sums_models_and_counts_cached_and_thinking_tokens():
    result = BACKEND.parse_json_output(fixture("synthetic", "gemini", "json_with_noise.stdout"),
                                       "", 0)
    assert result.usage == ev.Usage(140, 85, 80, 30)
    assert result.model == "gemini-2.5-pro"


def test_real_json_run_gives_text_session_and_usage():
    out, err, code = real("json_ok")
    result = BACKEND.parse_json_output(out, err, code)
    assert result.ok and result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.backend_session_id in out
    assert (result.usage.input_tokens, result.usage.output_tokens) == (56, 19)


def test_real_json_error_printed_on_stderr_is_found():
    result = BACKEND.parse_json_output(*real("api_error_500_json"))
    assert result.error == "fake model API: injected failure 500"
    assert result.backend_session_id


def test_stream_json_lines_given_to_the_json_parser_are_read_as_a_stream():
    out, err, code = real("stream_json_ok")
    result = BACKEND.parse_json_output(out, err, code)
    assert result.text == "FAKE-REPLY: Say hello to the fixture" and result.model == "gemini-fake"


def test_json_error_object_with_exit_zero_is_an_error():
    out = '{\n  "session_id": "s",\n  "error": {"type": "Error", "message": "boom", "code": 1}\n}'
    result = BACKEND.parse_json_output(out, "", 0)
    assert not result.ok and result.error == "boom"


def test_json_without_any_json_and_exit_zero_is_an_error():
    result = BACKEND.parse_json_output("Loaded cached credentials.\nplain text answer\n", "", 0)
    assert result.error == "gemini printed no JSON result: plain text answer"


def test_resume_of_a_lost_session_reports_geminis_message():
    out, err = (fixture("synthetic", "gemini", "probe_resume_unknown." + s)
                for s in ("stdout", "stderr"))
    result = BACKEND.parse_json_output(out, err, 42)
    assert result.error == ("gemini exited with code 42: Error resuming session: No previous "
                            "sessions found for this project.")
    assert BACKEND.missing_session_markers[0] in result.error.lower()


# -- against the fake gemini -------------------------------------------------------------

def test_fake_stream_never_outputs_the_echoed_prompt(tmp_path):
    events, result = stream(*run_fake(tmp_path, "secret-prompt", {"FAKE_CLI_CHUNKS": "2"},
                                      output_format="stream-json"))
    assert result.text == "echo: secret-prompt"
    assert [e.content["text"] for e in events if e.type == ev.MESSAGE] == ["echo: secr",
                                                                          "et-prompt"]


def test_fake_json_with_noise_and_a_large_prompt_is_read(tmp_path):
    prompt = "--yolo ünï " * 100000
    result = BACKEND.parse_json_output(*run_fake(tmp_path, prompt, {"FAKE_CLI_MODE": "noise"}))
    assert result.ok and result.text == "echo: " + prompt
    assert result.usage.cached_tokens == 4


def test_fake_resume_continues_the_same_session_with_its_history(tmp_path):
    first = BACKEND.parse_json_output(*run_fake(tmp_path, "one"))
    _, second = stream(*run_fake(tmp_path, "two", resume_id=first.backend_session_id,
                                 output_format="stream-json"))
    assert second.backend_session_id == first.backend_session_id
    assert second.text == "[history: 1 turns] echo: two"


def test_fake_resume_of_an_unknown_session_fails_like_gemini(tmp_path):
    out, err, code = run_fake(tmp_path, "x", resume_id="nope")
    assert code == 42
    assert "error resuming session" in BACKEND.parse_json_output(out, err, code).error.lower()


def test_fake_error_with_exit_zero_is_an_error(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "error_exit0"},
                              output_format="stream-json")
    events, result = stream(out, err, code)
    assert code == 0 and not result.ok and "fake failure" in result.error


def test_fake_slow_stream_still_gives_the_whole_reply(tmp_path):
    events, result = stream(*run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "slow",
                                                       "FAKE_CLI_DELAY": "0.01"},
                                      output_format="stream-json"))
    assert result.ok and result.text == "echo: hi"


def test_fake_failure_exits_nonzero_with_its_stderr_message(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "fail"})
    result = BACKEND.parse_json_output(out, err, code)
    assert code == 1 and result.error.startswith("gemini exited with code 1: Error when talking")


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.text.startswith("FAKE-REPLY: ") and result.backend_session_id
    else:
        assert not result.ok and result.error


def test_forget_session_deletes_the_listed_index_of_that_session():
    from clinvk_lib.backends import gemini
    listing = ("Available sessions for this project (3):\n"
               "  1. first (2h ago) [11111111-aaaa-bbbb-cccc-000000000001]\n"
               "  2. [x] odd title (Just now) [22222222-aaaa-bbbb-cccc-000000000002]\n"
               "  3. last (Just now) [33333333-aaaa-bbbb-cccc-000000000003]\n")
    ran = []

    def run(argv):
        ran.append(argv)
        return listing if "--list-sessions" in argv else "Deleted session 2"

    gemini.BACKEND.forget_session("22222222-aaaa-bbbb-cccc-000000000002", "/bin/gemini", run)
    assert ran == [["/bin/gemini", "--list-sessions"],
                   ["/bin/gemini", "--delete-session", "2"]]


def test_forget_session_deletes_nothing_when_the_session_is_not_listed():
    from clinvk_lib.backends import gemini
    ran = []
    gemini.BACKEND.forget_session("not-there", "gemini",
                                  lambda argv: ran.append(argv) or "No sessions found")
    assert ran == [["gemini", "--list-sessions"]]


def test_a_bridged_trusted_run_gets_the_bridge_from_its_system_defaults_file():
    bridge = options.ToolBridge(["/usr/bin/python3", "/opt/clinvk.py", "tool-bridge"],
                                ["get_weather"])
    opts = options.Options(project_config=True, tool_bridge=bridge,
                           run_files={options.BRIDGE_TICKET: "/run/ticket"})
    env = BACKEND.child_env({"PATH": "/usr/bin"}, opts)
    assert env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"
    assert env["CLINVK_TOOL_TICKET"] == "/run/ticket"
    with open(env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"]) as f:
        server = json.load(f)["mcpServers"]["clinvk"]
    assert server["command"] == "/usr/bin/python3" and server["trust"] is True
    assert server["args"] == ["/opt/clinvk.py", "tool-bridge", "$CLINVK_TOOL_TICKET"]


def test_an_untrusted_run_cannot_be_given_tools_and_says_why():
    assert "untrusted" in BACKEND.tool_bridge_problem(False)
    assert BACKEND.tool_bridge_problem(True) == ""
