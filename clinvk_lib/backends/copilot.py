"""GitHub Copilot CLI (``copilot``, prompt mode): argv, environment and output parsing.

Checked against @github/copilot 1.0.102. The prompt goes on stdin: with stdin not a terminal
and no ``-p``, copilot runs one prompt-mode turn on all of stdin (``-p`` would put the prompt
in argv). ``--output-format json`` prints JSON lines (session events, then one ``result``
line); both of clinvk's formats read them with the same parser.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional

from .. import events as ev
from . import base, options, parsing

NAME = "copilot"

# One table for the approval and sandbox modes: mode -> (flags, what it really does).
MODES = {
    "approval_mode": {
        "default": ((), "No flag: prompt mode cannot ask, so every tool call that needs "
                        "approval is refused (shell commands, file writes and edits, paths "
                        "outside the working directory and the temp directory, URLs); "
                        "read-only tools run and the turn goes on."),
        "auto": (("--allow-tool=write",),
                 "--allow-tool=write: file creation and edits are approved; shell commands "
                 "and the rest of what needs approval are refused."),
        "none": (("--allow-all-tools",),
                 "--allow-all-tools: every tool runs without asking, shell commands included "
                 "(a shell command reaches any path the user can); copilot's own file tools "
                 "stay limited to the working directory and the temp directory, and URL "
                 "access is still refused."),
        "always": ((), "No flag, the same as default: prompt mode cannot ask, so everything "
                       "that needs approval is refused (settings.json's defaultPermissionMode "
                       "applies to interactive sessions only)."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: no sandbox unless settings.json sets sandbox.enabled."),
        "read-only": (("--sandbox",),
                      "--sandbox: shell commands run in copilot's bubblewrap sandbox (needs "
                      "bwrap 0.5.0+; without it copilot 1.0.102 fails every shell command). "
                      "NOT read-only: by default the sandbox may write the working directory "
                      "and the temp directory, and copilot's own file edits are not "
                      "sandboxed; copilot has no read-only sandbox."),
        "workspace": (("--sandbox",),
                      "--sandbox: shell commands run in copilot's bubblewrap sandbox, limited "
                      "by default to the working directory, PATH directories, the temp "
                      "directory and the user profile, with a private network namespace "
                      "(needs bwrap 0.5.0+; without it copilot 1.0.102 fails every shell "
                      "command)."),
        "full": ((), "No flag: no sandbox, shell commands run with the user's rights."),
    },
}

OPTION_NOTES = {
    "model": "--model <name> (with your own provider, COPILOT_PROVIDER_BASE_URL, the id its "
             "API knows).",
    "system_prompt": "Not supported: copilot has no system prompt flag (only instruction "
                     "files such as AGENTS.md, which server runs do not load).",
    "max_turns": "Not supported: copilot has no turn limit (--max-autopilot-continues counts "
                 "autopilot continuations only); use a timeout.",
    "ephemeral": "copilot has no flag to skip saving the session nor a command to delete one, "
                 "so after the run clinvk deletes it: its folder under "
                 "~/.copilot/session-state (or $COPILOT_HOME) and its rows in "
                 "session-store.db (one short extra python run).",
    "resume": "--resume=<session id> (the result line's sessionId).",
    "verbose": "No effect: copilot writes its logs to ~/.copilot/logs, not to its output.",
    "allowed_tools": "--allow-tool=<list>: tools or permission patterns (shell(git:*), write, "
                     "an MCP server's name) that run without asking; copilot splits the "
                     "list on commas.",
    "streaming": "--output-format json: assistant.message_delta lines carry real token "
                 "deltas.",
    "usage": "Not reported: copilot 1.0.102's JSON output has no token counts (only "
             "--usage-output-file writes them, to a file), so runs report zero tokens.",
    "project_config": "Off (server and MCP runs): the folder stays untrusted (clinvk never "
                      "passes --trust-folder and drops COPILOT_ALLOW_ALL from the "
                      "environment), so the workdir's hooks (.github/hooks, "
                      ".github/copilot/settings.json) and MCP servers (.mcp.json) are not "
                      "loaded; --no-custom-instructions keeps AGENTS.md, CLAUDE.md, "
                      ".github/copilot-instructions.md and the other instruction files out "
                      "of the prompt, and --excluded-tools=skill,task keeps project skills "
                      "and agents from being used. A run is refused (400) when copilot's "
                      "config.json lists the workdir or a folder above it in "
                      "trustedFolders: copilot 1.0.102 then runs the workdir's hooks and MCP "
                      "servers whatever the flags.",
}

# Where copilot 1.0.102 looks for a GitHub token, first found wins (copilot help environment).
GITHUB_TOKEN_VARIABLES = ("COPILOT_GITHUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN")
# copilot 1.0.102 names sessions by UUID; only such ids reach a path or a command.
_SESSION_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{12}$")

# Run with the run's environment and working directory after an ephemeral run: removes the
# session's folder and its rows in the session store (every table with a session_id column;
# copilot 1.0.102 keeps turns and a full-text index of them there). No sqlite3 module: the
# folder alone goes, which is enough to make the session unresumable.
_FORGET_SCRIPT = r"""
import os, shutil, sys
sid = sys.argv[1]
home = os.environ.get("COPILOT_HOME") or os.path.join(os.path.expanduser("~"), ".copilot")
state = os.path.join(home, "session-state")
shutil.rmtree(os.path.join(state, sid), ignore_errors=True)
try:
    os.unlink(os.path.join(state, ".session-operation-locks", sid + ".lock"))
except OSError:
    pass
db = os.path.join(home, "session-store.db")
try:
    import sqlite3
except ImportError:
    sqlite3 = None
if sqlite3 is not None and os.path.isfile(db):
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:
            names = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for name in names:
                quoted = '"%s"' % name.replace('"', '""')
                columns = [r[1] for r in con.execute("PRAGMA table_info(%s)" % quoted)]
                if name != "sessions" and "session_id" in columns:
                    con.execute("DELETE FROM %s WHERE session_id = ?" % quoted, (sid,))
            if "sessions" in names:
                con.execute("DELETE FROM sessions WHERE id = ?", (sid,))
    finally:
        con.close()
"""


class CopilotStreamParser(parsing.StreamParser):
    """Parses ``copilot --output-format json`` lines.

    Text that arrived as ``assistant.message_delta`` pieces is not repeated when the whole
    ``assistant.message`` follows. Sub-agent events (``parentToolCallId`` set) add no text
    to the reply; their tool calls are kept. The session id is only on the last line.
    """

    backend_name = NAME
    final_types = ("result",)
    # copilot 1.0.102: "Error: No authentication information found." (stderr, exit code 1: no
    # GitHub login), "Authentication failed with provider at ... (HTTP 401)" (session.error of
    # errorType authentication: your own provider refused the key).
    auth_failure_markers = ("no authentication information found",
                            "authentication failed with provider")
    # copilot 1.0.102 retries a 429 five times (about a minute), then: "Failed to get response
    # from the AI model; retried 5 times (...) Last error: 429 ..." (errorType rate_limit); its
    # own models say "You've been rate limited on the current model".
    rate_limit_markers = ("last error: 429", "you've been rate limited")

    def __init__(self) -> None:
        super().__init__()
        self._sent_init = False
        self._streamed: Dict[str, str] = {}    # message or reasoning id -> deltas sent
        self._tool_names: Dict[str, str] = {}  # tool call id -> name (of started calls)
        self._last_text = ("", "")             # (message id, text) of the latest text sent

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "result":
            return self._result(obj)
        data = obj.get("data")
        if not isinstance(data, dict):
            return []
        handler = self._HANDLERS.get(kind)
        return handler(self, data) if handler else []

    def _init(self, data: Dict[str, Any]) -> List[ev.Event]:
        self.model = parsing.as_str(data.get("model")) or self.model
        if self._sent_init or not self.model:
            return []
        self._sent_init = True
        return [ev.init(NAME, self.model)]

    def _delta(self, data: Dict[str, Any], key: str, make: Callable[..., ev.Event]
               ) -> List[ev.Event]:
        text = parsing.as_str(data.get("deltaContent"))
        if not text or data.get("parentToolCallId"):
            return []
        piece_id = parsing.as_str(data.get(key))
        self._streamed[piece_id] = self._streamed.get(piece_id, "") + text
        return [make(NAME, text, partial=True)]

    def _message_delta(self, data: Dict[str, Any]) -> List[ev.Event]:
        out = self._delta(data, "messageId", ev.message)
        if out:
            message_id, last = self._last_text
            if message_id != data.get("messageId") and last and not last.endswith("\n"):
                # A new message after earlier text (the model spoke, used a tool, spoke
                # again): keep the two apart as events.collect_text does.
                out[0].content["text"] = "\n\n" + out[0].content["text"]
            self._last_text = (data.get("messageId"), out[0].content["text"])
        return out

    def _reasoning_delta(self, data: Dict[str, Any]) -> List[ev.Event]:
        return self._delta(data, "reasoningId", ev.thinking)

    def _whole(self, data: Dict[str, Any], key: str, make: Callable[..., ev.Event]
               ) -> List[ev.Event]:
        text = parsing.as_str(data.get("content"))
        streamed = self._streamed.pop(parsing.as_str(data.get(key)), "")
        if not text or data.get("parentToolCallId") or streamed.strip() == text.strip():
            return []
        return [make(NAME, text)]

    def _message(self, data: Dict[str, Any]) -> List[ev.Event]:
        self.model = parsing.as_str(data.get("model")) or self.model
        out = self._whole(data, "messageId", ev.message)
        if out:
            self._last_text = (data.get("messageId"), out[0].content["text"])
        return out

    def _reasoning(self, data: Dict[str, Any]) -> List[ev.Event]:
        return self._whole(data, "reasoningId", ev.thinking)

    def _tool_start(self, data: Dict[str, Any]) -> List[ev.Event]:
        call_id = parsing.as_str(data.get("toolCallId"))
        name = parsing.as_str(data.get("toolName"))
        self._tool_names[call_id] = name
        return [ev.tool_use(NAME, call_id, name, data.get("arguments"))]

    def _tool_complete(self, data: Dict[str, Any]) -> List[ev.Event]:
        call_id = parsing.as_str(data.get("toolCallId"))
        failed = data.get("success") is not True
        outcome = data.get("error") if failed else data.get("result")
        output = parsing.as_str(outcome.get("message" if failed else "content")) \
            if isinstance(outcome, dict) else ""
        return [ev.tool_result(NAME, call_id, output, failed, self._tool_names.get(call_id, ""))]

    def _session_error(self, data: Dict[str, Any]) -> List[ev.Event]:
        message = parsing.as_str(data.get("message")) or "copilot reported an error"
        status = data.get("statusCode")
        code = "api_error_%d" % status if isinstance(status, int) and status > 0 \
            else parsing.as_str(data.get("errorType"))
        return [ev.error(NAME, message, code=code)]

    def _warning(self, data: Dict[str, Any]) -> List[ev.Event]:
        message = parsing.as_str(data.get("message"))
        return [ev.error(NAME, message, code="warning", fatal=False)] if message else []

    def _info(self, data: Dict[str, Any]) -> List[ev.Event]:
        """Only a retry notice ("Request failed due to a transient API error. Retrying...")
        says something about the run; the run goes on."""
        message = parsing.as_str(data.get("message"))
        if data.get("infoType") != "model_retry" or not message:
            return []
        return [ev.error(NAME, message, code="retry", fatal=False)]

    def _result(self, obj: Dict[str, Any]) -> List[ev.Event]:
        self.backend_session_id = parsing.as_str(obj.get("sessionId")) or self.backend_session_id
        code = obj.get("exitCode")
        if isinstance(code, int) and code != 0 and not self.error:
            return [ev.error(NAME, "copilot reported exit code %d" % code, code="exit_%d" % code)]
        return []

    _HANDLERS = {
        "session.tools_updated": _init,
        "model.call_start": _init,
        "assistant.message_delta": _message_delta,
        "assistant.message": _message,
        "assistant.reasoning_delta": _reasoning_delta,
        "assistant.reasoning": _reasoning,
        "tool.execution_start": _tool_start,
        "tool.execution_complete": _tool_complete,
        "session.error": _session_error,
        "session.warning": _warning,
        "session.info": _info,
    }


class CopilotBackend(base.Backend):
    name = NAME
    executable = "copilot"
    vendor = "github"
    display_name = "GitHub Copilot CLI"
    # Left out on purpose: --allow-tool / --allow-all* / --yolo / --allow-url /
    # --assisted-approval (they approve past the server's approval policy), --available-tools
    # (copilot 1.0.102 lets it override --excluded-tools, which keeps project skills and agents
    # out), --trust-folder, --agent, --plugin-dir, --additional-mcp-config, --enable-mcp-server
    # and --extension-sdk-path (they load configuration or run programs), -C (escapes the
    # workdir policy), --resume / --continue / --session-id / --name / --connect / --fork
    # (sessions are clinvk's), --output-format / --stream / -s (clinvk parses the output),
    # --share* / --log-dir / --usage-output-file (write files or publish), --sandbox, --mode /
    # --plan / --autopilot / -i / -p / --acp / --remote* (other run modes), and the flags of
    # clinvk's own options (--model).
    allowed_extra_flags = {
        "--add-dir": True,
        "--attachment": True,
        "--deny-tool": True,
        "--excluded-tools": True,
        "--deny-url": True,
        "--disable-mcp-server": True,
        "--disable-builtin-mcps": False,
        "--disallow-temp-dir": False,
        "--no-ask-user": False,
        "--no-custom-instructions": False,
        "--reasoning-effort": True,
        "--context": True,
        "--max-ai-credits": True,
        "--secret-env-vars": True,
    }
    # copilot 1.0.102 (clap): --add-dir and --attachment take one path per flag, commas
    # included ("--add-dir=A,B" is the one directory "A,B"); both may be repeated.
    path_extra_flags = {"--add-dir": base.PathFlag(), "--attachment": base.PathFlag()}
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("--available-tools=none (no tool is offered), --no-custom-instructions "
                  "(no AGENTS.md, CLAUDE.md, GEMINI.md or .github instructions) and "
                  "--disable-builtin-mcps (no GitHub MCP servers). Not available: a system "
                  "prompt (copilot has no flag; the client's goes into the prompt) and a turn "
                  "limit (without tools the model answers in one call).")
    # copilot 1.0.102, stderr, exit code 1: "Error: No session, task, or name matched '<id>'."
    missing_session_markers = ("no session, task, or name matched",)
    tested_versions = ("1.0.102", "1.0.102")
    npm_package = "@github/copilot"
    login_hint = ("set COPILOT_GITHUB_TOKEN (or GH_TOKEN), run copilot once and /login, or "
                  "use your own model provider: COPILOT_PROVIDER_BASE_URL, "
                  "COPILOT_PROVIDER_API_KEY and COPILOT_MODEL")

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        options.checked_format(opts.output_format)
        argv = [executable or self.executable, "--output-format=json", "--no-auto-update"]
        if opts.resume_id:
            argv.append("--resume=" + _checked_session_id(opts.resume_id))
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.allowed_tools:
            argv.append("--allow-tool=" + opts.allowed_tools)
        if opts.chat:
            # copilot 1.0.102: only the tools --available-tools names are offered, and no
            # tool is called "none"; --disable-builtin-mcps drops its GitHub MCP servers.
            argv += ["--no-custom-instructions", "--available-tools=none",
                     "--disable-builtin-mcps"]
        elif not opts.project_config:
            # copilot 1.0.102 puts AGENTS.md, CLAUDE.md, GEMINI.md and .github instruction
            # files in the prompt of an untrusted folder too, and lets the model use the
            # workdir's skills (.github/skills, .claude/skills) and agents.
            argv += ["--no-custom-instructions", "--excluded-tools=skill,task"]
        return argv + list(opts.extra)

    def ignored_options(self, opts: options.Options) -> List[str]:
        out = []
        if opts.system_prompt:
            out.append("copilot has no system prompt flag: system_prompt is ignored")
        if opts.max_turns > 0:
            out.append("copilot has no turn limit: max_turns=%d is ignored (use a timeout)"
                       % opts.max_turns)
        if opts.sandbox_mode == "read-only":
            out.append("copilot has no read-only sandbox: " + MODES["sandbox_mode"]["read-only"][1])
        return out

    def child_env(self, base_env: Dict[str, str],
                  opts: Optional[options.Options] = None) -> Dict[str, str]:
        env = super().child_env(base_env, opts)
        if opts is not None and not opts.project_config:
            # "true" also trusts the working directory: its hooks and MCP servers would run.
            env.pop("COPILOT_ALLOW_ALL", None)
        return env

    def project_config_refusal(self, workdir: str, env: Dict[str, str]) -> str:
        trusted = trusting_entry(workdir, _config_file(env))
        if not trusted:
            return ""
        return ("copilot would load the configuration of workdir %s (hooks and MCP servers "
                "it runs): %s lists %s in trustedFolders. Remove that entry (or run clinvk "
                "with another COPILOT_HOME), or set server.allow_project_config: true if "
                "every workdir's contents are trusted" % (workdir, _config_file(env), trusted))

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """copilot 1.0.102 has no status command: its own-provider variables or a GitHub token
        in the environment (the variables it reads, in its order). A login kept by ``copilot
        login`` (the system credential store, or ~/.copilot) cannot be seen without a model
        call."""
        if env.get("COPILOT_PROVIDER_BASE_URL"):
            return base.AuthCheck(True, "your own model provider (COPILOT_PROVIDER_BASE_URL): "
                                        "no GitHub login needed")
        for name in GITHUB_TOKEN_VARIABLES:
            token = env.get(name, "")
            if token.startswith("ghp_"):
                return base.AuthCheck(False, "%s holds a classic personal access token "
                                             "(ghp_), which copilot does not accept" % name)
            if token:
                return base.AuthCheck(True, "a GitHub token in %s" % name)
        return base.AuthCheck(None, "no GitHub token in the environment; a login kept by "
                                    "copilot login is not checked")

    def forget_session(self, backend_session_id: str, executable: str,
                       run: Callable[[List[str]], str]) -> None:
        if _SESSION_ID.match(backend_session_id):
            run([sys.executable, "-I", "-c", _FORGET_SCRIPT, backend_session_id])

    def new_stream_parser(self) -> CopilotStreamParser:
        return CopilotStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        parser = CopilotStreamParser()
        for line in stdout.splitlines():
            parser.feed(line)
        parser.finish(exit_code, stderr)
        return parser.result(exit_code)


def _checked_session_id(session_id: str) -> str:
    if session_id.startswith("-"):
        raise ValueError("copilot session id must not start with '-': got %r" % session_id)
    return session_id


def _config_file(env: Dict[str, str]) -> str:
    """copilot's config.json for the environment ``env`` (COPILOT_HOME, else ~/.copilot)."""
    home = env.get("COPILOT_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                   ".copilot")
    return os.path.join(home, "config.json")


def trusting_entry(workdir: str, config_file: str) -> str:
    """The trustedFolders entry of copilot's ``config_file`` that covers ``workdir`` (the
    folder itself or one above it), or "" when none does or the file cannot be read."""
    for entry in _trusted_folders(config_file):
        for form in {os.path.abspath(entry), os.path.realpath(entry)}:
            if workdir == form or workdir.startswith(form.rstrip(os.sep) + os.sep):
                return entry
    return ""


def _trusted_folders(config_file: str) -> List[str]:
    """trustedFolders of copilot's config.json (copilot 1.0.102 starts it with // comment
    lines)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            text = "".join(line for line in f if not line.lstrip().startswith("//"))
        folders = json.loads(text).get("trustedFolders")
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in folders if isinstance(f, str) and f] if isinstance(folders, list) else []


BACKEND = base.register(CopilotBackend())
