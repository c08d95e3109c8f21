"""Gemini CLI (``gemini``, headless): argv, environment and output parsing.

Checked against gemini 0.61.0. The prompt goes on stdin: gemini runs headless when stdin is
not a terminal and reads the whole of it as the prompt.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Callable, Dict, List, Optional

from .. import events as ev
from ..filelock import locked
from . import base, gemini_trust, options, parsing

NAME = "gemini"

# One table for the approval and sandbox modes: mode -> (flags, what it really does).
MODES = {
    "approval_mode": {
        "default": ((), "No flag: gemini's default from settings.json, normally 'default': in "
                        "a headless run tools that need confirmation (shell commands, file "
                        "writes and edits) are refused; read-only tools run."),
        "auto": (("--approval-mode=auto_edit",),
                 "--approval-mode auto_edit: file edits and writes are approved "
                 "automatically; shell commands are still refused."),
        "none": (("--approval-mode=yolo",),
                 "--approval-mode yolo: every tool call is approved."),
        "always": (("--approval-mode=default",),
                   "--approval-mode default, overriding a default from settings.json: tools "
                   "that need confirmation are refused."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: no container unless settings.json or GEMINI_SANDBOX asks "
                        "for one."),
        "read-only": (("--sandbox",),
                      "--sandbox: tools run in a docker or podman container (gemini 0.61.0 "
                      "exits with code 44 when neither is installed). NOT read-only: the "
                      "working directory is mounted writable in the container; gemini has "
                      "no read-only sandbox."),
        "workspace": (("--sandbox",),
                      "--sandbox: tools run in a docker or podman container with the working "
                      "directory mounted writable (exit code 44 when neither is installed)."),
        "full": ((), "No flag: no container, tools run with the user's rights."),
    },
}

OPTION_NOTES = {
    "model": "--model <name> (or an alias: auto, pro, flash, flash-lite).",
    "system_prompt": "Not supported: gemini has no system prompt flag (GEMINI_SYSTEM_MD "
                     "would replace its whole built-in prompt, tool guidance included).",
    "max_turns": "Not supported: only the settings.json key model.maxSessionTurns limits "
                 "turns.",
    "ephemeral": "gemini has no flag to skip saving the session, so after the run clinvk "
                 "deletes it: gemini --list-sessions finds its index, gemini "
                 "--delete-session <index> removes it (two short extra gemini runs).",
    "resume": "--resume <session id> (the session_id of init or of the json result); "
              "gemini must run in the same working directory.",
    "verbose": "--debug (debug logs go to stderr in a headless run).",
    "allowed_tools": "Not supported: --allowed-tools is deprecated in favour of gemini's "
                     "policy engine.",
    "streaming": "--output-format stream-json: assistant text arrives in delta pieces.",
    "output_schema": "No flag (gemini 0.61.0 has none): the prompt ends with an instruction "
                     "to reply with only JSON valid against the schema, which follows between "
                     "<json_schema> tags. The reply is checked; when it is not valid, clinvk "
                     "asks once more in the same gemini session, saying what was wrong (a run "
                     "without a session, X-Clinvk-Ephemeral, fails at once).",
    "project_config": "Off (server and MCP runs): gemini runs untrusted (no --skip-trust, "
                      "GEMINI_CLI_TRUST_WORKSPACE=false, and a system defaults file that "
                      "turns folder trust off so it does not exit 55): the workdir's "
                      ".gemini/settings.json (hooks, MCP servers, tools.discoveryCommand, "
                      "tool grants), .gemini/.env, project agents and GEMINI.md are not "
                      "loaded. Untrusted, gemini 0.61.0 also skips the user's hooks and MCP "
                      "servers and runs approval_mode auto and none as default.",
}


class GeminiStreamParser(parsing.StreamParser):
    """Parses ``--output-format stream-json`` lines.

    The first ``message`` line echoes the user's prompt (``role: user``); it is never
    output. ``init`` names the requested model (often an alias such as ``auto``); the model
    that answered comes from the result's per-model stats.
    """

    backend_name = NAME
    final_types = ("result",)
    # gemini 0.61.0: exit 41 "Invalid auth method selected." (no auth type or key), the
    # Gemini API's "API key not valid" (UNAUTHENTICATED), and a Google account login that
    # Code Assist refuses (IneligibleTierError).
    auth_failure_markers = ("invalid auth method", "api key not valid", "unauthenticated",
                            "ineligibletiererror", "gemini_api_key environment variable")
    # gemini 0.61.0: RetryableQuotaError / TerminalQuotaError, RESOURCE_EXHAUSTED ("Please
    # retry in 37.5s").
    rate_limit_markers = ("resource_exhausted", "quotaerror", "quota exceeded",
                          "rate limit exceeded")

    def __init__(self) -> None:
        super().__init__()
        self._tool_names: Dict[str, str] = {}

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "init":
            self.backend_session_id = (parsing.as_str(obj.get("session_id"))
                                       or self.backend_session_id)
            self.model = parsing.as_str(obj.get("model")) or self.model
            return [ev.init(NAME, self.model, self.backend_session_id)]
        if kind == "message":
            text = parsing.as_str(obj.get("content"))
            if obj.get("role") != "assistant" or not text:
                return []
            return [ev.message(NAME, text, partial=bool(obj.get("delta")))]
        if kind == "tool_use":
            tool_id = parsing.as_str(obj.get("tool_id"))
            name = parsing.as_str(obj.get("tool_name"))
            self._tool_names[tool_id] = name
            return [ev.tool_use(NAME, tool_id, name, obj.get("parameters"))]
        if kind == "tool_result":
            tool_id = parsing.as_str(obj.get("tool_id"))
            failed = obj.get("status") == "error"
            error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
            output = (parsing.as_str(error.get("message")) if failed and error
                      else parsing.as_str(obj.get("output")))
            return [ev.tool_result(NAME, tool_id, output, failed,
                                   self._tool_names.get(tool_id, ""))]
        if kind == "error":
            message = parsing.as_str(obj.get("message")) or "gemini reported an error"
            fatal = obj.get("severity") == "error"
            return self._error(message, "", fatal)
        if kind == "result":
            return self._result(obj)
        if kind is None and ("session_id" in obj or "response" in obj or "error" in obj):
            return self._json_output(obj)
        return []

    def _error(self, message: str, code: str, fatal: bool) -> List[ev.Event]:
        message, api_code = parsing.api_error_detail(message)
        if fatal and message == self.error:
            return []                 # the result repeats a fatal error line
        # gemini 0.61.0 types an API error "unknown" in a stream's result; the API's own
        # status (RESOURCE_EXHAUSTED, UNAUTHENTICATED) says more.
        return [ev.error(NAME, message, code=api_code or code, fatal=fatal)]

    def _json_output(self, obj: Dict[str, Any]) -> List[ev.Event]:
        """The one object of ``--output-format json``."""
        self.saw_final = True
        self.backend_session_id = parsing.as_str(obj.get("session_id")) or self.backend_session_id
        stats = obj.get("stats") if isinstance(obj.get("stats"), dict) else {}
        self.usage = _json_usage(stats.get("models"))
        self.model = _main_model(stats.get("models"), "total") or self.model
        error = obj.get("error")
        if isinstance(error, dict):
            return self._error(parsing.as_str(error.get("message")) or "gemini run failed",
                               _error_code(error), True)
        text = parsing.as_str(obj.get("response"))
        return [ev.message(NAME, text)] if text else []

    def _result(self, obj: Dict[str, Any]) -> List[ev.Event]:
        stats = obj.get("stats") or {}
        self.usage = ev.Usage(parsing.as_int(stats.get("input_tokens")),
                              parsing.as_int(stats.get("output_tokens")),
                              parsing.as_int(stats.get("cached")))
        self.model = _main_model(stats.get("models"), "total_tokens") or self.model
        if obj.get("status") == "error":
            error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
            return self._error(parsing.as_str(error.get("message")) or "gemini run failed",
                               _error_code(error), True)
        return []


def _error_code(error: Dict[str, Any]) -> str:
    """The code of a json output's error: the model API's HTTP status when ``code`` is one
    (gemini 0.61.0 puts it there, and exits with it modulo 256), else its ``type``."""
    status = error.get("code")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 600:
        return "api_error_%d" % status
    return parsing.as_str(error.get("type"))


def _main_model(models: Any, key: str) -> str:
    """The model with the most tokens (gemini also calls a small router model)."""
    best, most = "", -1
    for name, stats in (models.items() if isinstance(models, dict) else ()):
        tokens = stats.get("tokens", stats) if isinstance(stats, dict) else {}
        total = parsing.as_int(tokens.get(key)) if isinstance(tokens, dict) else 0
        if total > most:
            best, most = name, total
    return best


def _json_usage(models: Any) -> ev.Usage:
    """Usage summed over ``stats.models.<name>.tokens`` of the json output.

    ``prompt`` counts every input token (``input`` leaves the cached ones out);
    ``candidates`` leaves the thinking tokens out, so they are added to the output.
    """
    usage = ev.Usage()
    for stats in (models.values() if isinstance(models, dict) else ()):
        tokens = stats.get("tokens") if isinstance(stats, dict) else None
        if not isinstance(tokens, dict):
            continue
        cached = parsing.as_int(tokens.get("cached"))
        prompt = (parsing.as_int(tokens.get("prompt"))
                  or parsing.as_int(tokens.get("input")) + cached)
        thoughts = parsing.as_int(tokens.get("thoughts"))
        usage.input_tokens += prompt
        usage.output_tokens += parsing.as_int(tokens.get("candidates")) + thoughts
        usage.cached_tokens += cached
        usage.reasoning_tokens += thoughts
    return usage


def _json_objects(text: str) -> List[Dict[str, Any]]:
    """The JSON objects in ``text``, skipping the noise around and between them."""
    doc = parsing.decode_json_document(text)
    return [v for v in (doc if isinstance(doc, list) else [doc]) if isinstance(v, dict)]


def _output_objects(stdout: str, stderr: str) -> List[Dict[str, Any]]:
    """What to parse of a json-format run: stream-json lines as they are, else the one
    output object (from stdout, or from stderr after a fatal error), else nothing."""
    objects = _json_objects(stdout)
    if any("type" in o for o in objects):
        return objects
    for candidates in (objects, _json_objects(stderr)):
        for wanted in ("session_id", "response", "error"):
            found = [o for o in candidates if wanted in o]
            if found:
                return found[-1:]
    return []


# Where a bridged run's ticket path is, for the bridge's entry of the system defaults file.
TICKET_VARIABLE = "CLINVK_TOOL_TICKET"
# The chat profile on gemini 0.61.0 has no flag of its own: GEMINI_SYSTEM_MD names a file
# that replaces the whole built-in system prompt (tool guidance, skills and GEMINI.md
# included), and a --policy file that denies every tool leaves the model request without
# any tool declaration.
SYSTEM_MD_FILE = "chat-system.md"
POLICY_FILE = "chat-policy.toml"
DENY_ALL_POLICY = '[[rule]]\ntoolName = "*"\ndecision = "deny"\npriority = 999\n'
# How long gemini lets one MCP call run, in ms (its default is 10 minutes): a bridged call
# waits for the client's next request, and clinvk stops the run when it waits too long
# (server.tool_result_timeout_secs).
BRIDGE_CALL_TIMEOUT_MS = 24 * 3600 * 1000


def bridge_settings(bridge: options.ToolBridge) -> Dict[str, Any]:
    """The system defaults that give gemini 0.61.0 the tool bridge's MCP server."""
    return {"mcpServers": {options.BRIDGE_SERVER: {
        "command": bridge.command[0], "args": bridge.command[1:] + ["$" + TICKET_VARIABLE],
        "trust": True, "timeout": BRIDGE_CALL_TIMEOUT_MS}}}


class GeminiBackend(base.Backend):
    name = NAME
    executable = "gemini"
    vendor = "google"
    display_name = "Gemini CLI"
    # Left out on purpose: --yolo / --approval-mode / --policy / --admin-policy /
    # --allowed-tools (they approve tools past the server's approval policy), --sandbox
    # (use sandbox_mode), --resume / --session-id / --session-file / --delete-session
    # (sessions are clinvk's), --output-format / --raw-output (clinvk parses the output),
    # -i / --acp / --worktree (other run modes), -m / --model and -d / --debug (the model and
    # verbose options).
    allowed_extra_flags = {
        "--include-directories": True,
        "-e": True,
        "--extensions": True,
        "--allowed-mcp-server-names": True,
    }
    # gemini 0.61.0 (yargs array, nargs 1, coerceCommaSeparated): each value is split on ','
    # and every piece trimmed, empty pieces dropped; the flag may be repeated.
    path_extra_flags = {"--include-directories": base.PathFlag(separator=",", trims=True)}
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("GEMINI_SYSTEM_MD=<a file with the client's system prompt, else a "
                  "one-line one> (replaces gemini's whole system prompt: tool guidance, "
                  "skills, GEMINI.md), --policy=<a file denying every tool> (no tool "
                  "declaration reaches the model, MCP and extension tools included), and "
                  "gemini runs untrusted (no workdir settings, .env, hooks or MCP servers; "
                  "see project_config). Not available: a turn limit (gemini has no flag; "
                  "without tools the model answers in one call), and client tools (gemini "
                  "takes them only in a trusted folder). gemini's model router still makes "
                  "its short classifier request when the model is 'auto'.")
    # gemini 0.61.0, stderr, exit code 42: "Error resuming session: No previous sessions
    # found for this project." or "... Invalid session identifier ...".
    missing_session_markers = ("error resuming session",)
    tested_versions = ("0.61.0", "0.61.0")
    login_hint = ("set GEMINI_API_KEY in the environment of the account running clinvk and "
                  "security.auth.selectedType \"gemini-api-key\" in its ~/.gemini/settings.json "
                  "(a Google account login may be refused headless with IneligibleTierError: "
                  "use an API key)")
    npm_package = "@google/gemini-cli"

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """gemini 0.61.0 has no status command: the auth type its settings select (system
        settings over the user's) and the key that type needs. Without one selected a headless
        run exits 41, "Invalid auth method selected.", whatever keys are set."""
        home = os.path.join(base.home_of(env), ".gemini")
        selected = base.settings_value(
            [env.get("GEMINI_CLI_SYSTEM_SETTINGS_PATH") or "/etc/gemini-cli/settings.json",
             os.path.join(home, "settings.json")], ("security", "auth", "selectedType"))
        if not selected:
            return base.AuthCheck(False, "no auth method selected (security.auth.selectedType "
                                         "in ~/.gemini/settings.json)")
        if selected == "gemini-api-key":
            return base.AuthCheck(bool(env.get("GEMINI_API_KEY")), "auth type gemini-api-key, "
                                  "GEMINI_API_KEY %s" % ("set" if env.get("GEMINI_API_KEY")
                                                         else "not set"))
        if selected == "vertex-ai":
            ok = bool(env.get("GOOGLE_API_KEY") or (env.get("GOOGLE_CLOUD_PROJECT")
                                                    and env.get("GOOGLE_CLOUD_LOCATION")))
            return base.AuthCheck(ok, "auth type vertex-ai, %s" % (
                "credentials set" if ok else "neither GOOGLE_API_KEY nor GOOGLE_CLOUD_PROJECT "
                                             "and GOOGLE_CLOUD_LOCATION set"))
        if selected == "oauth-personal":
            if not os.path.exists(os.path.join(home, "oauth_creds.json")):
                return base.AuthCheck(False, "auth type oauth-personal, not signed in")
            return base.AuthCheck(True, "signed in with a Google account (a consumer account "
                                        "may be refused headless with IneligibleTierError: "
                                        "an API key avoids it)")
        return base.AuthCheck(None, "auth type %s: not checked" % selected)

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        fmt = options.checked_format(opts.output_format)
        argv = [executable or self.executable]
        if opts.project_config:
            # --skip-trust: gemini 0.61.0 exits 55 before any output in an untrusted folder.
            argv.append("--skip-trust")
        argv.append("--output-format=" + fmt)
        if opts.resume_id:
            argv.append("--resume=" + opts.resume_id)
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.verbose:
            argv.append("--debug")
        if POLICY_FILE in opts.run_files:
            argv.append("--policy=" + opts.run_files[POLICY_FILE])
        return argv + list(opts.extra)

    def run_files(self, opts: options.Options) -> Dict[str, str]:
        if not opts.chat:
            return {}
        files = {SYSTEM_MD_FILE: opts.system_prompt_or_chat()}
        if opts.chat_without_tools:
            files[POLICY_FILE] = DENY_ALL_POLICY
        return files

    # The tool bridge, in runs that load the workdir's configuration only: gemini 0.61.0
    # starts no MCP server at all in an untrusted folder (its McpClientManager returns early;
    # a stdio server throws "current folder is not trusted"), and server runs are untrusted
    # unless server.allow_project_config (gemini_trust). The server comes from the system
    # defaults file (the one settings layer clinvk may write: the user's and the workdir's
    # settings.json are not clinvk's), the same for every run: the ticket's path is
    # $CLINVK_TOOL_TICKET, which gemini expands in settings. "trust": its calls need no
    # confirmation (a headless run cannot ask). gemini names the tools to the model
    # mcp_clinvk_NAME, wraps their results in <untrusted_context> tags, and sends no call id
    # in the MCP request: calls are matched by name and arguments to its tool_use events.
    bridges_tools = True

    def tool_bridge_problem(self, project_config: bool) -> str:
        if project_config:
            return ""
        return ("the gemini backend cannot be given the client's tools here: gemini 0.61.0 "
                "starts no MCP server in an untrusted folder, and clinvk runs gemini "
                "untrusted so that the workdir's configuration is not loaded (set "
                "server.allow_project_config: true if the contents of every workdir are "
                "trusted), or use claude or codex")

    def ignored_options(self, opts: options.Options) -> List[str]:
        out = []
        if opts.sandbox_mode == "read-only":
            out.append("gemini has no read-only sandbox: " + MODES["sandbox_mode"]["read-only"][1])
        if opts.system_prompt and not opts.chat:
            out.append("gemini has no system prompt flag: system_prompt is ignored")
        if opts.max_turns > 0:
            out.append("gemini has no turn limit flag: max_turns=%d is ignored" % opts.max_turns)
        if opts.allowed_tools:
            out.append("gemini's --allowed-tools is deprecated: allowed_tools is ignored")
        if not opts.project_config and opts.approval_mode in ("auto", "none"):
            out.append("gemini runs untrusted here so that the workdir's configuration is not "
                       "loaded, and untrusted it runs approval_mode %r as 'default': file "
                       "edits and shell commands are refused (server.allow_project_config: "
                       "true lifts this)" % opts.approval_mode)
        return out

    def forget_session(self, backend_session_id: str, executable: str,
                       run: Callable[[List[str]], str]) -> None:
        # gemini 0.61.0 deletes by index only ("--delete-session 3"); --list-sessions prints
        # "  3. <title> (<age>) [<uuid>]". The lock keeps two clinvk cleanups in one project
        # from shifting each other's indexes between the list and the delete. No
        # --skip-trust: they run in the run's environment, which says whether to trust.
        with locked(_cleanup_lock_path(), None):
            listing = run([executable, "--list-sessions"])
            m = re.search(r"^\s*(\d+)\..*\[%s\]\s*$" % re.escape(backend_session_id),
                          listing, re.MULTILINE)
            if m:
                run([executable, "--delete-session", m.group(1)])

    def child_env(self, base_env: Dict[str, str],
                  opts: Optional[options.Options] = None) -> Dict[str, str]:
        env = super().child_env(base_env, opts)
        if opts is not None and SYSTEM_MD_FILE in opts.run_files:
            env["GEMINI_SYSTEM_MD"] = opts.run_files[SYSTEM_MD_FILE]
        if opts is None or opts.project_config:
            env["GEMINI_CLI_TRUST_WORKSPACE"] = "true"      # same as --skip-trust
            if opts is not None and opts.tool_bridge is not None:
                env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"] = gemini_trust.bridge_defaults_file(
                    bridge_settings(opts.tool_bridge))
                env[TICKET_VARIABLE] = opts.run_files.get(options.BRIDGE_TICKET, "")
            return env
        # Untrusted, gemini reads none of the workdir's configuration (see gemini_trust).
        env["GEMINI_CLI_TRUST_WORKSPACE"] = "false"
        env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"] = gemini_trust.untrusted_defaults_file()
        return env

    def new_stream_parser(self) -> GeminiStreamParser:
        return GeminiStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        """Reads the pretty-printed object (from stdout or, after a fatal error, stderr),
        or stream-json lines."""
        # gemini 0.61.0 prints the json object of a failed run (with "error") on stderr,
        # after a stack trace, and nothing on stdout.
        objects = _output_objects(stdout, stderr)
        parser = GeminiStreamParser()
        for obj in objects:
            parser.feed_value(obj)
        if not objects and exit_code == 0:
            shown = parsing.last_meaningful_line(stdout)
            parser.error = "gemini printed no JSON result%s" % (": " + shown if shown else "")
        parser.finish(exit_code, stderr)
        return parser.result(exit_code)


def _cleanup_lock_path() -> str:
    """The lock that serialises gemini session deletions across the threads and clinvk
    processes of one user."""
    return os.path.join(tempfile.gettempdir(), "clinvk-gemini-cleanup-%d.lock" % os.getuid())


BACKEND = base.register(GeminiBackend())
