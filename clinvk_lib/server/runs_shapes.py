"""The shapes of the runs-in-flight API (``/api/v1/runs``) and of ``/api/v1/usage``, declared
once for /openapi.json (built from the vocabulary in ``schema.py``, as ``api_shapes.py`` is)."""

from __future__ import annotations

from ..schema import Any, Array, Boolean, Field, Integer, Map, Number, Obj, String

_COUNT = Integer(minimum=0)

RunPath = Obj(
    # No example: no example value can name a run in flight.
    Field("id", String(min_length=1), required=True,
          description="A run id, as GET /api/v1/runs lists it."),
    name="RunPath",
)

Run = Obj(
    Field("id", String(), required=True),
    Field("kind", String(enum=("request", "stream")), required=True,
          description="request: the answer comes whole; stream: NDJSON or SSE."),
    Field("state", String(enum=("queued", "running", "parked")), required=True,
          description="queued: waiting for a run slot; parked: waiting for the client's "
                      "tool result (client tools)."),
    Field("backends", Array(String()), required=True,
          description="The backends it runs (several for a fan-out)."),
    Field("method", String(), required=True),
    Field("route", String(), required=True, description="The route template.",
          example="/api/v1/prompt"),
    Field("client", String(), required=True, description="The client's address."),
    Field("key_id", String(), required=True,
          description="The id of the API key that started it; \"\" without API keys."),
    Field("request_id", String(), required=True),
    Field("started", String(), required=True, description="RFC 3339, UTC."),
    Field("elapsed_ms", _COUNT, required=True),
    Field("events", _COUNT, required=True, description="How many events it has had."),
    Field("cancel_requested", Boolean(), required=True),
    name="Run",
    example={"id": "run_a1b2c31", "kind": "stream", "state": "running",
             "backends": ["claude"], "method": "POST", "route": "/api/v1/prompt",
             "client": "127.0.0.1", "key_id": "", "request_id": "5f0c2a7e9b1d3c4f",
             "started": "2025-01-27T10:00:00.000Z", "elapsed_ms": 5200, "events": 7,
             "cancel_requested": False},
)

RunList = Obj(
    Field("runs", Array(Run), required=True, description="Oldest first."),
    Field("total", _COUNT, required=True),
    name="RunList",
)

RunCancelled = Obj(
    Field("id", String(), required=True),
    Field("cancelled", Boolean(), required=True, description="Always true."),
    Field("ended", Boolean(), required=True,
          description="Whether the run had stopped (its backends' process groups gone) "
                      "when this answer was sent; it always stops within seconds."),
    name="RunCancelled",
    example={"id": "run_a1b2c31", "cancelled": True, "ended": True},
)

RunEvent = Obj(
    Field("seq", _COUNT, required=True, description="1, 2, ... in order."),
    Field("type", String(), required=True,
          description="A unified event type (init, message, tool_use, ... done), stderr (a "
                      "line the backend wrote on stderr during a request answered whole), "
                      "item_started / item_finished (a fan-out), or run_ended (the last)."),
    Field("backend", String()),
    Field("timestamp", String()),
    Field("content", Map(Any())),
    name="RunEvent",
)

UsageRow = Obj(
    Field("runs", Number(), required=True),
    Field("success", Number()),
    Field("failure", Number()),
    Field("timeout", Number()),
    Field("cancelled", Number()),
    Field("input_tokens", Number()),
    Field("output_tokens", Number()),
    Field("cached_tokens", Number()),
    Field("reasoning_tokens", Number()),
    Field("cost_usd", Number(), required=True,
          description="As the backends reported it (0 when none did)."),
    Field("requests", Number(),
          description="HTTP requests the key sent (a key's row, scope cluster only)."),
    name="UsageRow",
)

Usage = Obj(
    Field("enabled", Boolean(), required=True,
          description="false unless server.metrics_enabled: then this node counts nothing "
                      "of its own (scope node shows zeros; the cluster's figures, with "
                      "server.store, are counted all the same)."),
    Field("scope", String(enum=["cluster", "node"]), required=True,
          description="cluster: the figures of every node sharing server.store (runs are "
                      "counted by the node or worker that ran them); node: this server's "
                      "own since it started (no server.store, or it did not answer: then "
                      "store_error says why). runs_in_flight is always this node's."),
    Field("store_error", String(),
          description="Why the shared store's figures are missing (scope node with "
                      "server.store set)."),
    Field("since", String(), required=True,
          description="When the server started, or (scope cluster) when the store got its "
                      "first figure (RFC 3339)."),
    Field("http_requests", Number(), required=True,
          description="Requests answered (by every node, scope cluster)."),
    Field("runs_in_flight", _COUNT, required=True),
    Field("backends", Map(UsageRow), required=True, description="Per backend."),
    Field("keys", Map(UsageRow), required=True,
          description="Per API key id (empty without keys). A key that is not an admin key "
                      "sees only its own row, and the backends' totals of every key."),
    name="Usage",
    example={"enabled": True, "scope": "node", "since": "2025-01-27T10:00:00.000Z", "http_requests": 42,
             "runs_in_flight": 1,
             "backends": {"claude": {"runs": 3, "success": 3, "input_tokens": 1200,
                                     "output_tokens": 300, "cost_usd": 0.02}},
             "keys": {}},
)

ConsoleAssetPath = Obj(
    Field("name", String(min_length=1), required=True,
          description="A file of the console (a script or a style sheet).",
          example="console.css"),
    name="ConsoleAssetPath",
)
