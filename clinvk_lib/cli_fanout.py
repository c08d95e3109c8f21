"""``clinvk parallel``, ``clinvk chain`` and ``clinvk compare``: read the task or chain file,
run the ``orchestrate`` engine, show live progress on a terminal and print the summary.

Progress (a status line redrawn in place on stderr, and one line per finished item) appears
only when stderr is a terminal and neither ``--json`` nor ``--quiet`` is given. Ctrl-C stops
every running backend, prints what finished, and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import execute, miniyaml, orchestrate
from .cli import (EXIT_FAILED, EXIT_OK, Interrupted, Parser, UsageError, _err,
                  _int_at_least, _json_out, _parse, _positive_float, _read_prompt, _write,
                  add_config_flag, add_run_flags, exec_error_exit, load_config)

TICK_SECONDS = 0.2      # how often the status line's elapsed time is redrawn

TASK_FILE_HELP = """task file (JSON, or YAML in the config file's subset):
  {"tasks": [{"backend": "claude", "prompt": "review auth.py", "name": "auth"},
             {"backend": "codex", "prompt": "write tests for auth.py"}],
   "max_parallel": 2, "fail_fast": false, "output_dir": "out"}

%s
(backend and prompt are required; per-backend config defaults fill the rest)""" \
    % textwrap.fill("task fields: " + ", ".join(orchestrate.TASK_FIELDS), 79)

CHAIN_FILE_HELP = """chain file (JSON, or YAML in the config file's subset):
  {"steps": [{"name": "review", "backend": "claude", "prompt": "review auth.py"},
             {"name": "fix", "backend": "codex", "prompt": "fix these issues: {{previous}}"}],
   "stop_on_failure": true, "pass_working_dir": false}

%s
{{previous}} in a prompt is the previous step's output. Steps store no session.""" \
    % textwrap.fill("step fields: " + ", ".join(orchestrate.STEP_FIELDS), 79)


# -- reading a task or chain file -----------------------------------------------------------------


def read_spec(path: Optional[str], what: str, example: str) -> Tuple[Any, Dict[str, int], str]:
    """The parsed file (``-`` or no path: stdin when it is not a terminal), the line of every
    key when it was YAML, and the name to use in messages."""
    if path and path != "-":
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise UsageError("cannot read %s: %s" % (path, exc.strerror or exc))
        name = path
    else:
        if path is None and (sys.stdin is None or sys.stdin.isatty()):
            raise UsageError("no %s: give --file %s, or pipe it in (clinvk ... < %s)"
                             % (what, example, example))
        raw = sys.stdin.buffer.read()
        name = "<stdin>"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError("%s is not valid UTF-8" % name)
    data, lines = parse_spec_text(text, name)
    return data, lines, name


def parse_spec_text(text: str, name: str) -> Tuple[Any, Dict[str, int]]:
    """JSON when the text starts with ``{`` or ``[``, else the YAML subset (with key lines)."""
    if not text.strip():
        raise UsageError("%s is empty" % name)
    if text.lstrip()[0] in "{[":
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as exc:
            raise UsageError("%s line %d column %d: invalid JSON: %s"
                             % (name, exc.lineno, exc.colno, exc.msg))
    try:
        return miniyaml.loads_with_lines(text, name)
    except miniyaml.YAMLError as exc:
        raise UsageError(str(exc))


def spec_usage_error(exc: orchestrate.SpecError, name: str, lines: Dict[str, int]) -> UsageError:
    """The SpecError as a UsageError naming the file, and the line when it is known."""
    line = _line_of(exc.field, lines)
    return UsageError("%s%s: %s" % (name, " line %d" % line if line else "", exc))


def _line_of(field: str, lines: Dict[str, int]) -> int:
    # "tasks[2].backend" is "tasks.2.backend" in the YAML reader's key lines; a missing key
    # is reported at the first line of its item.
    path = re.sub(r"\[(\d+)\]", r".\1", field)
    while path:
        if path in lines:
            return lines[path]
        inside = [n for key, n in lines.items() if key.startswith(path + ".")]
        if inside:
            return min(inside)
        path = path.rpartition(".")[0]
    return 0


def _load_spec(path: Optional[str], what: str, example: str,
               validate: Callable[[Any], Dict[str, Any]]) -> Dict[str, Any]:
    data, lines, name = read_spec(path, what, example)
    try:
        return validate(data)
    except orchestrate.SpecError as exc:
        raise spec_usage_error(exc, name, lines)


# -- live progress --------------------------------------------------------------------------------


def use_color(cfg) -> bool:
    """Colour per config ``output.color``; ``auto`` means unless NO_COLOR is set (no-color.org)."""
    choice = cfg.get("output.color")
    if choice == "auto":
        return not os.environ.get("NO_COLOR")
    return choice == "always"


_STATUS_WORDS = {"completed": "done", "failed": "failed", "cancelled": "cancelled",
                 "skipped": "skipped"}
_STATUS_COLORS = {"completed": "32", "failed": "31", "cancelled": "33", "skipped": "33"}


class Progress:
    """Progress on a terminal: one line per finished item, and below them a status line
    (running / done / failed / waiting, elapsed) redrawn in place. Safe to call from the
    engine's worker threads."""

    def __init__(self, stream, labels: Sequence[str], color: bool) -> None:
        self.stream = stream
        self.labels = list(labels)
        self.color = color
        self.started = time.monotonic()
        self.running: List[int] = []
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self.lock = threading.Lock()

    def update(self, kind: str, index: int, payload: Dict[str, Any]) -> None:
        """The engine's ``on_progress`` callback."""
        with self.lock:
            if kind == "started":
                self.running.append(index)
            elif kind in ("finished", "skipped"):
                if index in self.running:
                    self.running.remove(index)
                if kind == "skipped":
                    payload = {"status": "skipped", "error": payload.get("reason", "")}
                status = payload.get("status", "failed")
                self.counts[status] = self.counts.get(status, 0) + 1
                self._clear()
                self.stream.write(self._finished_line(index, payload) + "\n")
            self._draw()

    def tick(self) -> None:
        with self.lock:
            self._draw()

    def close(self) -> None:
        with self.lock:
            self._clear()
            self.stream.flush()

    def _finished_line(self, index: int, r: Dict[str, Any]) -> str:
        status = r.get("status", "failed")
        word = "%-9s" % _STATUS_WORDS.get(status, status)
        if self.color:
            word = "\x1b[%sm%s\x1b[0m" % (_STATUS_COLORS.get(status, "0"), word)
        line = "%s %s" % (word, self.labels[index])
        if status != "skipped":
            line += "  " + _seconds(r.get("duration_ms", 0))
        if status != "completed" and r.get("error"):
            line += "  " + _one_line(r["error"], 100)
        return line

    def _draw(self) -> None:
        finished = sum(self.counts.values())
        parts = []
        if self.running:
            parts.append("running %s" % ", ".join(self.labels[i] for i in self.running))
        parts.append("done %d" % self.counts["completed"])
        if self.counts["failed"]:
            parts.append("failed %d" % self.counts["failed"])
        if self.counts["cancelled"]:
            parts.append("cancelled %d" % self.counts["cancelled"])
        waiting = len(self.labels) - finished - len(self.running)
        if waiting > 0:
            parts.append("waiting %d" % waiting)
        parts.append("%.1fs elapsed" % (time.monotonic() - self.started))
        width = _terminal_width(self.stream) - 1
        # One physical line, so \r can redraw it: a wrapped line could not be erased.
        self.stream.write("\r\x1b[K" + _cut(" | ".join(parts), width))
        self.stream.flush()

    def _clear(self) -> None:
        self.stream.write("\r\x1b[K")


def _terminal_width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def _progress(show: bool, cfg, labels: Sequence[str]) -> Optional[Progress]:
    if not show or not sys.stderr.isatty():
        return None
    return Progress(sys.stderr, labels, use_color(cfg))


def run_interruptibly(work: Callable[[], Dict[str, Any]], cancel: execute.Cancel,
                      progress: Optional[Progress]
                      ) -> Tuple[Dict[str, Any], Optional[BaseException]]:
    """Run ``work()`` in a thread while this one redraws progress. On Ctrl-C (or SIGTERM)
    fire ``cancel`` and still wait for ``work`` to return what finished; returns
    ``(summary, the interrupt or None)`` so the caller prints the summary, then re-raises."""
    box: Dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["summary"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            box["error"] = exc
        finally:
            done.set()

    # An Event, not Thread.join(): a join interrupted by Ctrl-C may wrongly report the
    # thread as finished afterwards (seen on CPython 3.11).
    threading.Thread(target=target, name="clinvk-fanout", daemon=True).start()
    interrupted: Optional[BaseException] = None
    try:
        while not done.wait(TICK_SECONDS):
            if progress is not None:
                progress.tick()
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = exc
        cancel.fire()
        done.wait()
    finally:
        if progress is not None:
            progress.close()
    if "error" in box:
        raise box["error"]
    return box["summary"], interrupted


# -- text rendering -------------------------------------------------------------------------------


def _seconds(ms: int) -> str:
    return "%.2fs" % (ms / 1000.0)


def _one_line(text: str, width: int) -> str:
    return _cut(" ".join((text or "").split()), width)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."


def _tokens(usage: Dict[str, Any]) -> str:
    return "%d in / %d out tokens" % (usage.get("input_tokens", 0), usage.get("output_tokens", 0))


def format_block(title: str, r: Dict[str, Any]) -> str:
    """One item's answer under a header naming it, its status, duration and tokens."""
    if "dry_run" in r:
        facts = ["dry run"]
    else:
        facts = ["%s in %s" % (r["status"], _seconds(r["duration_ms"]))]
    usage = r.get("usage") or {}
    if usage.get("input_tokens") or usage.get("output_tokens"):
        facts.append(_tokens(usage))
    out = ["=== %s: %s ===\n" % (title, ", ".join(facts))]
    if "dry_run" in r:
        out.append("would run: %s\n       in: %s\n    stdin: %s\n"
                   % (shlex.join(r["dry_run"]["command"]), r["dry_run"]["workdir"],
                      r["dry_run"]["stdin"]))
    if r.get("output"):
        out.append(r["output"] if r["output"].endswith("\n") else r["output"] + "\n")
    if r.get("error"):
        out.append("error: %s\n" % r["error"])
    return "".join(out) + "\n"


def _task_label(task: Dict[str, Any], index: int) -> str:
    return task.get("name") or task.get("id") or _one_line(task.get("prompt", ""), 40) \
        or "task %d" % (index + 1)


def format_parallel_text(summary: Dict[str, Any], tasks: Sequence[Dict[str, Any]],
                         quiet: bool, table: bool) -> str:
    """Each task's answer in input order (not with ``quiet``), then a table (with ``table``
    or ``quiet``; errors under failed rows when the answers are hidden), then the totals."""
    out = []
    if not quiet:
        for r in summary["results"]:
            title = "[%d] %s (%s)" % (r["index"] + 1, _task_label(tasks[r["index"]], r["index"]),
                                      r["backend"])
            out.append(format_block(title, r))
    if table or quiet:
        out.append("%-4s %-8s %-10s %9s %7s  %s\n" % ("#", "BACKEND", "STATUS", "TIME", "TOKENS",
                                                     "TASK"))
        for r in summary["results"]:
            usage = r.get("usage") or {}
            tokens = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            out.append("%-4d %-8s %-10s %9s %7s  %s\n" % (
                r["index"] + 1, r["backend"], r["status"], _seconds(r["duration_ms"]),
                tokens or "-", _cut(_task_label(tasks[r["index"]], r["index"]), 36)))
            if quiet and r["error"]:
                out.append("     error: %s\n" % _one_line(r["error"], 200))
    out.append("%d tasks: %d completed, %d failed, %d cancelled in %s\n" % (
        summary["total_tasks"], summary["completed"], summary["failed"], summary["cancelled"],
        _seconds(summary["total_duration_ms"])))
    return "".join(out)


def format_chain_text(summary: Dict[str, Any]) -> str:
    """Each step's answer in order, then one line saying how far the chain got."""
    n = summary["total_steps"]
    out = [format_block("step %d/%d%s (%s)" % (r["step"], n, " " + r["name"] if r["name"] else "",
                                               r["backend"]), r)
           for r in summary["results"]]
    line = "chain: %d of %d steps completed in %s" % (summary["completed_steps"], n,
                                                       _seconds(summary["total_duration_ms"]))
    if summary["failed_step"]:
        line += "; step %d failed" % summary["failed_step"]
    elif len(summary["results"]) < n:
        line += "; stopped"
    return "".join(out) + line + "\n"


def format_compare_text(summary: Dict[str, Any]) -> str:
    """Each backend's answer under its name (and model), then the totals."""
    out = [format_block("%s%s" % (r["backend"], " (%s)" % r["model"] if r["model"] else ""), r)
           for r in summary["results"]]
    counts = {}
    for r in summary["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    out.append("compared %d backend%s in %s: %s\n" % (
        len(summary["results"]), "" if len(summary["results"]) == 1 else "s",
        _seconds(summary["total_duration_ms"]),
        ", ".join("%d %s" % (counts[s], s) for s in ("completed", "failed", "cancelled")
                  if counts.get(s))))
    return "".join(out)


# -- --output-dir ---------------------------------------------------------------------------------


def prepare_output_dir(path: str) -> str:
    """Create the directory (0700) before anything runs, so a bad path costs no backend run."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError("--output-dir %s: %s" % (path, exc.strerror or exc))
    if not os.path.isdir(path):
        raise UsageError("--output-dir %s: not a directory" % path)
    return path


def output_file_name(task: Dict[str, Any], index: int, total: int) -> str:
    """``<NNN>_<id, name or task-N>.json``; NNN is the 1-based index, zero-padded."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", (task.get("id") or task.get("name") or "").strip())
    base = base.strip("_")[:64] or "task-%d" % (index + 1)
    return "%0*d_%s.json" % (max(3, len(str(total))), index + 1, base)


def write_output_dir(path: str, tasks: Sequence[Dict[str, Any]], summary: Dict[str, Any]) -> None:
    """``summary.json`` and one ``{"task", "result"}`` file per task, each written atomically."""
    for r in summary["results"]:
        task = tasks[r["index"]]
        _write_json_atomically(os.path.join(path, output_file_name(task, r["index"], len(tasks))),
                               {"task": task, "result": r})
    _write_json_atomically(os.path.join(path, "summary.json"), summary)


def _write_json_atomically(path: str, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the commands ---------------------------------------------------------------------------------


def _add_file_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-f", "--file", metavar="PATH",
                   help="%s, JSON or YAML ('-' or none: read it from stdin)" % what)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="kill a backend run after this many seconds")
    p.add_argument("--dry-run", action="store_true",
                   help="print the exact commands that would run, run nothing")
    add_config_flag(p)


def _with_timeout(items: Sequence[Dict[str, Any]],
                  timeout: Optional[float]) -> List[Dict[str, Any]]:
    return [dict(item, timeout=timeout) if timeout else item for item in items]


def cmd_parallel(argv: List[str]) -> int:
    p = Parser(prog="clinvk parallel", usage="clinvk parallel [flags] [--file TASKS]",
               description="Run many tasks at once, each on its own backend; results are "
                           "printed in input order.",
               epilog=TASK_FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_flags(p, "task file")
    p.add_argument("--max-parallel", type=_int_at_least(1), metavar="N",
                   help="tasks run at once (default: the file's max_parallel, else config "
                        "parallel.max_workers)")
    p.add_argument("--fail-fast", action="store_true",
                   help="after the first failure, stop running tasks and start no more")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no answers: only the results table")
    p.add_argument("--output-dir", metavar="DIR",
                   help="also write summary.json and one JSON file per task into DIR")
    args = _parse(p, argv)
    cfg = load_config(args)
    spec = _load_spec(args.file, "task file", "tasks.json", orchestrate.validate_parallel_spec)
    tasks = spec["tasks"]
    fail_fast = args.fail_fast or (cfg.get("parallel.fail_fast") if spec["fail_fast"] is None
                                   else spec["fail_fast"])
    output_dir = args.output_dir or spec["output_dir"]
    if output_dir:
        prepare_output_dir(output_dir)
    cancel = execute.Cancel()
    progress = _progress(not (args.json or args.quiet), cfg,
                         ["[%d/%d] %s %s" % (i + 1, len(tasks), t["backend"], _task_label(t, i))
                          for i, t in enumerate(tasks)])
    summary, interrupted = run_interruptibly(
        lambda: orchestrate.run_parallel(
            _with_timeout(tasks, args.timeout), cfg,
            max_parallel=args.max_parallel or spec["max_parallel"],
            fail_fast=fail_fast,
            dry_run=args.dry_run, cancel=cancel,
            on_progress=progress.update if progress else None),
        cancel, progress)
    code = EXIT_FAILED if summary["failed"] else EXIT_OK
    if output_dir:
        try:
            write_output_dir(output_dir, tasks, summary)
        except OSError as exc:
            _err("cannot write the results to %s: %s" % (output_dir, exc.strerror or exc))
            code = EXIT_FAILED
    if args.json:
        _json_out(summary)
    else:
        _write(format_parallel_text(summary, tasks, args.quiet,
                                    bool(cfg.get("parallel.aggregate_output"))))
    if interrupted is not None:
        raise interrupted
    return code


def cmd_chain(argv: List[str]) -> int:
    p = Parser(prog="clinvk chain", usage="clinvk chain [flags] [--file CHAIN]",
               description="Run steps one after another; {{previous}} in a step's prompt is "
                           "replaced by the previous step's output.",
               epilog=CHAIN_FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_flags(p, "chain file")
    args = _parse(p, argv)
    cfg = load_config(args)
    spec = _load_spec(args.file, "chain file", "chain.json", orchestrate.validate_chain_spec)
    steps = spec["steps"]
    cancel = execute.Cancel()
    progress = _progress(not args.json, cfg,
                         ["[%d/%d] %s(%s)" % (i + 1, len(steps),
                                             s["name"] + " " if s.get("name") else "", s["backend"])
                          for i, s in enumerate(steps)])
    summary, interrupted = run_interruptibly(
        lambda: orchestrate.run_chain(
            _with_timeout(steps, args.timeout), cfg,
            stop_on_failure=spec["stop_on_failure"] is not False,
            pass_working_dir=spec["pass_working_dir"], dry_run=args.dry_run, cancel=cancel,
            on_progress=progress.update if progress else None),
        cancel, progress)
    if args.json:
        _json_out(summary)
    else:
        _write(format_chain_text(summary))
    if interrupted is not None:
        raise interrupted
    return EXIT_FAILED if summary["failed_step"] else EXIT_OK


def cmd_compare(argv: List[str]) -> int:
    p = Parser(prog="clinvk compare",
               usage="clinvk compare (--backends B1,B2 | --all-backends) [flags] [--] PROMPT",
               description="Ask several backends the same prompt and show the answers side by "
                           "side. The prompt may also come on stdin.")
    p.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    p.add_argument("--backends", metavar="B1,B2",
                   help="comma-separated backends, e.g. claude,codex")
    p.add_argument("--all-backends", action="store_true",
                   help="every installed backend that is not disabled in the config")
    p.add_argument("--sequential", action="store_true",
                   help="one backend after the other instead of all at once")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_run_flags(p, backend=False)
    args = _parse(p, argv)
    if args.backends and args.all_backends:
        raise UsageError("clinvk compare: give --backends or --all-backends, not both")
    if not args.backends and not args.all_backends:
        raise UsageError("clinvk compare: say which backends: --backends claude,codex or "
                         "--all-backends")
    cfg = load_config(args)
    if args.all_backends:
        backends = orchestrate.all_installed_backends(cfg)
        if not backends:
            return exec_error_exit(execute.ExecError(
                "not_installed", "no backend to compare: none of claude, codex, gemini is "
                "installed (on PATH) and enabled"))
    else:
        backends = [b.strip() for b in args.backends.split(",")]
        if not all(backends):
            raise UsageError("--backends: empty name in %r (expected e.g. claude,codex)"
                             % args.backends)
    prompt = _read_prompt(args.prompt)
    options = {k: getattr(args, k) for k in ("approval_mode", "sandbox_mode", "max_turns",
                                             "system_prompt", "verbose", "timeout")
               if getattr(args, k)}
    cancel = execute.Cancel()
    progress = _progress(not args.json, cfg, backends)

    def on_progress(kind: str, index: int, payload: Dict[str, Any]) -> None:
        if progress is not None:
            progress.update(kind, index, payload)
        elif kind == "skipped":
            _err("warning: skipping %s: %s" % (payload["backend"], payload["reason"]))

    try:
        summary, interrupted = run_interruptibly(
            lambda: orchestrate.run_compare(
                prompt, backends, cfg, model=args.model or "", workdir=args.workdir or "",
                sequential=args.sequential, dry_run=bool(args.dry_run), options=options,
                cancel=cancel, on_progress=on_progress),
            cancel, progress)
    except orchestrate.SpecError as exc:
        raise UsageError("clinvk compare: %s" % exc)
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    if args.json:
        _json_out(summary)
    else:
        _write(format_compare_text(summary))
    if interrupted is not None:
        raise interrupted
    failed = any(r["status"] != "completed" for r in summary["results"])
    return EXIT_FAILED if failed else EXIT_OK
