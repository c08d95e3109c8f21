"""``clinvk mcp``: a Model Context Protocol server over stdio, so any MCP client (Claude Code,
Claude Desktop, an IDE) can call claude, codex and gemini as tools.

``protocol`` speaks JSON-RPC and the MCP lifecycle; ``tools`` knows what each clinvk tool runs;
``command`` (``clinvk mcp``) wires them together. Nothing here imports the terminal CLI.
"""
