"""Codex CLI (``codex exec --json``): argv, environment and output parsing.

Checked against codex-cli 0.169.0. The prompt goes on stdin through the ``-`` positional.
``exec`` has no single-object JSON mode: ``--json`` prints JSON lines, and both of clinvk's
formats read them with the same parser.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List

from .. import events as ev
from . import base, options, parsing

NAME = "codex"
# The run file (Backend.run_files) holding the output schema.
SCHEMA_FILE = "output-schema.json"
# The chat profile's system prompt, read by -c model_instructions_file.
INSTRUCTIONS_FILE = "chat-instructions.md"
# The chat profile on codex-cli 0.169.0: the features that offer the model a tool or load
# configuration (`codex features list`; an unknown name makes codex exit 1), and the -c keys
# that drop the skills, permissions, apps and environment sections and AGENTS.md from the
# request, and its hosted web_search tool. Nothing drops apply_patch (the model catalog's
# apply_patch_tool_type offers it; -c include_apply_patch_tool is "ignored") nor
# request_user_input (the collaboration_modes feature is removed, always on).
CHAT_DISABLED_FEATURES = ("shell_tool", "unified_exec", "view_image", "goals", "plugins",
                          "apps", "hooks", "multi_agent", "image_generation", "skill_search",
                          "tool_suggest", "shell_snapshot", "sleep_tool")
CHAT_SETTINGS = ("include_permissions_instructions=false", "include_environment_context=false",
                 "include_apps_instructions=false", "skills.include_instructions=false",
                 "project_doc_max_bytes=0", 'web_search="disabled"')

# One table for the approval and sandbox modes: mode -> (flags, what it really does).
# codex-cli 0.169.0: `exec` forces approval policy "never" whatever the config or `-c` says,
# rejects -a/--ask-for-approval and --full-auto, and its sandbox flag (-s) is an `exec`
# option that must come before the `resume` subcommand (after it: "unexpected argument").
MODES = {
    "approval_mode": {
        "default": ((), "No flag: codex exec never asks for approval. What the agent may do "
                        "is decided by the sandbox; a command the sandbox forbids fails."),
        "auto": ((), "No flag: codex exec never asks. Choose sandbox_mode workspace to let "
                     "the agent edit files in the working directory."),
        "none": ((), "No flag: codex exec never asks. Choose sandbox_mode full to let the "
                     "agent run anything."),
        "always": ((), "No flag: codex exec cannot ask. Choose sandbox_mode read-only to "
                       "keep the agent from changing anything."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: sandbox_mode from codex's config.toml, read-only when unset."),
        "read-only": (("--sandbox=read-only",),
                      "--sandbox read-only: commands may read files but not write them or "
                      "use the network."),
        "workspace": (("--sandbox=workspace-write",),
                      "--sandbox workspace-write: commands may write inside the working "
                      "directory (and --add-dir directories), no network."),
        "full": (("--sandbox=danger-full-access",),
                 "--sandbox danger-full-access: no sandbox, commands run with the user's "
                 "rights."),
    },
}

OPTION_NOTES = {
    "model": "--model <name>.",
    "system_prompt": "-c developer_instructions=<text>: added as developer instructions; "
                     "codex keeps its own base instructions (model_instructions_file would "
                     "replace them, and with them the agent's knowledge of its tools).",
    "max_turns": "Not supported: codex exec has no turn limit (one turn runs to "
                 "completion); use a timeout.",
    "ephemeral": "--ephemeral: no session files are written, the run cannot be resumed.",
    "resume": "codex exec ... resume <thread id> -; the id is thread.started's thread_id. "
              "codex 0.169.0 starts a NEW thread, silently, when given an unknown thread "
              "name, so clinvk only passes the ids codex reported.",
    "verbose": "No effect: codex exec --json has no more verbose output.",
    "allowed_tools": "Not supported: codex has no tool allowlist flag.",
    "streaming": "No token deltas: codex prints each agent message whole.",
    "output_schema": "--output-schema <file>: a file clinvk writes for the run (0600, in a "
                     "directory only its user can enter) and removes after it; codex sends "
                     "the schema as the Responses text.format json_schema with strict: true, "
                     "and the final agent message is the JSON. The root must be an object; "
                     "OpenAI's strict mode also wants additionalProperties: false and every "
                     "property required (what the SDKs' parse() helpers send). An object "
                     "schema without properties (json_object: any object) cannot be strict, "
                     "so it goes into the prompt instead, as for gemini.",
    "project_config": "No flag, on or off: codex 0.169.0 ignores the .codex/config.toml of "
                      "a project its user config does not trust (MCP servers, notify, sandbox "
                      "and approval settings). clinvk never passes --trust nor writes a trust "
                      "entry. AGENTS.md is still read: it is instructions, not commands.",
}

_TOOL_ITEMS = ("command_execution", "mcp_tool_call", "file_change", "web_search")


class CodexStreamParser(parsing.StreamParser):
    """Parses ``codex exec --json`` lines (JSONL ``ThreadEvent``s)."""

    backend_name = NAME
    final_types = ("turn.completed", "turn.failed")
    # codex-cli 0.169.0: "unexpected status 401 Unauthorized: ..." (key refused), "Missing
    # environment variable: `OPENAI_API_KEY`." (the provider's env_key unset), and a ChatGPT
    # login that is gone or expired.
    auth_failure_markers = ("401 unauthorized", "missing environment variable",
                            "not logged in", "please log in again", "token could not be refreshed")
    # codex-cli 0.169.0: "exceeded retry limit, last status: 429 Too Many Requests"; the
    # ChatGPT plans' "You've hit your usage limit".
    rate_limit_markers = ("429 too many requests", "rate limit reached", "usage limit")

    def __init__(self) -> None:
        super().__init__()
        self._started_tools: Dict[str, str] = {}    # item id -> tool name

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "thread.started":
            self.backend_session_id = (parsing.as_str(obj.get("thread_id"))
                                       or self.backend_session_id)
            return [ev.init(NAME, self.model, self.backend_session_id)]
        if kind in ("item.started", "item.updated", "item.completed"):
            item = obj.get("item")
            return self._item(kind, item) if isinstance(item, dict) else []
        if kind == "turn.completed":
            self._add_usage(obj.get("usage") or {})
            return []
        if kind == "turn.failed":
            error = obj.get("error") or {}
            return self._fatal(parsing.as_str(error.get("message")) or "codex turn failed")
        if kind == "error":
            message = parsing.as_str(obj.get("message"))
            if message.startswith("Reconnecting"):
                # codex-cli 0.169.0 reports its own retries ("Reconnecting... 2/5 ...") as
                # top-level errors; the run may still succeed.
                return [ev.error(NAME, message, code="retry", fatal=False)]
            return self._fatal(message or "codex reported an error")
        return []                     # turn.started, item.plan.delta, request_user_input

    def _fatal(self, message: str) -> List[ev.Event]:
        message, code = parsing.api_error_detail(message)
        if message == self.error:
            return []                 # turn.failed repeats the error line before it
        return [ev.error(NAME, message, code=code)]

    def _item(self, kind: str, item: Dict[str, Any]) -> List[ev.Event]:
        item_type = item.get("type")
        item_id = parsing.as_str(item.get("id"))
        if item_type in _TOOL_ITEMS:
            out: List[ev.Event] = []
            if item_id not in self._started_tools:
                name, tool_input = _tool_call(item)
                self._started_tools[item_id] = name
                out.append(ev.tool_use(NAME, item_id, name, tool_input))
            if kind == "item.completed":
                output, is_error = _tool_outcome(item)
                out.append(ev.tool_result(NAME, item_id, output, is_error,
                                          self._started_tools[item_id]))
            return out
        if kind != "item.completed":
            return []
        if item_type == "agent_message":
            text = parsing.as_str(item.get("text"))
            return [ev.message(NAME, text)] if text else []
        if item_type == "reasoning":
            text = parsing.as_str(item.get("text"))
            return [ev.thinking(NAME, text)] if text else []
        if item_type == "error":
            # A warning (e.g. "Model metadata for `x` not found"), the turn goes on.
            return [ev.error(NAME, parsing.as_str(item.get("message")), code="warning",
                             fatal=False)]
        return []                     # todo_list, plan, collab_tool_call

    def _add_usage(self, usage: Dict[str, Any]) -> None:
        """Adds one turn's usage; codex's input_tokens already include the cached ones."""
        self.usage = ev.Usage(
            self.usage.input_tokens + parsing.as_int(usage.get("input_tokens")),
            self.usage.output_tokens + parsing.as_int(usage.get("output_tokens")),
            self.usage.cached_tokens + parsing.as_int(usage.get("cached_input_tokens")),
            self.usage.reasoning_tokens + parsing.as_int(usage.get("reasoning_output_tokens")))


def _tool_call(item: Dict[str, Any]) -> Any:
    """(tool name, input) of a tool item."""
    item_type = item.get("type")
    if item_type == "command_execution":
        return "command_execution", {"command": item.get("command")}
    if item_type == "mcp_tool_call":
        return parsing.as_str(item.get("tool")), {"server": item.get("server"),
                                               "arguments": item.get("arguments")}
    if item_type == "file_change":
        return "file_change", {"changes": item.get("changes") or []}
    return "web_search", {"query": item.get("query")}


def _tool_outcome(item: Dict[str, Any]) -> Any:
    """(output text, is_error) of a completed tool item."""
    status = item.get("status")
    item_type = item.get("type")
    if item_type == "command_execution":
        exit_code = item.get("exit_code")
        failed = status in ("failed", "declined") or (
            isinstance(exit_code, int) and exit_code != 0)
        return parsing.as_str(item.get("aggregated_output")), failed
    if item_type == "mcp_tool_call":
        error = item.get("error")
        if isinstance(error, dict) and error.get("message"):
            return parsing.as_str(error.get("message")), True
        result = item.get("result") or {}
        parts = result.get("content") if isinstance(result, dict) else None
        text = "".join(parsing.as_str(p.get("text")) for p in parts or [] if isinstance(p, dict))
        return text, status == "failed"
    if item_type == "file_change":
        changes = item.get("changes") or []
        text = "\n".join("%s %s" % (parsing.as_str(c.get("kind")), parsing.as_str(c.get("path")))
                         for c in changes if isinstance(c, dict))
        return text, status == "failed"
    return "", status == "failed"


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (what codex's ``-c key=value`` parses the value as)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _configured_provider(env: Dict[str, str]) -> str:
    """The top-level ``model_provider`` of codex's config.toml ("" when unset)."""
    path = os.path.join(env.get("CODEX_HOME") or os.path.join(base.home_of(env), ".codex"),
                        "config.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return ""
    top = text.split("\n[", 1)[0]          # the keys before the first table
    m = re.search(r'^\s*model_provider\s*=\s*["\']([^"\']*)["\']', top, re.MULTILINE)
    return m.group(1) if m else ""


def toml_array(words: List[str]) -> str:
    return "[%s]" % ", ".join(toml_string(w) for w in words)


def bridge_flags(opts: options.Options) -> List[str]:
    """The client's tools as codex-cli 0.169.0 takes an MCP server: ``-c mcp_servers.NAME.*``
    overrides (command, args: the ticket's path is all they hold). Its tool_timeout_sec (60 by
    default) is how long one call may wait for the HTTP client's next request; every tool of
    the server is approved beforehand (exec cannot ask). codex names the tools
    ``mcp__clinvk__NAME`` to the model, and sends no call id in the MCP request's _meta: calls
    are matched by name and arguments to its mcp_tool_call items. Its built-in tools (shell,
    apply_patch) stay: codex has no switch for them."""
    bridge = opts.tool_bridge
    command = bridge.command_for(opts)
    head = "mcp_servers.%s." % options.BRIDGE_SERVER
    flags = ["-c", head + "command=" + toml_string(command[0]),
             "-c", head + "args=" + toml_array(command[1:]),
             "-c", head + "default_tools_approval_mode=\"approve\""]
    if bridge.call_timeout:
        flags += ["-c", head + "tool_timeout_sec=%d" % int(bridge.call_timeout)]
    return flags


def chat_flags(opts: options.Options) -> List[str]:
    """The chat profile (see CHAT_DISABLED_FEATURES): the system prompt replaces codex's
    base instructions (model_instructions_file), no execpolicy rules, and without client
    tools no MCP server from config.toml."""
    flags = ["--ignore-rules"] + ["--disable=" + name for name in CHAT_DISABLED_FEATURES]
    for setting in CHAT_SETTINGS:
        flags += ["-c", setting]
    flags += ["-c", "model_instructions_file=" + toml_string(opts.run_files[INSTRUCTIONS_FILE])]
    if opts.tool_bridge is None:
        flags += ["-c", "mcp_servers={}"]
    return flags


class CodexBackend(base.Backend):
    name = NAME
    executable = "codex"
    vendor = "openai"
    display_name = "Codex CLI"
    # Left out on purpose: -c/--config, --enable/--disable, -p/--profile (they can set
    # anything, the sandbox and the model provider included), --dangerously-*, --full-auto,
    # --approve-for-me, --ignore-rules / --ignore-user-config (drop the user's restrictions),
    # -C/--cd (escapes the workdir policy), --oss / --local-provider, -o (writes a file),
    # --trust (persists trust), --json / --color (clinvk parses the output), and the flags
    # of clinvk's own options: codex-cli 0.169.0 refuses -m/--model or --ephemeral given
    # twice ("cannot be used multiple times").
    allowed_extra_flags = {
        "--add-dir": True,
        "-i": True,
        "--image": True,
        "--output-schema": True,
    }
    # codex-cli 0.169.0 (clap): -i/--image has value_delimiter ',' and takes several values
    # ("-i A B" reads B, and even a following "-" or "resume", as images); --add-dir and
    # --output-schema take one value each, commas included.
    path_extra_flags = {
        "--add-dir": base.PathFlag(),
        "-i": base.PathFlag(separator=",", variadic=True),
        "--image": base.PathFlag(separator=",", variadic=True),
        "--output-schema": base.PathFlag(),
    }
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("--disable=<feature> for %s (no shell, image, goal, agent or plugin tools, no "
                  "hooks or apps), -c %s (no skills, permissions, apps or environment "
                  "sections, no AGENTS.md, no web search tool), --ignore-rules, "
                  "-c model_instructions_file=<the "
                  "client's system prompt, else a one-line one> (replaces codex's base "
                  "instructions) and, without client tools, -c mcp_servers={}. Not available: "
                  "apply_patch and request_user_input stay offered (codex-cli 0.169.0 has no "
                  "switch for them: apply_patch comes with the model's catalog entry and "
                  "ignores -c include_apply_patch_tool, request_user_input with the "
                  "collaboration modes, which can no longer be disabled); no turn limit "
                  "(codex exec has none; without tools the "
                  "model answers in one call)." % (", ".join(CHAT_DISABLED_FEATURES),
                                                     ", -c ".join(CHAT_SETTINGS)))
    # codex-cli 0.169.0, stderr: "Error: thread/resume: thread/resume failed: no rollout
    # found for thread id <id> (code -32600)".
    missing_session_markers = ("no rollout found for thread id",)
    tested_versions = ("0.169.0", "0.171.0")
    login_hint = ("run `codex login` as the account running clinvk, or set CODEX_API_KEY in "
                  "its environment")
    npm_package = "@openai/codex"

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """``codex login status`` (codex-cli 0.169.0: "Logged in using ChatGPT" or "Logged in
        using an API key - sk-...", exit 0; "Not logged in", exit 1, whatever keys the
        environment holds), then CODEX_API_KEY (exec runs use it) and a custom model provider
        of config.toml, whose key codex reads from a variable it names."""
        code, out, err = run([executable, "login", "status"])
        text = (out + "\n" + err).lower()
        if code == 0 and "logged in using" in text:
            return base.AuthCheck(True, "logged in with ChatGPT" if "chatgpt" in text
                                  else "logged in with an API key")
        if env.get("CODEX_API_KEY"):
            return base.AuthCheck(True, "CODEX_API_KEY is set")
        provider = _configured_provider(env)
        if provider not in ("", "openai"):
            return base.AuthCheck(None, "model provider %r of config.toml: its key is not "
                                        "checked" % provider)
        return base.AuthCheck(False, "not logged in (codex login status)")

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        options.checked_format(opts.output_format)
        # --skip-git-repo-check: codex refuses to run outside a git repository otherwise.
        # The request's extra flags come first: a flag of codex's that takes several words
        # ("-i A B") then ends at --json instead of eating "resume" or the stdin marker "-"
        # (codex-cli 0.169.0).
        argv = [executable or self.executable, "exec"] + list(opts.extra)
        argv += ["--json", "--skip-git-repo-check"]
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.chat:
            argv += chat_flags(opts)
        elif opts.system_prompt:
            argv += ["-c", "developer_instructions=" + toml_string(opts.system_prompt)]
        if opts.ephemeral:
            argv.append("--ephemeral")
        if opts.tool_bridge is not None:
            argv += bridge_flags(opts)
        if SCHEMA_FILE in opts.run_files:
            # An exec option: before `resume`, as --sandbox must be (codex-cli 0.169.0).
            argv.append("--output-schema=" + opts.run_files[SCHEMA_FILE])
        if opts.resume_id:
            if opts.resume_id.startswith("-"):
                raise ValueError("codex session id must not start with '-': got %r"
                                 % opts.resume_id)
            argv += ["resume", opts.resume_id]
        # "-": read the prompt from stdin (codex also waits for stdin's EOF).
        return argv + ["-"]

    bridges_tools = True

    def bridged_tool_use(self, content: Dict[str, Any]) -> Any:
        # An mcp_tool_call item's input is {"server", "arguments"} (see _tool_call).
        name, tool_input, call_id = super().bridged_tool_use(content)
        if tool_input.get("server") != options.BRIDGE_SERVER:
            return "", {}, call_id
        arguments = tool_input.get("arguments")
        return name, arguments if isinstance(arguments, dict) else {}, call_id

    def output_schema_route(self, schema: Dict[str, Any]) -> str:
        # OpenAI's strict mode (codex always sends strict: true) lists every property of an
        # object: a bare {"type": "object"} would be refused by the model API.
        if schema.get("type") == "object" and not schema.get("properties"):
            return options.SCHEMA_IN_PROMPT
        return options.SCHEMA_BY_FLAG

    def output_schema_problem(self, schema: Dict[str, Any]) -> str:
        if schema.get("type") != "object":
            return ("codex sends an output schema as the model API's text.format json_schema, "
                    "whose root must have \"type\": \"object\": put the value in a "
                    "property of an object")
        return ""

    def run_files(self, opts: options.Options) -> Dict[str, str]:
        files = {}
        if opts.chat:
            files[INSTRUCTIONS_FILE] = opts.system_prompt_or_chat()
        schema = opts.output_schema
        if schema is not None and self.output_schema_route(schema) == options.SCHEMA_BY_FLAG:
            files[SCHEMA_FILE] = json.dumps(schema, ensure_ascii=False)
        return files

    def ignored_options(self, opts: options.Options) -> List[str]:
        out = []
        if opts.approval_mode not in ("", "default"):
            out.append("codex exec never asks for approval: approval_mode %r maps to no flag "
                       "(%s)" % (opts.approval_mode,
                                 MODES["approval_mode"][opts.approval_mode][1]))
        if opts.max_turns > 0:
            out.append("codex has no turn limit: max_turns=%d is ignored (use a timeout)"
                       % opts.max_turns)
        if opts.allowed_tools:
            out.append("codex has no tool allowlist flag: allowed_tools is ignored")
        return out

    def new_stream_parser(self) -> CodexStreamParser:
        return CodexStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        parser = CodexStreamParser()
        for line in stdout.splitlines():
            parser.feed(line)
        parser.finish(exit_code, stderr)
        return parser.result(exit_code)


BACKEND = base.register(CodexBackend())
