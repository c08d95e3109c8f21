"""The chat profile (backends.options.CHAT_PROFILE) on each backend: the argv, run files and
environment it builds, and how execute.prepare applies a request's profile."""

from __future__ import annotations

import os

import pytest

from clinvk_lib import config, execute
from clinvk_lib.backends import base, claude, codex, gemini, options, qwen
from clinvk_lib.policy import Policy
from tests.backendutil import help_flags

CHAT = options.CHAT_PROFILE
HELP = {"claude": "claude.txt", "codex": "codex_exec.txt", "gemini": "gemini.txt",
        "qwen": "qwen.txt", "copilot": "copilot.txt", "opencode": "opencode_run.txt"}


def argv(name: str, **kw) -> list:
    opts = options.Options(**kw)
    opts.run_files = {key: "/run/" + key for key in base.get(name).run_files(opts)}
    return base.get(name).build_argv(opts, name)


def bridge(builtin_tools: bool = False) -> options.ToolBridge:
    return options.ToolBridge(["clinvk", "tool-bridge"], ["get_weather"],
                              builtin_tools=builtin_tools)


# -- the agent profile stays as it was ------------------------------------------------------------

@pytest.mark.parametrize("name", base.NAMES)
def test_agent_profile_is_the_default_and_builds_the_same_argv(name):
    assert argv(name) == argv(name, profile=options.AGENT_PROFILE)
    assert base.get(name).run_files(options.Options()) == {}


@pytest.mark.parametrize("name", base.NAMES)
def test_every_chat_flag_is_in_the_clis_help(name):
    flags = {word.split("=", 1)[0] for word in argv(name, profile=CHAT)
             if word.startswith("-") and word != "-"}
    hidden = {"--max-turns"} if name == "claude" else set()    # see test_backend_claude
    assert flags - help_flags(HELP[name]) == hidden


@pytest.mark.parametrize("name", base.NAMES)
def test_every_backend_says_what_the_chat_profile_changes(name):
    assert len(base.get(name).chat_notes) > 80


# -- claude ---------------------------------------------------------------------------------------

def test_claude_chat_has_no_tools_settings_mcp_or_slash_commands_and_one_turn():
    assert argv("claude", profile=CHAT) == [
        "claude", "-p", "--output-format=json", "--system-prompt=" + options.CHAT_SYSTEM_PROMPT,
        "--setting-sources=", "--disable-slash-commands", "--tools=", "--strict-mcp-config",
        "--max-turns=1"]


def test_claude_chat_keeps_the_clients_system_prompt_and_turn_limit():
    got = argv("claude", profile=CHAT, system_prompt="Be brief.", max_turns=3)
    assert "--system-prompt=Be brief." in got and "--max-turns=3" in got
    assert "--max-turns=1" not in got


def test_claude_chat_loads_no_setting_source_where_the_agent_profile_loads_the_users():
    assert "--setting-sources=user" in argv("claude", project_config=False)
    chat = argv("claude", profile=CHAT, project_config=False)
    assert "--setting-sources=" in chat and "--setting-sources=user" not in chat


def test_claude_chat_with_client_tools_offers_only_the_bridge_and_no_turn_limit():
    got = claude.BACKEND.build_argv(options.Options(profile=CHAT, tool_bridge=bridge()), "claude")
    assert got.count("--tools=") == 1 and got.count("--strict-mcp-config") == 1
    assert any(w.startswith("--mcp-config=") for w in got)
    assert not any(w.startswith("--max-turns") for w in got)


def test_claude_chat_switches_builtin_tools_off_even_when_the_bridge_keeps_them():
    got = claude.BACKEND.build_argv(options.Options(profile=CHAT,
                                                    tool_bridge=bridge(builtin_tools=True)),
                                    "claude")
    assert got.count("--tools=") == 1


# -- codex ----------------------------------------------------------------------------------------

def test_codex_chat_disables_tool_features_and_replaces_the_instructions():
    got = argv("codex", profile=CHAT)
    for feature in codex.CHAT_DISABLED_FEATURES:
        assert "--disable=" + feature in got
    assert "--ignore-rules" in got
    settings = [got[i + 1] for i, word in enumerate(got) if word == "-c"]
    assert settings == list(codex.CHAT_SETTINGS) + [
        'model_instructions_file="/run/chat-instructions.md"', "mcp_servers={}"]
    assert 'web_search="disabled"' in settings
    assert got[-1] == "-"


def test_codex_chat_instructions_file_holds_the_clients_system_prompt_or_a_short_one():
    assert codex.BACKEND.run_files(options.Options(profile=CHAT)) == {
        codex.INSTRUCTIONS_FILE: options.CHAT_SYSTEM_PROMPT}
    files = codex.BACKEND.run_files(options.Options(profile=CHAT, system_prompt="Be brief."))
    assert files[codex.INSTRUCTIONS_FILE] == "Be brief."
    assert not any("developer_instructions" in w
                   for w in argv("codex", profile=CHAT, system_prompt="Be brief."))


def test_codex_chat_resume_puts_the_chat_flags_before_resume():
    got = argv("codex", profile=CHAT, resume_id="019a-thread")
    assert got.index("--ignore-rules") < got.index("resume") and got[-3:] == [
        "resume", "019a-thread", "-"]


def test_codex_chat_with_client_tools_keeps_the_bridge_server():
    opts = options.Options(profile=CHAT, tool_bridge=bridge())
    opts.run_files = {codex.INSTRUCTIONS_FILE: "/run/i", options.BRIDGE_TICKET: "/run/t"}
    got = codex.BACKEND.build_argv(opts, "codex")
    assert "mcp_servers={}" not in got
    assert any(w.startswith("mcp_servers.clinvk.command=") for w in got)


# -- gemini ---------------------------------------------------------------------------------------

def test_gemini_chat_denies_every_tool_by_policy_and_replaces_the_system_prompt():
    files = gemini.BACKEND.run_files(options.Options(profile=CHAT))
    assert files == {gemini.SYSTEM_MD_FILE: options.CHAT_SYSTEM_PROMPT,
                     gemini.POLICY_FILE: gemini.DENY_ALL_POLICY}
    assert argv("gemini", profile=CHAT)[-1] == "--policy=/run/chat-policy.toml"


def test_gemini_chat_names_its_system_prompt_file_in_gemini_system_md():
    opts = options.Options(profile=CHAT, project_config=True)
    opts.run_files = {gemini.SYSTEM_MD_FILE: "/run/chat-system.md"}
    env = gemini.BACKEND.child_env({"PATH": "/bin"}, opts)
    assert env["GEMINI_SYSTEM_MD"] == "/run/chat-system.md"
    assert "GEMINI_SYSTEM_MD" not in gemini.BACKEND.child_env({"PATH": "/bin"},
                                                              options.Options())


def test_gemini_chat_takes_the_system_prompt_without_a_warning():
    opts = options.Options(profile=CHAT, system_prompt="Be brief.")
    assert not any("system prompt" in w for w in gemini.BACKEND.ignored_options(opts))
    assert gemini.BACKEND.run_files(opts)[gemini.SYSTEM_MD_FILE] == "Be brief."


# -- qwen, copilot, opencode ----------------------------------------------------------------------

def test_qwen_chat_runs_safe_mode_with_a_short_system_prompt_and_one_turn():
    got = argv("qwen", profile=CHAT, project_config=False)
    assert got[1:] == ["--output-format=json", "--max-session-turns=1",
                       "--exclude-tools=" + ",".join(qwen.CHAT_EXCLUDED_TOOLS),
                       "--system-prompt=" + options.CHAT_SYSTEM_PROMPT, "--safe-mode"]


def test_qwen_chat_excludes_every_built_in_tool_the_model_is_offered_first():
    # The ten tools qwen-code 0.24.4 offers before any is excluded, and the twelve deferred
    # ones it offers in their place when only those ten are.
    offered = {"agent", "get_goal", "glob", "grep_search", "list_agents", "read_file", "skill",
               "tool_call", "tool_search", "update_goal", "cron_create", "cron_delete",
               "cron_list", "enter_worktree", "exit_worktree", "loop_wakeup",
               "read_mcp_resource", "record_artifact", "report_findings", "send_message",
               "task_stop", "web_fetch"}
    assert offered <= set(qwen.CHAT_EXCLUDED_TOOLS)
    assert len(set(qwen.CHAT_EXCLUDED_TOOLS)) == len(qwen.CHAT_EXCLUDED_TOOLS)


def test_qwen_agent_profile_excludes_no_tool():
    assert not any(w.startswith("--exclude-tools") for w in argv("qwen"))


def test_copilot_chat_offers_no_tool_no_instructions_and_no_builtin_mcp():
    got = argv("copilot", profile=CHAT)
    assert got[-3:] == ["--no-custom-instructions", "--available-tools=none",
                        "--disable-builtin-mcps"]
    assert not any(w.startswith("--excluded-tools") for w in got)


def test_opencode_chat_is_pure_and_its_agent_has_no_tools_and_a_short_prompt():
    import json
    opts = options.Options(profile=CHAT, project_config=False)
    assert argv("opencode", profile=CHAT)[-1] == "--pure"
    env = base.get("opencode").child_env({"PATH": "/bin"}, opts)
    agent = json.loads(env["OPENCODE_CONFIG_CONTENT"])["agent"]["build"]
    assert agent == {"prompt": options.CHAT_SYSTEM_PROMPT, "tools": {"*": False}}


# -- execute.prepare ------------------------------------------------------------------------------

def prepare(tmp_path, fake_path, **kw) -> execute.Prepared:
    policy = Policy(allowed_prefixes=[str(tmp_path)], default_workdir=str(tmp_path),
                    allow_project_config=True)
    cfg = config.load(env={"CLINVK_HOME": str(tmp_path / "home")})
    return execute.prepare(execute.Request(prompt="hello", **kw), cfg, policy=policy)


def test_a_chat_request_never_loads_project_config_even_when_the_server_allows_it(
        tmp_path, fake_path):
    agent = prepare(tmp_path, fake_path, backend="claude")
    chat = prepare(tmp_path, fake_path, backend="claude", profile=CHAT)
    assert agent.opts.project_config and not chat.opts.project_config
    assert chat.opts.profile == CHAT and "--tools=" in chat.argv


def test_an_unknown_profile_is_refused_naming_the_choices(tmp_path, fake_path):
    with pytest.raises(execute.ExecError) as info:
        prepare(tmp_path, fake_path, backend="claude", profile="lean")
    assert info.value.field == "profile"
    assert "profile must be one of agent, chat: got 'lean'" in str(info.value)


def test_a_chat_run_file_is_written_for_the_run_and_passes_the_extra_flag_policy(
        tmp_path, fake_path):
    prepared = prepare(tmp_path, fake_path, backend="codex", profile=CHAT)
    assert codex.INSTRUCTIONS_FILE in prepared.files.paths
    with pytest.raises(execute.ExecError):
        prepare(tmp_path, fake_path, backend="claude", profile=CHAT,
                extra=["--settings", "/etc/x.json"])


@pytest.mark.parametrize("opts, env, simple", [
    (options.Options(profile=CHAT), {"ANTHROPIC_API_KEY": "k"}, True),
    (options.Options(profile=CHAT), {}, False),                       # a login: not read then
    (options.Options(), {"ANTHROPIC_API_KEY": "k"}, False),
    (options.Options(profile=CHAT, tool_bridge=bridge()), {"ANTHROPIC_API_KEY": "k"}, False),
])
def test_claude_chat_runs_minimal_mode_only_when_an_api_key_logs_it_in(opts, env, simple):
    child = claude.BACKEND.child_env(dict(env, PATH="/bin"), opts)
    assert (child.get("CLAUDE_CODE_SIMPLE") == "1") is simple


@pytest.mark.parametrize("name", base.NAMES)
def test_the_readme_says_what_the_chat_profile_changes_as_the_backend_does(name):
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md"),
              encoding="utf-8") as f:
        assert "| %s | %s |" % (name, base.get(name).chat_notes) in f.read()
