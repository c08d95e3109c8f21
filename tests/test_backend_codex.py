"""backends/codex.py: argv for codex-cli 0.169.0, and its ``exec --json`` output."""

from __future__ import annotations

import json
import subprocess

import pytest

from clinvk_lib import events as ev
from clinvk_lib.backends import codex, options
from tests.backendutil import BackendKit, fixture, help_flags

KIT = BackendKit("codex")
BACKEND, FAKE = KIT.backend, KIT.fake
HEAD = ["codex", "exec", "--json", "--skip-git-repo-check"]
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, HEAD + ["-"]),
    ({"output_format": "stream-json"}, HEAD + ["-"]),
    ({"model": "gpt-5"}, HEAD + ["--model=gpt-5", "-"]),
    ({"approval_mode": "auto"}, HEAD + ["-"]),
    ({"approval_mode": "none"}, HEAD + ["-"]),
    ({"approval_mode": "always"}, HEAD + ["-"]),
    ({"sandbox_mode": "read-only"}, HEAD + ["--sandbox=read-only", "-"]),
    ({"sandbox_mode": "workspace"}, HEAD + ["--sandbox=workspace-write", "-"]),
    ({"sandbox_mode": "full"}, HEAD + ["--sandbox=danger-full-access", "-"]),
    ({"system_prompt": "Be brief"}, HEAD + ["-c", 'developer_instructions="Be brief"', "-"]),
    ({"ephemeral": True}, HEAD + ["--ephemeral", "-"]),
    ({"max_turns": 4, "verbose": True, "allowed_tools": "Read"}, HEAD + ["-"]),
    ({"extra": ["--add-dir", "/srv"], "ephemeral": True},
     HEAD[:2] + ["--add-dir", "/srv"] + HEAD[2:] + ["--ephemeral", "-"]),
    ({"resume_id": "0199a213"}, HEAD + ["resume", "0199a213", "-"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_resume_puts_exec_options_and_extras_before_the_resume_subcommand():
    # codex-cli 0.169.0 rejects -s (and --add-dir) after `resume`; before it they apply.
    got = argv(resume_id="T-1", model="m", sandbox_mode="workspace", system_prompt="S",
               ephemeral=True, extra=["--add-dir", "/srv"])
    assert got == HEAD[:2] + ["--add-dir", "/srv"] + HEAD[2:] + [
        "--model=m", "--sandbox=workspace-write", "-c", 'developer_instructions="S"',
        "--ephemeral", "resume", "T-1", "-"]


def test_a_multi_word_extra_flag_ends_before_the_resume_subcommand_and_the_stdin_dash():
    # codex-cli 0.169.0: "-i A resume T -" would read "resume", "T" and "-" as images.
    got = argv(resume_id="T-1", extra=["-i", "/img/a.png"])
    assert got[2:4] == ["-i", "/img/a.png"] and got[4].startswith("--")
    assert got[-3:] == ["resume", "T-1", "-"]


def test_the_only_positionals_are_resume_its_id_and_the_stdin_dash():
    got = argv(resume_id="T-1", model="m", sandbox_mode="full", system_prompt="--help",
               ephemeral=True)
    positionals = [a for i, a in enumerate(got[2:], 2)
                   if not a.startswith("-") and got[i - 1] != "-c"]
    assert positionals == ["resume", "T-1"] and got[-1] == "-"


def test_resume_id_that_looks_like_a_flag_is_refused():
    with pytest.raises(ValueError, match="must not start with '-'"):
        argv(resume_id="--last")


@pytest.mark.parametrize("text", ['say "hi"\\n', "line1\nline2\ttab", "é日本 😀",
                                  "\x00\x1f\x7f"])
def test_system_prompt_is_a_toml_string_codex_decodes_to_the_same_text(text):
    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads("v = " + codex.toml_string(text))["v"] == text


def test_the_tool_bridge_is_an_mcp_server_of_config_overrides_codex_parses_as_toml():
    tomllib = pytest.importorskip("tomllib")
    bridge = options.ToolBridge(["/usr/bin/python3", '/opt/my "clinvk".py', "tool-bridge"],
                                ["get_weather"], call_timeout=390.5)
    opts = options.Options(run_files={options.BRIDGE_TICKET: "/run/t 1"}, tool_bridge=bridge)
    got = BACKEND.build_argv(opts)
    overrides = [got[i + 1] for i, a in enumerate(got) if a == "-c"]
    server = tomllib.loads("\n".join(overrides))["mcp_servers"]["clinvk"]
    assert server == {"command": "/usr/bin/python3", "default_tools_approval_mode": "approve",
                      "args": ['/opt/my "clinvk".py', "tool-bridge", "/run/t 1"],
                      "tool_timeout_sec": 390}
    assert got[-1] == "-"


@pytest.mark.parametrize("kw, field", [
    ({"approval_mode": "never"}, "approval_mode"),
    ({"sandbox_mode": "workspace-write"}, "sandbox_mode"),
    ({"output_format": "jsonl"}, "output_format"),
])
def test_unknown_option_values_are_refused_with_the_choices(kw, field):
    with pytest.raises(ValueError, match=field + " must be one of"):
        argv(**kw)


def test_every_emitted_flag_is_in_codex_exec_help():
    emitted = set()
    for sandbox in options.SANDBOX_MODES:
        emitted |= {a.split("=", 1)[0] for a in argv(model="m", sandbox_mode=sandbox,
                                                     system_prompt="s", ephemeral=True)
                    if a.startswith("-") and a != "-"}
    assert emitted - help_flags("codex_exec.txt") == set()


def test_flags_emitted_after_resume_are_in_codex_exec_resume_help():
    got = argv(resume_id="T", model="m", sandbox_mode="read-only", ephemeral=True)
    after = [a.split("=", 1)[0] for a in got[got.index("resume"):] if a.startswith("--")]
    assert set(after) - help_flags("codex_exec_resume.txt") == set()


def test_every_allowed_extra_flag_is_in_codex_exec_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("codex_exec.txt") == set()


@pytest.mark.parametrize("flag", [
    "-c", "--config", "--enable", "-p", "--profile",
    "--dangerously-bypass-approvals-and-sandbox",
    "--full-auto", "--approve-for-me", "-s", "--sandbox", "-C", "--cd", "--ignore-rules",
    "-o", "--json", "--oss", "-m", "--model", "--ephemeral",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)


def test_options_codex_cannot_honour_are_reported():
    warnings = BACKEND.ignored_options(options.Options(approval_mode="none", max_turns=3,
                                                    allowed_tools="Read"))
    assert [w.split(":")[0] for w in warnings] == [
        "codex exec never asks for approval", "codex has no turn limit",
        "codex has no tool allowlist flag"]
    assert BACKEND.ignored_options(options.Options(sandbox_mode="full")) == []


# -- --json lines ------------------------------------------------------------------------

def test_every_line_type_gives_the_right_events_in_order():
    events, _ = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    assert [e.type for e in events] == [
        "init", "error", "error", "thinking", "tool_use", "tool_result", "tool_use",
        "tool_result", "tool_use", "tool_result", "tool_use", "tool_result", "tool_use",
        "tool_result", "message", "done"]


def test_thread_started_gives_the_resume_id():
    events, result = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    assert events[0].content["backend_session_id"] == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert result.backend_session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"


def test_warnings_and_reconnect_notices_are_not_fatal():
    events, result = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    assert [e.content["fatal"] for e in events if e.type == ev.ERROR] == [False, False]
    assert result.ok and result.text == "Yep — there's a README.md"


def test_command_execution_is_a_tool_call_with_its_output_and_failure():
    events, _ = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    results = [e.content for e in events if e.type == ev.TOOL_RESULT]
    assert results[0] == {"tool_id": "item_2", "tool_name": "command_execution",
                          "output": "README.md\n", "is_error": False}
    assert results[1]["is_error"] is True and "No such file" in results[1]["output"]


def test_mcp_file_change_and_web_search_items_are_tool_calls():
    events, _ = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    uses = [e.content for e in events if e.type == ev.TOOL_USE]
    results = [e.content for e in events if e.type == ev.TOOL_RESULT]
    assert [u["tool_name"] for u in uses] == ["command_execution", "command_execution",
                                              "search", "file_change", "web_search"]
    assert uses[2]["input"] == {"server": "docs", "arguments": {"q": "readme"}}
    assert results[2]["output"] == "found 1"
    assert results[3]["output"] == "update README.md"


def test_turn_usage_keeps_cached_and_reasoning_tokens_inside_the_totals():
    _, result = stream(fixture("synthetic", "codex", "every_line_type.stdout"))
    assert result.usage == ev.Usage(24763, 122, 24448, 64)


def test_turn_failed_after_an_error_line_is_one_fatal_error():
    events, result = stream(fixture("synthetic", "codex", "turn_failed.stdout"), "", 1)
    errors = [(e.content["message"], e.content["fatal"]) for e in events if e.type == ev.ERROR]
    assert errors == [
        ("Reconnecting... 1/5 (unexpected status 401 Unauthorized: Incorrect API key provided)",
         False),
        ("unexpected status 401 Unauthorized: Incorrect API key provided", True)]
    assert result.error == "unexpected status 401 Unauthorized: Incorrect API key provided"


def test_turn_failed_with_exit_code_zero_is_still_an_error():
    _, result = stream(fixture("synthetic", "codex", "turn_failed.stdout"), "", 0)
    assert not result.ok and result.exit_code == 0


def test_non_json_lines_are_ignored():
    text = fixture("synthetic", "codex", "every_line_type.stdout")
    noisy = "\n".join("Reading additional input from stdin...\n" + l for l in text.splitlines())
    assert [e.type for e in stream(noisy)[0]] == [e.type for e in stream(text)[0]]


def test_real_json_run_gives_text_usage_and_thread_id():
    out, err, code = real("json_ok")
    result = BACKEND.parse_json_output(out, err, code)
    assert result.ok and result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.backend_session_id in out.splitlines()[0]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6, 9)


def test_real_resume_reports_the_resumed_thread():
    out, err, code = real("resume_ok")
    assert BACKEND.parse_json_output(out, err, code).text == "FAKE-REPLY: Say hello to the fixture"


def test_real_api_error_body_is_unwrapped_into_a_readable_message():
    result = BACKEND.parse_json_output(*real("api_error_400_json"))
    assert result.error == "fake model API: injected failure 400"
    assert [e.content.get("code") for e in result.events if e.type == ev.ERROR][0] == \
        "invalid_request_error"


def test_real_server_error_is_reported_once():
    result = BACKEND.parse_json_output(*real("api_error_500_json"))
    assert result.error.startswith("We’re currently experiencing high demand")
    assert len([e for e in result.events if e.type == ev.ERROR]) == 1


def test_usage_error_names_the_offending_argument_not_the_help_hint():
    result = BACKEND.parse_json_output(*real("resume_rejects_sandbox_after_resume"))
    assert result.error == "codex exited with code 2: error: unexpected argument '-s' found"


def test_resume_of_a_lost_thread_reports_codexs_message():
    out, err = (fixture("synthetic", "codex", "probe_resume_unknown." + s)
                for s in ("stdout", "stderr"))
    result = BACKEND.parse_json_output(out, err, 1)
    assert result.error.startswith("codex exited with code 1: Error: thread/resume")
    assert BACKEND.missing_session_markers[0] in result.error.lower()


# -- against the fake codex --------------------------------------------------------------

def test_fake_run_reads_the_prompt_from_stdin_verbatim(tmp_path):
    prompt = "-c model=evil\n\nünïcode " * 50000
    result = BACKEND.parse_json_output(*run_fake(tmp_path, prompt, sandbox_mode="workspace"))
    assert result.ok and result.text == "echo: " + prompt
    assert result.usage.cached_tokens == 4


def test_fake_resume_with_sandbox_and_extras_is_accepted_and_continues(tmp_path):
    first = BACKEND.parse_json_output(*run_fake(tmp_path, "one"))
    second = BACKEND.parse_json_output(*run_fake(
        tmp_path, "two", resume_id=first.backend_session_id, sandbox_mode="read-only",
        extra=["--add-dir", str(tmp_path)]))
    assert second.ok and second.backend_session_id == first.backend_session_id
    assert second.text == "[history: 1 turns] echo: two"


def test_fake_rejects_sandbox_after_resume_like_codex(tmp_path):
    args = [FAKE, "exec", "--json", "resume", "--sandbox=read-only", "T", "-"]
    p = subprocess.run(args, input=b"x", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=str(tmp_path), timeout=60)
    assert p.returncode == 2 and b"unexpected argument '--sandbox'" in p.stderr


def test_fake_resume_of_an_unknown_thread_fails_like_codex(tmp_path):
    result = BACKEND.parse_json_output(*run_fake(tmp_path, "x", resume_id="no-such-thread"))
    assert "no rollout found for thread id no-such-thread" in result.error


def test_fake_tool_call_arrives_as_tool_events(tmp_path):
    events, result = stream(*run_fake(tmp_path, "hi", {"FAKE_CLI_TOOL": "1"},
                                      output_format="stream-json"))
    assert [e.type for e in events] == ["init", "tool_use", "tool_result", "message", "done"]
    assert result.text == "echo: hi"


def test_fake_error_with_exit_zero_is_an_error(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "error_exit0"})
    result = BACKEND.parse_json_output(out, err, code)
    assert code == 0 and not result.ok and "fake failure" in result.error


def test_fake_crash_midstream_is_reported_as_killed(tmp_path):
    events, result = stream(*run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "crash_midstream"},
                                      output_format="stream-json"))
    assert result.error == "codex was killed by signal 9"
    assert events[0].type == ev.INIT and events[-1].type == ev.DONE


def test_fake_records_argv_and_stdin(tmp_path):
    record = tmp_path / "record.jsonl"
    run_fake(tmp_path, "recorded prompt", {"FAKE_CLI_RECORD": str(record)}, model="m")
    entry = json.loads(record.read_text(encoding="utf-8"))
    assert entry["argv"][-1] == "-" and "--model=m" in entry["argv"]
    assert entry["stdin"] == "recorded prompt" and entry["cwd"] == str(tmp_path)


def test_fake_stderr_flood_leaves_the_output_intact(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "stderr_flood"})
    assert len(err) >= 4 << 20
    assert BACKEND.parse_json_output(out, err, code).text == "echo: hi"


def test_fake_noise_between_lines_is_ignored(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", {"FAKE_CLI_MODE": "noise"})
    assert "noise:" in out and BACKEND.parse_json_output(out, err, code).text == "echo: hi"


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.text.startswith("FAKE-REPLY: ") and result.backend_session_id
    else:
        assert not result.ok and result.error
