"""opencode (``opencode run --format json``): argv, environment and output parsing.

Checked against opencode-ai 1.18.33. The prompt goes on stdin: ``opencode run`` with no
message words reads all of stdin as the message. ``--format json`` prints JSON lines
(``step_start``, ``text``, ``reasoning``, ``tool_use``, ``step_finish``, ``error``), and both
of clinvk's formats read them with the same parser. There is no terminal result event: a run
that exits 0 with no ``error`` line succeeded.

Approval, the system prompt and the turn limit have no flags; they are opencode
configuration, given in the child's environment (OPENCODE_PERMISSION,
OPENCODE_CONFIG_CONTENT), merged over what the server's environment already sets there.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Optional

from .. import events as ev
from ..fsutil import read_json
from . import base, options, parsing

NAME = "opencode"

# Permission rules for OPENCODE_PERMISSION, which outranks opencode.json. "ask" is a refusal:
# `run` cannot ask and auto-rejects ("permission requested: ...; auto-rejecting" on stderr,
# opencode 1.18.33). Left alone, opencode 1.18.33 lets a run edit files and run any shell
# command without asking: the default mode would be the dangerous one, which the server only
# grants when its operator enables approval_mode none.
_REFUSE_EDITS_AND_SHELL = {"edit": "ask", "bash": "ask", "webfetch": "ask",
                           "external_directory": "ask"}
_ALLOW_EDITS = dict(_REFUSE_EDITS_AND_SHELL, edit="allow")

# One table for the approval and sandbox modes: mode -> (flags, what it really does). The
# permission rules of approval modes that have them are in PERMISSIONS.
MODES = {
    "approval_mode": {
        "default": ((), "OPENCODE_PERMISSION={\"edit\":\"ask\",\"bash\":\"ask\",\"webfetch\":"
                        "\"ask\",\"external_directory\":\"ask\"}: file edits, shell "
                        "commands, web fetches and paths outside the working directory are "
                        "refused (run cannot ask); reading and searching files run. Left "
                        "alone, opencode would run edits and any shell command without "
                        "asking: that is approval_mode none."),
        "auto": ((), "OPENCODE_PERMISSION={\"edit\":\"allow\",\"bash\":\"ask\",\"webfetch\":"
                     "\"ask\",\"external_directory\":\"ask\"}: file edits in the working "
                     "directory run without asking; shell commands, web fetches and paths "
                     "outside it are refused."),
        "none": (("--auto",),
                 "--auto: every permission request not explicitly denied is approved: shell "
                 "commands, edits and paths outside the working directory."),
        "always": ((), "The same rules as default: file edits, shell commands, web fetches "
                       "and paths outside the working directory are refused; reading and "
                       "searching files run."),
    },
    "sandbox_mode": {
        "default": ((), "No flag: opencode has no sandbox."),
        "read-only": ((), "Not enforced: opencode has no sandbox. Use approval_mode always, "
                          "which refuses edits and shell commands."),
        "workspace": ((), "Not enforced: opencode has no sandbox. Outside approval_mode "
                          "none its tools are refused paths outside the working directory; "
                          "a shell command (run only in approval_mode none) reaches them."),
        "full": ((), "No flag: tools run with the rights of the user running opencode."),
    },
}
PERMISSIONS = {"default": _REFUSE_EDITS_AND_SHELL, "auto": _ALLOW_EDITS,
               "always": _REFUSE_EDITS_AND_SHELL}

OPTION_NOTES = {
    "model": "--model <provider/model> (opencode names a model with its provider, e.g. "
             "anthropic/claude-sonnet-4-5).",
    "system_prompt": "OPENCODE_CONFIG_CONTENT={\"agent\":{\"build\":{\"prompt\":<text>}}} (the "
                     "agent --agent names, else build): replaces the agent's system prompt.",
    "max_turns": "OPENCODE_CONFIG_CONTENT={\"agent\":{\"build\":{\"steps\":<n>}}}: after n "
                 "steps opencode tells the model that tools are disabled and asks for a final "
                 "answer. Advisory: opencode 1.18.33 still runs a tool call the model makes "
                 "after that.",
    "ephemeral": "opencode has no flag to skip saving the session, so after the run clinvk "
                 "deletes it: opencode session delete <id> (one short extra opencode run).",
    "resume": "--session=<session id> (the sessionID on every line, ses_...).",
    "verbose": "--print-logs --log-level=DEBUG: opencode's logs go to stderr.",
    "allowed_tools": "Not supported: opencode has no tool allowlist flag (its permission "
                     "rules are configuration).",
    "streaming": "No token deltas: opencode 1.18.33 prints each text part whole.",
    "usage": "The step_finish lines' tokens (input, output, reasoning, cache read and write), "
             "summed over the run, and their cost.",
    "project_config": "Off (server and MCP runs): OPENCODE_DISABLE_PROJECT_CONFIG=1, "
                      "OPENCODE_DISABLE_CLAUDE_CODE=1 and OPENCODE_DISABLE_EXTERNAL_SKILLS=1 "
                      "keep the workdir's opencode.json (MCP servers, permissions, "
                      "instructions), custom tools, agents, commands, AGENTS.md, CLAUDE.md "
                      "and skills out. opencode 1.18.33 still imports the JavaScript plugins "
                      "of a .opencode folder and those listed in an opencode.json of the "
                      "workdir or a folder above it, and no switch stops that, so such a run "
                      "is refused (400, naming the file) unless server.allow_project_config "
                      "is true. The user's own ~/.opencode is not counted.",
}

# What opencode 1.18.33 reads from the working directory and every folder above it (its
# config walk, which OPENCODE_DISABLE_PROJECT_CONFIG does not stop: plugins load from them).
PROJECT_CONFIG_NAMES = (".opencode", "opencode.json", "opencode.jsonc")
# opencode 1.18.33 session ids: "ses_" and base62.
_SESSION_ID = re.compile(r"^ses_[0-9A-Za-z]+$")
# opencode 1.18.33 colours its stderr even with NO_COLOR=1 and TERM=dumb.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class OpencodeStreamParser(parsing.StreamParser):
    """Parses ``opencode run --format json`` lines.

    opencode prints no line that ends a run, so any line of its protocol (one carrying a
    ``sessionID``) counts as the run speaking it: exit 0 and no ``error`` line is success.
    """

    backend_name = NAME
    # opencode 1.18.33 names the error of a provider it cannot authenticate to
    # ProviderAuthError, and of a key it cannot find LoadAPIKeyError ("... API key is
    # missing"); an API's 401 or 403 arrives as an APIError with its statusCode.
    auth_failure_markers = ("providerautherror", "loadapikeyerror", "api key is missing")
    # It retries a 429 five times (2, 4, 8, 16, 30 s) before the APIError; its own hosted
    # models say "Free usage exceeded, subscribe to Go".
    rate_limit_markers = ("free usage exceeded", "too many requests")

    def __init__(self) -> None:
        super().__init__()
        self._usage = {"input": 0, "output": 0, "reasoning": 0, "cached": 0}
        self._cost: Optional[float] = None

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict) or not parsing.as_str(obj.get("sessionID")):
            return []
        self.saw_final = True
        out: List[ev.Event] = []
        if not self.backend_session_id:
            self.backend_session_id = obj["sessionID"]
            out.append(ev.init(NAME, self.model, self.backend_session_id))
        part = obj.get("part") if isinstance(obj.get("part"), dict) else {}
        kind = obj.get("type")
        if kind == "text":
            text = parsing.as_str(part.get("text"))
            out += [ev.message(NAME, text)] if text else []
        elif kind == "reasoning":
            text = parsing.as_str(part.get("text"))
            out += [ev.thinking(NAME, text)] if text else []
        elif kind == "tool_use":
            out += _tool_events(part)
        elif kind == "step_finish":
            self._add_usage(part)
        elif kind == "error":
            out += _error(obj.get("error"))
        return out

    def _add_usage(self, part: Dict[str, Any]) -> None:
        """Adds one step's tokens. opencode 1.18.33 counts input without the cache reads and
        writes, and output without the reasoning tokens."""
        tokens = part.get("tokens") if isinstance(part.get("tokens"), dict) else {}
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        read = parsing.as_int(cache.get("read"))
        self._usage["input"] += (parsing.as_int(tokens.get("input")) + read
                                 + parsing.as_int(cache.get("write")))
        self._usage["output"] += parsing.as_int(tokens.get("output"))
        self._usage["reasoning"] += parsing.as_int(tokens.get("reasoning"))
        self._usage["cached"] += read
        cost = part.get("cost")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self._cost = (self._cost or 0.0) + float(cost)
        u = self._usage
        self.usage = ev.Usage(u["input"], u["output"] + u["reasoning"], u["cached"],
                              u["reasoning"], self._cost)

    def finish(self, exit_code: int, stderr: str = "") -> List[ev.Event]:
        return super().finish(exit_code, _ANSI.sub("", stderr or ""))


def _tool_events(part: Dict[str, Any]) -> List[ev.Event]:
    """tool_use, then tool_result when the call has ended (opencode prints one line per
    finished call)."""
    call_id = parsing.as_str(part.get("callID"))
    name = parsing.as_str(part.get("tool"))
    state = part.get("state") if isinstance(part.get("state"), dict) else {}
    out = [ev.tool_use(NAME, call_id, name, state.get("input"))]
    status = state.get("status")
    if status == "completed":
        out.append(ev.tool_result(NAME, call_id, parsing.as_str(state.get("output")), False,
                                  name))
    elif status == "error":
        out.append(ev.tool_result(NAME, call_id, parsing.as_str(state.get("error")), True,
                                  name))
    return out


def _error(error: Any) -> List[ev.Event]:
    """The error line: ``{"name": "APIError", "data": {"message", "statusCode", ...}}``."""
    error = error if isinstance(error, dict) else {}
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    message = parsing.as_str(data.get("message")) or parsing.as_str(error.get("name")) \
        or "opencode reported an error"
    status = data.get("statusCode")
    code = "api_error_%d" % status if isinstance(status, int) and status > 0 \
        else parsing.as_str(error.get("name"))
    return [ev.error(NAME, message, code=code)]


class OpencodeBackend(base.Backend):
    name = NAME
    executable = "opencode"
    vendor = "opencode"
    display_name = "opencode"
    # Left out on purpose: --auto (use approval_mode none), --session / --continue / --fork
    # (sessions are clinvk's), --share (publishes the session), --attach / --port / -p / -u /
    # --dir (another server or another directory), --command (runs a command definition),
    # -i / --interactive, --format (clinvk parses the output), --print-logs / --log-level
    # (verbose), and the flags of clinvk's own options (-m / --model).
    allowed_extra_flags = {
        "--agent": True,
        "-f": True,
        "--file": True,
        "--variant": True,
        "--thinking": False,
        "--pure": False,
    }
    # opencode 1.18.33 (yargs array): -f/--file takes one path per value, commas included,
    # and in the two-word form every following word that is not a flag.
    path_extra_flags = {"-f": base.PathFlag(variadic=True),
                        "--file": base.PathFlag(variadic=True)}
    mode_notes = options.mode_notes_of(MODES)
    option_notes = OPTION_NOTES
    chat_notes = ("--pure (no external plugins), OPENCODE_CONFIG_CONTENT={\"agent\":{\"build\":"
                  "{\"prompt\":<the client's system prompt, else a one-line one>,\"tools\":"
                  "{\"*\":false}}}} (no tool is offered) and the project configuration off "
                  "(no AGENTS.md, CLAUDE.md, skills, project MCP servers). Not available: a "
                  "turn limit (steps is advisory; without tools the model answers in one "
                  "call).")
    # opencode 1.18.33, stderr, exit code 1: "Error: Session not found".
    missing_session_markers = ("session not found",)
    tested_versions = ("1.18.33", "1.18.33")
    npm_package = "opencode-ai"
    login_hint = ("run opencode auth login, or configure a provider in "
                  "~/.config/opencode/opencode.json")

    def build_argv(self, opts: options.Options, executable: str = "") -> List[str]:
        options.checked_format(opts.output_format)
        argv = [executable or self.executable, "run", "--format=json"]
        if opts.resume_id:
            argv.append("--session=" + _checked_session_id(opts.resume_id))
        else:
            # An empty title names the session after the prompt; without it opencode 1.18.33
            # makes a second model request per new session to write a title.
            argv.append("--title=")
        if opts.model:
            argv.append("--model=" + opts.model)
        argv += options.mode_flags(MODES, "approval_mode", opts.approval_mode)
        argv += options.mode_flags(MODES, "sandbox_mode", opts.sandbox_mode)
        if opts.verbose:
            argv += ["--print-logs", "--log-level=DEBUG"]
        if opts.chat:
            argv.append("--pure")       # opencode 1.18.33: no external plugins
        return argv + list(opts.extra)

    def ignored_options(self, opts: options.Options) -> List[str]:
        out = []
        if opts.sandbox_mode not in ("", "default", "full"):
            out.append("opencode has no sandbox: sandbox_mode %r is not enforced (%s)"
                       % (opts.sandbox_mode, MODES["sandbox_mode"][opts.sandbox_mode][1]))
        if opts.allowed_tools:
            out.append("opencode has no tool allowlist flag: allowed_tools is ignored")
        return out

    def child_env(self, base_env: Dict[str, str],
                  opts: Optional[options.Options] = None) -> Dict[str, str]:
        env = super().child_env(base_env, opts)
        if opts is None:
            return env
        permission = PERMISSIONS.get(opts.approval_mode)
        if permission:
            env["OPENCODE_PERMISSION"] = json.dumps(
                _merged(_json_object(env.get("OPENCODE_PERMISSION")), permission))
        agent = _agent_settings(opts)
        if agent:
            content = _json_object(env.get("OPENCODE_CONFIG_CONTENT"))
            agents = _json_object(content.get("agent"))
            agents[_agent_name(opts.extra)] = _merged(
                _json_object(agents.get(_agent_name(opts.extra))), agent)
            env["OPENCODE_CONFIG_CONTENT"] = json.dumps(dict(content, agent=agents))
        if not opts.project_config:
            env.update(OPENCODE_DISABLE_PROJECT_CONFIG="1", OPENCODE_DISABLE_CLAUDE_CODE="1",
                       OPENCODE_DISABLE_EXTERNAL_SKILLS="1")
        return env

    def project_config_refusal(self, workdir: str, env: Dict[str, str]) -> str:
        found = project_config_file(workdir, env.get("HOME", ""))
        if not found:
            return ""
        return ("opencode would run code from the project configuration %s: opencode 1.18.33 "
                "imports the JavaScript plugins of a .opencode folder and of an opencode.json "
                "in the workdir or any folder above it, and no switch stops it. Remove it, "
                "use another workdir, or set server.allow_project_config: true if every "
                "workdir's contents are trusted" % found)

    def check_auth(self, executable: str, env: Dict[str, str],
                   run: base.RunCommand) -> base.AuthCheck:
        """The logins ``opencode auth login`` stored (auth.json) and the providers the user's
        opencode.json configures. ``opencode auth list`` is not run: opencode 1.18.33 would
        import the plugins of a .opencode folder where it starts (the temp directory, shared
        by every local user) or above it."""
        home = base.home_of(env)
        data = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
        stored = read_json(os.path.join(data, "opencode", "auth.json"))
        if isinstance(stored, dict) and stored:
            return base.AuthCheck(True, "%d stored login(s): %s" % (
                len(stored), ", ".join(sorted(stored))))
        configs = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        providers = base.settings_value([os.path.join(configs, "opencode", "opencode.json")],
                                        ("provider",))
        if isinstance(providers, dict) and providers:
            return base.AuthCheck(True, "provider(s) configured in opencode.json: %s"
                                  % ", ".join(sorted(providers)))
        return base.AuthCheck(None, "no stored login and no provider in opencode.json: "
                                    "opencode uses a provider key it finds in the environment "
                                    "(ANTHROPIC_API_KEY, OPENAI_API_KEY, ...), else its own "
                                    "hosted models; not checked")

    def forget_session(self, backend_session_id: str, executable: str,
                       run: Callable[[List[str]], str]) -> None:
        # Runs in the workdir, where the run may have written a .opencode plugin (approval_mode
        # auto allows edits): opencode 1.18.33's `session delete` imports no plugin (checked
        # with one planted there, 3 of 3 runs), unlike `run`.
        if _SESSION_ID.match(backend_session_id):
            run([executable, "session", "delete", backend_session_id])

    def new_stream_parser(self) -> OpencodeStreamParser:
        return OpencodeStreamParser()

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> parsing.Result:
        parser = OpencodeStreamParser()
        for line in stdout.splitlines():
            parser.feed(line)
        parser.finish(exit_code, stderr)
        return parser.result(exit_code)


def project_config_file(workdir: str, home: str) -> str:
    """The first opencode project configuration (PROJECT_CONFIG_NAMES) in ``workdir`` or a
    folder above it, or "". The user's own ``<home>/.opencode`` (opencode loads it as user
    configuration wherever it runs) does not count."""
    own = os.path.join(os.path.abspath(home), ".opencode") if home else ""
    folder = os.path.abspath(workdir)
    while True:
        for name in PROJECT_CONFIG_NAMES:
            path = os.path.join(folder, name)
            if path != own and os.path.lexists(path):
                return path
        parent = os.path.dirname(folder)
        if parent == folder:
            return ""
        folder = parent


def _agent_settings(opts: options.Options) -> Dict[str, Any]:
    settings: Dict[str, Any] = {}
    if opts.system_prompt_or_chat():
        settings["prompt"] = opts.system_prompt_or_chat()
    if opts.max_turns > 0:
        settings["steps"] = opts.max_turns
    if opts.chat_without_tools:
        # opencode 1.18.33: an agent's "tools" map switches tools off by glob.
        settings["tools"] = {"*": False}
    return settings


def _agent_name(extra: List[str]) -> str:
    """The agent the run uses: the value of an ``--agent`` among the extra flags, else
    opencode's default agent, build."""
    name = "build"
    for i, word in enumerate(extra):
        if word.startswith("--agent="):
            name = word[len("--agent="):]
        elif word == "--agent" and i + 1 < len(extra):
            name = extra[i + 1]
    return name or "build"


def _json_object(value: Any) -> Dict[str, Any]:
    """``value`` when it is a dict, the object a JSON text holds, else {}."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def _merged(base_obj: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    return dict(base_obj, **over)


def _checked_session_id(session_id: str) -> str:
    if session_id.startswith("-"):
        raise ValueError("opencode session id must not start with '-': got %r" % session_id)
    return session_id


BACKEND = base.register(OpencodeBackend())
