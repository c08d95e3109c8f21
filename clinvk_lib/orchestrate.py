"""Fan work out: parallel tasks, chained steps, one prompt compared across backends.

The one engine behind ``clinvk parallel|chain|compare``, the HTTP routes and the MCP tools.
Plain data in (task / step dicts), plain data out (summary dicts, whose every result carries
``output`` and ``error``, ``""`` when there is none); nothing is printed. Every run goes
through ``execute.prepare`` and ``execute.run`` as an ephemeral run, so config defaults per
backend apply and no session is stored. A front end may pass:

- ``cancel``: an ``execute.Cancel``; firing it kills every running backend process group and
  marks what has not started as cancelled (client gone, Ctrl-C). ``fail_fast`` fires it too.
- ``on_progress(kind, index, payload)``: called with ``"started"`` (payload: index, backend,
  name), ``"finished"`` (payload: that item's result dict) and, for compare, ``"skipped"``
  (payload: backend, reason), possibly from worker threads. ``index`` is the item's position
  in the input (the task, the step, the backend in the list given).

The ``validate_*`` functions check task and chain files (``tasks[2].backend: expected one of
claude, codex, gemini``). The engine trusts its caller for field types and checks only what
it alone can judge: chain placeholders and compare's backend list (SpecError, before anything
runs). A task that cannot be prepared (backend not installed, bad workdir) fails alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import events, execute
from .backends import base
from .policy import Policy

DEFAULT_MAX_PARALLEL = 3
PREVIOUS = "{{previous}}"
SESSION = "{{session}}"

ProgressFn = Callable[[str, int, Dict[str, Any]], None]


class SpecError(ValueError):
    """A task, step or compare request that cannot run; ``field`` is its path (tasks[2].model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("%s: %s" % (field, message) if field else message)
        self.field = field
        self.message = message


# -- what a task file may say ---------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expected a string, got %s" % _kind(value))
    return value


def _non_empty_text(value: Any) -> Any:
    if not _text(value).strip():
        raise ValueError("must not be empty")
    return value


def _backend(value: Any) -> Any:
    if value not in base.names():
        raise ValueError("expected one of %s, got %s"
                         % (", ".join(base.names()), _shown(value)))
    return value


def _choice(*choices: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError("expected one of %s, got %s" % (", ".join(choices), _shown(value)))
        return value
    return check


def _count(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a whole number >= 0, got %s" % _shown(value))
    return value


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("expected true or false, got %s" % _shown(value))
    return value


def _text_list(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings, got %s" % _kind(value))
    return value


def _text_map(value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("expected an object of strings (\"key\": \"value\"), got %s"
                         % _kind(value))
    return value


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, (str, int, float)) else _kind(value)


# Every field a task or a chain step may carry, with its check. The order is the order of
# the field lists in error messages; TASK_FIELDS and STEP_FIELDS are taken from here.
FIELD_CHECKS: Dict[str, Callable[[Any], Any]] = {
    "backend": _backend,
    "prompt": _non_empty_text,
    "model": _text,
    "workdir": _text,
    "approval_mode": _choice(*base.APPROVAL_MODES),
    "sandbox_mode": _choice(*base.SANDBOX_MODES),
    "max_turns": _count,
    "system_prompt": _text,
    "extra": _text_list,
    "id": _text,
    "name": _text,
    "tags": _text_list,
    "meta": _text_map,
    "dry_run": _flag,
}
TASK_FIELDS = tuple(FIELD_CHECKS)
STEP_FIELDS = ("name", "backend", "prompt", "model", "workdir", "approval_mode",
               "sandbox_mode", "max_turns")
REQUIRED_FIELDS = ("backend", "prompt")


def validate_item(item: Any, where: str, fields: Sequence[str] = TASK_FIELDS) -> Dict[str, Any]:
    """``item`` if it is a valid task (or step, with STEP_FIELDS); else SpecError naming
    ``where`` and the field (``tasks[2].backend: expected one of claude, codex, gemini``)."""
    if not isinstance(item, dict):
        raise SpecError(where, "expected an object with backend and prompt, got %s"
                        % _kind(item))
    for key in item:
        if key not in fields:
            raise SpecError("%s.%s" % (where, key), "unknown field (expected one of %s)"
                            % ", ".join(fields))
    for key in REQUIRED_FIELDS:
        if key not in item:
            raise SpecError("%s.%s" % (where, key), "required")
    for key, value in item.items():
        try:
            FIELD_CHECKS[key](value)
        except ValueError as exc:
            raise SpecError("%s.%s" % (where, key), str(exc))
    return item


def _top(data: Any, list_key: str, known: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError("", "expected an object with a %r list ({\"%s\": [...]}), got %s"
                        % (list_key, list_key, _kind(data)))
    for key in data:
        if key not in known:
            raise SpecError(key, "unknown field (expected one of %s)" % ", ".join(known))
    items = data.get(list_key)
    if not isinstance(items, list) or not items:
        raise SpecError(list_key, "required: a non-empty list")
    return data


def _optional(data: Dict[str, Any], key: str, check: Callable[[Any], Any], default: Any) -> Any:
    if key not in data:
        return default
    try:
        return check(data[key])
    except ValueError as exc:
        raise SpecError(key, str(exc))


def _at_least_one(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected a whole number >= 1, got %s" % _shown(value))
    return value


PARALLEL_KEYS = ("tasks", "max_parallel", "fail_fast", "output_dir")
CHAIN_KEYS = ("steps", "stop_on_failure", "pass_working_dir", "pass_session_id",
              "persist_sessions")


def validate_parallel_spec(data: Any) -> Dict[str, Any]:
    """A parallel file's content, checked: ``{tasks, max_parallel (0 = unset), fail_fast
    (None = unset), output_dir ("" = unset)}``. Every task is checked before anything runs."""
    _top(data, "tasks", PARALLEL_KEYS)
    tasks = [validate_item(t, "tasks[%d]" % i) for i, t in enumerate(data["tasks"])]
    return {"tasks": tasks,
            "max_parallel": _optional(data, "max_parallel", _at_least_one, 0),
            "fail_fast": _optional(data, "fail_fast", _flag, None),
            "output_dir": _optional(data, "output_dir", _non_empty_text, "")}


def validate_chain_spec(data: Any) -> Dict[str, Any]:
    """A chain file's content, checked: ``{steps, stop_on_failure (None = unset),
    pass_working_dir}``. Session options are refused: chains are ephemeral."""
    _top(data, "steps", CHAIN_KEYS)
    for key in ("pass_session_id", "persist_sessions"):
        if _optional(data, key, _flag, False):
            raise SpecError(key, "not supported: chain steps are ephemeral (no session is "
                            "stored); remove it and pass results on with {{previous}}")
    steps = [validate_item(s, "steps[%d]" % i, STEP_FIELDS) for i, s in enumerate(data["steps"])]
    check_chain_steps(steps)
    return {"steps": steps,
            "stop_on_failure": _optional(data, "stop_on_failure", _flag, None),
            "pass_working_dir": _optional(data, "pass_working_dir", _flag, False)}


def check_chain_steps(steps: Sequence[Dict[str, Any]]) -> None:
    """SpecError for placeholders a chain cannot fill: ``{{session}}`` anywhere (chains store
    no session) and ``{{previous}}`` in the first step (there is no previous output)."""
    if not steps:
        raise SpecError("steps", "required: a non-empty list")
    for i, step in enumerate(steps):
        prompt = step.get("prompt") or ""
        if SESSION in prompt:
            raise SpecError("steps[%d].prompt" % i, "uses {{session}}, but chain steps are "
                            "ephemeral (no session to refer to); use {{previous}} for the "
                            "previous step's output")
        if i == 0 and PREVIOUS in prompt:
            raise SpecError("steps[0].prompt", "uses {{previous}}, but the first step has no "
                            "previous output")


def check_compare_request(prompt: str, backends: Sequence[str]) -> None:
    """SpecError for an empty prompt, no backends, or an unknown backend name."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SpecError("prompt", "required: the prompt every backend answers")
    if not backends:
        raise SpecError("backends", "required: at least one of %s" % ", ".join(base.names()))
    for i, name in enumerate(backends):
        try:
            _backend(name)
        except ValueError as exc:
            raise SpecError("backends[%d]" % i, str(exc))


def all_installed_backends(cfg) -> List[str]:
    """Every backend that is enabled in the config and whose CLI is on PATH, in stable order."""
    return [name for name in base.names()
            if cfg.backend_enabled(name) and base.get(name).find_executable()]


def resolve_max_parallel(requested: int, cfg) -> int:
    """``requested`` when >= 1, else config ``parallel.max_workers``, else 3."""
    return requested or cfg.get("parallel.max_workers") or DEFAULT_MAX_PARALLEL


# -- running one item -----------------------------------------------------------------------------


def task_request(task: Dict[str, Any], dry_run: bool = False) -> execute.Request:
    """The ephemeral ``execute.Request`` for a task, step or compare entry (never a session)."""
    fields = {k: task[k] for k in execute.Request.FIELDS if k in task}
    fields["session_id"] = ""
    fields["ephemeral"] = True
    if dry_run:
        fields["dry_run"] = True
    return execute.Request(**fields)


def _prepare(task: Dict[str, Any], cfg, policy: Optional[Policy],
             dry_run: bool) -> Tuple[Optional[execute.Prepared], Optional[execute.ExecError]]:
    try:
        return execute.prepare(task_request(task, dry_run), cfg, policy=policy), None
    except execute.ExecError as exc:
        return None, exc


def _entry(status: str, exit_code: int, output: str = "", error: str = "",
           duration_ms: int = 0, usage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"status": status, "exit_code": exit_code, "output": output, "error": error,
            "duration_ms": duration_ms,
            "usage": usage if usage is not None else events.Usage().to_dict()}


def _failed_to_prepare(exc: execute.ExecError) -> Dict[str, Any]:
    return _entry("failed", 1, error=str(exc))


def _cancelled(reason: str) -> Dict[str, Any]:
    # -1: the item did not finish (never started, or its process group was killed).
    return _entry("cancelled", -1, error=reason)


def _execute(prepared: execute.Prepared, cancel: execute.Cancel) -> Dict[str, Any]:
    """Run one prepared item and describe how it ended (a dry run only describes itself)."""
    if prepared.dry_run:
        entry = _entry("completed", 0)
        entry["dry_run"] = prepared.describe()
        return entry
    try:
        outcome = execute.run(prepared, cancel=cancel)
    except execute.ExecError as exc:
        return _failed_to_prepare(exc)
    r = outcome.result
    if outcome.cancelled:
        return _cancelled(r.error or "cancelled")
    exit_code = r.exit_code if r.exit_code or r.ok else 1
    entry = _entry("completed" if outcome.ok else "failed", exit_code, r.text, r.error,
                   r.duration_ms, r.usage.to_dict())
    entry["model"] = r.model or prepared.opts.model
    return entry


def _notify(on_progress: Optional[ProgressFn], kind: str, index: int,
            payload: Dict[str, Any]) -> None:
    if on_progress is not None:
        on_progress(kind, index, payload)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# -- parallel -------------------------------------------------------------------------------------


def run_parallel(tasks: Sequence[Dict[str, Any]], cfg, max_parallel: int = 0,
                 fail_fast: bool = False, dry_run: bool = False,
                 policy: Optional[Policy] = None, cancel: Optional[execute.Cancel] = None,
                 on_progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Run ``tasks`` (task dicts) with at most ``max_parallel`` at once (0 = config
    ``parallel.max_workers``), starting them in input order.

    Returns ``{total_tasks, completed, failed, cancelled, total_duration_ms, results}`` with
    one result per task in input order: ``{index, id, name, backend, status, exit_code,
    output, error, duration_ms, usage}`` (status completed|failed|cancelled; a dry run adds
    ``dry_run``: the command). A task that cannot be prepared (backend not installed, bad
    workdir) fails alone. With ``fail_fast`` the first failure fires ``cancel``: running
    tasks are killed and the rest never start; both count as cancelled.
    """
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    n = len(tasks)
    prepared = [_prepare(t, cfg, policy, dry_run) for t in tasks]
    results: List[Optional[Dict[str, Any]]] = [None] * n
    stop_reason: List[str] = []
    stop_lock = threading.Lock()

    def fail_fast_after(index: int) -> None:
        with stop_lock:
            if not fail_fast or stop_reason:
                return
            stop_reason.append("cancelled: tasks[%d] failed and fail_fast is on" % index)
        cancel.fire()

    # Everything is prepared before anything starts: with fail_fast, a task that cannot be
    # prepared means no task starts.
    for i, (_, exc) in enumerate(prepared):
        if exc is not None:
            fail_fast_after(i)

    def result_of(index: int, entry: Dict[str, Any]) -> Dict[str, Any]:
        task = tasks[index]
        p = prepared[index][0]
        head = {"index": index, "id": task.get("id", ""), "name": task.get("name", ""),
                "backend": p.backend.name if p else task.get("backend", "")}
        entry.pop("model", None)
        head.update(entry)
        return head

    def work(index: int) -> None:
        p, exc = prepared[index]
        if exc is not None:
            entry = _failed_to_prepare(exc)
        elif cancel.fired:
            entry = _cancelled(stop_reason[0] if stop_reason else "cancelled")
        else:
            _notify(on_progress, "started", index,
                    {"index": index, "backend": p.backend.name,
                     "name": tasks[index].get("name") or tasks[index].get("id") or ""})
            entry = _execute(p, cancel)
            if entry["status"] == "failed":
                fail_fast_after(index)
            elif entry["status"] == "cancelled" and stop_reason:
                entry["error"] = stop_reason[0]
        results[index] = result_of(index, entry)
        _notify(on_progress, "finished", index, results[index])

    if n:
        with ThreadPoolExecutor(max_workers=min(n, resolve_max_parallel(max_parallel, cfg)),
                                thread_name_prefix="clinvk-parallel") as pool:
            for future in [pool.submit(work, i) for i in range(n)]:
                future.result()
    done = [r for r in results if r is not None]
    return {"total_tasks": n,
            "completed": sum(1 for r in done if r["status"] == "completed"),
            "failed": sum(1 for r in done if r["status"] == "failed"),
            "cancelled": sum(1 for r in done if r["status"] == "cancelled"),
            "total_duration_ms": _elapsed_ms(started),
            "results": done}


# -- chain ----------------------------------------------------------------------------------------


def run_chain(steps: Sequence[Dict[str, Any]], cfg, stop_on_failure: bool = True,
              pass_working_dir: bool = False, dry_run: bool = False,
              policy: Optional[Policy] = None, cancel: Optional[execute.Cancel] = None,
              on_progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Run ``steps`` one after another; ``{{previous}}`` in a prompt becomes the previous
    step's output, and with ``pass_working_dir`` a step without a workdir runs in the
    previous step's.

    Returns ``{total_steps, completed_steps, failed_step, total_duration_ms, results}``;
    ``failed_step`` is the 1-based number of the first failed step (0 when none failed);
    ``results`` holds the steps that ran: ``{step, name, backend, status, exit_code, output,
    error, duration_ms, usage}``. The chain stops at a failure when ``stop_on_failure``, and
    always when ``cancel`` fires. Raises SpecError for ``{{session}}`` or a ``{{previous}}``
    in the first step, before anything runs.
    """
    check_chain_steps(steps)
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    results: List[Dict[str, Any]] = []
    failed_step = 0
    previous_output: Optional[str] = None
    previous_workdir = ""
    for i, step in enumerate(steps):
        if cancel.fired:
            break
        task = dict(step)
        if previous_output is not None:
            task["prompt"] = task.get("prompt", "").replace(PREVIOUS, previous_output)
        if pass_working_dir and not task.get("workdir") and previous_workdir:
            task["workdir"] = previous_workdir
        p, exc = _prepare(task, cfg, policy, dry_run)
        backend = p.backend.name if p else task.get("backend", "")
        _notify(on_progress, "started", i, {"index": i, "backend": backend,
                                            "name": step.get("name", "")})
        entry = _failed_to_prepare(exc) if exc is not None else _execute(p, cancel)
        entry.pop("model", None)
        result = {"step": i + 1, "name": step.get("name", ""), "backend": backend}
        result.update(entry)
        results.append(result)
        _notify(on_progress, "finished", i, result)
        # After a dry run there is no output to pass on: {{previous}} stays visible.
        previous_output = None if "dry_run" in entry else entry["output"]
        previous_workdir = p.cwd if p else previous_workdir
        if entry["status"] == "cancelled":
            break
        if entry["status"] == "failed":
            failed_step = failed_step or i + 1
            if stop_on_failure:
                break
    return {"total_steps": len(steps),
            "completed_steps": sum(1 for r in results if r["status"] == "completed"),
            "failed_step": failed_step,
            "total_duration_ms": _elapsed_ms(started),
            "results": results}


# -- compare --------------------------------------------------------------------------------------


def run_compare(prompt: str, backends: Sequence[str], cfg, model: str = "", workdir: str = "",
                sequential: bool = False, dry_run: bool = False,
                options: Optional[Dict[str, Any]] = None, policy: Optional[Policy] = None,
                cancel: Optional[execute.Cancel] = None,
                on_progress: Optional[ProgressFn] = None,
                max_parallel: int = 0) -> Dict[str, Any]:
    """Ask every backend in ``backends`` the same prompt, all at once unless ``sequential``
    (or, with ``max_parallel``, at most that many at once: the run slots a server holds).

    ``model`` and ``workdir`` (and ``options``: further request fields such as
    approval_mode, max_turns, timeout) apply to every backend. A backend that is not
    installed or is disabled is skipped. Returns ``{prompt, backends (those that ran),
    total_duration_ms, results, skipped: [{backend, reason}]}``; results in ``backends``
    order: ``{backend, model, status, exit_code, output, error, duration_ms, usage}``.

    Raises SpecError for an empty prompt or an unknown backend, and ExecError when no
    backend is left or when every backend refuses the request for the same reason (a bad
    workdir, say).
    """
    check_compare_request(prompt, backends)
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    runs: List[Tuple[int, str, Optional[execute.Prepared], Optional[execute.ExecError]]] = []
    skipped: List[Dict[str, str]] = []
    for position, name in enumerate(backends):
        task = dict(options or {}, backend=name, prompt=prompt, model=model, workdir=workdir)
        p, exc = _prepare(task, cfg, policy, dry_run)
        if exc is not None and exc.kind in ("not_installed", "disabled"):
            skipped.append({"backend": name, "reason": str(exc)})
            _notify(on_progress, "skipped", position, skipped[-1])
        else:
            runs.append((position, name, p, exc))
    if not runs:
        raise execute.ExecError("not_installed", "no backend left to compare: %s"
                                % "; ".join(s["reason"] for s in skipped))
    refusals = {str(exc) for _, _, _, exc in runs if exc is not None}
    if len(refusals) == 1 and all(exc is not None for _, _, _, exc in runs):
        raise runs[0][3]
    results: List[Optional[Dict[str, Any]]] = [None] * len(runs)

    def work(index: int) -> None:
        position, name, p, exc = runs[index]
        if exc is not None:
            entry = _failed_to_prepare(exc)
        elif cancel.fired:
            entry = _cancelled("cancelled")
        else:
            _notify(on_progress, "started", position, {"index": position, "backend": name,
                                                       "name": name})
            entry = _execute(p, cancel)
        result = {"backend": name,
                  "model": entry.pop("model", "") or (p.opts.model if p else model)}
        result.update(entry)
        results[index] = result
        _notify(on_progress, "finished", position, result)

    width = 1 if sequential else min(len(runs), max_parallel or len(runs))
    if width == 1:
        for i in range(len(runs)):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="clinvk-compare") as pool:
            for future in [pool.submit(work, i) for i in range(len(runs))]:
                future.result()
    return {"prompt": prompt,
            "backends": [name for _, name, _, _ in runs],
            "total_duration_ms": _elapsed_ms(started),
            "results": results,
            "skipped": skipped}
