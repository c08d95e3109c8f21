"""backends/qwen.py: argv for qwen-code 0.24.4, its json / stream-json output (the Claude
dialect), the workdir's configuration kept out of server runs, and its fake CLI."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from clinvk_lib import config, execute
from clinvk_lib import events as ev
from clinvk_lib.backends import options, parsing, qwen
from clinvk_lib.policy import Policy, PolicyError, check_extra_flags
from tests.backendutil import BackendKit, help_flags
from tests.conftest import records
from tests.serverutil import start_server  # noqa: F401 (fixture)

KIT = BackendKit("qwen")
BACKEND = KIT.backend
HEAD = ["qwen", "--output-format=json"]
real, stream, argv, run_fake = KIT.real, KIT.stream, KIT.argv, KIT.run_fake


# -- argv --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, HEAD),
    ({"output_format": "stream-json"},
     ["qwen", "--output-format=stream-json", "--include-partial-messages"]),
    ({"resume_id": "3f0c2a9e"}, HEAD + ["--resume=3f0c2a9e"]),
    ({"model": "qwen3-coder-plus"}, HEAD + ["--model=qwen3-coder-plus"]),
    ({"approval_mode": "auto"}, HEAD + ["--approval-mode=auto-edit"]),
    ({"approval_mode": "none"}, HEAD + ["--approval-mode=yolo"]),
    ({"approval_mode": "always"}, HEAD + ["--approval-mode=default"]),
    ({"sandbox_mode": "read-only"}, HEAD),
    ({"max_turns": 3}, HEAD + ["--max-session-turns=3"]),
    ({"system_prompt": "Be terse."}, HEAD + ["--system-prompt=Be terse."]),
    ({"allowed_tools": "read_file,glob"}, HEAD + ["--allowed-tools=read_file,glob"]),
    ({"ephemeral": True}, HEAD + ["--chat-recording=false"]),
    ({"verbose": True}, HEAD + ["--debug"]),
    ({"project_config": False}, HEAD + ["--safe-mode"]),
    ({"extra": ["--exclude-tools", "web_fetch"], "verbose": True},
     HEAD + ["--debug", "--exclude-tools", "web_fetch"]),
])
def test_argv_maps_each_option(kw, expected):
    assert argv(**kw) == expected


def test_argv_has_no_positional_so_the_prompt_is_read_from_stdin():
    got = argv(resume_id="-1", model="-x", system_prompt="--yolo", approval_mode="none",
               max_turns=2, verbose=True, ephemeral=True, output_format="stream-json",
               project_config=False)
    assert all(a.startswith("-") for a in got[1:])


def test_every_emitted_flag_is_in_qwen_help():
    emitted = set()
    for approval in options.APPROVAL_MODES:
        emitted |= {a.split("=", 1)[0] for a in argv(
            resume_id="r", model="m", approval_mode=approval, max_turns=1, system_prompt="s",
            allowed_tools="t", ephemeral=True, verbose=True, output_format="stream-json",
            project_config=False)}
    assert emitted - help_flags("qwen.txt") == {"qwen"}


def test_every_allowed_extra_flag_is_in_qwen_help():
    assert set(BACKEND.allowed_extra_flags) - help_flags("qwen.txt") == set()


@pytest.mark.parametrize("flag", [
    "-y", "--yolo", "--approval-mode", "--allowed-tools", "--core-tools", "--mcp-config",
    "--sandbox", "--resume", "--continue", "--session-id", "--chat-recording",
    "--output-format", "--json-file", "--json-schema", "--openai-base-url", "--openai-api-key",
    "--auth-type", "--proxy", "--insecure", "--safe-mode", "--bare", "--model",
    "--system-prompt", "--max-session-turns", "--openai-logging-dir", "--telemetry-outfile",
])
def test_extra_flags_that_bypass_policy_or_parsing_or_clash_are_not_allowed(flag):
    assert flag not in BACKEND.allowed_extra_flags


def test_mode_notes_describe_every_mode():
    assert set(BACKEND.mode_notes["approval_mode"]) == set(options.APPROVAL_MODES)
    assert set(BACKEND.mode_notes["sandbox_mode"]) == set(options.SANDBOX_MODES)
    assert "never exits" in BACKEND.mode_notes["sandbox_mode"]["read-only"]


def test_sandbox_request_is_reported_as_not_enforced():
    warnings = BACKEND.ignored_options(options.Options(sandbox_mode="workspace"))
    assert len(warnings) == 1 and "not enforced" in warnings[0]
    assert BACKEND.ignored_options(options.Options(sandbox_mode="full")) == []


def test_untrusted_run_warns_that_auto_and_none_run_as_default():
    warnings = BACKEND.ignored_options(options.Options(approval_mode="none",
                                                       project_config=False))
    assert any("server.allow_project_config" in w for w in warnings)
    assert BACKEND.ignored_options(options.Options(approval_mode="none")) == []


# -- extra flags under the workdir policy --------------------------------------------------

def check(extra, allowed_dir):
    def check_path(field, path):
        if not os.path.realpath(path).startswith(allowed_dir):
            raise PolicyError(field, "%s is outside the allowed workdirs" % path)
        return path
    return check_extra_flags("qwen", extra, BACKEND.allowed_extra_flags,
                             BACKEND.path_extra_flags, check_path)


def test_comma_separated_include_directories_are_checked_one_by_one(tmp_path):
    with pytest.raises(PolicyError, match="/etc is outside"):
        check(["--include-directories=%s, /etc" % tmp_path], str(tmp_path))


def test_include_directories_takes_following_words_as_more_paths_and_checks_them(tmp_path):
    with pytest.raises(PolicyError, match="/etc is outside"):
        check(["--add-dir", str(tmp_path), "/etc"], str(tmp_path))


def test_each_checked_directory_is_passed_as_its_own_flag_word(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert check(["--include-directories", " %s ,%s" % (a, b)], str(tmp_path)) == [
        "--include-directories=%s" % a, "--include-directories=%s" % b]


# -- the workdir's configuration -------------------------------------------------------------

@pytest.fixture
def private(tmp_path, monkeypatch):
    """clinvk's private directory, where it writes qwen's settings files."""
    monkeypatch.setattr(qwen, "private_cache_dir", lambda: str(tmp_path / "private"))
    return tmp_path / "private"


def test_run_without_project_config_turns_folder_trust_on_over_every_other_layer(private):
    env = BACKEND.child_env({"HOME": "/h"}, options.Options(project_config=False))
    with open(env["QWEN_CODE_SYSTEM_SETTINGS_PATH"]) as f:
        assert json.load(f)["security"]["folderTrust"]["enabled"] is True
    with open(env["QWEN_CODE_TRUSTED_FOLDERS_PATH"]) as f:
        assert json.load(f) == {}


def test_operators_system_settings_are_kept_under_the_folder_trust_it_adds(private, tmp_path):
    operator = tmp_path / "system.json"
    operator.write_text(json.dumps({"model": {"name": "qwen-max"},
                                    "security": {"folderTrust": {"enabled": False},
                                                 "auth": {"selectedType": "openai"}}}))
    env = BACKEND.child_env({"QWEN_CODE_SYSTEM_SETTINGS_PATH": str(operator)},
                            options.Options(project_config=False))
    with open(env["QWEN_CODE_SYSTEM_SETTINGS_PATH"]) as f:
        settings = json.load(f)
    assert settings["model"] == {"name": "qwen-max"}
    assert settings["security"] == {"folderTrust": {"enabled": True},
                                    "auth": {"selectedType": "openai"}}


def test_unreadable_operator_settings_refuse_the_run_naming_the_file(private, tmp_path):
    operator = tmp_path / "system.json"
    operator.write_text("{ // a comment clinvk cannot merge\n}")
    with pytest.raises(options.SetupError, match=str(operator)):
        BACKEND.child_env({"QWEN_CODE_SYSTEM_SETTINGS_PATH": str(operator)},
                          options.Options(project_config=False))


def test_ide_connection_whose_trust_outranks_the_file_is_not_passed_on(private):
    env = BACKEND.child_env({"QWEN_CODE_IDE_SERVER_PORT": "4000",
                             "QWEN_CODE_IDE_WORKSPACE_PATH": "/w"},
                            options.Options(project_config=False))
    assert "QWEN_CODE_IDE_SERVER_PORT" not in env and "QWEN_CODE_IDE_WORKSPACE_PATH" not in env


def test_run_with_project_config_leaves_qwens_own_settings_alone():
    env = BACKEND.child_env({"QWEN_CODE_IDE_SERVER_PORT": "4000", "CLINVK_API_KEYS": "k"},
                            options.Options())
    assert env == {"QWEN_CODE_IDE_SERVER_PORT": "4000"}


def run_on_server(srv, work, **fields):
    return srv.post("/api/v1/prompt", dict({"backend": "qwen", "prompt": "hello",
                                            "workdir": work}, **fields))


def test_server_run_is_untrusted_in_safe_mode_and_overrides_approval(start_server, record,
                                                                      tmp_path, private):
    srv = start_server(**{"server.allow_dangerous_modes": True})
    reply = run_on_server(srv, str(tmp_path), approval_mode="none")
    assert reply.status == 200 and reply.json()["exit_code"] == 0
    last = records(record)[-1]
    assert "--safe-mode" in last["argv"] and "--approval-mode=yolo" in last["argv"]
    assert last["env"]["QWEN_CODE_SYSTEM_SETTINGS_PATH"].startswith(str(private))


def test_fake_untrusted_qwen_runs_yolo_as_default_like_the_real_one(tmp_path, private):
    opts = options.Options(approval_mode="none", output_format="stream-json",
                           project_config=False, workdir=str(tmp_path))
    env = BACKEND.child_env(dict(os.environ, FAKE_CLI_STATE_DIR=str(tmp_path)), opts)
    p = subprocess.run(BACKEND.build_argv(opts, KIT.fake), input=b"hi", cwd=str(tmp_path),
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    out, err, code = p.stdout.decode(), p.stderr.decode(), p.returncode
    init = json.loads(out.splitlines()[0])
    assert code == 0 and init["permission_mode"] == "default"
    assert 'Approval mode overridden to "default"' in err


def test_opted_in_server_run_is_trusted(start_server, record, tmp_path):
    srv = start_server(**{"server.allow_project_config": True})
    assert run_on_server(srv, str(tmp_path)).status == 200
    last = records(record)[-1]
    assert "--safe-mode" not in last["argv"]
    assert "QWEN_CODE_SYSTEM_SETTINGS_PATH" not in last["env"]


# -- output: the Claude dialect ------------------------------------------------------------

def test_real_json_gives_text_session_and_usage_with_cached_input_counted_once():
    code, result = KIT.parse_real("json_ok")
    assert code == 0 and result.ok
    assert result.text == "FAKE-REPLY: Say hello to the fixture"
    assert result.backend_session_id == "08710696-d574-4f57-8f34-637f4f690f46"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6, 9)
    assert result.model == "fake-model"


def test_real_stream_gives_token_deltas_and_no_repeated_whole_message():
    events, result = stream(*real("stream_json_ok"))
    pieces = [e.content["text"] for e in events if e.type == ev.MESSAGE]
    assert [e.content["is_partial"] for e in events if e.type == ev.MESSAGE] == [True] * 3
    assert "".join(pieces) == result.text == "FAKE-REPLY: Say hello to the fixture"
    assert [e.type for e in events][0] == ev.INIT and events[-1].type == ev.DONE


def test_real_tool_use_stream_gives_the_call_its_result_and_the_reply():
    events, result = stream(*real("tool_use_stream_json"))
    kinds = [e.type for e in events if e.type in (ev.TOOL_USE, ev.TOOL_RESULT)]
    assert kinds == [ev.TOOL_USE, ev.TOOL_RESULT]
    assert "pineapple" in next(e for e in events if e.type == ev.TOOL_RESULT).content["output"]
    assert result.ok and "pineapple" in result.text


@pytest.mark.parametrize("case", ["api_error_401_json", "api_error_401_stream_json"])
def test_real_rejected_key_is_not_authenticated_and_never_the_reply(case):
    code, result = KIT.parse_real(case)
    assert code == 1 and not result.ok and "401" in result.error
    assert "[API Error" not in result.text
    assert parsing.classified_failure(result)[0] == parsing.NOT_AUTHENTICATED


def test_real_run_without_an_auth_type_is_not_authenticated():
    _, result = KIT.parse_real("no_auth_type_json")
    assert result.error.startswith("No auth type is selected")
    assert parsing.classified_failure(result)[0] == parsing.NOT_AUTHENTICATED


def test_real_turn_limit_is_reported_from_the_error_qwen_prints_on_stderr():
    code, result = KIT.parse_real("max_session_turns_json")
    assert code == 53 and result.error.startswith("Reached max session turns")


def test_real_resume_of_an_unknown_session_is_a_lost_transcript():
    _, result = KIT.parse_real("resume_unknown_json")
    assert any(m in result.error.lower() for m in BACKEND.missing_session_markers)


@pytest.mark.parametrize("case", KIT.real_cases())
def test_every_real_capture_parses_to_a_reply_or_an_error(case):
    code, result = KIT.parse_real(case)
    if code == 0:
        assert result.ok and result.text.startswith("FAKE-REPLY: ") and result.backend_session_id
    else:
        assert not result.ok and result.error


def test_json_thinking_tokens_are_added_to_output_and_reasoning(tmp_path):
    out, err, code = run_fake(tmp_path, "hi")
    result = BACKEND.parse_json_output(out, err, code)
    assert result.ok and result.usage.reasoning_tokens == 2
    stream_result = stream(*run_fake(tmp_path, "hi", output_format="stream-json"))[1]
    assert result.usage.output_tokens == stream_result.usage.output_tokens + 2


# -- the fake, through clinvk --------------------------------------------------------------

def cli_run(prompt, **fields):
    cfg = config.load(flags={})
    return execute.run(execute.prepare(execute.Request(backend="qwen", prompt=prompt,
                                                       **fields), cfg))


def test_prompt_starting_with_dashes_reaches_qwen_verbatim_on_stdin(clinvk_home, fake_path,
                                                                     record):
    outcome = cli_run("--yolo is not a flag here")
    assert outcome.ok and outcome.result.text == "echo: --yolo is not a flag here"
    assert records(record)[-1]["stdin"] == "--yolo is not a flag here"


def test_resumed_qwen_session_continues_its_own_conversation(clinvk_home, fake_path):
    cfg = config.load(flags={})
    from clinvk_lib.sessions import SessionStore
    store = SessionStore(cfg.home)
    first = execute.run(execute.prepare(execute.Request(backend="qwen", prompt="one"), cfg,
                                        store), store)
    second = execute.run(execute.prepare(execute.Request(prompt="two",
                                                         session_id=first.session_id), cfg,
                                         store), store)
    assert second.ok and second.result.text == "[history: 1 turns] echo: two"
    assert second.result.backend_session_id == first.result.backend_session_id


def test_ephemeral_qwen_run_keeps_no_chat(clinvk_home, fake_path, record):
    outcome = cli_run("x", ephemeral=True)
    assert outcome.ok and outcome.session_id == ""
    assert "--chat-recording=false" in records(record)[-1]["argv"]


def test_unknown_flag_fails_like_qwen(tmp_path):
    out, err, code = run_fake(tmp_path, "x", extra=["--no-such-flag"])
    assert code == 1 and "Unknown arguments: no-such-flag" in err


def test_policy_refuses_a_qwen_flag_that_is_not_allowed_naming_it(clinvk_home, tmp_path):
    cfg = config.load(flags={})
    with pytest.raises(execute.ExecError, match="'--yolo' is not allowed for qwen"):
        execute.prepare(execute.Request(backend="qwen", prompt="x", workdir=str(tmp_path),
                                        extra=["--yolo"], dry_run=True), cfg,
                        policy=Policy.from_config(cfg))
