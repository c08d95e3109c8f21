"""``clinvk mcp``: a Model Context Protocol server over stdio, so any MCP client (Claude Code,
Claude Desktop, an IDE) can call claude, codex and gemini as tools.

``protocol`` speaks JSON-RPC and the MCP lifecycle; ``tools`` knows what each clinvk tool runs.
"""

from __future__ import annotations

import logging
import sys
from typing import List

from .. import __version__

INSTRUCTIONS = (
    "clinvk runs the coding-agent CLIs claude, codex and gemini on this machine. Use "
    "clinvk_prompt to delegate a task or ask for a second opinion, clinvk_compare to ask "
    "several agents the same question, clinvk_parallel and clinvk_chain for several runs, "
    "clinvk_backends to see what is installed and clinvk_sessions to find a conversation to "
    "continue (pass its session_id to clinvk_prompt).")


def mcp_command(argv: List[str]) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin; returns the exit code."""
    from ..cli import EXIT_OK, Parser, _parse, add_config_flag, load_config, open_store
    from .protocol import Server
    from .tools import Context, all_tools

    p = Parser(prog="clinvk mcp",
               description="MCP server over stdio (JSON-RPC, one message per line). Register "
                           "it with an MCP client, e.g.: claude mcp add clinvk -- python3 "
                           "/path/clinvk.pyz mcp. The server's policy (server.* settings: "
                           "workdir prefixes, dangerous modes, request timeout, run slots) "
                           "applies.")
    add_config_flag(p)
    args = _parse(p, argv)
    cfg = load_config(args)
    _log_to_stderr()
    out = sys.stdout.buffer
    # stdout is the protocol channel: anything printed by mistake goes to stderr instead.
    sys.stdout = sys.stderr
    ctx = Context(cfg, open_store(cfg))
    server = Server(all_tools(ctx), out, name="clinvk", version=__version__,
                    instructions=INSTRUCTIONS,
                    max_message_bytes=cfg.get("server.max_request_body_bytes"))
    server.serve(sys.stdin.buffer)
    return EXIT_OK


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("clinvk mcp: %(levelname)s %(message)s"))
    log = logging.getLogger("clinvk.mcp")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
