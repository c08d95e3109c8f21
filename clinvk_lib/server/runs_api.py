"""The runs in flight (``/api/v1/runs``: list, watch, cancel) and the usage
(``/api/v1/usage``: since start, or the cluster's with ``server.store``), over the App's ``runs`` registry and its metrics.

Who sees what: without API keys, everyone sees every run (the server then listens on loopback
only, or behind something that authenticates); with keys, a key sees and cancels the runs its
own requests started, and a key in ``server.admin_api_keys`` every run. Another key's run is
a 404 like an unknown one, so that its existence does not leak.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Dict, Optional

from ..redisclient import RedisError
from ..schema import validate_query
from ..textutil import rfc3339
from . import errors, ndjson, openapi
from .app import App
from .context import Context
from .http import Response, StreamResponse, dump_json, json_response
from .runs import Run
from .runs_shapes import RunPath

CANCEL_WAIT_SECS = 5.0          # how long DELETE waits for the run to end before answering


def register(app: App) -> None:
    handlers = {"listRuns": list_runs, "getRunEvents": run_events, "cancelRun": cancel_run,
                "getUsage": usage}
    for spec in openapi.DEFAULT_ROUTES:
        handler = handlers.get(spec.operation_id)
        if handler is not None:
            app.add_route(spec, handler)


def visible_to(ctx: Context) -> Optional[str]:
    """The key id whose runs the caller may see, or None for every run (no keys, an admin
    key)."""
    if ctx.api_key is None or ctx.api_key.admin:
        return None
    return ctx.api_key.key_id


def list_runs(ctx: Context) -> Response:
    runs = [r.to_dict() for r in ctx.app.runs.list(visible_to(ctx))]
    return json_response({"runs": runs, "total": len(runs)})


def _own_run(ctx: Context) -> Run:
    run_id = validate_query(RunPath, ctx.params)["id"]
    run = ctx.app.runs.find(run_id, visible_to(ctx))
    if run is None:
        raise errors.ApiError(404, "run_not_found", "no run %r is in flight (it may have ended; "
                              "GET /api/v1/runs lists those that are)" % run_id[:80], "id")
    return run


def run_events(ctx: Context) -> StreamResponse:
    """The run's kept events, then each as it comes, as NDJSON; ends with run_ended, or when
    the client hangs up or the server drains."""
    run = _own_run(ctx)
    ctx.watch_client()
    ctx.on_finish(ctx.unwatch_client)
    events = ctx.app.runs.follow(run, lambda: ctx.cancel.fired or ctx.app.draining)
    return ndjson.response((dump_json(e) + b"\n" for e in events),
                           ctx.app.cfg.get("server.sse_keepalive_secs"))


def cancel_run(ctx: Context) -> Response:
    """Fire the run's cancel token; answer once it has ended, or after CANCEL_WAIT_SECS."""
    run = _own_run(ctx)
    ctx.app.runs.cancel(run)
    ctx.app.log.info("run %s cancelled (route %s, request %s) by request %s"
                     % (run.id, run.route, run.request_id, ctx.request_id))
    ended = ctx.app.runs.wait_ended(run, CANCEL_WAIT_SECS)
    return json_response({"id": run.id, "cancelled": True, "ended": ended})


def usage(ctx: Context) -> Response:
    """Runs, tokens and cost per backend and per key: every node's, from the shared store,
    when there is one that answers (``scope: cluster``); else this node's since it started
    (``scope: node``, and ``store_error`` says why when the store did not answer)."""
    metrics = ctx.app.metrics
    counted: Dict[str, Any] = metrics.usage() if metrics is not None else \
        {"backends": {}, "keys": {}}
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=time.monotonic() - ctx.app.started)
    counted["since"] = rfc3339(since)
    counted["http_requests"] = metrics.requests_answered() if metrics is not None else 0
    scope, store_error = "node", ""
    shared = ctx.app.shared_usage
    if shared is not None:
        try:
            cluster = shared.read()
        except RedisError as exc:
            store_error = str(exc)
        else:
            scope = "cluster"
            counted.update(cluster, since=cluster["since"] or counted["since"])
    own = visible_to(ctx)
    if own is not None:
        counted["keys"] = {k: v for k, v in counted["keys"].items() if k == own}
    body = {"enabled": metrics is not None, "scope": scope, "since": counted["since"],
            "http_requests": counted["http_requests"], "runs_in_flight": len(ctx.app.runs),
            "backends": counted["backends"], "keys": counted["keys"]}
    if store_error:
        body["store_error"] = store_error
    return json_response(body)
