"""backends/copilot.py: argv for GitHub Copilot CLI 1.0.102, its JSON lines, the clean-up of
an ephemeral run, and the project-configuration rule for server and MCP runs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from clinvk_lib import config, execute
from clinvk_lib import events as ev
from clinvk_lib.backends import options, parsing
from clinvk_lib.mcp.protocol import Server
from clinvk_lib.mcp.tools import ToolContext, all_tools
from clinvk_lib.sessions import SessionStore
from tests.backendutil import BackendKit, help_flags
from tests.conftest import records
from tests.serverutil import fresh_backend_probe, server, start_server  # noqa: F401 (fixtures)
from tests.test_mcp import Client

KIT = BackendKit("copilot")
BACKEND = KIT.backend
HEAD = ["copilot", "--output-format=json", "--no-auto-update"]
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake
SID = "3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"
OFF = ["--no-custom-instructions", "--excluded-tools=skill,task"]

pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


def line(kind, data, **more):
    return json.dumps(dict({"type": kind, "data": data}, **more))


def result_line(exit_code=0, session=SID):
    return json.dumps({"type": "result", "sessionId": session, "exitCode": exit_code})


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, HEAD),
    ({"output_format": "stream-json"}, HEAD),
    ({"resume_id": SID}, HEAD + ["--resume=" + SID]),
    ({"model": "gpt-5.4"}, HEAD + ["--model=gpt-5.4"]),
    ({"approval_mode": "auto"}, HEAD + ["--allow-tool=write"]),
    ({"approval_mode": "none"}, HEAD + ["--allow-all-tools"]),
    ({"approval_mode": "always"}, HEAD),
    ({"sandbox_mode": "read-only"}, HEAD + ["--sandbox"]),
    ({"sandbox_mode": "workspace"}, HEAD + ["--sandbox"]),
    ({"sandbox_mode": "full"}, HEAD),
    ({"allowed_tools": "shell(git:*),write"}, HEAD + ["--allow-tool=shell(git:*),write"]),
    ({"system_prompt": "S", "max_turns": 3, "ephemeral": True, "verbose": True}, HEAD),
    ({"project_config": False}, HEAD + OFF),
    ({"extra": ["--add-dir=/srv"], "project_config": False}, HEAD + OFF + ["--add-dir=/srv"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_argv_has_no_positional_so_the_prompt_is_read_from_stdin():
    got = argv(resume_id=SID, model="-x", approval_mode="none", sandbox_mode="workspace",
               allowed_tools="write", project_config=False)
    assert all(a.startswith("-") for a in got[1:])


def test_resume_id_that_looks_like_a_flag_is_refused():
    with pytest.raises(ValueError, match="must not start with '-'"):
        argv(resume_id="--allow-all")


@pytest.mark.parametrize("kw, field", [
    ({"approval_mode": "yolo"}, "approval_mode"),
    ({"sandbox_mode": "bwrap"}, "sandbox_mode"),
    ({"output_format": "text"}, "output_format"),
])
def test_unknown_option_values_are_refused_with_the_choices(kw, field):
    with pytest.raises(ValueError, match=field + " must be one of"):
        argv(**kw)


def test_every_emitted_flag_is_in_copilots_help():
    documented = help_flags("copilot.txt") | help_flags("copilot_help_sandbox.txt")
    emitted = set()
    for approval in options.APPROVAL_MODES:
        emitted |= {a.split("=", 1)[0] for a in argv(
            resume_id=SID, model="m", approval_mode=approval, sandbox_mode="workspace",
            allowed_tools="write", project_config=False)}
    assert emitted - documented == {"copilot"}


def test_every_allowed_extra_flag_is_in_copilots_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("copilot.txt") == set()


@pytest.mark.parametrize("flag", [
    "--allow-tool", "--allow-all-tools", "--allow-all-paths", "--allow-all-urls",
    "--allow-all", "--yolo", "--allow-url", "--assisted-approval", "--available-tools",
    "--trust-folder", "--agent", "--plugin-dir", "--additional-mcp-config",
    "--enable-mcp-server", "-C", "--resume", "--continue", "--session-id", "--output-format",
    "--stream", "--share", "--log-dir", "--usage-output-file", "--sandbox", "--model", "-p",
    "-i", "--acp", "--autopilot", "--mode",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_path_extra_flags_are_one_path_each_commas_included():
    for flag in ("--add-dir", "--attachment"):
        assert BACKEND.path_extra_flags[flag].split("/a,/b") == ["/a,/b"]


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)
    assert "NOT read-only" in BACKEND.mode_notes["sandbox_mode"]["read-only"]


def test_options_copilot_cannot_honour_are_reported():
    warnings = BACKEND.ignored_options(options.Options(
        system_prompt="S", max_turns=2, sandbox_mode="read-only", ephemeral=True))
    assert len(warnings) == 3 and not any("ephemeral" in w for w in warnings)
    assert BACKEND.ignored_options(options.Options(sandbox_mode="workspace")) == []


def test_child_env_without_project_config_drops_copilot_allow_all():
    base = {"COPILOT_ALLOW_ALL": "true", "HOME": "/h", "CLAUDECODE": "1"}
    env = BACKEND.child_env(base, options.Options(project_config=False))
    assert "COPILOT_ALLOW_ALL" not in env and "CLAUDECODE" not in env and env["HOME"] == "/h"
    assert BACKEND.child_env(base, options.Options())["COPILOT_ALLOW_ALL"] == "true"


# -- the project-configuration rule ------------------------------------------------------

def write_config(home, folders, comments=True):
    os.makedirs(str(home / ".copilot"), exist_ok=True)
    head = "// User settings belong in settings.json.\n// This file is managed automatically.\n"
    (home / ".copilot" / "config.json").write_text(
        (head if comments else "") + json.dumps({"trustedFolders": folders}))
    return str(home / ".copilot" / "config.json")


def test_a_trusted_folder_above_the_workdir_is_the_reason_to_refuse(tmp_path):
    path = write_config(tmp_path, ["/elsewhere", str(tmp_path)])
    reason = BACKEND.project_config_refusal(str(tmp_path / "work"), {"HOME": str(tmp_path)})
    assert path in reason and "trustedFolders" in reason
    assert "server.allow_project_config: true" in reason


def test_copilot_home_names_the_config_file_read(tmp_path):
    write_config(tmp_path / "other", [str(tmp_path)])
    env = {"HOME": str(tmp_path), "COPILOT_HOME": str(tmp_path / "other" / ".copilot")}
    assert BACKEND.project_config_refusal(str(tmp_path / "work"), env)


@pytest.mark.parametrize("folders", [[], ["/elsewhere"], ["WORK-"], 7])
def test_no_trusting_entry_means_no_refusal(tmp_path, folders):
    work = tmp_path / "work"
    write_config(tmp_path, [str(work) + "-sibling"] if folders == ["WORK-"] else folders)
    assert BACKEND.project_config_refusal(str(work), {"HOME": str(tmp_path)}) == ""


def test_a_missing_or_broken_config_file_is_no_refusal(tmp_path):
    assert BACKEND.project_config_refusal("/w", {"HOME": str(tmp_path)}) == ""
    os.makedirs(str(tmp_path / ".copilot"))
    (tmp_path / ".copilot" / "config.json").write_text("{not json")
    assert BACKEND.project_config_refusal("/w", {"HOME": str(tmp_path)}) == ""


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A workdir, with HOME (where copilot's config.json is) in tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("COPILOT_HOME", raising=False)
    path = tmp_path / "work"
    path.mkdir()
    return str(path)


def test_server_run_keeps_instructions_skills_and_agents_out_and_the_folder_untrusted(
        server, record, work, monkeypatch):
    monkeypatch.setenv("COPILOT_ALLOW_ALL", "true")
    reply = server.post("/api/v1/prompt", {"backend": "copilot", "prompt": "hi",
                                           "workdir": work})
    assert reply.status == 200, reply.json()
    last = records(record)[-1]
    assert all(flag in last["argv"] for flag in OFF)
    assert "COPILOT_ALLOW_ALL" not in last["env"]


def test_server_run_in_a_workdir_copilot_trusts_is_refused_before_it_starts(
        server, record, work, tmp_path):
    write_config(tmp_path, [str(tmp_path)])
    reply = server.post("/api/v1/prompt", {"backend": "copilot", "prompt": "hi",
                                           "workdir": work})
    assert reply.status == 400 and reply.json()["error"] == "invalid_request"
    assert "trustedFolders" in reply.json()["message"]
    assert records(record) == []


def test_mcp_run_in_a_workdir_copilot_trusts_is_refused(clinvk_home, fake_path, record, work,
                                                         tmp_path):
    write_config(tmp_path, [work])
    cfg = config.load(flags={})
    client = Client(lambda out: Server(all_tools(ToolContext(cfg, SessionStore(cfg.home))),
                                       out, name="clinvk", version="9.9"))
    try:
        client.initialize()
        result = client.call("clinvk_prompt", {"backend": "copilot", "prompt": "hi",
                                               "workdir": work})["result"]
    finally:
        client.close()
    assert result["isError"] and "trustedFolders" in json.dumps(result)
    assert records(record) == []


def test_opted_in_server_runs_in_a_trusted_workdir_with_instructions(start_server, record,
                                                                      work, tmp_path):
    write_config(tmp_path, [work])
    srv = start_server(**{"server.allow_project_config": True})
    reply = srv.post("/api/v1/prompt", {"backend": "copilot", "prompt": "hi", "workdir": work})
    assert reply.status == 200
    assert not any(flag in records(record)[-1]["argv"] for flag in OFF)


def test_command_line_run_keeps_copilots_own_behaviour(clinvk_home, fake_path, record, work,
                                                       tmp_path):
    write_config(tmp_path, [work])
    req = execute.Request(backend="copilot", prompt="hi", workdir=work)
    assert execute.run(execute.prepare(req, config.load(flags={}))).ok
    assert not any(flag in records(record)[-1]["argv"] for flag in OFF)


# -- output ------------------------------------------------------------------------------

def test_real_run_streams_token_deltas_and_does_not_repeat_the_whole_message():
    events, result = stream(*real("json_ok")[:2])
    deltas = [e.content["text"] for e in events if e.type == ev.MESSAGE]
    assert len(deltas) == 3 and all(e.content["is_partial"] for e in events
                                    if e.type == ev.MESSAGE)
    assert "".join(deltas) == result.text == "FAKE-REPLY: Say hello to the fixture"
    assert [e.type for e in events][0] == ev.INIT and result.model == "fake-model"


def test_session_id_comes_from_the_last_line():
    _, result = stream(*real("json_ok")[:2])
    assert result.backend_session_id == json.loads(
        real("json_ok")[0].splitlines()[-1])["sessionId"]


def test_real_tool_call_gives_tool_use_then_its_result():
    events, result = stream(*real("tool_use_json")[:2])
    use, done = [e for e in events if e.type in (ev.TOOL_USE, ev.TOOL_RESULT)]
    assert use.content["tool_name"] == "view" and use.content["input"]["path"].endswith(
        "note.txt")
    assert done.content["tool_id"] == use.content["tool_id"] and not done.content["is_error"]
    assert "pineapple" in done.content["output"] and done.content["tool_name"] == "view"
    assert result.text.startswith("FAKE-REPLY: tool said:")


def test_refused_tool_call_is_an_error_result_and_the_run_goes_on():
    events, result = stream(*real("tool_denied_json")[:2])
    done = [e for e in events if e.type == ev.TOOL_RESULT][0]
    assert done.content["is_error"] and "Permission denied" in done.content["output"]
    assert result.ok


def test_real_api_error_is_one_fatal_error_with_its_status():
    out, err, code = real("api_error_400_json")
    events, result = stream(out, err, code)
    fatal = [e for e in events if e.type == ev.ERROR and e.content["fatal"]]
    assert len(fatal) == 1 and fatal[0].content["code"] == "api_error_400"
    assert result.error == "400 fake model API: injected failure 400"


def test_a_refused_key_and_no_credentials_are_not_authenticated():
    for case in ("api_error_401_json", "no_auth_json"):
        _, result = KIT.parse_real(case)
        kind, first = parsing.classified_failure(result)
        assert kind == parsing.NOT_AUTHENTICATED, case


def test_retry_notices_are_not_fatal():
    events, _ = stream(line("session.info", {"infoType": "model_retry",
                                             "message": "Retrying..."}) + "\n"
                       + line("session.info", {"infoType": "mcp", "message": "loaded"}) + "\n"
                       + line("session.warning", {"warningType": "policy", "message": "w"})
                       + "\n" + result_line())
    notices = [e for e in events if e.type == ev.ERROR]
    assert [(e.content["code"], e.content["fatal"]) for e in notices] == [
        ("retry", False), ("warning", False)]


def test_sub_agent_text_is_not_part_of_the_reply_but_its_tools_are_kept():
    lines = [line("assistant.message_delta", {"messageId": "s", "deltaContent": "inner",
                                              "parentToolCallId": "t1"}),
             line("assistant.message", {"messageId": "s", "content": "inner",
                                        "parentToolCallId": "t1"}),
             line("tool.execution_start", {"toolCallId": "c", "toolName": "grep",
                                           "parentToolCallId": "t1"}),
             line("assistant.message", {"messageId": "m", "content": "outer"}),
             result_line()]
    events, result = stream("\n".join(lines))
    assert result.text == "outer"
    assert [e.content["tool_name"] for e in events if e.type == ev.TOOL_USE] == ["grep"]


def test_reasoning_deltas_are_partial_thinking_not_repeated_whole():
    lines = [line("assistant.reasoning_delta", {"reasoningId": "r", "deltaContent": "hm"}),
             line("assistant.reasoning", {"reasoningId": "r", "content": "hm"}),
             line("assistant.message", {"messageId": "m", "content": "done"}), result_line()]
    events, _ = stream("\n".join(lines))
    assert [(e.type, e.content["is_partial"]) for e in events
            if e.type in (ev.THINKING, ev.MESSAGE)] == [(ev.THINKING, True), (ev.MESSAGE, False)]


def test_a_result_with_a_nonzero_exit_code_is_an_error_even_with_exit_zero():
    _, result = stream(line("assistant.message", {"messageId": "m", "content": "x"}) + "\n"
                       + result_line(exit_code=1))
    assert not result.ok and "exit code 1" in result.error


def test_output_without_the_result_line_is_an_error():
    _, result = stream(line("assistant.message", {"messageId": "m", "content": "cut"}))
    assert not result.ok and "no JSON result" in result.error


def test_non_json_lines_are_ignored():
    _, result = stream("Warning: something\n" + line("assistant.message", {
        "messageId": "m", "content": "fine"}) + "\n" + result_line())
    assert result.ok and result.text == "fine"


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.text.startswith("FAKE-REPLY: ") and result.backend_session_id
    else:
        assert not result.ok and result.error


def test_resume_of_a_lost_session_reports_copilots_message():
    _, result = KIT.parse_real("resume_unknown_json")
    assert any(m in result.error.lower() for m in BACKEND.missing_session_markers)


# -- the fake CLI, run with clinvk's argv -------------------------------------------------

@pytest.fixture
def copilot_home(tmp_path, monkeypatch):
    home = tmp_path / "copilot-home"
    monkeypatch.setenv("COPILOT_HOME", str(home))
    return home


def test_fake_run_reads_the_prompt_from_stdin_verbatim(tmp_path, copilot_home):
    out, _, code = run_fake(tmp_path, "--yolo is not a flag here", project_config=False)
    result = BACKEND.parse_json_output(out, "", code)
    assert result.ok and result.text == "echo: --yolo is not a flag here"


def test_fake_resume_continues_the_same_session(tmp_path, copilot_home):
    first = BACKEND.parse_json_output(run_fake(tmp_path, "one")[0], "", 0)
    out, _, code = run_fake(tmp_path, "two", resume_id=first.backend_session_id)
    second = BACKEND.parse_json_output(out, "", code)
    assert second.text == "[history: 1 turns] echo: two"
    assert second.backend_session_id == first.backend_session_id


def test_fake_rate_limit_is_a_rate_limited_failure(tmp_path, copilot_home):
    out, err, code = run_fake(tmp_path, "hi", env={"FAKE_CLI_MODE": "rate_limited"})
    kind, first = parsing.classified_failure(BACKEND.parse_json_output(out, err, code))
    assert code == 1 and kind == parsing.RATE_LIMITED and first.content["retry_after"] == 20


# -- ephemeral: the clean-up ---------------------------------------------------------------

def make_store(home, ids):
    """A session store shaped like copilot 1.0.102's: a folder per session, and rows keyed
    by session id in session-store.db."""
    for sid in ids:
        os.makedirs(str(home / "session-state" / sid))
        (home / "session-state" / sid / "events.jsonl").write_text("{}\n")
    con = sqlite3.connect(str(home / "session-store.db"))
    with con:
        con.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, cwd TEXT)")
        con.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, session_id TEXT, text TEXT)")
        con.execute("CREATE TABLE schema_version (version INTEGER)")
        for sid in ids:
            con.execute("INSERT INTO sessions VALUES (?, '/w')", (sid,))
            con.execute("INSERT INTO turns (session_id, text) VALUES (?, 'secret prompt')",
                        (sid,))
    con.close()


def run_in(env):
    def run(argv):
        return subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=True,
                              timeout=60).stdout.decode()
    return run


def test_forget_session_removes_the_session_folder_and_its_rows_only(tmp_path):
    other = "11111111-2222-3333-4444-555555555555"
    make_store(tmp_path, [SID, other])
    BACKEND.forget_session(SID, "copilot", run_in(dict(os.environ, COPILOT_HOME=str(tmp_path))))
    assert sorted(os.listdir(str(tmp_path / "session-state"))) == [other]
    con = sqlite3.connect(str(tmp_path / "session-store.db"))
    assert con.execute("SELECT id FROM sessions").fetchall() == [(other,)]
    assert con.execute("SELECT session_id FROM turns").fetchall() == [(other,)]
    con.close()


def test_forget_session_runs_nothing_for_an_id_that_is_not_copilots():
    ran = []
    for sid in ("../../etc", "--help", "abc"):
        BACKEND.forget_session(sid, "copilot", ran.append)
    assert ran == []


def test_forget_session_runs_an_isolated_python_in_the_runs_environment():
    ran = []
    BACKEND.forget_session(SID, "/bin/copilot", ran.append)
    assert ran[0][:3] == [sys.executable, "-I", "-c"] and ran[0][-1] == SID


def test_ephemeral_run_leaves_no_copilot_session_behind(clinvk_home, fake_path, record, work,
                                                        copilot_home):
    req = execute.Request(backend="copilot", prompt="hi", workdir=work, ephemeral=True)
    outcome = execute.run(execute.prepare(req, config.load(flags={})))
    assert outcome.ok and outcome.result.backend_session_id
    assert os.listdir(str(copilot_home / "session-state")) == []


# -- the compatible APIs -------------------------------------------------------------------

def test_openai_and_anthropic_requests_are_answered_by_copilot(server, work):
    chat = server.post("/openai/v1/chat/completions", {
        "model": "copilot", "messages": [{"role": "user", "content": "hello"}]})
    assert chat.status == 200, chat.json()
    assert chat.json()["choices"][0]["message"]["content"].endswith("hello")
    message = server.post("/anthropic/v1/messages", {
        "model": "copilot/gpt-5.4", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]})
    assert message.status == 200, message.json()
    assert message.json()["content"][0]["text"].endswith("hello")


# -- clinvk doctor: can copilot authenticate? -------------------------------------------------

@pytest.mark.parametrize("env, state, says", [
    ({"COPILOT_PROVIDER_BASE_URL": "http://127.0.0.1:9/v1"}, True, "own model provider"),
    ({"GH_TOKEN": "github_pat_x"}, True, "GH_TOKEN"),
    ({"COPILOT_GITHUB_TOKEN": "gho_x", "GITHUB_TOKEN": "ghp_x"}, True, "COPILOT_GITHUB_TOKEN"),
    ({"GITHUB_TOKEN": "ghp_classic"}, False, "classic personal access token"),
    ({}, None, "not checked"),
])
def test_check_auth_reads_the_variables_copilot_reads_and_runs_nothing(env, state, says):
    ran = []
    check = BACKEND.check_auth("copilot", dict(env, HOME="/h"), ran.append)
    assert (check.state, ran) == (state, []) and says in check.detail
    assert not any(v in check.detail for v in env.values())      # no secret in the words


def test_text_of_two_streamed_messages_is_kept_apart_like_whole_messages():
    lines = [line("assistant.message_delta", {"messageId": "a", "deltaContent": "Let me look."}),
             line("assistant.message", {"messageId": "a", "content": "Let me look."}),
             line("tool.execution_start", {"toolCallId": "c", "toolName": "view"}),
             line("assistant.message_delta", {"messageId": "b", "deltaContent": "Found "}),
             line("assistant.message_delta", {"messageId": "b", "deltaContent": "it."}),
             line("assistant.message", {"messageId": "b", "content": "Found it."}),
             result_line()]
    events, result = stream("\n".join(lines))
    assert result.text == "Let me look.\n\nFound it."
    assert [e.content["text"] for e in events if e.type == ev.MESSAGE] == [
        "Let me look.", "\n\nFound ", "it."]


# -- path flags under the workdir policy -----------------------------------------------------

@pytest.mark.parametrize("extra, index", [(["--add-dir=/etc"], 0),
                                          (["--attachment", "/etc/shadow"], 1),
                                          (["--add-dir", "WORK", "--add-dir=/proc/1"], 2)])
def test_a_path_flag_under_a_blocked_prefix_is_400_before_copilot_starts(server, record, work,
                                                                         extra, index):
    reply = server.post("/api/v1/prompt", {
        "backend": "copilot", "prompt": "hi", "workdir": work,
        "extra": [e.replace("WORK", work) for e in extra]})
    assert reply.status == 400 and reply.json()["field"] == "extra[%d]" % index
    assert "blocked prefix" in reply.json()["message"]
    assert records(record) == []


def test_an_allowed_add_dir_reaches_copilot_as_one_checked_word(server, record, work):
    reply = server.post("/api/v1/prompt", {"backend": "copilot", "prompt": "hi",
                                           "workdir": work, "extra": ["--add-dir", work]})
    assert reply.status == 200, reply.json()
    assert records(record)[-1]["argv"][-1] == "--add-dir=" + work
