"""backends/opencode.py: argv and environment for opencode 1.18.33, its ``run --format json``
lines (no line ends a run), the clean-up of an ephemeral run, and the refusal of server and
MCP runs in a workdir whose project configuration opencode would execute."""

from __future__ import annotations

import json
import os

import pytest

from clinvk_lib import config, execute
from clinvk_lib import events as ev
from clinvk_lib.backends import opencode, options, parsing
from clinvk_lib.mcp.protocol import Server
from clinvk_lib.mcp.tools import ToolContext, all_tools
from clinvk_lib.sessions import SessionStore
from tests.backendutil import BackendKit, help_flags
from tests.conftest import records
from tests.serverutil import fresh_backend_probe, server, start_server  # noqa: F401 (fixtures)
from tests.test_mcp import Client

KIT = BackendKit("opencode")
BACKEND = KIT.backend
HEAD = ["opencode", "run", "--format=json"]
NEW = HEAD + ["--title="]
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake
SID = "ses_dca39805fffe08tIyC343LHbP7"
SWITCHES = {"OPENCODE_DISABLE_PROJECT_CONFIG": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1",
            "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1"}

pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


def line(kind, session=SID, **fields):
    return json.dumps(dict({"type": kind, "timestamp": 1, "sessionID": session}, **fields))


def env_for(base=None, **kw):
    return BACKEND.child_env(dict(base or {}), options.Options(**kw))


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, NEW),
    ({"output_format": "stream-json"}, NEW),
    ({"resume_id": SID}, HEAD + ["--session=" + SID]),
    ({"model": "anthropic/claude-sonnet-4-5"}, NEW + ["--model=anthropic/claude-sonnet-4-5"]),
    ({"approval_mode": "auto"}, NEW),
    ({"approval_mode": "none"}, NEW + ["--auto"]),
    ({"approval_mode": "always"}, NEW),
    ({"sandbox_mode": "read-only"}, NEW),
    ({"verbose": True}, NEW + ["--print-logs", "--log-level=DEBUG"]),
    ({"system_prompt": "S", "max_turns": 3, "ephemeral": True, "allowed_tools": "x"}, NEW),
    ({"extra": ["--agent=plan"], "project_config": False}, NEW + ["--agent=plan"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_the_default_approval_mode_refuses_shell_commands_which_opencode_alone_would_run(
        tmp_path):
    """opencode 1.18.33's own default runs any shell command without asking: a server run in
    approval_mode default must not get that (the server grants it only as approval_mode none,
    which its operator enables)."""
    permission = json.loads(env_for(approval_mode="default")["OPENCODE_PERMISSION"])
    assert permission["bash"] == "ask" and permission["edit"] == "ask"


def test_argv_has_no_message_words_so_the_prompt_is_read_from_stdin():
    got = argv(resume_id=SID, model="-x", approval_mode="none", verbose=True)
    assert got[:2] == ["opencode", "run"] and all(a.startswith("-") for a in got[2:])


def test_resume_id_that_looks_like_a_flag_is_refused():
    with pytest.raises(ValueError, match="must not start with '-'"):
        argv(resume_id="--auto")


@pytest.mark.parametrize("kw, field", [
    ({"approval_mode": "yolo"}, "approval_mode"),
    ({"sandbox_mode": "docker"}, "sandbox_mode"),
    ({"output_format": "text"}, "output_format"),
])
def test_unknown_option_values_are_refused_with_the_choices(kw, field):
    with pytest.raises(ValueError, match=field + " must be one of"):
        argv(**kw)


def test_every_emitted_flag_is_in_opencode_run_help():
    emitted = set()
    for approval in options.APPROVAL_MODES:
        for resume in ("", SID):
            emitted |= {a.split("=", 1)[0] for a in argv(
                resume_id=resume, model="m", approval_mode=approval, verbose=True)}
    assert emitted - help_flags("opencode_run.txt") == {"opencode", "run"}


def test_every_allowed_extra_flag_is_in_opencode_run_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("opencode_run.txt") == set()


@pytest.mark.parametrize("flag", [
    "--auto", "--session", "-s", "--continue", "-c", "--fork", "--share", "--attach", "--port",
    "--dir", "-p", "--password", "-u", "--username", "--command", "--format", "-m", "--model",
    "-i", "--interactive", "--print-logs", "--log-level", "--title",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_file_flags_take_one_path_per_value_and_further_words():
    for flag in ("-f", "--file"):
        spec = BACKEND.path_extra_flags[flag]
        assert spec.split("a,b") == ["a,b"] and spec.variadic


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)


def test_options_opencode_cannot_honour_are_reported():
    warnings = BACKEND.ignored_options(options.Options(
        sandbox_mode="read-only", allowed_tools="x", system_prompt="S", max_turns=2))
    assert len(warnings) == 2
    assert BACKEND.ignored_options(options.Options(sandbox_mode="full")) == []


# -- environment: approval, system prompt, turn limit, project configuration --------------

REFUSED = {"edit": "ask", "bash": "ask", "webfetch": "ask", "external_directory": "ask"}


@pytest.mark.parametrize("mode, permission", [
    ("default", REFUSED), ("always", REFUSED), ("auto", dict(REFUSED, edit="allow")),
    ("none", None),
])
def test_approval_modes_set_opencodes_permission_rules(mode, permission):
    got = env_for(approval_mode=mode).get("OPENCODE_PERMISSION")
    assert (json.loads(got) if got else None) == permission


def test_permission_rules_of_the_server_environment_are_kept_under_the_modes():
    got = env_for({"OPENCODE_PERMISSION": '{"read": "deny", "bash": "allow"}'},
                  approval_mode="always")
    assert json.loads(got["OPENCODE_PERMISSION"])["read"] == "deny"
    assert json.loads(got["OPENCODE_PERMISSION"])["bash"] == "ask"


def test_system_prompt_and_turn_limit_go_to_the_build_agent_config():
    got = json.loads(env_for(system_prompt="Be brief.\n--no flags", max_turns=4)[
        "OPENCODE_CONFIG_CONTENT"])
    assert got == {"agent": {"build": {"prompt": "Be brief.\n--no flags", "steps": 4}}}


def test_agent_settings_follow_the_agent_the_extra_flags_name_and_keep_other_config():
    base = {"OPENCODE_CONFIG_CONTENT": json.dumps({
        "mcp": {"w": {"type": "local"}}, "agent": {"plan": {"model": "x/y"}}})}
    got = json.loads(env_for(base, system_prompt="S", extra=["--agent", "plan"])[
        "OPENCODE_CONFIG_CONTENT"])
    assert got == {"mcp": {"w": {"type": "local"}},
                   "agent": {"plan": {"model": "x/y", "prompt": "S"}}}


def test_without_project_config_opencode_is_told_to_skip_it():
    assert all(env_for(project_config=False).get(k) == v for k, v in SWITCHES.items())
    assert not any(k in env_for() for k in SWITCHES)
    assert "OPENCODE_CONFIG_CONTENT" not in env_for()


@pytest.mark.parametrize("place, found", [(".opencode/plugin/evil.js", ".opencode"),
                                          (".opencode/tool/t.ts", ".opencode"),
                                          ("opencode.json", "opencode.json"),
                                          ("opencode.jsonc", "opencode.jsonc")])
def test_project_configuration_in_the_workdir_is_found(tmp_path, place, found):
    target = tmp_path / "work" / place
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("{}")
    assert opencode.project_config_file(str(tmp_path / "work"), str(tmp_path / "home")) == \
        str(tmp_path / "work" / found)


def test_project_configuration_in_a_folder_above_the_workdir_is_found(tmp_path):
    (tmp_path / "opencode.json").write_text('{"plugin": ["./evil.js"]}')
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert opencode.project_config_file(str(tmp_path / "a" / "b"), "/nohome") == \
        str(tmp_path / "opencode.json")


def test_a_dangling_symlink_counts(tmp_path):
    os.symlink(str(tmp_path / "missing"), str(tmp_path / ".opencode"))
    assert opencode.project_config_file(str(tmp_path), "/nohome") == str(tmp_path / ".opencode")


def test_the_users_own_opencode_folder_does_not_count(tmp_path):
    (tmp_path / ".opencode" / "bin").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    assert opencode.project_config_file(str(tmp_path / "work"), str(tmp_path)) == ""
    assert BACKEND.project_config_refusal(str(tmp_path / "work"), {"HOME": str(tmp_path)}) == ""


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "work"
    path.mkdir()
    return str(path)


def plant_plugin(work):
    os.makedirs(os.path.join(work, ".opencode", "plugin"))
    with open(os.path.join(work, ".opencode", "plugin", "evil.js"), "w") as f:
        f.write('require("fs").writeFileSync("/tmp/owned", "x")\n')
    return os.path.join(work, ".opencode")


def test_server_run_in_a_workdir_with_opencode_config_is_refused_naming_the_file(
        server, record, work):
    planted = plant_plugin(work)
    reply = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "hi",
                                           "workdir": work})
    assert reply.status == 400 and reply.json()["error"] == "invalid_request"
    assert planted in reply.json()["message"]
    assert "server.allow_project_config: true" in reply.json()["message"]
    assert records(record) == []


def test_a_resumed_server_session_is_refused_once_its_workdir_holds_opencode_config(
        server, record, work):
    first = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "one",
                                           "workdir": work})
    assert first.status == 200
    with open(os.path.join(work, "opencode.jsonc"), "w") as f:
        f.write('{"plugin": ["./x.js"]}')
    again = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "two",
                                           "session_id": first.json()["session_id"]})
    assert again.status == 400 and "opencode.jsonc" in again.json()["message"]
    assert len(records(record)) == 1


def test_server_compatible_api_run_is_refused_in_a_default_workdir_with_opencode_config(
        start_server, record, work):
    plant_plugin(work)
    srv = start_server(**{"server.default_workdir": work})
    reply = srv.post("/openai/v1/chat/completions", {
        "model": "opencode", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 400 and ".opencode" in reply.json()["error"]["message"]
    assert records(record) == []


def test_mcp_run_in_a_workdir_with_opencode_config_is_refused(clinvk_home, fake_path, record,
                                                              work):
    plant_plugin(work)
    cfg = config.load(flags={})
    client = Client(lambda out: Server(all_tools(ToolContext(cfg, SessionStore(cfg.home))),
                                       out, name="clinvk", version="9.9"))
    try:
        client.initialize()
        result = client.call("clinvk_prompt", {"backend": "opencode", "prompt": "hi",
                                               "workdir": work})["result"]
    finally:
        client.close()
    assert result["isError"] and ".opencode" in json.dumps(result)
    assert records(record) == []


def test_server_run_in_a_clean_workdir_tells_opencode_to_skip_project_config(server, record,
                                                                             work):
    reply = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "hi",
                                           "workdir": work})
    assert reply.status == 200, reply.json()
    env = records(record)[-1]["env"]
    assert all(env.get(k) == v for k, v in SWITCHES.items())


def test_opted_in_server_runs_opencode_with_its_project_config(start_server, record, work):
    plant_plugin(work)
    srv = start_server(**{"server.allow_project_config": True})
    reply = srv.post("/api/v1/prompt", {"backend": "opencode", "prompt": "hi", "workdir": work})
    assert reply.status == 200
    assert not any(k in records(record)[-1]["env"] for k in SWITCHES)


def test_command_line_run_keeps_opencodes_own_behaviour(clinvk_home, fake_path, record, work):
    plant_plugin(work)
    req = execute.Request(backend="opencode", prompt="hi", workdir=work)
    assert execute.run(execute.prepare(req, config.load(flags={}))).ok
    assert not any(k in records(record)[-1]["env"] for k in SWITCHES)


# -- output ------------------------------------------------------------------------------

def test_real_run_without_a_final_line_is_a_success_with_text_session_and_usage():
    out, err, code = real("json_ok")
    events, result = stream(out, err, code)
    assert result.ok and result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.backend_session_id.startswith("ses_")
    assert events[0].type == ev.INIT and events[0].content["backend_session_id"] == \
        result.backend_session_id
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0


def test_usage_sums_the_steps_with_cache_and_reasoning_inside_the_totals():
    step = {"type": "step-finish", "cost": 0.25, "tokens": {
        "input": 10, "output": 5, "reasoning": 2, "cache": {"read": 100, "write": 3}}}
    _, result = stream("\n".join([line("step_finish", part=step)] * 2))
    assert result.usage == ev.Usage(input_tokens=226, output_tokens=14, cached_tokens=200,
                                    reasoning_tokens=4, cost_usd=0.5)


def test_reasoning_parts_are_thinking():
    events, result = stream(line("reasoning", part={"type": "reasoning", "text": "hm"}) + "\n"
                            + line("text", part={"type": "text", "text": "answer"}))
    assert [e.type for e in events if e.type in (ev.THINKING, ev.MESSAGE)] == \
        [ev.THINKING, ev.MESSAGE]
    assert result.text == "answer"


def test_real_tool_call_gives_tool_use_and_its_result():
    events, _ = stream(*real("tool_use_json")[:2])
    use, done = [e for e in events if e.type in (ev.TOOL_USE, ev.TOOL_RESULT)]
    assert use.content["tool_name"] == done.content["tool_name"] == "read"
    assert "pineapple" in done.content["output"] and not done.content["is_error"]


def test_real_refused_tool_call_is_an_error_result():
    events, result = stream(*real("tool_denied_json")[:2])
    done = [e for e in events if e.type == ev.TOOL_RESULT][0]
    assert done.content["is_error"] and "rejected permission" in done.content["output"]
    assert result.ok


def test_real_error_line_is_fatal_with_its_status_code():
    out, err, code = real("api_error_400_json")
    events, result = stream(out, err, code)
    fatal = [e for e in events if e.type == ev.ERROR]
    assert len(fatal) == 1 and fatal[0].content["code"] == "api_error_400"
    assert result.error == "fake model API: injected failure 400"


def test_real_refused_key_is_not_authenticated():
    _, result = KIT.parse_real("api_error_401_json")
    assert parsing.classified_failure(result)[0] == parsing.NOT_AUTHENTICATED


def test_error_line_with_exit_zero_is_still_an_error():
    _, result = stream(line("error", error={"name": "UnknownError", "data": {
        "message": "Unexpected server error."}}))
    assert not result.ok and result.error == "Unexpected server error."


def test_exit_zero_without_any_opencode_line_is_an_error():
    _, result = stream("not json at all\n{\"type\": \"text\"}")
    assert not result.ok and "no JSON result" in result.error


def test_colours_are_stripped_from_the_stderr_message_of_a_failed_run():
    _, result = KIT.parse_real("resume_unknown_json")
    assert result.error == "opencode exited with code 1: Error: Session not found"
    assert any(m in result.error.lower() for m in BACKEND.missing_session_markers)


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.backend_session_id
        assert result.text.startswith("FAKE-REPLY: ") or case == "tool_denied_json"
    else:
        assert not result.ok and result.error


# -- the fake CLI, run with clinvk's argv -------------------------------------------------

def test_fake_run_reads_the_prompt_from_stdin_verbatim(tmp_path):
    out, _, code = run_fake(tmp_path, "--help is not a flag")
    result = BACKEND.parse_json_output(out, "", code)
    assert result.ok and result.text == "echo: --help is not a flag"


def test_fake_resume_continues_the_same_session(tmp_path):
    first = BACKEND.parse_json_output(run_fake(tmp_path, "one")[0], "", 0)
    out, _, code = run_fake(tmp_path, "two", resume_id=first.backend_session_id)
    second = BACKEND.parse_json_output(out, "", code)
    assert second.text == "[history: 1 turns] echo: two"
    assert second.backend_session_id == first.backend_session_id


def test_fake_rate_limit_is_a_rate_limited_failure(tmp_path):
    out, err, code = run_fake(tmp_path, "hi", env={"FAKE_CLI_MODE": "rate_limited"})
    kind, first = parsing.classified_failure(BACKEND.parse_json_output(out, err, code))
    assert code == 1 and kind == parsing.RATE_LIMITED and first.content["retry_after"] == 20


def test_resuming_a_deleted_session_is_a_session_error(clinvk_home, fake_path, work):
    cfg = config.load(flags={})
    store = SessionStore(cfg.home)
    first = execute.run(execute.prepare(execute.Request(backend="opencode", prompt="one",
                                                        workdir=work), cfg, store), store)
    os.remove(os.path.join(os.environ["FAKE_CLI_STATE_DIR"],
                           "opencode-%s.json" % first.result.backend_session_id))
    again = execute.run(execute.prepare(execute.Request(session_id=first.session_id,
                                                        prompt="two"), cfg, store), store)
    assert again.error_kind == execute.ErrorKind.SESSION


# -- ephemeral: the clean-up ---------------------------------------------------------------

def test_forget_session_asks_opencode_to_delete_it():
    ran = []
    BACKEND.forget_session(SID, "/bin/opencode", ran.append)
    assert ran == [["/bin/opencode", "session", "delete", SID]]


def test_forget_session_runs_nothing_for_an_id_that_is_not_opencodes():
    ran = []
    for sid in ("--help", "ses_../x", "abc"):
        BACKEND.forget_session(sid, "opencode", ran.append)
    assert ran == []


def test_ephemeral_run_leaves_no_opencode_session_behind(clinvk_home, fake_path, record, work):
    req = execute.Request(backend="opencode", prompt="hi", workdir=work, ephemeral=True)
    outcome = execute.run(execute.prepare(req, config.load(flags={})))
    assert outcome.ok and outcome.result.backend_session_id
    assert records(record)[-1]["argv"][1:3] == ["session", "delete"]
    assert not [n for n in os.listdir(os.environ["FAKE_CLI_STATE_DIR"])
                if n.startswith("opencode-")]


# -- the compatible APIs -------------------------------------------------------------------

def test_openai_and_anthropic_requests_are_answered_by_opencode(server, work):
    chat = server.post("/openai/v1/chat/completions", {
        "model": "opencode", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hello"}]})
    assert chat.status == 200, chat.json()
    assert chat.json()["choices"][0]["message"]["content"].endswith("hello")
    assert chat.json()["usage"]["prompt_tokens"] > 0
    message = server.post("/anthropic/v1/messages", {
        "model": "opencode/fake/fake-model", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]})
    assert message.status == 200, message.json()
    assert message.json()["content"][0]["text"].endswith("hello")


# -- clinvk doctor: can opencode authenticate? ------------------------------------------------

def test_check_auth_counts_stored_logins_without_running_opencode(tmp_path):
    data = tmp_path / ".local" / "share" / "opencode"
    data.mkdir(parents=True)
    (data / "auth.json").write_text(json.dumps({"anthropic": {"type": "api", "key": "sk-x"}}))
    ran = []
    check = BACKEND.check_auth("opencode", {"HOME": str(tmp_path)}, ran.append)
    assert check.state is True and "anthropic" in check.detail and "sk-x" not in check.detail
    assert ran == []


def test_check_auth_sees_a_provider_in_the_user_config(tmp_path):
    folder = tmp_path / "xdg" / "opencode"
    folder.mkdir(parents=True)
    (folder / "opencode.json").write_text(json.dumps({"provider": {"fake": {
        "options": {"apiKey": "sk-y"}}}}))
    check = BACKEND.check_auth("opencode", {"HOME": str(tmp_path),
                                            "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, None)
    assert check.state is True and "fake" in check.detail and "sk-y" not in check.detail


def test_check_auth_without_logins_or_providers_is_not_decided(tmp_path):
    check = BACKEND.check_auth("opencode", {"HOME": str(tmp_path)}, None)
    assert check.state is None and "not checked" in check.detail


# -- path flags under the workdir policy -----------------------------------------------------

def test_every_word_a_variadic_file_flag_takes_is_checked_before_opencode_starts(server, record,
                                                                                 work):
    note = os.path.join(work, "note.txt")
    with open(note, "w") as f:
        f.write("x")
    reply = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "hi",
                                           "workdir": work,
                                           "extra": ["-f", note, "/etc/passwd"]})
    assert reply.status == 400 and reply.json()["field"] == "extra[2]"
    assert "blocked prefix" in reply.json()["message"] and records(record) == []
    reply = server.post("/api/v1/prompt", {"backend": "opencode", "prompt": "hi",
                                           "workdir": work, "extra": ["--file", note, note]})
    assert reply.status == 200, reply.json()
    assert records(record)[-1]["argv"][-2:] == ["--file=" + note] * 2
