"""The tool bridge: the HTTP client's own tools offered to an agent CLI through an MCP server of
clinvk's (``clinvk tool-bridge``, started by the CLI), which calls back to the serving process
over a Unix socket (``channel``, ``hub``); a run waiting for the client's tool result is parked
(``runs``) until the client's next request brings it."""
