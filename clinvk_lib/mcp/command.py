"""``clinvk mcp``, the MCP front end's composition root: reads the configuration, opens the
session store, and serves the clinvk tools (``tools``) over stdio (``protocol``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, List

from .. import __version__, config
from ..argparser import Parser, UsageError
from ..shared_store import open_session_store, open_shared_store
from .protocol import Server
from .tools import ToolContext, all_tools

INSTRUCTIONS = (
    "clinvk runs coding-agent CLIs (claude, codex, gemini, qwen, copilot, opencode) on this "
    "machine. Use "
    "clinvk_prompt to delegate a task or ask for a second opinion, clinvk_compare to ask "
    "several agents the same question, clinvk_parallel and clinvk_chain for several runs, "
    "clinvk_backends to see what is installed and clinvk_sessions to find a conversation to "
    "continue (pass its session_id to clinvk_prompt).")


def mcp_command(argv: List[str]) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin; returns the exit code (2 for
    a bad flag or configuration, named on stderr)."""
    try:
        args = argument_parser().parse_args(argv)
    except SystemExit as exc:           # --help
        return int(exc.code or 0)
    except UsageError as exc:
        sys.stderr.write("clinvk: %s\n" % exc)
        return 2
    try:
        cfg = config.load(args.config)
        store = open_session_store(cfg, open_shared_store(cfg))
    except config.ConfigError as exc:
        sys.stderr.write("clinvk: %s\n" % exc)
        return 2
    if _is_terminal(sys.stdin):
        # Typed at a terminal, the command seems to hang: it waits for an MCP client.
        sys.stderr.write("clinvk: serving MCP (JSON-RPC) on stdin/stdout: an MCP client "
                         "starts this command, e.g. claude mcp add clinvk -- clinvk mcp "
                         "(Ctrl-D to stop)\n")
    _log_to_stderr()
    out = sys.stdout.buffer
    # stdout is the protocol channel: anything printed by mistake goes to stderr instead.
    sys.stdout = sys.stderr
    ctx = ToolContext(cfg, store)
    server = Server(all_tools(ctx), out, name="clinvk", version=__version__,
                    instructions=INSTRUCTIONS,
                    max_message_bytes=cfg.get("server.max_request_body_bytes"))
    server.serve(sys.stdin.buffer)
    return 0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def argument_parser() -> argparse.ArgumentParser:
    """The parser of ``clinvk mcp`` (shell completion reads it too)."""
    parser = Parser(
        prog="clinvk mcp",
        description="MCP server over stdio (JSON-RPC, one message per line). Register it with "
                    "an MCP client, e.g.: claude mcp add clinvk -- python3 /path/clinvk.pyz "
                    "mcp. The server's policy (server.* settings: workdir prefixes, dangerous "
                    "modes, request timeout, run slots) applies.")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $CLINVK_CONFIG or ~/.clinvk/config.yaml)")
    return parser


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("clinvk mcp: %(levelname)s %(message)s"))
    log = logging.getLogger("clinvk.mcp")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
