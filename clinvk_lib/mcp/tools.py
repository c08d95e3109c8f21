"""The clinvk tools an MCP client sees: their input schemas and what each call runs.

Input schemas are cut from the shape table every front end uses (``shapes.py``), so a field
is described, validated and refused the same way over MCP, over HTTP and in the command line's
files. Runs go through ``execute`` and ``orchestrate`` with the server's ``Policy`` (workdir
rules, extra-flag allowlist, dangerous modes only when configured), exactly as the HTTP routes
do. A backend that fails, is missing or
is refused by the policy is a tool result with ``isError``; only bad arguments are protocol
errors.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import execute, orchestrate, render
from .. import schema as sc
from ..backends.options import AGENT_PROFILE, PROFILES
from ..backends.probe import probe_all
from ..config import Config
from ..fanout_results import ProgressPayload
from ..policy import Policy
from ..runslots import Abandoned, Busy, RunLimiter
from ..session_record import SessionError
from ..sessions import SessionStore
from ..shapes import (ChainRequest, CompareRequest, ParallelRequest, PromptRequest,
                      SessionPath, SessionsQuery)
from .protocol import INVALID_PARAMS, Call, RpcError, Tool, error_result

# A model reads the listing; an unbounded session list would flood its context.
SESSIONS_DEFAULT_LIMIT = 20


class ToolContext:
    """What every tool run needs: the configuration, the policy, the session store and the
    run slots."""

    def __init__(self, cfg: Config, store: SessionStore, policy: Optional[Policy] = None) -> None:
        self.cfg = cfg
        self.store = store
        self.policy = policy if policy is not None else Policy.from_config(cfg)
        # The HTTP server's per-request limit applies to MCP calls too (0 = none).
        self.timeout = float(cfg.get("server.request_timeout_secs") or 0) or None
        # So do its run slots and queue: a model may fire many tool calls at once, and one
        # parallel call may ask for any max_parallel.
        self.limiter = RunLimiter(cfg.get("server.max_concurrent_runs"),
                                  cfg.get("server.queue_timeout_secs"))

    def profile(self, args: Dict[str, Any]) -> str:
        """The run profile a call asks for (its ``profile`` argument), else the server's
        default (server.default_profile)."""
        return args.get("profile") or self.cfg.get("server.default_profile") or AGENT_PROFILE


# -- schemas cut from the table ----------------------------------------------------------------


def pick(obj: sc.Obj, *names: str) -> List[sc.Field]:
    """The named fields of a table entry, in the order given."""
    return [obj.field(n) for n in names]


def optional(field: sc.Field, default: Any = None, description: str = "") -> sc.Field:
    """A copy of a table field that is not required (with another default or description)."""
    return field.but(required=False, default=field.default if default is None else default,
                     description=description or field.description)


def plain_json_schema(node: Any) -> Any:
    """The table's OpenAPI 3.0 dialect as plain JSON Schema: ``example`` becomes
    ``examples`` and ``nullable`` becomes an ``anyOf`` with null (MCP clients and model APIs
    validate tool schemas as JSON Schema, where those OpenAPI keywords mean nothing)."""
    if isinstance(node, list):
        return [plain_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: Dict[str, Any] = {}
    for key, value in node.items():
        if key == "example":
            out["examples"] = [value]
        elif key == "nullable":
            continue
        elif key == "properties":
            out[key] = {name: plain_json_schema(s) for name, s in value.items()}
        elif key in ("default", "enum", "examples", "const"):
            out[key] = value
        else:
            out[key] = plain_json_schema(value)
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


# The X-Clinvk-Profile header of the HTTP API, as an argument of every tool that runs a backend.
PROFILE_ARG = sc.Field(
    "profile", sc.String(enum=PROFILES),
    description="agent: the backend runs as its CLI runs by itself; chat: a model, not an "
                "agent: no tools, settings, project files, MCP servers or skills, a short "
                "system prompt, one turn. Default: server.default_profile (agent).")
PROMPT_ARGS = sc.Obj(*pick(PromptRequest, "backend", "prompt", "model", "workdir",
                           "approval_mode", "sandbox_mode", "session_id", "ephemeral"),
                     PROFILE_ARG)
COMPARE_ARGS = sc.Obj(*pick(CompareRequest, "prompt", "backends", "model", "workdir",
                            "sequential"), PROFILE_ARG)
# Tasks and steps exactly as the HTTP API and the command line's files take them.
PARALLEL_ARGS = sc.Obj(*pick(ParallelRequest, "tasks", "max_parallel", "fail_fast"),
                       PROFILE_ARG)
CHAIN_ARGS = sc.Obj(*pick(ChainRequest, "steps", "stop_on_failure", "pass_working_dir",
                          "pass_session_id", "persist_sessions"), PROFILE_ARG)
BACKENDS_ARGS = sc.Obj()
SESSIONS_ARGS = sc.Obj(
    sc.Field("action", sc.String(enum=("list", "show")), default="list",
             description="list: recent sessions, most recently used first; show: one session."),
    optional(SessionPath.field("id"), description="Session id or unique prefix (for show)."),
    SessionsQuery.field("backend"),
    optional(SessionsQuery.field("limit"), default=SESSIONS_DEFAULT_LIMIT,
             description="At most this many sessions (list); 0 = all."),
)


# -- results -----------------------------------------------------------------------------------


def tool_result(text: str, structured: Dict[str, Any], is_error: bool = False) -> Dict[str, Any]:
    """A CallToolResult: readable text plus the same facts as structured data.

    Both carry the whole answer: clients differ in which one reaches the model (claude
    2.1.197 passes ``structuredContent`` to the model when a result has it)."""
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured,
            "isError": is_error}


def in_run_slots(ctx: ToolContext, call: Call, count: int,
                 run: Callable[[int], Dict[str, Any]]) -> Dict[str, Any]:
    """``run(taken)`` holding ``count`` run slots, as an HTTP request does: one per backend
    process the call may run at once, ``taken`` of them (never more than
    server.max_concurrent_runs), waiting in line first come, first served. An error result
    when none free up within server.queue_timeout_secs or the call is cancelled meanwhile."""
    try:
        taken = ctx.limiter.acquire(count, abandoned=lambda: call.cancel.fired)
    except Busy as exc:
        return error_result("%s (server.max_concurrent_runs, server.queue_timeout_secs); try "
                            "again later" % exc)
    except Abandoned:
        return error_result("cancelled while waiting for a run slot")
    try:
        return run(taken)
    finally:
        ctx.limiter.release(taken)


# -- the tools ---------------------------------------------------------------------------------


# Tools that run agents may change files in workdir and reach the models' services; the others
# only read clinvk's own state.
RUNS_AGENTS = {"readOnlyHint": False, "openWorldHint": True}
READS_STATE = {"readOnlyHint": True, "openWorldHint": False}


def make_tool(name: str, description: str, args_schema: sc.Obj,
              run: Callable[[Dict[str, Any], Call], Dict[str, Any]],
              annotations: Dict[str, bool],
              check: Optional[Callable[[Dict[str, Any]], None]] = None) -> Tool:
    """A tool listed with ``args_schema`` as its input schema. A call's arguments are
    validated against that schema and then by ``check`` (which raises sc.ValidationError);
    either failure is an INVALID_PARAMS error naming the tool and the field. Valid arguments
    are bound to ``run(args, call)``."""
    def bind(arguments: Dict[str, Any]) -> Callable[[Call], Dict[str, Any]]:
        try:
            args = sc.validate(args_schema, arguments)
            if check is not None:
                check(args)
        except sc.ValidationError as exc:
            raise RpcError(INVALID_PARAMS, "invalid arguments for %s: %s: %s"
                           % (name, exc.path or "arguments", exc.message))
        return lambda call: run(args, call)

    return Tool(name, description, plain_json_schema(sc.to_json_schema(args_schema)), bind,
                annotations=annotations)


def prompt_tool(ctx: ToolContext) -> Tool:
    return make_tool(
        "clinvk_prompt",
        "Ask another coding agent CLI (claude, codex, gemini, qwen, copilot or opencode) to do "
        "something and return its "
        "reply. The agent runs in workdir (default: server.default_workdir, else the server's "
        "directory) with its own tools. "
        "Each run creates a clinvk session unless ephemeral is true; pass the returned "
        "session_id (and the same backend) to continue that conversation.",
        PROMPT_ARGS, lambda args, call: run_prompt(ctx, args, call), RUNS_AGENTS)


def run_prompt(ctx: ToolContext, args: Dict[str, Any], call: Call) -> Dict[str, Any]:
    """Run one prompt through ``execute`` and render its outcome as a tool result."""
    # A busy session fails after server.session_busy_wait_secs, as over HTTP: the call holds
    # a run slot meanwhile.
    req = execute.Request(timeout=ctx.timeout,
                          session_wait=ctx.cfg.get("server.session_busy_wait_secs"),
                          **dict(args, profile=ctx.profile(args)))
    try:
        prepared = execute.prepare(req, ctx.cfg, ctx.store, ctx.policy)
    except execute.ExecError as exc:
        return error_result(str(exc))
    if prepared.dry_run:
        info = dict(prepared.describe(), dry_run=True)
        return tool_result("dry run (unified_flags.dry_run is set):\n%s"
                           % render.dry_run_text(info), info)
    return in_run_slots(ctx, call, 1, lambda taken: _run_prepared(ctx, prepared, call))


def _run_prepared(ctx: ToolContext, prepared: execute.Prepared, call: Call) -> Dict[str, Any]:
    call.progress("%s: running" % prepared.backend.name)
    try:
        outcome = execute.run(prepared, ctx.store, cancel=call.cancel)
    except (execute.ExecError, SessionError) as exc:
        return error_result(str(exc))
    r = outcome.result
    return tool_result(render.reply_text(r.text, r.error, r.backend),
                       render.outcome_to_json(outcome), is_error=not outcome.ok)


def backends_tool(ctx: ToolContext) -> Tool:
    return make_tool("clinvk_backends",
                     "List the agent CLIs clinvk can run here: installed or not, enabled or not, "
                     "path and version.",
                     BACKENDS_ARGS, lambda args, call: run_backends(ctx), READS_STATE)


def run_backends(ctx: ToolContext) -> Dict[str, Any]:
    rows = probe_all(ctx.cfg)
    return tool_result(render.format_backends_text(rows), {"backends": rows})


def _check_sessions_args(args: Dict[str, Any]) -> None:
    if args["action"] == "show" and not args.get("id"):
        raise sc.ValidationError("id", "required when action is show")


def sessions_tool(ctx: ToolContext) -> Tool:
    return make_tool("clinvk_sessions",
                     "List clinvk's sessions (conversations that clinvk_prompt can continue with "
                     "session_id), or show one session's details.",
                     SESSIONS_ARGS, lambda args, call: run_sessions(ctx, args), READS_STATE,
                     check=_check_sessions_args)


def run_sessions(ctx: ToolContext, args: Dict[str, Any]) -> Dict[str, Any]:
    try:
        if args["action"] == "show":
            s = ctx.store.resolve(args["id"])
            return tool_result(render.format_session(s), s.to_dict())
        limit = args["limit"] or None
        found, total = ctx.store.list(backend=args.get("backend"), limit=limit)
    except SessionError as exc:
        return error_result(str(exc))
    return tool_result(render.format_session_table(found, total, 0),
                       render.session_list_json(found, total, args["limit"], 0))


class _Progress:
    """Turns orchestrate's on_progress callbacks into MCP progress notifications
    (``noun``: task, step or backend)."""

    def __init__(self, call: Call, noun: str, total: int) -> None:
        self.call = call
        self.noun = noun
        self.total = total
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, kind: str, index: int, payload: ProgressPayload) -> None:
        with self._lock:
            if kind in ("finished", "skipped"):
                self.done += 1
            done = self.done
        what = "%s %d (%s)" % (self.noun, index + 1, payload.backend)
        if kind == "started":
            message = "%s started" % what
        elif kind == "skipped":
            message = "%s skipped" % what
        else:
            message = "%s %s" % (what, payload.status)
        self.call.progress("%s; %d of %d done" % (message, done, self.total), completed=done,
                           total=self.total)


def _served(ctx: ToolContext, items: Sequence[Dict[str, Any]],
            args: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Tasks or steps with the server's request timeout and the call's run profile."""
    return [dict(item, timeout=ctx.timeout, profile=ctx.profile(args)) for item in items]


def compare_tool(ctx: ToolContext) -> Tool:
    return make_tool(
        "clinvk_compare",
        "Ask several agent CLIs the same prompt (at once unless sequential) and get each "
        "one's answer, for a second opinion. Backends that are not installed are skipped. "
        "Runs are ephemeral (no session).",
        COMPARE_ARGS, lambda args, call: run_compare(ctx, args, call), RUNS_AGENTS)


def run_compare(ctx: ToolContext, args: Dict[str, Any], call: Call) -> Dict[str, Any]:
    backends = args["backends"]
    width = 1 if args["sequential"] else len(backends)
    return in_run_slots(ctx, call, width, lambda taken: _compare(ctx, args, call, taken))


def _compare(ctx: ToolContext, args: Dict[str, Any], call: Call, width: int) -> Dict[str, Any]:
    try:
        summary = orchestrate.run_compare(
            args["prompt"], args["backends"], ctx.cfg, model=args["model"],
            workdir=args["workdir"], sequential=args["sequential"],
            options={"timeout": ctx.timeout, "profile": ctx.profile(args)},
            policy=ctx.policy, cancel=call.cancel,
            on_progress=_Progress(call, "backend", len(args["backends"])), max_parallel=width)
    except execute.ExecError as exc:
        return error_result(str(exc))
    text = render.format_compare_text(summary) + render.skipped_text(summary.skipped)
    return tool_result(text, summary.to_dict(), is_error=not all(r.ok for r in summary.results))


def parallel_tool(ctx: ToolContext) -> Tool:
    return make_tool(
        "clinvk_parallel",
        "Run several prompts at once, each on its own backend (claude, codex, gemini, ...), "
        "and get every result in the order given. A task that fails fails alone unless "
        "fail_fast is true. Runs are ephemeral (no session).",
        PARALLEL_ARGS, lambda args, call: run_parallel(ctx, args, call), RUNS_AGENTS)


def run_parallel(ctx: ToolContext, args: Dict[str, Any], call: Call) -> Dict[str, Any]:
    tasks = args["tasks"]
    width = min(len(tasks), orchestrate.resolve_max_parallel(args.get("max_parallel") or 0,
                                                             ctx.cfg))
    return in_run_slots(ctx, call, width, lambda taken: _parallel(ctx, args, call, taken))


def _parallel(ctx: ToolContext, args: Dict[str, Any], call: Call, width: int) -> Dict[str, Any]:
    tasks = args["tasks"]
    summary = orchestrate.run_parallel(
        _served(ctx, tasks, args), ctx.cfg, max_parallel=width,
        fail_fast=args["fail_fast"], policy=ctx.policy, cancel=call.cancel,
        on_progress=_Progress(call, "task", len(tasks)))
    text = render.format_parallel_text(summary, tasks, quiet=False, table=False)
    return tool_result(text, summary.to_dict(), is_error=summary.failed > 0)


def chain_tool(ctx: ToolContext) -> Tool:
    return make_tool(
        "clinvk_chain",
        "Run steps one after another, each on its own backend; {{previous}} in a step's "
        "prompt is replaced by the previous step's output (e.g. claude drafts, codex "
        "reviews). Runs are ephemeral (no session).",
        CHAIN_ARGS, lambda args, call: run_chain(ctx, args, call), RUNS_AGENTS)


def run_chain(ctx: ToolContext, args: Dict[str, Any], call: Call) -> Dict[str, Any]:
    return in_run_slots(ctx, call, 1, lambda taken: _chain(ctx, args, call))


def _chain(ctx: ToolContext, args: Dict[str, Any], call: Call) -> Dict[str, Any]:
    steps = args["steps"]
    summary = orchestrate.run_chain(
        _served(ctx, steps, args), ctx.cfg, stop_on_failure=args["stop_on_failure"],
        pass_working_dir=args["pass_working_dir"], policy=ctx.policy, cancel=call.cancel,
        on_progress=_Progress(call, "step", len(steps)))
    return tool_result(render.format_chain_text(summary), summary.to_dict(),
                       is_error=summary.failed_step != 0)


def all_tools(ctx: ToolContext) -> List[Tool]:
    """Every tool, in the order tools/list shows them."""
    return [prompt_tool(ctx), compare_tool(ctx), parallel_tool(ctx), chain_tool(ctx),
            backends_tool(ctx), sessions_tool(ctx)]
