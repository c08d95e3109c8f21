"""Fake ``claude``, ``codex``, ``gemini`` and ``qwen`` for unit tests (run through
tests/fakes/bin/*; ``copilot`` and ``opencode`` are in fake_copilot.py and fake_opencode.py,
with the same environment variables).

Each fake parses the flags clinvk's argv builders emit (and the extra flags clinvk allows)
the way the real CLI does, rejects unknown flags with the real CLI's message, reads the whole
prompt from stdin and prints the real CLI's output format (claude 2.1.197, codex-cli 0.169.0,
gemini 0.61.0, qwen-code 0.24.4). The reply is ``"echo: " + prompt``; a resumed session's
reply starts with ``"[history: N turns] "`` where N counts the earlier turns of that session.

Environment variables:
  FAKE_CLI_RECORD=<path>     append one JSON line per run: {backend, argv, stdin, cwd, env}
                             (env: the variables whose names start with CLAUDE, CODEX,
                             GEMINI, ANTHROPIC, OPENAI, GOOGLE, FAKE_CLI, CLINVK, plus HOME)
  FAKE_CLI_MODE=<mode>       ok (default) | fail (exit 1, error on stderr) | error_exit0
                             (the CLI's error report, exit code 0) | slow (FAKE_CLI_DELAY
                             seconds before each line) | hang (first line, then sleep
                             forever) | noise (non-JSON lines mixed into stdout) |
                             invalid_json (broken JSON on stdout, exit 0) | crash_midstream
                             (some lines, then SIGKILL itself) | stderr_flood
                             (FAKE_CLI_STDERR_BYTES, default 4 MiB, on stderr first) |
                             rate_limited (the CLI's report of a 429 from its model API)
  FAKE_CLI_AUTH=none         the CLI has no credentials: a run fails as the real CLI does
                             when not logged in, and its status command (claude auth status,
                             codex login status) says so
  FAKE_CLI_DELAY=<seconds>   pause per line in slow mode (default 0.5)
  FAKE_CLI_HANG_AFTER=<n>    in hang mode, sleep forever after the n-th line (default 1)
  FAKE_CLI_WARNINGS=<n>      codex: n "Reconnecting... i/n" error events (its retries)
                             after turn.started
  FAKE_CLI_STDERR=<text>     write this line on stderr before any output
  FAKE_CLI_CHUNKS=<n>        stream the reply in n pieces where the CLI streams (default 3)
  FAKE_CLI_TOOL=1            make one tool call (and get its result) before replying
  FAKE_CLI_THINKING=<text>   claude: a thinking block with this text (and its signature)
                             before the reply's text, in the reply's message
  FAKE_CLI_PIDFILE=<path>    write the fake's pid there at start
  FAKE_CLI_CHILD=<path>      at start, leave a child that sleeps FAKE_CLI_CHILD_SECS (default
                             60) holding the fake's stdout and stderr; append its pid there
  FAKE_CLI_CHILD_SETSID=1    that child calls setsid() first (leaves the process group)
  FAKE_CLI_STATE_DIR=<dir>   where sessions are kept for resume (default: a folder in the
                             system temp dir)
  FAKE_CLI_RECALL=1          a resumed session's reply also starts with "[recalled: P1 | P2] ",
                             the prompts of its earlier turns (what a model remembers)
  FAKE_CLI_JSON=<text>       the model's answer to every run given an output schema
  FAKE_CLI_GATE=<path>       a run (not --version) says nothing until this file exists,
                             then answers: a backend that stays silent for as long as a
                             test wants

A prompt line "FAKE_SLEEP: <seconds>" makes that run wait before it starts answering.

Client tools (clinvk's tool bridge): given an MCP server (claude --mcp-config; codex -c
mcp_servers.NAME.command/args, its calls mcp_tool_call items without _meta, codex-cli
0.169.0; gemini, trusted, the mcpServers of its system defaults file, its calls tool_use lines
of mcp_NAME_TOOL without _meta, gemini 0.61.0), a prompt line
"CALL-TOOL: <name> <json args>" makes the fake start that MCP server (as claude 2.1.197 does),
list its tools and call the one whose name ends with <name> (claude's name for it:
mcp__SERVER__TOOL), one call per such line, all at once (claude runs read-only tools of one turn
concurrently), with _meta claudecode/toolUseId as claude sends it. A result holding CALL-TOOL
lines makes it call again; otherwise the reply is "TOOL-RESULT-SEEN: " plus the results joined
by " | ".

Structured output, as each real CLI takes it: claude --json-schema <json> (the reply is a
StructuredOutput tool call, the result carries structured_output), codex --output-schema
<file> (the agent message is the JSON), gemini a prompt that ends with a schema between
<json_schema> tags (the reply is the JSON). The model's answer is an instance of the schema,
unless the prompt has a line "FAKE_JSON: <text>" (that run answers <text>) or FAKE_CLI_JSON is
set. A claude answer that is not JSON is what claude prints when the model never called the
tool: the text, and no structured_output. The record of a codex run has "output_schema_file":
the file's mode, its directory's mode and its text, as the fake found them.
"""

import datetime
import json
import os
import re
import stat
import signal
import subprocess
import sys
import tempfile
import time
import uuid

VERSIONS = {"claude": "2.1.197 (Claude Code)", "codex": "codex-cli 0.169.0",
            "gemini": "0.61.0", "qwen": "0.24.4"}
RECORD_PREFIXES = ("CLAUDE", "CODEX", "GEMINI", "ANTHROPIC", "OPENAI", "GOOGLE", "FAKE_CLI",
                   "CLINVK", "QWEN", "COPILOT", "OPENCODE")

# Flag specs: name -> kind. "bool" takes no value, "value" takes one, "many" takes one or
# more (commander variadic / yargs array: every following word that is not a flag),
# "optional" takes the next word unless it is a flag.
CLAUDE_FLAGS = {
    "-p": "bool", "--print": "bool", "--verbose": "bool", "--include-partial-messages": "bool",
    "--no-session-persistence": "bool", "--disable-slash-commands": "bool",
    "--exclude-dynamic-system-prompt-sections": "bool", "--strict-mcp-config": "bool",
    "--dangerously-skip-permissions": "bool", "--bare": "bool", "-c": "bool",
    "--continue": "bool", "--fork-session": "bool", "-v": "bool", "--version": "bool",
    "--output-format": "value", "--input-format": "value", "--model": "value",
    "--permission-mode": "value", "--max-turns": "value", "--system-prompt": "value",
    "--append-system-prompt": "value", "--fallback-model": "value", "--effort": "value",
    "--system-prompt-file": "value", "--max-budget-usd": "value", "--json-schema": "value", "--session-id": "value",
    "--settings": "value", "--setting-sources": "value", "--allowedTools": "many",
    "--allowed-tools": "many",
    "--disallowedTools": "many", "--disallowed-tools": "many", "--tools": "many",
    "--add-dir": "many", "--mcp-config": "many", "-r": "optional", "--resume": "optional",
}
CODEX_GLOBAL_FLAGS = {
    "--json": "bool", "--experimental-json": "bool", "--skip-git-repo-check": "bool",
    "--ephemeral": "bool", "--ignore-user-config": "bool", "--ignore-rules": "bool",
    "--strict-config": "bool", "--dangerously-bypass-approvals-and-sandbox": "bool",
    "--dangerously-bypass-hook-trust": "bool", "--worktree": "bool", "--trust": "bool",
    "-c": "value", "--config": "value", "-m": "value", "--model": "value", "-i": "value",
    "--image": "value", "--output-schema": "value", "-o": "value",
    "--output-last-message": "value", "--enable": "value", "--disable": "value",
    "--thread-source": "value",
}
# Only `codex exec` itself takes these: after `resume` they are "unexpected argument"s.
CODEX_EXEC_ONLY_FLAGS = {
    "-s": "value", "--sandbox": "value", "--add-dir": "value", "-C": "value", "--cd": "value",
    "-p": "value", "--profile": "value", "--color": "value", "--oss": "bool",
    "--local-provider": "value", "--approve-for-me": "bool", "-V": "bool", "--version": "bool",
}
CODEX_RESUME_ONLY_FLAGS = {"--last": "bool", "--all": "bool"}
GEMINI_FLAGS = {
    "--skip-trust": "bool", "-s": "bool", "--sandbox": "bool", "-y": "bool", "--yolo": "bool",
    "-d": "bool", "--debug": "bool", "--screen-reader": "bool", "--raw-output": "bool",
    "--accept-raw-output-risk": "bool", "--list-sessions": "bool", "-v": "bool",
    "--version": "bool", "-m": "value", "--model": "value", "-o": "value",
    "--output-format": "value", "--approval-mode": "value", "-r": "value", "--resume": "value",
    "-p": "value", "--prompt": "value", "--session-id": "value",
    "--include-directories": "many", "-e": "many", "--extensions": "many",
    "--allowed-mcp-server-names": "many", "--allowed-tools": "many", "--policy": "many",
}
# qwen-code 0.24.4 (yargs): "switch" is a boolean that also takes "=true" / "=false".
QWEN_FLAGS = {
    "--include-partial-messages": "switch", "--safe-mode": "switch", "--bare": "switch",
    "--debug": "switch", "-d": "switch", "--yolo": "switch", "-y": "switch",
    "--chat-recording": "switch", "--sandbox": "switch", "-s": "switch", "--continue": "switch",
    "-c": "switch", "--fork-session": "switch", "--version": "switch", "-v": "switch",
    "--output-format": "value", "-o": "value", "--model": "value", "-m": "value",
    "--approval-mode": "value", "--system-prompt": "value", "--append-system-prompt": "value",
    "--resume": "value", "-r": "value", "--session-id": "value", "--max-session-turns": "value",
    "--output-style": "value", "--max-tool-calls": "value", "--max-wall-time": "value",
    "--max-subagent-depth": "value", "--auth-type": "value", "--mcp-config": "value",
    "--json-schema": "value", "-p": "value", "--prompt": "value",
    "--include-directories": "many", "--add-dir": "many", "--allowed-tools": "many",
    "--exclude-tools": "many", "--core-tools": "many", "--fallback-model": "many",
    "--disabled-slash-commands": "many", "--allowed-mcp-server-names": "many",
    "--extensions": "many", "-e": "many",
}
CHOICES = {
    ("qwen", "--output-format"): ("text", "json", "stream-json"),
    ("qwen", "--approval-mode"): ("plan", "default", "auto-edit", "auto", "yolo"),
    ("claude", "--output-format"): ("text", "json", "stream-json"),
    ("claude", "--permission-mode"): ("acceptEdits", "auto", "bypassPermissions", "default",
                                      "dontAsk", "plan"),
    ("claude", "--effort"): ("low", "medium", "high", "xhigh", "max"),
    ("codex", "--sandbox"): ("read-only", "workspace-write", "danger-full-access"),
    ("gemini", "--output-format"): ("text", "json", "stream-json"),
    ("gemini", "--approval-mode"): ("default", "auto_edit", "yolo", "plan"),
}
CLAUDE_ALIASES = {"-p": "--print", "-r": "--resume", "-v": "--version", "-c": "--continue",
           "--allowed-tools": "--allowedTools", "--disallowed-tools": "--disallowedTools"}
CODEX_ALIASES = {"-s": "--sandbox", "-m": "--model", "-c": "--config", "-i": "--image",
                 "-C": "--cd", "-p": "--profile", "-o": "--output-last-message",
                 "-V": "--version", "--experimental-json": "--json"}
GEMINI_ALIASES = {"-s": "--sandbox", "-y": "--yolo", "-d": "--debug", "-m": "--model",
                  "-o": "--output-format", "-r": "--resume", "-p": "--prompt",
                  "-e": "--extensions", "-v": "--version"}
QWEN_ALIASES = dict(GEMINI_ALIASES, **{"-c": "--continue", "--add-dir": "--include-directories"})


class UsageError(Exception):
    """A command line the real CLI would refuse; args: (message, exit code)."""


def parse_flags(backend, words, spec, aliases, stop_at=()):
    """(flags, positionals, rest): flags maps a flag's long name to its value(s).

    Parsing stops at the first positional in ``stop_at`` (codex's ``resume``); ``rest``
    holds it and what follows. Repeated flags collect their values in a list.
    """
    flags, positionals = {}, []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            positionals.extend(words[i:])
            return flags, positionals, []
        if not word.startswith("-") or word == "-":
            if word in stop_at and not positionals:
                return flags, positionals, words[i - 1:]
            positionals.append(word)
            continue
        name, has_value, value = word.partition("=")
        kind = spec.get(name)
        if kind is None:
            raise UsageError(unknown_flag_message(backend, name), usage_exit_code(backend))
        key = aliases.get(name, name)
        if kind == "switch":
            flags[key] = not has_value or value.lower() != "false"
            continue
        if kind == "bool":
            if has_value:
                raise UsageError("error: option '%s' does not take a value" % name,
                                 usage_exit_code(backend))
            flags[key] = True
            continue
        values = [value] if has_value else []
        if kind in ("value", "many") and not has_value:
            if i >= len(words):
                raise UsageError("error: option '%s' argument missing" % name,
                                 usage_exit_code(backend))
            values.append(words[i])
            i += 1
        if kind == "optional" and not has_value and i < len(words) \
                and not words[i].startswith("-"):
            values.append(words[i])
            i += 1
        while kind == "many" and i < len(words) and not words[i].startswith("-"):
            values.append(words[i])
            i += 1
        choices = CHOICES.get((backend, key))
        if choices and values and values[0] not in choices:
            raise UsageError("error: option '%s' argument '%s' is invalid. Allowed choices "
                             "are %s." % (name, values[0], ", ".join(choices)),
                             usage_exit_code(backend))
        flags.setdefault(key, []).extend(values or [""])
    return flags, positionals, []


def usage_exit_code(backend):
    return 2 if backend == "codex" else 1      # clap exits 2, commander and yargs 1


def unknown_flag_message(backend, name):
    if backend == "copilot":        # clap
        return "error: unexpected argument '%s' found\n\nUsage: copilot [OPTIONS] [COMMAND]" % name
    if backend == "opencode":       # yargs: the usage text, no error line
        return "opencode run [message..]\n\nrun opencode with a message"
    if backend == "qwen":
        bare = name.lstrip("-")
        camel = bare.split("-")[0] + "".join(w.title() for w in bare.split("-")[1:])
        return "Unknown arguments: %s, %s" % (bare, camel)
    if backend == "claude":
        return "error: unknown option '%s'" % name
    if backend == "codex":
        return ("error: unexpected argument '%s' found\n\nUsage: codex exec [OPTIONS] "
                "[PROMPT]\n\nFor more information, try '--help'." % name)
    return "Unknown argument: %s" % name.lstrip("-")


def last(flags, key, default=""):
    values = flags.get(key)
    return values[-1] if isinstance(values, list) and values else default


class Run:
    """One invocation: the prompt, the session and the output helpers."""

    def __init__(self, backend):
        self.backend = backend
        self.mode = os.environ.get("FAKE_CLI_MODE", "ok")
        self.delay = float(os.environ.get("FAKE_CLI_DELAY", "0.5"))
        self.hang_after = int(os.environ.get("FAKE_CLI_HANG_AFTER", "1"))
        self.warnings = int(os.environ.get("FAKE_CLI_WARNINGS", "0"))
        self.chunks = max(1, int(os.environ.get("FAKE_CLI_CHUNKS", "3")))
        self.tool = os.environ.get("FAKE_CLI_TOOL") == "1"
        self.thinking = os.environ.get("FAKE_CLI_THINKING", "")
        self.state_dir = os.environ.get("FAKE_CLI_STATE_DIR") or os.path.join(
            tempfile.gettempdir(), "clinvk-fake-cli-state")
        self.prompt = ""
        self.session_id = str(uuid.uuid4())
        self.history = 0
        self.earlier = []           # the prompts of the session's earlier turns
        self.lines_written = 0
        self.streaming = True       # one JSON event per line (else one whole document)
        self.answer = None          # the model's answer when it is not the echo

    # -- sessions --

    def _state_file(self, session_id):
        return os.path.join(self.state_dir, "%s-%s.json" % (self.backend, session_id))

    def resume(self, session_id):
        """Loads the session; False when it does not exist."""
        try:
            with open(self._state_file(session_id)) as f:
                state = json.load(f)
            self.history = state["turns"]
            self.earlier = state.get("prompts", [])
        except (OSError, ValueError, KeyError):
            return False
        self.session_id = session_id
        return True

    def any_sessions(self):
        try:
            return any(n.startswith(self.backend + "-") for n in os.listdir(self.state_dir))
        except OSError:
            return False

    def save(self):
        os.makedirs(self.state_dir, exist_ok=True)
        # Its own temporary file: two runs resuming one session at once must not write into
        # each other's (the last replace wins, as with a real CLI's transcript).
        tmp = "%s.%d.tmp" % (self._state_file(self.session_id), os.getpid())
        with open(tmp, "w") as f:
            json.dump({"turns": self.history + 1, "prompts": self.earlier + [self.prompt]}, f)
        os.replace(tmp, self._state_file(self.session_id))

    # -- reply --

    def answer_schema(self, schema):
        """Answer with JSON for ``schema``: the prompt's FAKE_JSON line, FAKE_CLI_JSON, or an
        instance of the schema."""
        directive = re.search(r"^FAKE_JSON: ?(.*)$", self.prompt, re.MULTILINE)
        if directive:
            self.answer = directive.group(1)
        elif "FAKE_CLI_JSON" in os.environ:
            self.answer = os.environ["FAKE_CLI_JSON"]
        else:
            from fake_model_api import schema_example
            self.answer = json.dumps(schema_example(schema))

    def read_prompt_schema(self):
        """A model asked, in the prompt, for JSON valid against a schema between
        <json_schema> tags answers with such JSON."""
        blocks = re.findall(r"<json_schema>\s*(.*?)\s*</json_schema>", self.prompt, re.S)
        if blocks:
            self.answer_schema(json.loads(blocks[-1]))

    def structured(self):
        """The answer as a JSON value, or None when it is not JSON."""
        try:
            return json.loads(self.answer) if self.answer is not None else None
        except ValueError:
            return None

    @property
    def reply(self):
        if self.answer is not None:
            return self.answer
        prefix = "[history: %d turns] " % self.history if self.history else ""
        if self.earlier and os.environ.get("FAKE_CLI_RECALL") == "1":
            prefix = "[recalled: %s] " % " | ".join(self.earlier) + prefix
        return prefix + "echo: " + self.prompt

    def pieces(self):
        text = self.reply
        n = min(self.chunks, max(1, len(text)))
        size = -(-len(text) // n)
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]

    # -- output --

    def emit(self, obj):
        self.line(compact(obj))

    def line(self, text):
        """One line of a stream: the modes act per line."""
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "noise" and self.lines_written % 2 == 0:
            self._write("noise: this line is not JSON\n")
        self._write(text + "\n")
        self.lines_written += 1
        if self.mode == "hang" and self.lines_written >= self.hang_after:
            hang()
        if self.mode == "crash_midstream" and self.lines_written >= 2:
            os.kill(os.getpid(), signal.SIGKILL)

    def document(self, text):
        """A whole output (json or text format): the modes act around it."""
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "hang":
            hang()
        if self.mode == "crash_midstream":
            self._write(text[:len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        noise = "noise: this line is not JSON\n" if self.mode == "noise" else ""
        self._write(noise + text + "\n" + noise)

    def _write(self, text):
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()

    def invalid_json(self):
        self._write('{"type":"result","result":"broken\n')


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def hang():
    while True:
        time.sleep(3600)


def tokens(text):
    return len(text) // 4 + 1


def now():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    return code


# -- claude ------------------------------------------------------------------------------


def run_claude(run, args, stdin_text):
    if args[:2] == ["auth", "status"]:
        return claude_auth_status()
    flags, positionals, _ = parse_flags("claude", args, CLAUDE_FLAGS, CLAUDE_ALIASES)
    if "--version" in flags:
        print(VERSIONS["claude"])
        return 0
    if "--print" not in flags:
        return fail("fake claude: only print mode (-p) is supported")
    fmt = last(flags, "--output-format", "text")
    if fmt == "stream-json" and "--verbose" not in flags:
        return fail("Error: When using --print, --output-format=stream-json requires --verbose")
    bypass = last(flags, "--permission-mode") == "bypassPermissions" \
        or "--dangerously-skip-permissions" in flags
    if bypass and os.geteuid() == 0:
        return fail("--dangerously-skip-permissions cannot be used with root/sudo privileges "
                    "for security reasons")
    run.prompt = positionals[0] if positionals else stdin_text
    if "--json-schema" in flags:
        try:
            run.answer_schema(json.loads(last(flags, "--json-schema")))
        except ValueError as exc:
            return fail("Error: --json-schema is not valid JSON: %s" % exc)
    resume_id = last(flags, "--resume")
    model = last(flags, "--model") or "claude-fake-opus"
    if os.environ.get("FAKE_CLI_AUTH") == "none" or run.mode == "rate_limited":
        return claude_refused(run, model, fmt)
    if resume_id and not run.resume(resume_id):
        message = "No conversation found with session ID: %s" % resume_id
        if fmt == "stream-json":
            run.emit(claude_result(run, model, error="error_during_execution",
                                   errors=[message]))
        return fail(message)
    if run.mode == "fail":
        return fail("API Error: fake failure (FAKE_CLI_MODE=fail)")
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    if "--mcp-config" in flags and fmt == "stream-json" and CALL_TOOL.search(run.prompt):
        return claude_bridged(run, model, flags)
    messages = [] if run.mode == "error_exit0" else claude_messages(run, model, flags, fmt)
    result = claude_result(run, model, error="error_during_execution"
                           if run.mode == "error_exit0" else "",
                           errors=["fake failure (FAKE_CLI_MODE=error_exit0)"])
    init = {"type": "system", "subtype": "init", "cwd": os.getcwd(),
            "session_id": run.session_id, "tools": ["Bash", "Edit", "Read"],
            "mcp_servers": [], "model": model,
            "permissionMode": last(flags, "--permission-mode", "default"),
            "apiKeySource": "ANTHROPIC_API_KEY", "claude_code_version": "2.1.197",
            "uuid": str(uuid.uuid4())}
    # The real CLIs write the session as the turn goes (claude its transcript, codex its
    # rollout, gemini its chat file): a turn stopped half-way can still be resumed.
    if "--no-session-persistence" not in flags and run.mode != "error_exit0":
        run.save()
    run.streaming = fmt == "stream-json"
    if run.streaming:
        for obj in [init] + messages + [result]:
            run.emit(obj)
    elif fmt == "json" and "--verbose" in flags:
        # claude 2.x: --verbose turns the json output into an array of every message.
        run.document(compact([init] + [m for m in messages if m["type"] != "stream_event"]
                             + [result]))
    elif fmt == "json":
        run.document(compact(result))
    else:
        run.document(run.reply)
    return 0


def claude_refused(run, model, fmt):
    """claude 2.1.197 without credentials, or after its model API answered 429: a failed
    result (exit 1), its text the reason."""
    if run.mode == "rate_limited":
        text, status = ("API Error: Request rejected (429) \u00b7 Rate limited: please try "
                        "again in 20s (FAKE_CLI_MODE=rate_limited)"), 429
    else:
        text, status = "Not logged in \u00b7 Please run /login", None
    result = dict(claude_result(run, model), subtype="success", is_error=True,
                  api_error_status=status, result=text)
    if fmt == "stream-json":
        run.emit({"type": "system", "subtype": "init", "session_id": run.session_id,
                  "model": model, "tools": [], "mcp_servers": []})
    run.emit(result)
    return 1


def claude_auth_status():
    """``claude auth status``: JSON, exit 1 when not logged in (claude 2.1.197)."""
    logged_in = os.environ.get("FAKE_CLI_AUTH") != "none"
    print(json.dumps({"loggedIn": logged_in, "authMethod": "api_key" if logged_in else "none",
                      "apiProvider": "firstParty"}, indent=2))
    return 0 if logged_in else 1


def claude_messages(run, model, flags, fmt):
    partial = fmt == "stream-json" and "--include-partial-messages" in flags
    common = {"parent_tool_use_id": None, "session_id": run.session_id}
    out = []

    def stream(event):
        if partial:
            out.append(dict(type="stream_event", event=event, uuid=str(uuid.uuid4()), **common))

    def assistant(message_id, blocks):
        stream({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}})
        for index, block in enumerate(blocks):
            start = {"text": dict(block, text=""), "thinking": dict(block, thinking="",
                                                                    signature="")}.get(
                block["type"], dict(block, input={}))
            stream({"type": "content_block_start", "index": index, "content_block": start})
            if block["type"] == "thinking":
                stream({"type": "content_block_delta", "index": index, "delta": {
                    "type": "thinking_delta", "thinking": block["thinking"]}})
                stream({"type": "content_block_delta", "index": index, "delta": {
                    "type": "signature_delta", "signature": block["signature"]}})
            elif block["type"] == "text":
                for piece in run.pieces():
                    stream({"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}})
            else:
                stream({"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
            out.append(dict(type="assistant", uuid=str(uuid.uuid4()), **common, message={
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [block], "stop_reason": None}))
            stream({"type": "content_block_stop", "index": index})
        stream({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": tokens(run.reply)}})
        stream({"type": "message_stop"})

    def tool_call(tool_id, name, tool_input, output):
        assistant("msg_" + tool_id, [{"type": "tool_use", "id": tool_id, "name": name,
                                      "input": tool_input}])
        out.append(dict(type="user", uuid=str(uuid.uuid4()), **common, message={
            "role": "user", "content": [{"tool_use_id": tool_id, "type": "tool_result",
                                         "content": output, "is_error": False}]}))

    if run.tool:
        tool_call("toolu_fake_1", "Read", {"file_path": "note.txt"}, "fake file content")
    if run.structured() is not None:
        # claude 2.1.197 --json-schema: the model calls StructuredOutput, and the run ends.
        tool_call("toolu_fake_2", "StructuredOutput", run.structured(),
                  "Structured output provided successfully")
    else:
        thinking = [{"type": "thinking", "thinking": run.thinking,
                     "signature": "fake-signature"}] if run.thinking else []
        assistant("msg_fake_reply", thinking + [{"type": "text", "text": run.reply}])
    return out


CALL_TOOL = re.compile(r"^CALL-TOOL: (\S+) (.*)$", re.M)


def asked_calls(text, listed):
    """(tool name, arguments) of each CALL-TOOL line: the listed tool whose name ends so."""
    return [(next((t["name"] for t in listed if t["name"].endswith(suffix)), suffix), json.loads(arguments))
            for suffix, arguments in CALL_TOOL.findall(text)]


class McpClient:
    """The MCP server an --mcp-config entry names, started as claude starts it (stdio)."""

    def __init__(self, spec):
        self.proc = subprocess.Popen([spec["command"]] + list(spec.get("args") or []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=dict(os.environ, **(spec.get("env") or {})))
        self.next_id = 0

    @classmethod
    def started(cls, spec, client_name, version):
        """A client past the MCP handshake, and the server's tools."""
        client = cls(spec)
        client.answers([client.send("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                   "clientInfo": {"name": client_name, "version": version}})])
        client.send("notifications/initialized", {}, notify=True)
        return client, client.answers([client.send("tools/list", {})])[0]["tools"]

    def send(self, method, params, notify=False):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notify:
            self.next_id += 1
            msg["id"] = self.next_id
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        return msg.get("id")

    def answers(self, ids):
        """The results of the requests ``ids``, in that order."""
        got = {}
        while len(got) < len(ids):
            msg = json.loads(self.proc.stdout.readline())
            if msg.get("id") in ids:
                got[msg["id"]] = msg.get("result") or {"content": [
                    {"type": "text", "text": "error: %s" % msg.get("error")}], "isError": True}
        return [got[i] for i in ids]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def claude_bridged(run, model, flags):
    """A stream-json run whose model calls the --mcp-config server's tools (CALL-TOOL lines)."""
    server_name, spec = next(iter(json.loads(last(flags, "--mcp-config"))["mcpServers"].items()))
    client, listed = McpClient.started(spec, "claude-code", "2.1.197")
    prefix = "mcp__%s__" % server_name
    common = {"parent_tool_use_id": None, "session_id": run.session_id}
    run.emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": run.session_id,
              "tools": [prefix + t["name"] for t in listed], "model": model,
              "mcp_servers": [{"name": server_name, "status": "connected"}], "uuid": str(uuid.uuid4())})
    text, results, count = run.prompt, [], 0
    while CALL_TOOL.search(text):
        calls = []
        for name, arguments in asked_calls(text, listed):
            count += 1
            calls.append(("toolu_fakecli_%d" % count, name, arguments))
        for tool_id, name, arguments in calls:
            run.emit(dict(type="assistant", uuid=str(uuid.uuid4()), **common, message={
                "id": "msg_" + tool_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "tool_use", "id": tool_id, "name": prefix + name,
                             "input": arguments}], "stop_reason": None}))
        ids = [client.send("tools/call", {"name": name, "arguments": arguments,
                                          "_meta": {"claudecode/toolUseId": tool_id}})
               for tool_id, name, arguments in calls]
        answers = client.answers(ids)
        results = ["\n".join(part.get("text", "") for part in a.get("content") or []) for a in answers]
        for (tool_id, _, _), answer, result in zip(calls, answers, results):
            run.emit(dict(type="user", uuid=str(uuid.uuid4()), **common, message={
                "role": "user", "content": [{"tool_use_id": tool_id, "type": "tool_result",
                                             "content": result, "is_error": bool(answer.get("isError"))}]}))
        text = "\n".join(results)
    client.close()
    reply = "TOOL-RESULT-SEEN: " + " | ".join(results)
    run.emit(dict(type="assistant", uuid=str(uuid.uuid4()), **common, message={
        "id": "msg_fake_reply", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": reply}], "stop_reason": None}))
    run.emit(dict(claude_result(run, model), result=reply))
    return 0


def claude_result(run, model, error="", errors=()):
    result = {"type": "result", "subtype": error or "success", "is_error": bool(error),
              "duration_ms": 12, "duration_api_ms": 10, "num_turns": 1 + run.tool,
              "stop_reason": "end_turn", "session_id": run.session_id,
              "total_cost_usd": 0.001,
              "usage": {"input_tokens": tokens(run.prompt), "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 4, "output_tokens": tokens(run.reply)},
              "modelUsage": {model: {"inputTokens": tokens(run.prompt),
                                     "outputTokens": tokens(run.reply), "costUSD": 0.001}},
              "permission_denials": [], "uuid": str(uuid.uuid4())}
    if error:
        result["errors"] = list(errors)
    else:
        result["result"] = run.reply
    if not error and run.structured() is not None:
        result["structured_output"] = run.structured()
        result["stop_reason"] = "tool_use"
    return result


# -- codex -------------------------------------------------------------------------------


def run_codex(run, args, stdin_text):
    if args[:1] in (["--version"], ["-V"]):
        print(VERSIONS["codex"])
        return 0
    if args[:2] == ["login", "status"]:
        if os.environ.get("FAKE_CLI_AUTH") == "none":
            return fail("Not logged in")
        sys.stderr.write("Logged in using an API key - sk-fake***1234\n")
        return 0
    if args[:1] != ["exec"]:
        return fail("fake codex: only `codex exec` is supported")
    exec_spec = dict(CODEX_GLOBAL_FLAGS, **CODEX_EXEC_ONLY_FLAGS)
    flags, positionals, rest = parse_flags("codex", args[1:], exec_spec, CODEX_ALIASES,
                                           stop_at=("resume",))
    resume_id = None
    if rest:
        resume_spec = dict(CODEX_GLOBAL_FLAGS, **CODEX_RESUME_ONLY_FLAGS)
        more, positionals, _ = parse_flags("codex", rest[1:], resume_spec, CODEX_ALIASES)
        for key, value in more.items():
            flags[key] = flags.get(key, []) + value if isinstance(value, list) else value
        resume_id = positionals.pop(0) if positionals else ""
    if "--version" in flags:
        print(VERSIONS["codex"])
        return 0
    if "--skip-git-repo-check" not in flags and not os.path.isdir(".git"):
        return fail("Not inside a trusted directory and --skip-git-repo-check was not "
                    "specified.")
    prompt = positionals[0] if positionals else "-"
    run.prompt = stdin_text if prompt == "-" else prompt
    schema_file = last(flags, "--output-schema")
    if schema_file:
        try:
            with open(schema_file, encoding="utf-8") as f:
                schema_text = f.read()
        except OSError as exc:
            return fail("Failed to read output schema file %s: %s (os error %d)"
                        % (schema_file, exc.strerror, exc.errno))
        try:
            run.answer_schema(json.loads(schema_text))
        except ValueError as exc:
            return fail("Output schema file %s is not valid JSON: %s" % (schema_file, exc))
    else:
        run.read_prompt_schema()
    if resume_id is not None and not run.resume(resume_id):
        return fail("Error: thread/resume: thread/resume failed: no rollout found for thread "
                    "id %s (code -32600)" % resume_id)
    if run.mode == "fail":
        return fail("Error: fake failure (FAKE_CLI_MODE=fail)")
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    if "--json" not in flags:
        run.streaming = False
        run.document(run.reply)
        return 0
    if "--ephemeral" not in flags and run.mode != "error_exit0":
        run.save()
    run.emit({"type": "thread.started", "thread_id": run.session_id})
    run.emit({"type": "turn.started"})
    for i in range(run.warnings):
        # codex-cli 0.169.0 reports its retries of an unreachable model API this way.
        run.emit({"type": "error", "message": "Reconnecting... %d/%d (stream disconnected "
                  "before completion: Connection refused)" % (i + 1, run.warnings)})
    refusal = ("Missing environment variable: `OPENAI_API_KEY`."
               if os.environ.get("FAKE_CLI_AUTH") == "none" else
               "exceeded retry limit, last status: 429 Too Many Requests"
               if run.mode == "rate_limited" else "")
    if refusal:
        run.emit({"type": "error", "message": refusal})
        run.emit({"type": "turn.failed", "error": {"message": refusal}})
        return 1
    if run.mode == "error_exit0":
        run.emit({"type": "error", "message": "fake failure (FAKE_CLI_MODE=error_exit0)"})
        run.emit({"type": "turn.failed",
                  "error": {"message": "fake failure (FAKE_CLI_MODE=error_exit0)"}})
        return 0
    servers = codex_mcp_servers(flags)
    if servers and CALL_TOOL.search(run.prompt):
        return codex_bridged(run, servers)
    if run.tool:
        item = {"id": "item_0", "type": "command_execution", "command": "bash -lc ls",
                "aggregated_output": "", "exit_code": None, "status": "in_progress"}
        run.emit({"type": "item.started", "item": item})
        run.emit({"type": "item.completed", "item": dict(
            item, aggregated_output="fake file content\n", exit_code=0, status="completed")})
    run.emit({"type": "item.completed", "item": {"id": "item_1", "type": "agent_message",
                                                  "text": run.reply}})
    run.emit({"type": "turn.completed", "usage": {
        "input_tokens": tokens(run.prompt) + 4, "cached_input_tokens": 4,
        "output_tokens": tokens(run.reply), "reasoning_output_tokens": 0}})
    return 0


def codex_mcp_servers(flags):
    """{name: {"command", "args"}} from -c mcp_servers.NAME.KEY=TOML overrides (strings and
    arrays of strings, what clinvk writes)."""
    servers = {}
    for override in flags.get("--config") or []:
        m = re.match(r"mcp_servers\.([^.=]+)\.([a-z_]+)=(.*)\Z", override, re.S)
        if m:
            try:
                value = json.loads(m.group(3))
            except ValueError:
                value = m.group(3)
            servers.setdefault(m.group(1), {})[m.group(2)] = value
    return {k: v for k, v in servers.items() if "command" in v}


def mcp_rounds(run, client, listed, started, finished):
    """The CALL-TOOL rounds of a bridged run: each round's calls are announced
    (``started(n, name, arguments)`` -> a handle), made at once (the model API's calls of one
    turn run in parallel), then reported (``finished(handle, answer, result_text)``); a result
    holding CALL-TOOL lines makes another round. Returns the last round's results."""
    text, results, count = run.prompt, [], 0
    while CALL_TOOL.search(text):
        calls = asked_calls(text, listed)
        handles = []
        for name, arguments in calls:
            count += 1
            handles.append(started(count, name, arguments))
        answers = client.answers([client.send("tools/call", {"name": name, "arguments": arguments})
                                  for name, arguments in calls])
        results = ["\n".join(part.get("text", "") for part in a.get("content") or []) for a in answers]
        for handle, answer, result in zip(handles, answers, results):
            finished(handle, answer, result)
        text = "\n".join(results)
    client.close()
    return results


def codex_bridged(run, servers):
    """A run whose model calls the MCP server's tools (CALL-TOOL lines), as codex 0.169.0 does:
    an mcp_tool_call item started per call, no _meta."""
    server_name, spec = next(iter(servers.items()))
    client, listed = McpClient.started(spec, "codex-mcp-client", "0.169.0")

    def started(n, name, arguments):
        item = {"id": "item_%d" % n, "type": "mcp_tool_call", "server": server_name, "tool": name,
                "arguments": arguments, "result": None, "error": None, "status": "in_progress"}
        run.emit({"type": "item.started", "item": item})
        return item

    def finished(item, answer, result):
        run.emit({"type": "item.completed", "item": dict(
            item, result={"content": answer.get("content") or []},
            status="failed" if answer.get("isError") else "completed")})
    results = mcp_rounds(run, client, listed, started, finished)
    reply = "TOOL-RESULT-SEEN: " + " | ".join(results)
    run.emit({"type": "item.completed", "item": {"id": "item_reply", "type": "agent_message", "text": reply}})
    run.emit({"type": "turn.completed", "usage": {"input_tokens": tokens(run.prompt), "cached_input_tokens": 0,
                                                  "output_tokens": tokens(reply), "reasoning_output_tokens": 0}})
    return 0


# -- gemini ------------------------------------------------------------------------------


def gemini_folder_trust_off():
    """gemini 0.61.0 runs an untrusted folder headless (instead of exit 55) when a settings
    layer turns folder trust off; the fake reads only the system defaults file (clinvk checks
    who owns it, the fake does not)."""
    try:
        with open(os.environ.get("GEMINI_CLI_SYSTEM_DEFAULTS_PATH", "")) as f:
            return json.load(f)["security"]["folderTrust"]["enabled"] is False
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_gemini(run, args, stdin_text):
    flags, positionals, _ = parse_flags("gemini", args, GEMINI_FLAGS, GEMINI_ALIASES)
    if "--version" in flags:
        print(VERSIONS["gemini"])
        return 0
    trusted = "--skip-trust" in flags or os.environ.get("GEMINI_CLI_TRUST_WORKSPACE") == "true"
    if not trusted and not gemini_folder_trust_off():
        return fail("Gemini CLI is not running in a trusted directory. To proceed, either use "
                    "`--skip-trust`, set the `GEMINI_CLI_TRUST_WORKSPACE=true` environment "
                    "variable, or trust this directory in interactive mode.", 55)
    parts = [stdin_text] + positionals + [last(flags, "--prompt")]
    run.prompt = "\n".join(p for p in parts if p)
    run.read_prompt_schema()
    fmt = last(flags, "--output-format", "text")
    if os.environ.get("FAKE_CLI_AUTH") == "none" or run.mode == "rate_limited":
        return gemini_refused(run, fmt)
    model = last(flags, "--model") or "auto"
    answered_by = last(flags, "--model") or "gemini-fake-pro"
    resume_id = last(flags, "--resume")
    if resume_id and not run.resume(resume_id):
        if not run.any_sessions():
            return fail("Error resuming session: No previous sessions found for this project.",
                        42)
        return fail('Error resuming session: Invalid session identifier "%s".' % resume_id, 42)
    sys.stderr.write("Warning: 256-color support not detected. Using a terminal with at least "
                     "256-color support is recommended for a better visual experience.\n")
    if run.mode == "fail":
        return fail("Error when talking to Gemini API: fake failure (FAKE_CLI_MODE=fail)")
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    error = {"type": "FakeError", "message": "fake failure (FAKE_CLI_MODE=error_exit0)"} \
        if run.mode == "error_exit0" else None
    if not error:
        run.save()
    run.streaming = fmt == "stream-json"
    servers = gemini_mcp_servers() if trusted else {}
    if run.streaming and servers and not error and CALL_TOOL.search(run.prompt):
        return gemini_bridged(run, model, servers)
    if run.streaming:
        gemini_stream(run, model, answered_by, error)
    elif fmt == "json":
        gemini_json(run, answered_by, error)
    else:
        run.document(run.reply)
    return 0


def gemini_mcp_servers():
    """The mcpServers of the system defaults file, their $VARIABLES expanded (gemini 0.61.0
    expands them in every settings file; the fake reads only this layer). A trusted run only:
    untrusted, gemini starts no MCP server."""
    try:
        with open(os.environ.get("GEMINI_CLI_SYSTEM_DEFAULTS_PATH", "")) as f:
            servers = json.load(f).get("mcpServers") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: dict(spec, command=os.path.expandvars(spec["command"]),
                       args=[os.path.expandvars(a) for a in spec.get("args") or []])
            for name, spec in servers.items() if isinstance(spec, dict) and spec.get("command")}


def gemini_bridged(run, model, servers):
    """A stream-json run whose model calls the MCP server's tools (CALL-TOOL lines), as gemini
    0.61.0 does: tools named mcp_SERVER_TOOL, tool_use and tool_result lines, no _meta."""
    server_name, spec = next(iter(servers.items()))
    client, listed = McpClient.started(spec, "gemini-cli-mcp-client", "0.61.0")
    run.emit({"type": "init", "timestamp": now(), "session_id": run.session_id, "model": model})
    run.emit({"type": "message", "timestamp": now(), "role": "user", "content": run.prompt})

    def started(n, name, arguments):
        tool_id = "mcp_%s_%s-%d" % (server_name, name, n)
        run.emit({"type": "tool_use", "timestamp": now(), "tool_name": "mcp_%s_%s" % (server_name, name),
                  "tool_id": tool_id, "parameters": arguments})
        return tool_id

    def finished(tool_id, answer, result):
        run.emit({"type": "tool_result", "timestamp": now(), "tool_id": tool_id,
                  "status": "error" if answer.get("isError") else "success", "output": result})
    results = mcp_rounds(run, client, listed, started, finished)
    reply = "TOOL-RESULT-SEEN: " + " | ".join(results)
    run.emit({"type": "message", "timestamp": now(), "role": "assistant", "content": reply, "delta": True})
    stats = {"total_tokens": tokens(run.prompt) + tokens(reply), "input_tokens": tokens(run.prompt),
             "output_tokens": tokens(reply), "cached": 0, "input": tokens(run.prompt), "duration_ms": 12,
             "tool_calls": 1}
    run.emit({"type": "result", "timestamp": now(), "status": "success", "stats": stats})
    return 0


def gemini_refused(run, fmt):
    """gemini 0.61.0 without an auth method (exit 41), or after a 429 from the Gemini API
    (exit 429 % 256): the json output's object on stderr, or a failed result line."""
    if run.mode == "rate_limited":
        status, message = 429, ("You exceeded your current quota. Please retry in 37.5s. "
                                "(FAKE_CLI_MODE=rate_limited)")
        api = json.dumps({"error": {"code": 429, "message": message,
                                    "status": "RESOURCE_EXHAUSTED"}})
    else:
        status, message, api = 41, "Invalid auth method selected.", ""
    if fmt == "stream-json" and api:
        run.emit({"type": "init", "timestamp": now(), "session_id": run.session_id,
                  "model": "auto"})
        run.emit({"type": "result", "timestamp": now(), "status": "error",
                  "error": {"type": "unknown", "message": "[API Error: %s]" % api}})
    else:
        sys.stderr.write(json.dumps({"session_id": run.session_id, "error": {
            "type": "Error", "message": message, "code": status}}, indent=2) + "\n")
    return status % 256


def gemini_stream(run, model, answered_by, error):
    run.emit({"type": "init", "timestamp": now(), "session_id": run.session_id,
              "model": model})
    run.emit({"type": "message", "timestamp": now(), "role": "user", "content": run.prompt})
    if not error:
        if run.tool:
            run.emit({"type": "tool_use", "timestamp": now(), "tool_name": "read_file",
                      "tool_id": "read_file-1", "parameters": {"file_path": "note.txt"}})
            run.emit({"type": "tool_result", "timestamp": now(), "tool_id": "read_file-1",
                      "status": "success", "output": "fake file content"})
        for piece in run.pieces():
            run.emit({"type": "message", "timestamp": now(), "role": "assistant",
                      "content": piece, "delta": True})
    stats = {"total_tokens": tokens(run.prompt) + 4 + tokens(run.reply),
             "input_tokens": tokens(run.prompt) + 4, "output_tokens": tokens(run.reply),
             "cached": 4, "input": tokens(run.prompt), "duration_ms": 12,
             "tool_calls": int(run.tool)}
    result = {"type": "result", "timestamp": now(), "status": "error" if error else "success",
              "stats": dict(stats, models={answered_by: dict(stats)})}
    if error:
        result["error"] = error
    run.emit(result)


def gemini_json(run, answered_by, error):
    tokens_ = {"input": tokens(run.prompt), "prompt": tokens(run.prompt) + 4,
               "candidates": tokens(run.reply), "total": tokens(run.prompt) + 4
               + tokens(run.reply), "cached": 4, "thoughts": 0, "tool": 0}
    out = {"session_id": run.session_id}
    if error:
        out["error"] = dict(error, code=1)
    else:
        out["response"] = run.reply
        out["stats"] = {"models": {answered_by: {
            "api": {"totalRequests": 1, "totalErrors": 0, "totalLatencyMs": 12},
            "tokens": tokens_}}, "tools": {"totalCalls": int(run.tool)}}
    # gemini 0.61.0 pretty-prints the one object over many lines.
    run.document(json.dumps(out, ensure_ascii=False, indent=2))


# -- qwen --------------------------------------------------------------------------------

QWEN_NO_SESSION = ("No saved session found with ID %s. Run `qwen --resume` without an ID to "
                   "choose from existing sessions.")
QWEN_NO_AUTH = ("No auth type is selected. Please configure an auth type (e.g. via settings "
                "or `--auth-type`) before running in non-interactive mode.")
QWEN_RATE_LIMITED = ("[API Error: 429 Rate limited, please try again in 20s "
                     "(FAKE_CLI_MODE=rate_limited)]\nPossible quota limitations in place or "
                     "slow response times detected. Please wait and try again later.")


def qwen_trusted():
    """qwen-code 0.24.4's trust rule: every folder is trusted unless a settings layer turns
    folder trust on; then only the folders the trusted-folders file lists. The fake reads the
    system settings file and the trusted-folders file named by their variables."""
    try:
        with open(os.environ.get("QWEN_CODE_SYSTEM_SETTINGS_PATH", "")) as f:
            enabled = json.load(f)["security"]["folderTrust"]["enabled"] is True
    except (OSError, ValueError, KeyError, TypeError):
        enabled = False
    if not enabled:
        return True
    try:
        with open(os.environ.get("QWEN_CODE_TRUSTED_FOLDERS_PATH", "")) as f:
            return json.load(f).get(os.getcwd()) == "TRUST_FOLDER"
    except (OSError, ValueError, AttributeError):
        return False


def qwen_approval(flags):
    """The approval mode a run gets, as qwen-code 0.24.4 decides it (stderr says when an
    untrusted folder overrides the one asked for)."""
    requested = last(flags, "--approval-mode") or ("yolo" if flags.get("--yolo") else "")
    mode = requested or ("default" if flags.get("--safe-mode") else "auto")
    if not qwen_trusted() and mode not in ("default", "plan"):
        if requested:
            sys.stderr.write('Approval mode overridden to "default" because the current folder '
                             'is not trusted.\n')
        mode = "default"
    return mode


def run_qwen(run, args, stdin_text):
    flags, positionals, _ = parse_flags("qwen", args, QWEN_FLAGS, QWEN_ALIASES)
    if flags.get("--version"):
        print(VERSIONS["qwen"])
        return 0
    # -p is "appended to input on stdin"; a positional query replaces it.
    parts = [stdin_text] + [last(flags, "--prompt")]
    run.prompt = " ".join(positionals) if positionals else "\n".join(p for p in parts if p)
    fmt = last(flags, "--output-format", "text")
    model = last(flags, "--model") or "qwen-fake-coder"
    run.streaming = fmt == "stream-json"
    if os.environ.get("FAKE_CLI_AUTH") == "none":
        return qwen_out(run, fmt, [qwen_result(run, QWEN_NO_AUTH)], 1)
    resume_id = last(flags, "--resume")
    if resume_id and not run.resume(resume_id):
        return fail(QWEN_NO_SESSION % resume_id)
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    init = {"type": "system", "subtype": "init", "uuid": run.session_id,
            "session_id": run.session_id, "cwd": os.getcwd(), "tools": ["read_file", "glob"],
            "mcp_servers": [], "model": model, "permission_mode": qwen_approval(flags),
            "qwen_code_version": "0.24.4", "agents": ["general-purpose"]}
    failure = {"fail": "[API Error: 500 fake failure (FAKE_CLI_MODE=fail)]",
               "error_exit0": "[API Error: 500 fake failure (FAKE_CLI_MODE=error_exit0)]",
               "rate_limited": QWEN_RATE_LIMITED}.get(run.mode)
    if failure:
        lines = [init, qwen_assistant(run, model, [{"type": "text", "text": failure}]),
                 qwen_result(run, failure)]
        if fmt != "stream-json":
            sys.stderr.write(json.dumps({"error": {"type": "AlreadyReportedError",
                                                   "message": failure, "code": 1}}, indent=2)
                             + "\n")
        return qwen_out(run, fmt, lines, 0 if run.mode == "error_exit0" else 1)
    max_turns = int(last(flags, "--max-session-turns", "0") or 0)
    lines = [init] + qwen_messages(run, model, flags, fmt)
    if run.tool and max_turns == 1:
        # qwen-code 0.24.4: exit 53, nothing more on stdout (nothing at all in json mode).
        if fmt == "stream-json":
            for obj in lines[:-1]:
                run.emit(obj)
        sys.stderr.write(json.dumps({"error": {
            "type": "FatalTurnLimitedError", "code": 53,
            "message": "Reached max session turns for this session. Increase the number of "
                       "turns by specifying maxSessionTurns in settings.json."}}, indent=2)
            + "\n")
        return 53
    code = qwen_out(run, fmt, lines + [qwen_result(run, "", model, fmt)], 0)
    if flags.get("--chat-recording", True):
        run.save()
    return code


def qwen_out(run, fmt, lines, code):
    """Print ``lines`` in ``fmt``: one JSON line each (stream-json), one array of the whole
    messages (json), or the reply (text)."""
    if fmt == "stream-json":
        for obj in lines:
            run.emit(obj)
    elif fmt == "json":
        run.document(compact([o for o in lines if o["type"] != "stream_event"]))
    else:
        run.document(run.reply)
    return code


def qwen_assistant(run, model, content, message_id=None):
    message_id = message_id or str(uuid.uuid4())
    return {"type": "assistant", "uuid": message_id, "session_id": run.session_id,
            "parent_tool_use_id": None, "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": None,
                "usage": {"input_tokens": tokens(run.prompt) + 4,
                          "output_tokens": tokens(run.reply), "cache_read_input_tokens": 4,
                          "total_tokens": tokens(run.prompt) + 4 + tokens(run.reply)}}}


def qwen_messages(run, model, flags, fmt):
    """A goal_state event, the tool call and its result (FAKE_CLI_TOOL), then the reply;
    with --include-partial-messages, Anthropic-style stream events around each message."""
    partial = fmt == "stream-json" and flags.get("--include-partial-messages")
    common = {"session_id": run.session_id, "parent_tool_use_id": None}
    out = [dict(type="stream_event", uuid=str(uuid.uuid4()), event={
        "type": "goal_state", "goal_state": {"v": 2, "goal": None, "activity": "idle"}},
        **common)]

    def stream(event):
        if partial:
            out.append(dict(type="stream_event", uuid=str(uuid.uuid4()), event=event, **common))

    def message(block):
        message_id = str(uuid.uuid4())
        stream({"type": "message_start", "message": {"id": message_id, "role": "assistant",
                                                     "model": model, "content": []}})
        start = dict(block, text="") if block["type"] == "text" else dict(block, input={})
        stream({"type": "content_block_start", "index": 0, "content_block": start})
        if block["type"] == "text":
            for piece in run.pieces():
                stream({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": piece}})
        else:
            stream({"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        stream({"type": "content_block_stop", "index": 0})
        out.append(qwen_assistant(run, model, [block], message_id))
        stream({"type": "message_stop"})

    if run.tool:
        message({"type": "tool_use", "id": "call_fake_1", "name": "read_file",
                 "input": {"file_path": "note.txt"}})
        out.append(dict(type="user", uuid=str(uuid.uuid4()), message={
            "role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_fake_1",
                                         "is_error": False, "content": "fake file content"}]},
            **common))
    message({"type": "text", "text": run.reply})
    return out


def qwen_result(run, error="", model="", fmt=""):
    """The result line: success with the reply and usage (and, in json mode, per-model stats
    with 2 thinking tokens), or error_during_execution with the error."""
    used_in, used_out = tokens(run.prompt) + 4, tokens(run.reply)
    result = {"type": "result", "subtype": "error_during_execution" if error else "success",
              "uuid": str(uuid.uuid4()), "session_id": run.session_id, "is_error": bool(error),
              "duration_ms": 12, "duration_api_ms": 10, "num_turns": 1 + run.tool,
              "usage": {"input_tokens": 0, "output_tokens": 0} if error else {
                  "input_tokens": used_in, "output_tokens": used_out,
                  "cache_read_input_tokens": 4, "total_tokens": used_in + used_out},
              "permission_denials": []}
    if error:
        result["error"] = {"message": error}
        return result
    result["result"] = run.reply
    if fmt == "json":
        result["stats"] = {"models": {model: {"tokens": {
            "prompt": used_in, "candidates": used_out, "total": used_in + used_out + 2,
            "cached": 4, "thoughts": 2}}}}
    return result


# -- entry point -------------------------------------------------------------------------


def record(backend, args, stdin_text):
    path = os.environ.get("FAKE_CLI_RECORD")
    if not path:
        return
    import fcntl
    env = {k: v for k, v in os.environ.items()
           if k.startswith(RECORD_PREFIXES) or k == "HOME"}
    entry = {"backend": backend, "argv": [backend] + list(args), "stdin": stdin_text,
             "cwd": os.getcwd(), "env": env}
    for i, arg in enumerate(args):
        for flag, key in (("--output-schema", "output_schema_file"),
                          ("--system-prompt-file", "system_prompt_file")):
            if arg == flag or arg.startswith(flag + "="):
                named = arg.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
                entry[key] = describe_file(named)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def describe_file(path):
    """{path, mode, dir_mode, text} of a file as this process finds it ({path, error} when it
    cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return {"path": path, "mode": stat.S_IMODE(os.stat(path).st_mode),
                "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), "text": text}
    except OSError as exc:
        return {"path": path, "error": str(exc)}


def leave_child(pid_path):
    import subprocess
    secs = float(os.environ.get("FAKE_CLI_CHILD_SECS", "60"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%r)" % secs],
                             stdin=subprocess.DEVNULL,
                             start_new_session=os.environ.get("FAKE_CLI_CHILD_SETSID") == "1")
    with open(pid_path, "a") as f:
        f.write("%d\n" % child.pid)


def run_more(run, args, stdin_text):
    """copilot and opencode: their fakes live in modules of their own."""
    import importlib
    module = importlib.import_module("fake_" + run.backend)
    return getattr(module, "run_" + run.backend)(run, args, stdin_text)


def main(backend, args):
    # Die of SIGPIPE when the reader goes away, as the real CLIs do (Python ignores it).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    pidfile = os.environ.get("FAKE_CLI_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    if os.environ.get("FAKE_CLI_CHILD"):
        leave_child(os.environ["FAKE_CLI_CHILD"])
    run = Run(backend)
    reads_stdin = "--version" not in args and "-V" not in args and "-v" not in args
    stdin_text = sys.stdin.buffer.read().decode("utf-8", "replace") if reads_stdin else ""
    record(backend, args, stdin_text)
    gate = os.environ.get("FAKE_CLI_GATE")
    while gate and reads_stdin and not os.path.exists(gate):
        time.sleep(0.02)
    nap = re.search(r"^FAKE_SLEEP: ?([0-9.]+)$", stdin_text, re.MULTILINE)
    if nap:
        time.sleep(float(nap.group(1)))
    if os.environ.get("FAKE_CLI_STDERR"):
        sys.stderr.write(os.environ["FAKE_CLI_STDERR"] + "\n")
        sys.stderr.flush()
    if run.mode == "stderr_flood":
        size = int(os.environ.get("FAKE_CLI_STDERR_BYTES", str(4 << 20)))
        block = b"stderr flood " * 4096 + b"\n"
        while size > 0:
            sys.stderr.buffer.write(block[:size])
            size -= len(block)
        sys.stderr.buffer.flush()
    runner = {"claude": run_claude, "codex": run_codex, "gemini": run_gemini,
              "qwen": run_qwen, "copilot": run_more, "opencode": run_more}[backend]
    try:
        return runner(run, args, stdin_text)
    except UsageError as exc:
        return fail(*exc.args)
