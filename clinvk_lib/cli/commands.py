"""The command table of the terminal front end: each command's entry point and its argument
parser, as "module:function" strings imported only when needed, so a prompt never loads the
HTTP server, the MCP server or the fan-out engine. ``main`` dispatches with it; shell
completion (``completion``) reads every parser from it, so it cannot drift from what the
commands accept."""

from __future__ import annotations

import importlib
from typing import Any, Callable, List

# Every command's entry point, relative to this package.
COMMANDS = {
    "resume": ".prompt:resume_command",
    "sessions": ".manage:sessions_command",
    "jobs": ".jobs:jobs_command",
    "config": ".manage:config_command",
    "parallel": ".fanout:parallel_command",
    "chain": ".fanout:chain_command",
    "compare": ".fanout:compare_command",
    "backends": ".installed:backends_command",
    "doctor": ".doctor:doctor_command",
    "serve": "..server.serve:serve_command",
    "worker": "..server.serve:worker_command",
    "workers": ".workers:workers_command",
    "mcp": "..mcp.command:mcp_command",
    "completion": ".completion:completion_command",
    "chat": ".chat:chat_command",
}
# Commands clinvk starts itself and nobody types: not listed, completed or documented.
# ``tool-bridge`` is the MCP server a bridged run's CLI starts (clinvk serve writes its argv).
HIDDEN_COMMANDS = {"tool-bridge": "..mcp.bridge:bridge_command"}
ROOT_COMMAND = ".prompt:prompt_command"   # clinvk [flags] PROMPT
# Each command's argument parser, the same one it parses with: shell completion is generated
# from them, so it cannot drift from what the commands accept.
PARSERS = {
    "resume": ".prompt:resume_parser",
    "sessions": ".manage:sessions_parser",
    "jobs": ".jobs:jobs_parser",
    "config": ".manage:config_parser",
    "parallel": ".fanout:parallel_parser",
    "chain": ".fanout:chain_parser",
    "compare": ".fanout:compare_parser",
    "backends": ".installed:backends_parser",
    "doctor": ".doctor:doctor_parser",
    "serve": "..server.serve:argument_parser",
    "worker": "..server.serve:worker_parser",
    "workers": ".workers:workers_parser",
    "mcp": "..mcp.command:argument_parser",
    "completion": ".completion:completion_parser",
    "chat": ".chat:chat_parser",
}

# Commands about clinvk itself that ``main`` answers without loading any other module.
BUILT_IN_COMMANDS = ("help", "version")
# Commands that start a backend run (besides the root command): the entry point starts the
# run's process supervisor while the modules are still loading (``supervisor.launch_ahead``).
RUNNING_COMMANDS = ("resume", "parallel", "chain", "compare", "chat")
# ``clinvk help TOPIC``: references that are not a command's flags (``helptext`` functions).
HELP_TOPICS = {"modes": "modes_text", "config": "config_text"}


def entry_point(target: str) -> Callable[..., Any]:
    """The function a ``COMMANDS`` (or ``PARSERS``) target names, importing its module."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module, __package__), function)


def starts_a_run(argv: List[str]) -> bool:
    """Whether ``clinvk ARGV`` will likely start a backend run: the root command (a prompt) or
    one of RUNNING_COMMANDS, without --help or --dry-run. A guess from the words alone, made
    before the parsers exist: a wrong one costs a supervisor that exits with clinvk."""
    if any(a in ("-h", "--help", "--dry-run") for a in argv):
        return False
    named = [a for a in argv if a in COMMANDS or a in BUILT_IN_COMMANDS]
    return not named or named[0] in RUNNING_COMMANDS
