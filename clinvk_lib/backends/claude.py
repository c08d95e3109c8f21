"""Claude Code (``claude -p``): argv, environment and output parsing.

Checked against claude 2.1.197. The prompt goes on stdin (``claude -p`` reads it when no
positional prompt is given), so a prompt that starts with ``-`` is never read as a flag.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from . import base, claude_dialect, options, parsing

NAME = "claude"
# Linux refuses an argv word over 128 KiB (MAX_ARG_STRLEN) with E2BIG; --json-schema is one.
MAX_SCHEMA_CHARS = 100000
# A system prompt longer than this (in UTF-8 bytes) goes in a run file, read by
# --system-prompt-file (claude 2.1.197), instead of one argv word E2BIG would refuse.
MAX_ARGV_SYSTEM_PROMPT = 100000
SYSTEM_PROMPT_FILE = "system-prompt.txt"

# One table for the approval and sandbox modes: mode -> (flags, what it really does).
MODES = {
    "approval_mode": {
        "default": ((), "No flag: claude's own default (settings.json permissions.defaultMode, "
                        "normally 'default'). In print mode nobody can answer a permission "
                        "prompt, so tools that need approval (Bash, Edit, Write, ...) are "
                        "denied; read-only tools run."),
        "auto": (("--permission-mode=acceptEdits",),
                 "--permission-mode acceptEdits: file edits and simple filesystem commands "
                 "in the working directory are approved automatically; other tools that "
                 "need approval are denied."),
        "none": (("--permission-mode=bypassPermissions",),
                 "--permission-mode bypassPermissions: no permission checks at all, every "
                 "tool runs. claude refuses to start in this mode when it runs as root "
                 "(\"--dangerously-skip-permissions cannot be used with root/sudo "
                 "privileges\", exit code 1)."),
        "always": (("--permission-mode=default",),
                   "--permission-mode default, overriding any defaultMode in settings.json: "
                   "every tool that needs approval is denied (print mode cannot ask)."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: claude has no sandbox option on its command line."),
        "read-only": ((), "Not enforced: claude has no sandbox flag. Use approval_mode "
                          "default or always, which deny edits and Bash in print mode."),
        "workspace": ((), "Not enforced: claude has no sandbox flag. Use approval_mode auto "
                          "to allow edits while other tools stay denied."),
        "full": ((), "No flag: claude runs tools with the rights of the user running it."),
    },
}

OPTION_NOTES = {
    "model": "--model <name> (an alias such as 'sonnet' or a full model name).",
    "system_prompt": "--system-prompt <text>: replaces claude's built-in system prompt (over "
                     "100000 bytes: --system-prompt-file with a private file).",
    "max_turns": "--max-turns <n> (accepted by claude 2.1.197 although --help omits it).",
    "ephemeral": "--no-session-persistence: nothing is saved, the run cannot be resumed.",
    "resume": "--resume <session id>; the result reports the same session id.",
    "verbose": "--verbose (with the json format claude then prints an array of all "
               "messages, which the parser reads too).",
    "allowed_tools": "--allowedTools <list>: tools that run without asking.",
    "streaming": "--output-format stream-json --verbose --include-partial-messages: real "
                 "token deltas.",
    "output_schema": "--json-schema <schema>: claude offers the model a StructuredOutput tool "
                     "whose input schema it is, checks each call against it (asking again "
                     "when one does not match) and reports the value as the result's "
                     "structured_output. The root must be an object (a tool's input), and the "
                     "schema at most 100000 characters (one argv word).",
    "project_config": "Off (server and MCP runs): --setting-sources user: the user's "
                      "~/.claude settings and managed policy apply; the workdir's "
                      ".claude/settings*.json (hooks, permissions, env, plugins), .mcp.json "
                      "servers, project agents, commands, skills and CLAUDE.md are not loaded.",
}


class ClaudeStreamParser(claude_dialect.DialectParser):
    """claude's ``stream-json`` lines and json output (the shared Claude-dialect parser)."""

    backend_name = NAME
    # claude 2.1.197, result text: "Not logged in · Please run /login" (no credentials),
    # "Failed to authenticate. API Error: 401 ..." (key refused; api_error_status 401),
    # "Invalid API key · Fix external API key", "OAuth token has expired".
    auth_failure_markers = ("not logged in", "please run /login", "failed to authenticate",
                            "invalid api key", "oauth token has expired")
    # claude 2.1.197: "API Error: Request rejected (429) · ..." (api_error_status 429), and the
    # subscription's "usage limit reached" / "Claude AI usage limit reached".
    rate_limit_markers = ("request rejected (429)", "rate_limit_error", "usage limit reached")


def bridge_flags(opts: options.Options) -> List[str]:
    """The client's tools as claude 2.1.197 takes an MCP server: inline --mcp-config (the
    ticket's path is all it holds) and --strict-mcp-config, so no other server's tools are
    offered; --tools= (empty) switches the built-in tools off."""
    bridge = opts.tool_bridge
    command = bridge.command_for(opts)
    config = {"mcpServers": {options.BRIDGE_SERVER: {
        "type": "stdio", "command": command[0], "args": command[1:]}}}
    flags = ["--mcp-config=" + _compact(config), "--strict-mcp-config"]
    if not bridge.builtin_tools:
        flags.append("--tools=")
    return flags


def chat_flags(opts: options.Options) -> List[str]:
    """The chat profile on claude 2.1.197: no settings file at all (--setting-sources= loads
    neither the user's nor the workdir's: no hooks, plugins, CLAUDE.md or permissions), no
    skills or slash commands, and without client tools no built-in tools, no MCP server and
    one model turn. With client tools the bridge's flags already keep only its server
    (bridge_flags); the built-in tools go even when the client asked to keep them."""
    flags = ["--setting-sources=", "--disable-slash-commands"]
    if opts.tool_bridge is None:
        flags += ["--tools=", "--strict-mcp-config"]
        if opts.max_turns <= 0:
            flags.append("--max-turns=1")
    elif opts.tool_bridge.builtin_tools:
        flags.append("--tools=")
    return flags


def _compact(schema: Dict[str, Any]) -> str:
    """The schema as one line of ASCII JSON (no NUL or other control byte reaches argv)."""
    return json.dumps(schema, separators=(",", ":"))


class ClaudeBackend(base.Backend):
    name = NAME
    executable = "claude"
    vendor = "anthropic"
    display_name = "Claude Code"
    # Left out on purpose: --allowedTools / --permission-mode / --dangerously-* / --settings /
    # --mcp-config / --plugin-dir / --agents (they grant tools or run extra programs, so they
    # would get round the server's approval policy), --resume / --continue / --session-id /
    # --fork-session (sessions are clinvk's), --output-format / --verbose / --input-format
    # (clinvk parses the output), --system-prompt-file / --debug-file (read or write files),
    # and the flags of clinvk's own options (--model, --max-turns, --system-prompt, ...): given
    # twice they clash.
    allowed_extra_flags = {
        "--add-dir": True,
        "--append-system-prompt": True,
        "--disallowedTools": True,
        "--disallowed-tools": True,
        "--tools": True,
        "--fallback-model": True,
        "--effort": True,
        "--max-budget-usd": True,
        "--json-schema": True,
        "--disable-slash-commands": False,
    }
    # claude 2.1.197 (commander, "--add-dir <directories...>"): no comma splitting ("a,b" is
    # one directory), and "--add-dir A B" takes B as a second directory; "--add-dir=A B"
    # does not (B becomes part of the prompt).
    path_extra_flags = {"--add-dir": base.PathFlag(variadic=True)}
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("--tools= (no built-in tool), --strict-mcp-config (no MCP server), "
                  "--setting-sources= (no settings file: no hooks, plugins, permissions or "
                  "CLAUDE.md, the user's included), --disable-slash-commands (no skills or "
                  "slash commands), --system-prompt (the client's, else a one-line one) and "
                  "--max-turns=1; with ANTHROPIC_API_KEY set, also CLAUDE_CODE_SIMPLE=1 "
                  "(claude's minimal mode, as --bare: no LSP, plugin sync, auto-memory or "
                  "background prefetches; it reads no other credential, so not for a login). "
                  "With client tools: only the tool bridge's MCP server, no "
                  "built-in tools, no turn limit. Authentication configured in "
                  "~/.claude/settings.json (apiKeyHelper, env) is not read either: use "
                  "ANTHROPIC_API_KEY or the login.")
    # claude 2.1.197: "No conversation found with session ID: <id>" (stderr, and in the
    # stream-json result's "errors").
    missing_session_markers = ("no conversation found with session id",)
    tested_versions = ("2.1.197", "2.1.332")
    login_hint = ("log in as the account running clinvk (claude, then /login), or set "
                  "ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`) in "
                  "its environment")
    npm_package = "@anthropic-ai/claude-code"

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        fmt = options.checked_format(opts.output_format)
        argv = [executable or self.executable, "-p"]
        if opts.resume_id:
            argv.append("--resume=" + opts.resume_id)
        argv.append("--output-format=" + fmt)
        if fmt == "stream-json":
            # claude 2.1.197: stream-json in print mode exits 1 without --verbose; the
            # partial messages are what gives real token deltas.
            argv += ["--verbose", "--include-partial-messages"]
        elif opts.verbose:
            argv.append("--verbose")
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.max_turns > 0:
            argv.append("--max-turns=%d" % opts.max_turns)
        if SYSTEM_PROMPT_FILE in opts.run_files:
            argv.append("--system-prompt-file=" + opts.run_files[SYSTEM_PROMPT_FILE])
        elif opts.system_prompt_or_chat():
            argv.append("--system-prompt=" + opts.system_prompt_or_chat())
        allowed = [opts.allowed_tools] if opts.allowed_tools else []
        if opts.tool_bridge is not None:
            argv += bridge_flags(opts)
            # The rule for a whole server allows each of its tools (print mode cannot ask).
            allowed.append("mcp__" + options.BRIDGE_SERVER)
        if allowed:
            argv.append("--allowedTools=" + ",".join(allowed))
        if opts.ephemeral:
            argv.append("--no-session-persistence")
        if opts.chat:
            argv += chat_flags(opts)
        elif not opts.project_config:
            # claude 2.1.197: without it, a plain -p run executes the workdir's
            # .claude/settings.json hooks and starts its .mcp.json servers.
            argv.append("--setting-sources=user")
        if opts.output_schema is not None:
            argv.append("--json-schema=" + _compact(opts.output_schema))
        return argv + list(opts.extra)

    bridges_tools = True

    def run_files(self, opts: options.Options) -> Dict[str, str]:
        if len(opts.system_prompt.encode("utf-8")) > MAX_ARGV_SYSTEM_PROMPT:
            return {SYSTEM_PROMPT_FILE: opts.system_prompt}
        return {}

    def child_env(self, base_env: Dict[str, str],
                  opts: Optional[options.Options] = None) -> Dict[str, str]:
        env = super().child_env(base_env, opts)
        if opts is not None and opts.chat_without_tools and env.get("ANTHROPIC_API_KEY"):
            # claude 2.1.197's minimal mode (what --bare sets): no LSP, plugin sync, auto-memory,
            # background prefetches or keychain reads; about 10% less work per turn. It reads
            # no credential but ANTHROPIC_API_KEY, so only when that is how claude logs in.
            env["CLAUDE_CODE_SIMPLE"] = "1"
        if opts is not None and opts.tool_bridge is not None and opts.tool_bridge.call_timeout:
            # claude 2.1.197 gives up on an MCP tool call after MCP_TOOL_TIMEOUT ms; a bridged
            # call waits for the HTTP client's next request.
            env["MCP_TOOL_TIMEOUT"] = str(int(opts.tool_bridge.call_timeout * 1000))
        return env

    def output_schema_route(self, schema: Dict[str, Any]) -> str:
        return options.SCHEMA_BY_FLAG

    def output_schema_problem(self, schema: Dict[str, Any]) -> str:
        if schema.get("type") != "object":
            return ("claude takes an output schema as the input schema of a tool "
                    "(--json-schema), which must have \"type\": \"object\" at its root: "
                    "put the value in a property of an object")
        if len(_compact(schema)) > MAX_SCHEMA_CHARS:
            return ("the schema is over %d characters, too long for claude's --json-schema "
                    "(one argv word)" % MAX_SCHEMA_CHARS)
        return ""

    def ignored_options(self, opts: options.Options) -> List[str]:
        if opts.sandbox_mode not in ("", "default", "full"):
            return ["claude has no sandbox flag: sandbox_mode %r is not enforced (%s)"
                    % (opts.sandbox_mode, MODES["sandbox_mode"][opts.sandbox_mode][1])]
        return []

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """``claude auth status``: claude 2.1.197 prints {"loggedIn": ..., "authMethod": ...,
        "apiKeySource": ...} (exit code 1 when not logged in)."""
        code, out, _ = run([executable, "auth", "status"])
        status = parsing.decode_json_document(out)
        if not isinstance(status, dict) or not isinstance(status.get("loggedIn"), bool):
            return base.AuthCheck(None, "`claude auth status` printed no status (exit code %d)"
                                  % code)
        if not status["loggedIn"]:
            return base.AuthCheck(False, "not logged in (claude auth status)")
        how = parsing.as_str(status.get("apiKeySource")) or parsing.as_str(
            status.get("authMethod"))
        return base.AuthCheck(True, "logged in (%s)" % how if how else "logged in")

    def new_stream_parser(self) -> ClaudeStreamParser:
        return ClaudeStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        """Reads the result object, the array of all messages (with --verbose) or NDJSON."""
        return claude_dialect.parse_document(ClaudeStreamParser(), stdout, stderr, exit_code)


BACKEND = base.register(ClaudeBackend())
