"""What a run asks a backend for: the unified ``Options``, the approval and sandbox modes and
output formats they name, how a backend's mode table turns a mode into flags, and
``SetupError`` for a host that cannot run the CLI as safely as the options ask.

It imports nothing of clinvk's: every layer that builds or checks a run may use it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

APPROVAL_MODES = ("default", "auto", "none", "always")
SANDBOX_MODES = ("default", "read-only", "workspace", "full")
# What the backend is asked to print. "json" = one result object (or the CLI's nearest
# equivalent); "stream-json" = one JSON event per line as they happen.
BACKEND_FORMATS = ("json", "stream-json")
# What clinvk prints for a run: "text" (the reply alone) or a backend format as it is.
OUTPUT_FORMATS = ("text",) + BACKEND_FORMATS
# How a CLI is held to an output schema (Backend.output_schema_route): its own flag enforces
# it, or the schema goes into the prompt with SCHEMA_INSTRUCTION and the caller checks the
# reply (and may ask once more).
SCHEMA_BY_FLAG = "flag"
SCHEMA_IN_PROMPT = "prompt"
# How much of its agent a CLI brings to a run. "agent": all of it (tools, settings, project
# files, MCP servers, skills, its own system prompt; the CLI's own behaviour). "chat": none of
# it, where the CLI has a flag for it (each backend's ``chat_notes`` says what): a model that
# answers, with a short system prompt, in one model call.
AGENT_PROFILE = "agent"
CHAT_PROFILE = "chat"
PROFILES = (AGENT_PROFILE, CHAT_PROFILE)
# The chat profile's system prompt when the run brings none of its own.
CHAT_SYSTEM_PROMPT = "You are a helpful assistant. Answer the user's message directly."
SCHEMA_INSTRUCTION = ("Reply with only a JSON value that is valid against the JSON Schema "
                      "below: no other text before or after it, no Markdown code fence.")


class Options:
    """Unified options for one backend run. Empty / zero means "the CLI's default"."""

    __slots__ = ("model", "workdir", "approval_mode", "sandbox_mode", "output_format",
                 "max_turns", "system_prompt", "verbose", "ephemeral", "extra", "resume_id",
                 "allowed_tools", "project_config", "output_schema", "run_files", "tool_bridge",
                 "profile")

    def __init__(self, model: str = "", workdir: str = "", approval_mode: str = "default",
                 sandbox_mode: str = "default", output_format: str = "json", max_turns: int = 0,
                 system_prompt: str = "", verbose: bool = False, ephemeral: bool = False,
                 extra: Optional[List[str]] = None, resume_id: str = "",
                 allowed_tools: str = "", project_config: bool = True,
                 output_schema: Optional[Dict[str, Any]] = None,
                 run_files: Optional[Dict[str, str]] = None,
                 tool_bridge: Optional["ToolBridge"] = None,
                 profile: str = AGENT_PROFILE) -> None:
        self.model = model
        self.workdir = workdir
        self.approval_mode = approval_mode or "default"
        self.sandbox_mode = sandbox_mode or "default"
        self.output_format = output_format
        self.max_turns = max_turns
        self.system_prompt = system_prompt
        self.verbose = verbose
        self.ephemeral = ephemeral
        self.extra = list(extra or [])
        self.resume_id = resume_id          # the backend's own session id; "" = new session
        self.allowed_tools = allowed_tools
        # False: the CLI must not load the configuration the workdir holds (project settings,
        # hooks, MCP servers, .env files): a run's workdir may hold what an earlier run or a
        # cloned repository wrote. True: the CLI's own behaviour.
        self.project_config = project_config
        # The JSON Schema the reply must satisfy (None: plain text), and the paths of the
        # files the run hands the CLI, by the keys Backend.run_files named (execute fills it).
        self.output_schema = output_schema
        self.run_files = dict(run_files or {})
        # The client's own tools, served to the CLI by an MCP server of clinvk's (None: none).
        self.tool_bridge = tool_bridge
        # PROFILES: how much of its agent the CLI brings (execute makes a chat run one that
        # loads no project configuration).
        self.profile = profile

    @property
    def chat(self) -> bool:
        return self.profile == CHAT_PROFILE

    @property
    def chat_without_tools(self) -> bool:
        """A chat run that offers the model no tool at all (no client tools to bridge)."""
        return self.chat and self.tool_bridge is None

    def system_prompt_or_chat(self) -> str:
        """The run's own system prompt; in the chat profile CHAT_SYSTEM_PROMPT when it has
        none (for the CLIs that take one)."""
        if self.system_prompt or not self.chat:
            return self.system_prompt
        return CHAT_SYSTEM_PROMPT

    def __repr__(self) -> str:
        return "Options(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


# The MCP server name the client's tools are served under; the CLIs prefix tool names with it
# (claude 2.1.197: mcp__clinvk__NAME).
BRIDGE_SERVER = "clinvk"
# The run file (Backend.run_files key) that tells the bridge's MCP server where to call back.
BRIDGE_TICKET = "tool-ticket"


class ToolBridge:
    """How a run offers the HTTP client's tools: the command that starts the MCP server (its
    last word is the ticket file's path, appended by ``command_for``), the client's tool
    names, whether the agent's built-in tools stay on, the name ``tool_choice`` forces (""
    for none), how many seconds one tool call may wait for its result, and the ticket (the
    text of the run file that names the socket and the run's token)."""

    __slots__ = ("command", "tool_names", "builtin_tools", "forced", "call_timeout", "ticket")

    def __init__(self, command: List[str], tool_names: List[str], builtin_tools: bool = False,
                 forced: str = "", call_timeout: float = 0.0, ticket: str = "") -> None:
        self.ticket = ticket
        self.command = list(command)
        self.tool_names = list(tool_names)
        self.builtin_tools = builtin_tools
        self.forced = forced
        self.call_timeout = call_timeout

    def command_for(self, opts: "Options") -> List[str]:
        """The MCP server's argv: ``command`` plus the ticket file's path."""
        return self.command + [opts.run_files.get(BRIDGE_TICKET, "")]

    def __repr__(self) -> str:
        return "ToolBridge(%r, tools=%r)" % (self.command, self.tool_names)


def with_output_schema(prompt: str, schema: Dict[str, Any]) -> str:
    """``prompt`` followed by SCHEMA_INSTRUCTION and ``schema`` between ``<json_schema>``
    tags, for a CLI that has no flag for an output schema."""
    return "%s\n\n%s\n<json_schema>\n%s\n</json_schema>" % (
        prompt, SCHEMA_INSTRUCTION, json.dumps(schema, ensure_ascii=False))


class SetupError(RuntimeError):
    """This host cannot run the CLI as safely as the options ask; the message names the fix.
    Nothing was started."""


def checked_format(fmt: str) -> str:
    """``fmt`` when it is one of BACKEND_FORMATS, else ValueError naming the choices."""
    if fmt not in BACKEND_FORMATS:
        raise ValueError("output_format must be one of %s: got %r"
                         % (", ".join(BACKEND_FORMATS), fmt))
    return fmt


def mode_flags(modes: Dict[str, Dict[str, Tuple[Tuple[str, ...], str]]], option: str,
               value: str) -> List[str]:
    """The flags a backend's mode table gives ``option`` = ``value`` (ValueError if unknown)."""
    table = modes[option]
    try:
        return list(table[value or "default"][0])
    except KeyError:
        raise ValueError("%s must be one of %s: got %r" % (option, ", ".join(table), value))


def mode_notes_of(modes: Dict[str, Dict[str, Tuple[Tuple[str, ...], str]]]
                  ) -> Dict[str, Dict[str, str]]:
    """The "what it really does" texts of a mode table: {option: {mode: text}}."""
    return {option: {mode: note for mode, (_, note) in table.items()}
            for option, table in modes.items()}
