"""Qwen Code (``qwen``, headless): argv, environment and output parsing.

Checked against qwen-code 0.24.4. The prompt goes on stdin: with no positional prompt, qwen
reads the whole of stdin as the prompt (``-p`` is deprecated and would put it in argv). Its
``-o json`` / ``-o stream-json`` output is the Claude stream dialect (``claude_dialect``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from .. import events as ev
from ..fsutil import private_cache_dir, write_if_changed
from . import base, claude_dialect, options, parsing

NAME = "qwen"
# The chat profile on qwen-code 0.24.4: every built-in tool by name (ToolNames in its
# packages/core/src/tools/tool-names.ts), for --exclude-tools. --core-tools keeps the deferred
# tools, and excluding only the ten tools offered at first brings twelve deferred ones in
# their place; a tool a later release adds is offered until it is listed here.
CHAT_EXCLUDED_TOOLS = (
    "exec", "edit", "write_file", "read_file", "zoom_image", "grep_search", "glob",
    "run_shell_command", "todo_write", "save_memory", "agent", "skill", "exit_plan_mode",
    "enter_plan_mode", "web_fetch", "web_search", "image_gen", "list_directory", "lsp",
    "ask_user_question", "cron_create", "cron_list", "cron_delete", "loop_wakeup",
    "create_sub_session", "list_agents", "task_stop", "task_create", "task_update",
    "task_list", "team_create", "team_delete", "team_plan_approval", "request_shutdown",
    "send_message", "structured_output", "monitor", "notebook_edit", "tool_call",
    "tool_search", "read_mcp_resource", "enter_worktree", "exit_worktree", "workflow",
    "artifact", "record_artifact", "record_source", "report_findings", "get_goal",
    "update_goal", "omni_downsample_image", "omni_downscale_video", "omni_downsample_audio",
    "omni_extract_keyframes", "omni_extract_audio", "omni_clip_video", "omni_convert_image",
    "omni_transcribe_audio", "omni_clip_image", "omni_clip_audio", "omni_caption_image",
    "omni_caption_audio", "omni_ocr_image", "omni_understand_video_segments",
    "omni_recall_media_memory", "propose_goal", "display_image")

# One table for the approval and sandbox modes: mode -> (flags, what it really does).
# qwen-code 0.24.4 runs approval modes other than default and plan as "default" in a folder it
# does not trust (stderr: 'Approval mode overridden to "default" because the current folder
# is not trusted.'), which is how server runs without project configuration run it.
MODES = {
    "approval_mode": {
        "default": ((), "No flag: qwen's default from settings.json (tools.approvalMode), "
                        "normally 'auto': an extra model request (a classifier) approves each "
                        "tool call it judges safe and declines the others; shell commands are "
                        "not offered."),
        "auto": (("--approval-mode=auto-edit",),
                 "--approval-mode auto-edit: file edits and writes are approved "
                 "automatically; shell commands are not offered to the model."),
        "none": (("--approval-mode=yolo",),
                 "--approval-mode yolo: every tool call runs, shell commands included (qwen "
                 "warns on stderr that nothing is sandboxed)."),
        "always": (("--approval-mode=default",),
                   "--approval-mode default, overriding settings.json: tools that need "
                   "approval (edits, shell commands) are refused, since a headless run "
                   "cannot ask; read-only tools run."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: no sandbox unless settings.json (tools.executionSandbox, "
                        "tools.sandbox) or QWEN_SANDBOX asks for one."),
        "read-only": ((), "Not enforced: qwen's --sandbox needs docker or podman, and without "
                          "them qwen 0.24.4 never exits (it repeats 'Sandbox is enabled but "
                          "failed to determine command for sandbox'), so clinvk does not pass "
                          "it. Use approval_mode always, which refuses edits and shell "
                          "commands."),
        "workspace": ((), "Not enforced (see read-only). Use approval_mode auto to allow "
                          "edits while shell commands stay unavailable."),
        "full": ((), "No flag: tools run with the rights of the user running qwen."),
    },
}

OPTION_NOTES = {
    "model": "--model <name> (the model id the selected auth type's API knows).",
    "system_prompt": "--system-prompt <text>: replaces qwen's main system prompt (qwen still "
                     "appends its output-language note).",
    "max_turns": "--max-session-turns <n>: a run that needs more ends with exit code 53 "
                 "(FatalTurnLimitedError).",
    "ephemeral": "--chat-recording=false: no chat file is written, the run cannot be resumed.",
    "resume": "--resume <session id> (the session_id of every output line); qwen keeps chats "
              "per working directory, so it must run in the same one.",
    "verbose": "--debug (debug logs go to stderr).",
    "allowed_tools": "--allowed-tools <list>: tools that run without asking (comma-separated).",
    "streaming": "-o stream-json --include-partial-messages: real token deltas.",
    "project_config": "Off (server and MCP runs): qwen runs with folder trust on (a system "
                      "settings file clinvk writes, QWEN_CODE_SYSTEM_SETTINGS_PATH, layered "
                      "over the operator's own) and an empty trusted-folders list "
                      "(QWEN_CODE_TRUSTED_FOLDERS_PATH), so the workdir is untrusted, plus "
                      "--safe-mode: the workdir's .qwen/settings.json (hooks, MCP servers, "
                      "tool grants, approval mode), .env, QWEN.md/AGENTS.md and .qwen/agents "
                      "are not loaded, and neither are the user's hooks, MCP servers, "
                      "extensions and skills; approval_mode auto and none run as default. A "
                      "prompt that starts with /<name> still expands a workdir command file "
                      ".qwen/commands/<name>.md as text (its !{...} shell parts are refused).",
}

# qwen-code 0.24.4's settings file format version; it rewrites a file without it.
SETTINGS_VERSION = 4
SYSTEM_SETTINGS_FILE = "qwen-system-settings.json"
TRUSTED_FOLDERS_FILE = "qwen-trusted-folders.json"
# Where qwen-code 0.24.4 reads the operator's system settings when the variable is not set.
DEFAULT_SYSTEM_SETTINGS = "/etc/qwen-code/settings.json"
# The variable holding the key of each auth type (qwen-code 0.24.4, --auth-type choices).
AUTH_KEYS = {"openai": "OPENAI_API_KEY", "openai-responses": "OPENAI_API_KEY",
             "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
             "vertex-ai": "GOOGLE_API_KEY"}
# The IDE companion's connection, whose workspace trust outranks the trusted-folders file.
IDE_VARIABLES = ("QWEN_CODE_IDE_SERVER_PORT", "QWEN_CODE_IDE_WORKSPACE_PATH",
                 "QWEN_CODE_IDE_SERVER_STDIO_ARGS")


class QwenStreamParser(claude_dialect.DialectParser):
    """qwen's ``-o stream-json`` lines and ``-o json`` array (the Claude dialect).

    Differences from claude: a failed API call arrives as an assistant text
    ``[API Error: ...]`` before the failed result; usage counts cached input in
    ``input_tokens`` (the model API's prompt tokens) and leaves thinking tokens out of
    ``output_tokens`` (the json form lists them per model under ``stats``).
    """

    backend_name = NAME
    input_counts_cache = True
    api_error_prefixes = ("[API Error:",)
    # qwen-code 0.24.4: "No auth type is selected. Please configure an auth type ...",
    # "[API Error: 401 ...]" (key refused), and the OpenAI SDK's missing-key message.
    auth_failure_markers = ("no auth type is selected", "[api error: 401", "[api error: 403",
                            "openai_api_key environment variable", "invalid api key",
                            "incorrect api key")
    # qwen-code 0.24.4, after its own retries: "[API Error: 429 ...]\nPossible quota
    # limitations in place or slow response times detected. ..."
    rate_limit_markers = ("[api error: 429", "possible quota limitations")

    def _result(self, obj: Dict[str, Any]) -> List[ev.Event]:
        out = super()._result(obj)
        thoughts = _thought_tokens(obj.get("stats"))
        self.usage.output_tokens += thoughts
        self.usage.reasoning_tokens += thoughts
        return out


def _thought_tokens(stats: Any) -> int:
    """The thinking tokens of the json result's per-model stats (0 when absent)."""
    models = stats.get("models") if isinstance(stats, dict) else None
    total = 0
    for model in (models.values() if isinstance(models, dict) else ()):
        tokens = model.get("tokens") if isinstance(model, dict) else None
        total += parsing.as_int(tokens.get("thoughts")) if isinstance(tokens, dict) else 0
    return total


class QwenBackend(base.Backend):
    name = NAME
    executable = "qwen"
    vendor = "qwen"
    display_name = "Qwen Code"
    tested_versions = ("0.24.4", "0.24.4")
    # Left out on purpose: -y / --yolo / --approval-mode / --allowed-tools / --core-tools
    # (they grant tools past the server's approval policy), --mcp-config (starts programs),
    # -s / --sandbox (use sandbox_mode), --resume / --continue / --session-id /
    # --fork-session / --chat-recording (sessions are clinvk's), -o / --output-format /
    # --input-format / --include-partial-messages / --json-fd / --json-file / --input-file
    # (clinvk reads the output), --json-schema ("@path" reads a file), --openai-logging-dir /
    # --telemetry-outfile (write files), --openai-api-key / --openai-base-url / --auth-type /
    # --proxy / --insecure (where the model traffic and its key go), --bare / --safe-mode
    # (clinvk's project-config rule), -i / --acp / --worktree / --channel (other run
    # modes), and the flags of clinvk's own options (--model, --system-prompt,
    # --max-session-turns, --debug).
    allowed_extra_flags = {
        "--include-directories": True,
        "--add-dir": True,
        "--append-system-prompt": True,
        "--exclude-tools": True,
        "--fallback-model": True,
        "--disabled-slash-commands": True,
        "--allowed-mcp-server-names": True,
        "--extensions": True,
        "--output-style": True,
        "--max-tool-calls": True,
        "--max-wall-time": True,
        "--max-subagent-depth": True,
    }
    # qwen-code 0.24.4 (yargs array, coerce: each value split on ',' and every piece trimmed
    # with String.prototype.trim; an empty piece resolves to the working directory): the
    # flag takes every following word that does not start with '-', and may be repeated.
    path_extra_flags = {
        "--include-directories": base.PathFlag(separator=",", trims=True, variadic=True),
        "--add-dir": base.PathFlag(separator=",", trims=True, variadic=True),
    }
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("--safe-mode (no context files such as QWEN.md, hooks, extensions, skills "
                  "or MCP servers; chat runs never load the workdir's configuration), "
                  "--system-prompt (the client's, else a one-line one) and "
                  "--max-session-turns=1 and --exclude-tools=<every built-in tool of "
                  "qwen-code 0.24.4> (no tool is offered; a tool a later qwen release adds "
                  "would be, until clinvk lists it).")
    # qwen-code 0.24.4, stderr, exit code 1: "No saved session found with ID <id>. Run
    # `qwen --resume` without an ID to choose from existing sessions."
    missing_session_markers = ("no saved session found with id",)
    login_hint = ("select an auth type and its key for the account running clinvk: "
                  "security.auth.selectedType in ~/.qwen/settings.json (e.g. \"openai\" with "
                  "OPENAI_API_KEY, OPENAI_BASE_URL and model.name), or run qwen once "
                  "interactively")
    npm_package = "@qwen-code/qwen-code"

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        fmt = options.checked_format(opts.output_format)
        argv = [executable or self.executable, "--output-format=" + fmt]
        if fmt == "stream-json":
            argv.append("--include-partial-messages")
        if opts.resume_id:
            argv.append("--resume=" + opts.resume_id)
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.max_turns > 0:
            argv.append("--max-session-turns=%d" % opts.max_turns)
        elif opts.chat_without_tools:
            argv.append("--max-session-turns=1")
        if opts.chat_without_tools:
            argv.append("--exclude-tools=" + ",".join(CHAT_EXCLUDED_TOOLS))
        if opts.system_prompt_or_chat():
            argv.append("--system-prompt=" + opts.system_prompt_or_chat())
        if opts.allowed_tools:
            argv.append("--allowed-tools=" + opts.allowed_tools)
        if opts.ephemeral:
            argv.append("--chat-recording=false")
        if opts.verbose:
            argv.append("--debug")
        if not opts.project_config:
            # qwen-code 0.24.4, untrusted but without it: the workdir's .qwen/agents still
            # reach the prompt (see child_env for the rest).
            argv.append("--safe-mode")
        return argv + list(opts.extra)

    def ignored_options(self, opts: options.Options) -> List[str]:
        out = []
        if opts.sandbox_mode in ("read-only", "workspace"):
            out.append("qwen's sandbox is not used: sandbox_mode %r is not enforced (%s)"
                       % (opts.sandbox_mode, MODES["sandbox_mode"][opts.sandbox_mode][1]))
        if not opts.project_config and opts.approval_mode in ("auto", "none"):
            out.append("qwen runs untrusted here so that the workdir's configuration is not "
                       "loaded, and untrusted it runs approval_mode %r as 'default': file "
                       "edits and shell commands are refused (server.allow_project_config: "
                       "true lifts this)" % opts.approval_mode)
        return out

    def child_env(self, base_env: Dict[str, str],
                  opts: Optional[options.Options] = None) -> Dict[str, str]:
        env = super().child_env(base_env, opts)
        if opts is None or opts.project_config:
            return env
        operator_file = env.get("QWEN_CODE_SYSTEM_SETTINGS_PATH") or DEFAULT_SYSTEM_SETTINGS
        env["QWEN_CODE_SYSTEM_SETTINGS_PATH"] = untrusting_settings_file(operator_file)
        env["QWEN_CODE_TRUSTED_FOLDERS_PATH"] = no_trusted_folders_file()
        for key in IDE_VARIABLES:
            env.pop(key, None)
        return env

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """qwen-code 0.24.4 has no status command (``qwen auth`` is removed): the auth type
        its settings select (system settings over the user's) and the key that type reads.
        Without one selected a headless run fails: "No auth type is selected"."""
        home = env.get("QWEN_HOME") or os.path.join(base.home_of(env), ".qwen")
        files = [env.get("QWEN_CODE_SYSTEM_SETTINGS_PATH") or DEFAULT_SYSTEM_SETTINGS,
                 os.path.join(home, "settings.json")]
        selected = base.settings_value(files, ("security", "auth", "selectedType"))
        if not selected:
            return base.AuthCheck(False, "no auth type selected (security.auth.selectedType "
                                         "in ~/.qwen/settings.json)")
        if selected == "qwen-oauth":
            signed_in = os.path.exists(os.path.join(home, "oauth_creds.json"))
            return base.AuthCheck(signed_in, "auth type qwen-oauth, %s" % (
                "signed in" if signed_in else "not signed in"))
        variable = AUTH_KEYS.get(str(selected), "")
        if env.get(variable) or base.settings_value(files, ("security", "auth", "apiKey")):
            return base.AuthCheck(True, "auth type %s, key set" % selected)
        return base.AuthCheck(None, "auth type %s: %s is not set here (the key may come from "
                                    "settings.json): not checked" % (selected,
                                                                     variable or "its key"))

    def new_stream_parser(self) -> QwenStreamParser:
        return QwenStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        """Reads the array of all messages (or stream-json lines); a run that printed none
        (exit code 53 after --max-session-turns) by the error object on stderr."""
        return claude_dialect.parse_document(QwenStreamParser(), stdout, stderr, exit_code)


def untrusting_settings_file(operator_file: str) -> str:
    """A system settings file holding the operator's (``operator_file``, when it exists) with
    folder trust turned on. The system layer outranks the user's and the workdir's settings,
    so no ``security.folderTrust.enabled: false`` elsewhere can trust the workdir again.
    SetupError when the operator's file cannot be read as a JSON object."""
    settings = _operator_settings(operator_file)
    security = settings.get("security") if isinstance(settings.get("security"), dict) else {}
    trust = security.get("folderTrust") if isinstance(security.get("folderTrust"), dict) else {}
    settings["security"] = dict(security, folderTrust=dict(trust, enabled=True))
    settings.setdefault("$version", SETTINGS_VERSION)
    return _private_file(SYSTEM_SETTINGS_FILE, json.dumps(settings, indent=2, sort_keys=True))


def no_trusted_folders_file() -> str:
    """An empty trusted-folders list: with folder trust on, every workdir is untrusted."""
    return _private_file(TRUSTED_FOLDERS_FILE, "{}")


def _operator_settings(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        raise options.SetupError(
            "cannot run qwen without the workdir's configuration: the system settings file "
            "%s must be readable plain JSON for clinvk to layer folder trust over it (%s); "
            "or set server.allow_project_config: true" % (path, exc))
    if not isinstance(value, dict):
        raise options.SetupError("qwen's system settings file %s must hold a JSON object"
                                 % path)
    return value


def _private_file(name: str, text: str) -> str:
    path = os.path.join(private_cache_dir(), name)
    try:
        write_if_changed(path, text + "\n")
    except OSError as exc:
        raise options.SetupError("cannot write %s, which keeps qwen from loading the workdir's "
                                 "configuration (%s); or set server.allow_project_config: true"
                                 % (path, exc))
    return path


BACKEND = base.register(QwenBackend())
