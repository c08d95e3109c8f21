"""The native REST API (``/api/v1/*``) and the meta endpoints (``/health``, ``/openapi.json``,
``/docs``, ``/metrics``), in the shapes of the API contract.

Handlers translate wire formats only: a single prompt runs through the request context
(``ctx.prepare`` / ``ctx.run`` / ``ctx.stream``), fan-outs through ``orchestrate``, sessions
through the store. Routes come from ``openapi.DEFAULT_ROUTES``, so the document at
``/openapi.json`` and the server cannot disagree.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from .. import __version__, events as ev, execute, orchestrate, render
from ..backends import base, diagnose, probe
from ..fanout_results import (CANCELLED, CompareResult, ItemResult, ProgressFn, ProgressPayload,
                              StepResult, Summary, TaskResult)
from ..schema import Obj, validate_query
from ..shapes import SessionsQuery
from ..shared_store import store_health
from . import console, docs as docs_page
from . import ndjson, openapi, remote_run
from .api_shapes import Session as SessionSchema
from .api_shapes import SessionDetail
from .app import App
from .context import Context
from .http import Response, StreamResponse, json_response
from .profiles import requested_profile


def register(app: App) -> None:
    """Add the native and meta routes (``/metrics`` only when metrics are enabled)."""
    diagnoses = diagnose.Cache()
    handlers: Dict[str, Callable[[Context], Any]] = {
        "executePrompt": prompt, "executeParallel": parallel, "executeChain": chain,
        "executeCompare": compare, "listBackends": lambda ctx: list_backends(ctx, diagnoses),
        "listSessions": list_sessions, "getSession": get_session,
        "deleteSession": delete_session, "healthCheck": health,
        "getOpenAPI": openapi_json, "getDocs": docs,
    }
    if app.metrics is not None:
        handlers["getMetrics"] = metrics
    if remote_run.is_api_node(app):
        # Fan-outs run as jobs of their own kind on a worker (single runs: Context.run).
        handlers.update(executeParallel=remote_run.fan_out("parallel"),
                        executeChain=remote_run.fan_out("chain"),
                        executeCompare=remote_run.fan_out("compare"))
    for spec in openapi.DEFAULT_ROUTES:
        handler = handlers.get(spec.operation_id)
        if handler is not None:
            app.add_route(spec, handler)


# -- POST /api/v1/prompt -------------------------------------------------------------------------


def prompt(ctx: Context) -> Any:
    """One prompt: a JSON result, or with ``output_format: stream-json`` an NDJSON stream of
    unified events. A backend that ran and failed is a 200 with ``exit_code`` and ``error``."""
    body = ctx.json_body()
    stream = body["output_format"] == "stream-json"
    prepared = ctx.prepare(prompt_request(body), stream=stream)
    if prepared.dry_run:
        return dry_run_answer(prepared, stream)
    if stream:
        events = ctx.stream(prepared)
        return ndjson.response(
            ndjson.ndjson_lines(events, prepared.backend.name,
                                prepared.session.id if prepared.session else "",
                                lambda exc: ctx.app.error_for(ctx, exc).message),
            ctx.app.cfg.get("server.sse_keepalive_secs"))
    return json_response(prompt_result(ctx.run(prepared)))


def prompt_request(body: Dict[str, Any]) -> execute.Request:
    """The engine's request for a validated prompt body."""
    return execute.Request.from_dict(dict(
        body,
        # An explicit false must not switch off the operator's unified_flags.dry_run.
        dry_run=True if body["dry_run"] else None,
        tags=["api"]))


def prompt_result(outcome: execute.Outcome) -> Dict[str, Any]:
    """The JSON answer of a finished run: session_id (absent when ephemeral), backend,
    exit_code, duration_ms, output and error (always; "" when there is none), token_usage
    (when reported)."""
    r = outcome.result
    body: Dict[str, Any] = {}
    if outcome.session_id:
        body["session_id"] = outcome.session_id
    body["backend"] = r.backend
    # A CLI that reports an error but exits 0 still failed.
    body["exit_code"] = r.exit_code if r.exit_code or r.ok else 1
    body["duration_ms"] = r.duration_ms
    body["output"] = r.text
    body["error"] = r.error
    if r.usage:
        body["token_usage"] = {k: v for k, v in r.usage.to_dict().items() if k in ev.USAGE_KEYS}
    return body


def dry_run_answer(prepared: execute.Prepared, stream: bool) -> Any:
    """What a dry run answers: the exact command (argv, workdir, what goes to stdin) as the
    output of an otherwise normal answer; nothing runs and no session is created."""
    info = prepared.describe()
    name = prepared.backend.name
    text = render.would_run(info["command"])
    if stream:
        events = [ev.init(name, prepared.opts.model), ev.message(name, text), ev.done(name)]
        for e in events:
            e.session_id = info["session_id"]
        return StreamResponse((ndjson.encode_event(e) for e in events), ndjson.CONTENT_TYPE)
    body: Dict[str, Any] = {}
    if info["session_id"]:
        body["session_id"] = info["session_id"]
    body.update(backend=name, exit_code=0, duration_ms=0, output=text, error="", dry_run=True,
                command=info["command"], workdir=info["workdir"], stdin=info["stdin"])
    return json_response(body)


# -- POST /api/v1/parallel, /chain, /compare ------------------------------------------------------


def parallel(ctx: Context) -> Response:
    """Tasks at once (always ephemeral); results in request order; completed + failed +
    cancelled == total_tasks."""
    body = ctx.json_body()
    tasks = [_as_served(ctx, t) for t in body["tasks"]]
    width = min(len(tasks), orchestrate.resolve_max_parallel(body.get("max_parallel") or 0,
                                                             ctx.app.cfg),
                ctx.app.limiter.limit)
    summary = _fan_out(ctx, width, body["dry_run"], lambda progress: orchestrate.run_parallel(
        tasks, ctx.app.cfg, max_parallel=width, fail_fast=body["fail_fast"],
        dry_run=body["dry_run"], policy=ctx.app.policy, cancel=ctx.cancel,
        on_progress=progress, item_events=ctx.wants_item_events))
    return json_response({
        "total_tasks": summary.total_tasks, "completed": summary.completed,
        "failed": summary.failed, "cancelled": summary.cancelled,
        "total_duration_ms": summary.total_duration_ms,
        "results": [_task_item(r) for r in summary.results]})


def chain(ctx: Context) -> Response:
    """Steps in order, ``{{previous}}`` replaced by the previous step's output (ephemeral);
    ``failed_step`` is the first failed step's number, 0 when none failed."""
    body = ctx.json_body()
    steps = [_as_served(ctx, s) for s in body["steps"]]
    summary = _fan_out(ctx, 1, body["dry_run"], lambda progress: orchestrate.run_chain(
        steps, ctx.app.cfg, stop_on_failure=body["stop_on_failure"],
        pass_working_dir=body["pass_working_dir"], dry_run=body["dry_run"],
        policy=ctx.app.policy, cancel=ctx.cancel, on_progress=progress,
        item_events=ctx.wants_item_events))
    return json_response({
        "total_steps": summary.total_steps, "completed_steps": summary.completed_steps,
        "failed_step": summary.failed_step, "total_duration_ms": summary.total_duration_ms,
        "results": [_step_item(r) for r in summary.results]})


def compare(ctx: Context) -> Response:
    """One prompt on several backends (ephemeral); results in request order. A backend that
    is not installed is left out and listed under ``skipped``."""
    body = ctx.json_body()
    width = 1 if body["sequential"] else min(len(body["backends"]), ctx.app.limiter.limit)
    summary = _fan_out(ctx, width, body["dry_run"], lambda progress: orchestrate.run_compare(
        sequential=body["sequential"], cancel=ctx.cancel, on_progress=progress,
        max_parallel=width, item_events=ctx.wants_item_events, **compare_plan(ctx, body)))
    out: Dict[str, Any] = {"prompt": summary.prompt, "backends": summary.backends,
                           "total_duration_ms": summary.total_duration_ms,
                           "results": [_compared(r) for r in summary.results]}
    if summary.skipped:
        out["skipped"] = [s.to_dict() for s in summary.skipped]
    return json_response(out)


def compare_plan(ctx: Context, body: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments ``orchestrate.plan_compare`` (and so ``run_compare``) takes for a
    validated compare body."""
    return dict(prompt=body["prompt"], backends=body["backends"], cfg=ctx.app.cfg,
                model=body["model"], workdir=body["workdir"], dry_run=body["dry_run"],
                options=_as_served(ctx, {}), policy=ctx.app.policy)


def _fan_out(ctx: Context, width: int, dry_run: bool,
             run: Callable[[ProgressFn], Summary]) -> Summary:
    """Run an orchestration holding ``width`` run slots (none for a dry run), cancelled when
    the client hangs up, with each finished item counted in the metrics."""
    def progress(kind: str, index: int, item: ProgressPayload) -> None:
        if kind == "finished" and item.dry_run is None and item.status != CANCELLED:
            ctx.app.record_run(item.backend, "success" if item.ok else "failure",
                               item.duration_ms, item.usage, ctx.key_id)
        ctx.fan_out_progress(kind, index, item)
    if dry_run:
        return run(progress)
    release = ctx.hold_run_slot(width)
    try:
        return run(progress)
    finally:
        release()


def _as_served(ctx: Context, item: Dict[str, Any]) -> Dict[str, Any]:
    """A task or step with the server's request timeout and the request's run profile."""
    served = dict(item, profile=requested_profile(ctx.headers, ctx.app.cfg))
    if ctx.app.request_timeout:
        served["timeout"] = ctx.app.request_timeout
    return served


def run_item(r: ItemResult) -> Dict[str, Any]:
    """One orchestration result in the contract's shape: backend, exit_code, duration_ms,
    output and error (always; "" when there is none), then token_usage when reported."""
    output = r.output
    if r.dry_run is not None:
        output = render.would_run(r.dry_run["command"])
    item: Dict[str, Any] = {"backend": r.backend, "exit_code": r.exit_code,
                            "duration_ms": r.duration_ms, "output": output, "error": r.error}
    usage = {k: v for k, v in r.usage.to_dict().items() if k in ev.USAGE_KEYS}
    if any(usage.values()):
        item["token_usage"] = usage
    return item


def _task_item(r: TaskResult) -> Dict[str, Any]:
    """A parallel task: its id and name when it has them (the labels it was sent with), then
    ``run_item``."""
    head: Dict[str, Any] = {}
    if r.id:
        head["id"] = r.id
    if r.name:
        head["name"] = r.name
    head.update(run_item(r))
    return head


def _step_item(r: StepResult) -> Dict[str, Any]:
    """A chain step: its number, its name when it has one, then ``run_item``."""
    head: Dict[str, Any] = {"step": r.step}
    if r.name:
        head["name"] = r.name
    head.update(run_item(r))
    return head


def _compared(r: CompareResult) -> Dict[str, Any]:
    """A compared backend: ``run_item`` with the model after the backend, when known."""
    item = run_item(r)
    if r.model:
        return dict({"backend": item.pop("backend"), "model": r.model}, **item)
    return item


# -- backends and sessions ------------------------------------------------------------------------


def backend_rows(ctx: Context) -> List[Dict[str, Any]]:
    """Every backend with ``available``: its CLI is on PATH and the config enables it."""
    installed = probe.availability()
    return [{"name": name, "available": bool(installed.get(name))
             and ctx.app.cfg.backend_enabled(name)} for name in base.NAMES]


def list_backends(ctx: Context, diagnoses: diagnose.Cache) -> Response:
    """Every backend with the facts of ``clinvk doctor`` (no model call), checked for the runs
    this server makes (with or without project configuration), at most ``diagnoses.ttl``
    seconds old."""
    return json_response({"backends": diagnoses.rows(ctx.app.cfg,
                                                     ctx.app.policy.allow_project_config)})


def session_info(session, schema: Obj = SessionSchema) -> Dict[str, Any]:
    """A stored session as the API shows it: the fields ``schema`` documents only (never the
    backend's own session id; the metadata in SessionDetail only)."""
    d = session.to_dict()
    return {f.name: d[f.name] for f in schema.fields if f.name in d}


def list_sessions(ctx: Context) -> Response:
    """The sessions the caller may use (``Context.session_access``), most recently used
    first; ``limit`` (the reply says the one applied: 100 unless given; 0 = all); ``total``
    counts the matches."""
    q = validate_query(SessionsQuery, ctx.query())
    found, total = ctx.app.store.list(backend=q.get("backend"), status=q.get("status"),
                                      limit=q["limit"] or None, offset=q["offset"],
                                      access=ctx.session_access(),
                                      working_dir_part=q.get("workdir") or "")
    return json_response({"sessions": [session_info(s) for s in found], "total": total,
                          "limit": q["limit"], "offset": q["offset"]})


def get_session(ctx: Context) -> Response:
    """One session by id or unique prefix, with its metadata; another key's session is a
    404 like an unknown one, so that its existence does not leak."""
    return json_response(session_info(ctx.app.store.resolve(ctx.params["id"],
                                                            ctx.session_access()),
                                      SessionDetail))


def delete_session(ctx: Context) -> Response:
    """Delete one session by id or unique prefix, a damaged one included; 409 when a turn
    holds it for longer than server.session_busy_wait_secs."""
    deleted = ctx.app.store.delete(ctx.params["id"], ctx.session_access(),
                                   timeout=ctx.app.cfg.get("server.session_busy_wait_secs"))
    return json_response({"deleted": True, "id": deleted})


# -- meta -----------------------------------------------------------------------------------------


def health(ctx: Context) -> Response:
    """ok; degraded when an enabled backend's CLI is missing or the shared store
    (``server.store``, then holding the sessions too) does not answer; unhealthy (HTTP 503)
    when the session store on this node's disk cannot be used: a file cannot be written in it
    right now (read-only or full disk) or it cannot be listed (restarting elsewhere may help;
    restarting every node because Redis is down would not). Needs no key, so the store's
    problem is told without the server's paths."""
    rows = backend_rows(ctx)
    available, count, problem = ctx.app.store.health()
    missing = [r for r in rows if not r["available"]
               and ctx.app.cfg.backend_enabled(r["name"])]
    shared = store_health(ctx.app.shared_store) if ctx.app.shared_store is not None else None
    degraded = missing or (shared is not None and not (shared["available"] and available))
    status = "unhealthy" if not available and shared is None else \
        "degraded" if degraded else "ok"
    store = {"available": available, "session_count": count, "error": problem}
    millis = int((time.monotonic() - ctx.app.started) * 1000)
    body = {"status": status, "version": __version__, "uptime": format_uptime(millis),
            "uptime_millis": millis, "backends": rows, "session_store": store}
    if shared is not None:
        body["shared_store"] = shared
    return json_response(body, 503 if status == "unhealthy" else 200)


def format_uptime(millis: int) -> str:
    """``45s``, ``3m25s``, ``1h0m0s`` (whole seconds, rounded)."""
    total = int(round(millis / 1000.0))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return "%dh%dm%ds" % (hours, minutes, seconds)
    if minutes:
        return "%dm%ds" % (minutes, seconds)
    return "%ds" % seconds


def openapi_document(ctx: Context) -> Dict[str, Any]:
    """The OpenAPI document of every route this server answers."""
    return openapi.build_openapi(ctx.app.specs(), __version__, server_url=ctx.base_url())


def openapi_json(ctx: Context) -> Response:
    return json_response(openapi_document(ctx))


def docs(ctx: Context) -> Response:
    """The reference, with the console's Try it forms (its scripts) on every operation."""
    html = docs_page.render_docs_html(openapi_document(ctx),
                                      console.head_tags(console.DOCS_SCRIPTS))
    return Response(200, html.encode("utf-8"), "text/html; charset=utf-8",
                    console.page_headers(docs_page.CSS))


def metrics(ctx: Context) -> Response:
    from .metrics import CONTENT_TYPE      # lazy: start-up (see App.__init__)
    return Response(200, ctx.app.metrics.render().encode("utf-8"), CONTENT_TYPE)

