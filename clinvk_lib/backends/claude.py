"""Claude Code (``claude -p``): argv, environment and output parsing.

Checked against claude 2.1.197. The prompt goes on stdin (``claude -p`` reads it when no
positional prompt is given), so a prompt that starts with ``-`` is never read as a flag.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from .. import events as ev
from . import base, options, parsing

NAME = "claude"
# Linux refuses an argv word over 128 KiB (MAX_ARG_STRLEN) with E2BIG; --json-schema is one.
MAX_SCHEMA_CHARS = 100000

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
    "system_prompt": "--system-prompt <text>: replaces claude's built-in system prompt.",
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


class ClaudeStreamParser(parsing.StreamParser):
    """Parses ``--output-format stream-json`` lines (and the items of the json array form).

    Text that arrived as ``stream_event`` deltas is not repeated when the whole
    ``assistant`` message follows. Sub-agent text (``parent_tool_use_id`` set) is not part
    of the reply and is left out; the sub-agent's tool calls are kept.
    """

    backend_name = NAME
    final_types = ("result",)

    def __init__(self) -> None:
        super().__init__()
        self.final_text = ""          # the result line's text: claude's own final answer
        self._tool_names: Dict[str, str] = {}
        self._message_id = ""
        self._streamed: Dict[Any, str] = {}   # (message id, "text"|"thinking") -> deltas
        self._last_delta = ""         # the latest text delta sent
        self._new_text_block = False
        self._api_error = ""

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "stream_event":
            return self._stream_event(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        return []                     # rate_limit_event and future types

    def _system(self, obj: Dict[str, Any]) -> List[ev.Event]:
        if obj.get("subtype") != "init":
            return []                 # status, api_retry, hook_*, task_*: progress noise
        self.backend_session_id = parsing.as_str(obj.get("session_id")) or self.backend_session_id
        self.model = parsing.as_str(obj.get("model")) or self.model
        return [ev.init(NAME, self.model, self.backend_session_id)]

    def _stream_event(self, obj: Dict[str, Any]) -> List[ev.Event]:
        event = obj.get("event")
        if not isinstance(event, dict) or obj.get("parent_tool_use_id"):
            return []
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._message_id = parsing.as_str(message.get("id"))
            return []
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            self._new_text_block = block.get("type") == "text"
            return []
        if kind != "content_block_delta":
            return []
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            text = parsing.as_str(delta.get("text"))
            if not text:
                return []
            self._remember("text", text)
            if self._new_text_block and self._last_delta and not self._last_delta.endswith("\n"):
                # A new text block after earlier streamed text (the model spoke, used a
                # tool, spoke again): keep the two apart as events.collect_text does.
                text = "\n\n" + text
            self._new_text_block = False
            self._last_delta = text
            return [ev.message(NAME, text, partial=True)]
        if delta.get("type") == "thinking_delta":
            text = parsing.as_str(delta.get("thinking"))
            if not text:
                return []
            self._remember("thinking", text)
            return [ev.thinking(NAME, text, partial=True)]
        return []                     # input_json_delta, signature_delta, citations_delta

    def _remember(self, kind: str, text: str) -> None:
        key = (self._message_id, kind)
        self._streamed[key] = self._streamed.get(key, "") + text

    def _already_streamed(self, message_id: str, kind: str, text: str) -> bool:
        """True when ``text`` (a whole block) was already sent as deltas; consumes it."""
        key = (message_id or self._message_id, kind)
        pending = self._streamed.get(key, "")
        if not pending or not text:
            return False
        if pending.startswith(text):
            self._streamed[key] = pending[len(text):]
            return True
        return text.strip() in pending

    def _assistant(self, obj: Dict[str, Any]) -> List[ev.Event]:
        message = obj.get("message") or {}
        content = message.get("content")
        if not isinstance(content, list):
            return []
        message_id = parsing.as_str(message.get("id"))
        subagent = bool(obj.get("parent_tool_use_id"))
        out: List[ev.Event] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                text = parsing.as_str(block.get("text"))
                if obj.get("error"):
                    # claude 2.1.197 reports an API failure as an assistant text ("API
                    # Error: 400 ...") with an "error" field; the result line repeats it.
                    self._api_error = text
                elif text and not subagent and not self._already_streamed(message_id, "text",
                                                                          text):
                    out.append(ev.message(NAME, text))
            elif kind == "thinking":
                text = parsing.as_str(block.get("thinking"))
                if text and not subagent and not self._already_streamed(message_id,
                                                                        "thinking", text):
                    out.append(ev.thinking(NAME, text))
            elif kind in ("tool_use", "server_tool_use"):
                tool_id = parsing.as_str(block.get("id"))
                name = parsing.as_str(block.get("name"))
                self._tool_names[tool_id] = name
                out.append(ev.tool_use(NAME, tool_id, name, block.get("input")))
        return out

    def _user(self, obj: Dict[str, Any]) -> List[ev.Event]:
        message = obj.get("message") or {}
        content = message.get("content")
        if not isinstance(content, list):
            return []                 # a replayed prompt, not a tool result
        out: List[ev.Event] = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                tool_id = parsing.as_str(block.get("tool_use_id"))
                out.append(ev.tool_result(NAME, tool_id, _tool_output(block.get("content")),
                                          bool(block.get("is_error")),
                                          self._tool_names.get(tool_id, "")))
        return out

    def _result(self, obj: Dict[str, Any]) -> List[ev.Event]:
        self.backend_session_id = parsing.as_str(obj.get("session_id")) or self.backend_session_id
        self.usage = _usage(obj)
        if not self.model:
            self.model = _main_model(obj.get("modelUsage"))
        subtype = parsing.as_str(obj.get("subtype"))
        if obj.get("is_error") or subtype not in ("", "success"):
            errors = [parsing.as_str(e) for e in obj.get("errors") or [] if parsing.as_str(e)]
            message = ("; ".join(errors) or parsing.as_str(obj.get("result")) or self._api_error
                       or "claude reported an error (%s)" % (subtype or "is_error"))
            code = "api_error_%s" % obj["api_error_status"] if obj.get("api_error_status") \
                else subtype
            return [ev.error(NAME, message, code=code)]
        self.final_text = parsing.as_str(obj.get("result"))
        # claude 2.1.197 with --json-schema: the value the model called StructuredOutput
        # with; absent when it never called it validly (the result is then its text).
        self.structured = obj.get("structured_output")
        if self.final_text and not any(e.type == ev.MESSAGE for e in self.events):
            return [ev.message(NAME, self.final_text)]
        return []


def _compact(schema: Dict[str, Any]) -> str:
    """The schema as one line of ASCII JSON (no NUL or other control byte reaches argv)."""
    return json.dumps(schema, separators=(",", ":"))


def _tool_output(content: Any) -> str:
    """A tool result's content as text: a string, or the text parts of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(parsing.as_str(part.get("text")) for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _usage(result: Dict[str, Any]) -> ev.Usage:
    """Usage of a result line. Input counts every prompt token, cached ones included."""
    u = result.get("usage") or {}
    cache_read = parsing.as_int(u.get("cache_read_input_tokens"))
    cost = result.get("total_cost_usd")
    return ev.Usage(
        input_tokens=parsing.as_int(u.get("input_tokens")) + cache_read
        + parsing.as_int(u.get("cache_creation_input_tokens")),
        output_tokens=parsing.as_int(u.get("output_tokens")),
        cached_tokens=cache_read,
        cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool)
        else None)


def _main_model(model_usage: Any) -> str:
    """The model that wrote the most output (claude also uses a small model on the side)."""
    best, most = "", -1
    for name, u in (model_usage.items() if isinstance(model_usage, dict) else ()):
        output = parsing.as_int(u.get("outputTokens")) if isinstance(u, dict) else 0
        if output > most:
            best, most = name, output
    return best


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
    # claude 2.1.197: "No conversation found with session ID: <id>" (stderr, and in the
    # stream-json result's "errors").
    missing_session_markers = ("no conversation found with session id",)

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
        if opts.system_prompt:
            argv.append("--system-prompt=" + opts.system_prompt)
        if opts.allowed_tools:
            argv.append("--allowedTools=" + opts.allowed_tools)
        if opts.ephemeral:
            argv.append("--no-session-persistence")
        if not opts.project_config:
            # claude 2.1.197: without it, a plain -p run executes the workdir's
            # .claude/settings.json hooks and starts its .mcp.json servers.
            argv.append("--setting-sources=user")
        if opts.output_schema is not None:
            argv.append("--json-schema=" + _compact(opts.output_schema))
        return argv + list(opts.extra)

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

    def new_stream_parser(self) -> ClaudeStreamParser:
        return ClaudeStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        """Reads the result object, the array of all messages (with --verbose) or NDJSON."""
        parser = ClaudeStreamParser()
        doc = parsing.decode_json_document(stdout)
        values = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else []
        for value in values:
            parser.feed_value(value)
        if not values and exit_code == 0:
            shown = parsing.last_meaningful_line(stdout)
            parser.error = "claude printed no JSON result%s" % (": " + shown if shown else "")
        parser.finish(exit_code, stderr)
        result = parser.result(exit_code)
        if parser.final_text and not result.error:
            result.text = parser.final_text
        return result


BACKEND = base.register(ClaudeBackend())
