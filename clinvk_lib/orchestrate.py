"""Fan work out: parallel tasks, chained steps, one prompt compared across backends.

The one engine behind ``clinvk parallel|chain|compare``, the HTTP routes and the MCP tools.
Plain data in (task / step dicts), typed results out (``ParallelSummary``, ``ChainSummary``,
``CompareSummary``, whose ``to_dict()`` is the JSON the CLI and MCP show; every item result
carries ``output`` and ``error``, ``""`` when there is none); nothing is printed. Every run goes
through ``execute.prepare`` and ``execute.run`` as an ephemeral run, so config defaults per
backend apply and no session is stored. A front end may pass:

- ``cancel``: an ``execute.Cancel``; firing it kills every running backend process group and
  marks what has not started as cancelled (client gone, Ctrl-C). ``fail_fast`` fires it too.
- ``on_progress(kind, index, payload)``: called with ``"started"`` (payload: a ``Started``),
  ``"finished"`` (payload: that item's ``TaskResult``, ``StepResult`` or ``CompareResult``)
  and, for compare, ``"skipped"`` (payload: a ``Skipped``), possibly from worker threads;
  with ``item_events``, also ``"event"`` (payload: an ``events.Event``) for each unified event
  of each item's backend as it comes (the items then run their CLIs in streaming mode; a dry
  run still shows the commands a run without ``item_events`` would run); with
  ``item_stderr``, also ``"stderr"`` (payload: a ``Note``) for each line an item's backend
  writes on its stderr, as it comes, and ``"warning"`` (a ``Note``) for each of its warnings
  (non-fatal error events) once it is over.
  Every payload has a ``backend``. ``index`` is the item's position in the input (the task,
  the step, the backend in the list given).

Every front end validates tasks, steps and compare requests with the one shape table
(``shapes.py``: field types, chain placeholders, backend names) before calling in, so the
engine trusts its input and judges only what it alone can: a task that cannot be prepared
(backend not installed, bad workdir) fails alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import events as ev
from . import execute
from .backends import base
from .config import Config
from .fanout_results import (CANCELLED, COMPLETED, FAILED, ChainSummary, CompareResult,
                             CompareSummary, Ending, Note, ParallelSummary, ProgressFn,
                             ProgressPayload, Skipped, Started, StepResult, TaskResult)
from .policy import Policy
from .shapes import PREVIOUS

DEFAULT_MAX_PARALLEL = 3


def all_installed_backends(cfg: Config) -> List[str]:
    """Every backend that is enabled in the config and whose CLI is on PATH, in stable order."""
    return [name for name in base.NAMES
            if cfg.backend_enabled(name) and base.get(name).find_executable()]


def resolve_max_parallel(requested: int, cfg: Config) -> int:
    """``requested`` when >= 1, else config ``parallel.max_workers``, else 3."""
    return requested or cfg.get("parallel.max_workers") or DEFAULT_MAX_PARALLEL


# -- running one item -----------------------------------------------------------------------------


def task_request(task: Dict[str, Any], dry_run: bool = False) -> execute.Request:
    """The ephemeral ``execute.Request`` for a task, step or compare entry (never a session)."""
    fields = {k: task[k] for k in execute.Request.FIELDS if k in task}
    fields["session_id"] = ""
    fields["ephemeral"] = True
    # A task's explicit false must not switch off the operator's unified_flags.dry_run.
    fields["dry_run"] = True if dry_run or fields.get("dry_run") else None
    return execute.Request(**fields)


def _prepare(task: Dict[str, Any], cfg: Config, policy: Optional[Policy], dry_run: bool,
             stream: bool = False
             ) -> Tuple[Optional[execute.Prepared], Optional[execute.ExecError]]:
    try:
        return execute.prepare(task_request(task, dry_run), cfg, policy=policy,
                               stream=stream), None
    except execute.ExecError as exc:
        return None, exc


def _failed_to_prepare(exc: execute.ExecError) -> Ending:
    return Ending(FAILED, 1, error=str(exc))


def _cancelled(reason: str, duration_ms: int = 0) -> Ending:
    # -1: the item did not finish (never started, or its process group was killed);
    # duration_ms: how long it ran before it was stopped (0: it never started).
    return Ending(CANCELLED, -1, error=reason, duration_ms=duration_ms)


_NoteFn = Callable[[str, str], None]


def _execute(prepared: execute.Prepared, cancel: execute.Cancel,
             on_event: Optional[Callable[[ev.Event], None]] = None,
             on_note: Optional[_NoteFn] = None) -> Ending:
    """Run one prepared item and tell how it ended (a dry run only describes itself);
    ``on_event`` gets each unified event of a streaming run as it comes, ``on_note(kind,
    text)`` each stderr line as it comes and each warning once the run is over."""
    if prepared.dry_run:
        return Ending(COMPLETED, 0, dry_run=prepared.describe())
    on_stderr = None if on_note is None else lambda line: on_note("stderr", line)
    try:
        outcome = _outcome(prepared, cancel, on_event, on_stderr)
    except execute.ExecError as exc:
        return _failed_to_prepare(exc)
    r = outcome.result
    if on_note is not None:
        for e in r.events:
            if e.type == ev.ERROR and not e.content.get("fatal", True):
                on_note("warning", e.content.get("message", ""))
    if outcome.cancelled:
        return _cancelled(r.error or "cancelled", r.duration_ms)
    exit_code = r.exit_code if r.exit_code or r.ok else 1
    return Ending(COMPLETED if outcome.ok else FAILED, exit_code, r.text, r.error,
                  r.duration_ms, r.usage, model=r.model or prepared.opts.model)


def _outcome(prepared: execute.Prepared, cancel: execute.Cancel,
             on_event: Optional[Callable[[ev.Event], None]],
             on_stderr: Optional[Callable[[str], None]]) -> execute.Outcome:
    if on_event is None:
        return execute.run(prepared, cancel=cancel, on_stderr=on_stderr)
    collected: List[execute.Outcome] = []
    events = execute.stream(prepared, cancel=cancel, outcome=collected, on_stderr=on_stderr)
    try:
        for event in events:
            on_event(event)
    finally:
        events.close()
    return collected[0]


def _events_of(on_progress: Optional[ProgressFn], item_events: bool,
               index: int) -> Optional[Callable[[ev.Event], None]]:
    """What reports item ``index``'s unified events, when they are asked for."""
    if on_progress is None or not item_events:
        return None
    return lambda event: on_progress("event", index, event)


def _notes_of(on_progress: Optional[ProgressFn], item_stderr: bool, index: int,
              backend: str) -> Optional[_NoteFn]:
    """What reports item ``index``'s stderr lines and warnings, when they are asked for."""
    if on_progress is None or not item_stderr:
        return None
    return lambda kind, text: on_progress(kind, index, Note(backend, text))


def _notify(on_progress: Optional[ProgressFn], kind: str, index: int,
            payload: ProgressPayload) -> None:
    if on_progress is not None:
        on_progress(kind, index, payload)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# -- parallel -------------------------------------------------------------------------------------


def run_parallel(tasks: Sequence[Dict[str, Any]], cfg: Config, max_parallel: int = 0,
                 fail_fast: bool = False, dry_run: bool = False,
                 policy: Optional[Policy] = None, cancel: Optional[execute.Cancel] = None,
                 on_progress: Optional[ProgressFn] = None,
                 item_events: bool = False, item_stderr: bool = False) -> ParallelSummary:
    """Run ``tasks`` (task dicts) with at most ``max_parallel`` at once (0 = config
    ``parallel.max_workers``), starting them in input order.

    Returns one ``TaskResult`` per task in input order (status completed|failed|cancelled; a
    dry run's carries ``dry_run``: the command). A task that cannot be prepared (backend not
    installed, bad workdir) fails alone. With ``fail_fast`` the first failure fires
    ``cancel``: running tasks are killed and the rest never start; both count as cancelled.
    """
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    n = len(tasks)
    prepared = [_prepare(t, cfg, policy, dry_run, item_events and not dry_run) for t in tasks]
    results: List[Optional[TaskResult]] = [None] * n
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

    def work(index: int) -> None:
        task = tasks[index]
        p, exc = prepared[index]
        if exc is not None:
            ending = _failed_to_prepare(exc)
        elif cancel.fired:
            ending = _cancelled(stop_reason[0] if stop_reason else "cancelled")
        else:
            _notify(on_progress, "started", index,
                    Started(index, p.backend.name, task.get("name") or task.get("id") or ""))
            ending = _execute(p, cancel, _events_of(on_progress, item_events, index),
                              _notes_of(on_progress, item_stderr, index, p.backend.name))
            if ending.status == FAILED:
                fail_fast_after(index)
            elif ending.status == CANCELLED and stop_reason:
                ending = ending._replace(error=stop_reason[0])
        results[index] = TaskResult(index, task.get("id", ""), task.get("name", ""),
                                    p.backend.name if p else task.get("backend", ""), ending)
        _notify(on_progress, "finished", index, results[index])

    if n:
        with ThreadPoolExecutor(max_workers=min(n, resolve_max_parallel(max_parallel, cfg)),
                                thread_name_prefix="clinvk-parallel") as pool:
            for future in [pool.submit(work, i) for i in range(n)]:
                future.result()
    return ParallelSummary([r for r in results if r is not None], _elapsed_ms(started))


# -- chain ----------------------------------------------------------------------------------------


def run_chain(steps: Sequence[Dict[str, Any]], cfg: Config, stop_on_failure: bool = True,
              pass_working_dir: bool = False, dry_run: bool = False,
              policy: Optional[Policy] = None, cancel: Optional[execute.Cancel] = None,
              on_progress: Optional[ProgressFn] = None,
              item_events: bool = False, item_stderr: bool = False) -> ChainSummary:
    """Run ``steps`` one after another; ``{{previous}}`` in a prompt becomes the previous
    step's output, and with ``pass_working_dir`` a step without a workdir runs in the
    previous step's.

    Returns the ``StepResult`` of every step that ran. The chain stops at a failure when
    ``stop_on_failure``, and always when ``cancel`` fires.
    """
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    results: List[StepResult] = []
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
        p, exc = _prepare(task, cfg, policy, dry_run, item_events and not dry_run)
        backend = p.backend.name if p else task.get("backend", "")
        _notify(on_progress, "started", i, Started(i, backend, step.get("name", "")))
        ending = _failed_to_prepare(exc) if exc is not None else \
            _execute(p, cancel, _events_of(on_progress, item_events, i),
                     _notes_of(on_progress, item_stderr, i, backend))
        result = StepResult(i + 1, step.get("name", ""), backend, ending)
        results.append(result)
        _notify(on_progress, "finished", i, result)
        # After a dry run there is no output to pass on: {{previous}} stays visible.
        previous_output = None if result.dry_run is not None else result.output
        previous_workdir = p.cwd if p else previous_workdir
        if result.status == CANCELLED or (result.status == FAILED and stop_on_failure):
            break
    return ChainSummary(len(steps), results, _elapsed_ms(started))


# -- compare --------------------------------------------------------------------------------------

_Planned = Tuple[int, str, Optional[execute.Prepared], Optional[execute.ExecError]]


def plan_compare(prompt: str, backends: Sequence[str], cfg: Config, model: str = "",
                 workdir: str = "", dry_run: bool = False,
                 options: Optional[Dict[str, Any]] = None, policy: Optional[Policy] = None,
                 stream: bool = False) -> Tuple[List[_Planned], List[Tuple[int, Skipped]]]:
    """What ``run_compare`` would run, before anything runs: ``(position, backend, prepared,
    refusal)`` per backend that stays in, and ``(position, Skipped)`` per backend left out
    (not installed, disabled). Raises ExecError as ``run_compare`` does when no backend is
    left or every one refuses the request for the same reason; a front end that accepts a
    compare now and runs it later asks this first, so it refuses what the run would.
    ``stream``: the runs are prepared in streaming mode."""
    runs: List[_Planned] = []
    skipped: List[Tuple[int, Skipped]] = []
    for position, name in enumerate(backends):
        task = dict(options or {}, backend=name, prompt=prompt, model=model, workdir=workdir)
        p, exc = _prepare(task, cfg, policy, dry_run, stream)
        if exc is not None and exc.kind in (execute.ErrorKind.NOT_INSTALLED,
                                            execute.ErrorKind.DISABLED):
            skipped.append((position, Skipped(name, str(exc))))
        else:
            runs.append((position, name, p, exc))
    if not runs:
        raise execute.ExecError(execute.ErrorKind.NOT_INSTALLED, "no backend left to compare: %s"
                                % "; ".join(s.reason for _, s in skipped))
    refusals = {str(exc) for _, _, _, exc in runs if exc is not None}
    if len(refusals) == 1 and all(exc is not None for _, _, _, exc in runs):
        raise runs[0][3]
    return runs, skipped


def run_compare(prompt: str, backends: Sequence[str], cfg: Config, model: str = "",
                workdir: str = "", sequential: bool = False, dry_run: bool = False,
                options: Optional[Dict[str, Any]] = None, policy: Optional[Policy] = None,
                cancel: Optional[execute.Cancel] = None,
                on_progress: Optional[ProgressFn] = None,
                max_parallel: int = 0, item_events: bool = False,
                item_stderr: bool = False) -> CompareSummary:
    """Ask every backend in ``backends`` the same prompt, all at once unless ``sequential``
    (or, with ``max_parallel``, at most that many at once: the run slots a server holds).

    ``model`` and ``workdir`` (and ``options``: further request fields such as
    approval_mode, max_turns, timeout) apply to every backend. A backend that is not
    installed or is disabled is skipped. Returns the backends that ran, their
    ``CompareResult`` in ``backends`` order, and the ``Skipped`` ones.

    Raises ExecError when no backend is left or when every backend refuses the request for
    the same reason (a bad workdir, say).
    """
    started = time.monotonic()
    cancel = cancel if cancel is not None else execute.Cancel()
    runs, skipped = plan_compare(prompt, backends, cfg, model, workdir, dry_run, options, policy,
                                 item_events and not dry_run)
    for position, skip in skipped:
        _notify(on_progress, "skipped", position, skip)
    results: List[Optional[CompareResult]] = [None] * len(runs)

    def work(index: int) -> None:
        position, name, p, exc = runs[index]
        if exc is not None:
            ending = _failed_to_prepare(exc)
        elif cancel.fired:
            ending = _cancelled("cancelled")
        else:
            _notify(on_progress, "started", position, Started(position, name, name))
            ending = _execute(p, cancel, _events_of(on_progress, item_events, position),
                              _notes_of(on_progress, item_stderr, position, name))
        results[index] = CompareResult(name, ending.model or (p.opts.model if p else model),
                                       ending)
        _notify(on_progress, "finished", position, results[index])

    width = 1 if sequential else min(len(runs), max_parallel or len(runs))
    if width == 1:
        for i in range(len(runs)):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="clinvk-compare") as pool:
            for future in [pool.submit(work, i) for i in range(len(runs))]:
                future.result()
    return CompareSummary(prompt, [name for _, name, _, _ in runs],
                          [r for r in results if r is not None], [s for _, s in skipped],
                          _elapsed_ms(started))
