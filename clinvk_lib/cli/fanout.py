"""``clinvk parallel``, ``clinvk chain`` and ``clinvk compare``: read the task or chain file,
run the ``orchestrate`` engine with live progress (``progress``), print the summary
(``render``) and, for parallel, write the results into ``--output-dir``.

Ctrl-C stops every running backend, prints what finished, and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import execute, miniyaml, orchestrate, render
from ..backends.base import NAMES
from ..execute import ErrorKind
from ..fanout_results import ParallelSummary, ProgressFn, ProgressPayload
from ..fsutil import write_atomically
from ..jsontext import dumps_pretty
from ..schema import Obj, ValidationError, validate
from ..shapes import ChainFile, ChainStep, CompareRequest, ParallelFile, ParallelTask
from .common import (EXIT_FAILED, EXIT_OK, Parser, UsageError, add_config_flag,
                     add_json_flags, add_profile_flag, add_run_flags, err, int_at_least,
                     load_config, parse, positive_seconds, read_prompt, wants_json, write,
                     write_json)
from .live import pass_stderr_through
from .progress import Progress, progress_on_stderr, run_interruptibly
from .run import exec_error_exit

TASK_FILE_HELP = """task file (JSON, or YAML in the config file's subset):
  {"tasks": [{"backend": "claude", "prompt": "review auth.py", "name": "auth"},
             {"backend": "codex", "prompt": "write tests for auth.py"}],
   "max_parallel": 2, "fail_fast": false, "output_dir": "out"}

%s
(backend and prompt are required; per-backend config defaults fill the rest)""" \
    % textwrap.fill("task fields: " + ", ".join(f.name for f in ParallelTask.fields), 79)

CHAIN_FILE_HELP = """chain file (JSON, or YAML in the config file's subset):
  {"steps": [{"name": "review", "backend": "claude", "prompt": "review auth.py"},
             {"name": "fix", "backend": "codex", "prompt": "fix these issues: {{previous}}"}],
   "stop_on_failure": true, "pass_working_dir": false}

%s
{{previous}} in a prompt is the previous step's output. Steps store no session.""" \
    % textwrap.fill("step fields: " + ", ".join(f.name for f in ChainStep.fields), 79)


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


def spec_usage_error(exc: ValidationError, name: str, lines: Dict[str, int]) -> UsageError:
    """The ValidationError as a UsageError naming the file, the line when it is known, the
    field's path and what was wrong (``tasks.yaml line 6: tasks[1].backend: expected ...``)."""
    line = _line_of(exc.path, lines)
    where = name + (" line %d" % line if line else "")
    return UsageError("%s: %s%s" % (where, exc.path + ": " if exc.path else "", exc.message))


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
               shape: Obj) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The file checked against ``shape`` strictly (a misspelt field is refused), with the
    same rules and messages as an HTTP body, and as written; a bad file is a UsageError."""
    data, lines, name = read_spec(path, what, example)
    try:
        return validate(shape, data, strict=True), data
    except ValidationError as exc:
        raise spec_usage_error(exc, name, lines)


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


def write_output_dir(path: str, tasks: Sequence[Dict[str, Any]],
                     summary: ParallelSummary) -> None:
    """``summary.json`` and one ``{"task", "result"}`` file per task, each written atomically."""
    for r in summary.results:
        task = tasks[r.index]
        _write_json_atomically(os.path.join(path, output_file_name(task, r.index, len(tasks))),
                               {"task": task, "result": r.to_dict()})
    _write_json_atomically(os.path.join(path, "summary.json"), summary.to_dict())


def _write_json_atomically(path: str, obj: Any) -> None:
    write_atomically(path, dumps_pretty(obj).encode("utf-8"), sync_dir=False)


# -- the commands ---------------------------------------------------------------------------------


def _add_file_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-f", "--file", metavar="PATH",
                   help="%s, JSON or YAML ('-' or none: read it from stdin)" % what)
    add_json_flags(p)
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="kill a backend run after this many seconds")
    add_profile_flag(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the exact commands that would run, run nothing")
    add_config_flag(p)


def _text_progress(progress: Optional[Progress]) -> ProgressFn:
    """The ``on_progress`` of a fan-out in text mode: the live progress when there is one,
    each backend's stderr lines and warnings on stderr named by backend (above the status
    line), and, without a terminal, each backend compare skips."""

    def on_progress(kind: str, index: int, payload: ProgressPayload) -> None:
        if kind in ("stderr", "warning"):
            if not payload.text.strip():
                return
            line = (render.backend_warning if kind == "warning"
                    else render.backend_stderr_line)(payload.backend, payload.text)
            if progress is not None:
                progress.note(line)
            else:
                pass_stderr_through(line)
        elif progress is not None:
            progress.update(kind, index, payload)
        elif kind == "skipped":
            err("warning: skipping %s: %s" % (payload.backend, payload.reason))

    return on_progress


def _with_run_flags(items: Sequence[Dict[str, Any]],
                    args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The tasks or steps of a file, each with the command line's --timeout and --profile
    when given."""
    flags = {k: getattr(args, k) for k in ("timeout", "profile") if getattr(args, k)}
    return [dict(item, **flags) for item in items]


def parallel_parser() -> Parser:
    """The parser of ``clinvk parallel``."""
    p = Parser(prog="clinvk parallel", usage="clinvk parallel [flags] [--file TASKS]",
               description="Run many tasks at once, each on its own backend; results are "
                           "printed in input order.",
               epilog=TASK_FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_flags(p, "task file")
    p.add_argument("--max-parallel", type=int_at_least(1), metavar="N",
                   help="tasks run at once (default: the file's max_parallel, else config "
                        "parallel.max_workers)")
    p.add_argument("--fail-fast", action="store_true",
                   help="after the first failure, stop running tasks and start no more")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no answers: only the results table")
    p.add_argument("--output-dir", metavar="DIR",
                   help="also write summary.json and one JSON file per task into DIR")
    return p


def parallel_command(argv: List[str]) -> int:
    """``clinvk parallel [--file TASKS]``: exit 1 when a task failed."""
    args = parse(parallel_parser(), argv)
    args.json = wants_json(args)
    cfg = load_config(args)
    spec, as_written = _load_spec(args.file, "task file", "tasks.json", ParallelFile)
    tasks = spec["tasks"]
    fail_fast = args.fail_fast or spec.get("fail_fast", cfg.get("parallel.fail_fast"))
    output_dir = args.output_dir or spec.get("output_dir", "")
    if output_dir:
        prepare_output_dir(output_dir)
    cancel = execute.Cancel()
    progress = progress_on_stderr(
        not (args.json or args.quiet), cfg,
        ["[%d/%d] %s %s" % (i + 1, len(tasks), t["backend"], render.task_label(t, i))
         for i, t in enumerate(tasks)])
    summary, interrupted = run_interruptibly(
        lambda: orchestrate.run_parallel(
            _with_run_flags(tasks, args), cfg,
            max_parallel=args.max_parallel or spec.get("max_parallel", 0),
            fail_fast=fail_fast,
            dry_run=args.dry_run or spec.get("dry_run", False), cancel=cancel,
            on_progress=None if args.json or args.quiet else _text_progress(progress),
            item_stderr=not (args.json or args.quiet)),
        cancel, progress)
    code = EXIT_FAILED if summary.failed else EXIT_OK
    if output_dir:
        try:
            write_output_dir(output_dir, as_written["tasks"], summary)
        except OSError as exc:
            err("cannot write the results to %s: %s" % (output_dir, exc.strerror or exc))
            code = EXIT_FAILED
    if args.json:
        write_json(summary.to_dict())
    else:
        write(render.format_parallel_text(summary, tasks, args.quiet,
                                          bool(cfg.get("parallel.aggregate_output"))))
    if interrupted is not None:
        raise interrupted
    return code


def chain_parser() -> Parser:
    """The parser of ``clinvk chain``."""
    p = Parser(prog="clinvk chain", usage="clinvk chain [flags] [--file CHAIN]",
               description="Run steps one after another; {{previous}} in a step's prompt is "
                           "replaced by the previous step's output.",
               epilog=CHAIN_FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_flags(p, "chain file")
    return p


def chain_command(argv: List[str]) -> int:
    """``clinvk chain [--file CHAIN]``: exit 1 when a step failed."""
    args = parse(chain_parser(), argv)
    args.json = wants_json(args)
    cfg = load_config(args)
    spec, _ = _load_spec(args.file, "chain file", "chain.json", ChainFile)
    steps = spec["steps"]
    cancel = execute.Cancel()
    progress = progress_on_stderr(
        not args.json, cfg,
        ["[%d/%d] %s(%s)" % (i + 1, len(steps), s["name"] + " " if s.get("name") else "",
                             s["backend"])
         for i, s in enumerate(steps)])
    summary, interrupted = run_interruptibly(
        lambda: orchestrate.run_chain(
            _with_run_flags(steps, args), cfg,
            stop_on_failure=spec.get("stop_on_failure", True),
            pass_working_dir=spec["pass_working_dir"],
            dry_run=args.dry_run or spec.get("dry_run", False), cancel=cancel,
            on_progress=None if args.json else _text_progress(progress),
            item_stderr=not args.json),
        cancel, progress)
    if args.json:
        write_json(summary.to_dict())
    else:
        write(render.format_chain_text(summary))
    if interrupted is not None:
        raise interrupted
    return EXIT_FAILED if summary.failed_step else EXIT_OK


def compare_parser() -> Parser:
    """The parser of ``clinvk compare``."""
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
    add_json_flags(p)
    add_run_flags(p, backend=False)
    return p


def compare_command(argv: List[str]) -> int:
    """``clinvk compare (--backends B1,B2 | --all-backends) PROMPT``: exit 1 when a backend
    did not complete."""
    args = parse(compare_parser(), argv)
    args.json = wants_json(args)
    if args.backends and args.all_backends:
        raise UsageError("compare: give --backends or --all-backends, not both")
    if not args.backends and not args.all_backends:
        raise UsageError("compare: say which backends: --backends claude,codex or "
                         "--all-backends")
    cfg = load_config(args)
    if args.all_backends:
        backends = orchestrate.all_installed_backends(cfg)
        if not backends:
            return exec_error_exit(execute.ExecError(
                ErrorKind.NOT_INSTALLED, "no backend to compare: none of %s is installed (on "
                "PATH) and enabled" % ", ".join(NAMES)))
    else:
        backends = [b.strip() for b in args.backends.split(",")]
        if not all(backends):
            raise UsageError("--backends: empty name in %r (expected e.g. claude,codex)"
                             % args.backends)
    prompt = read_prompt(args.prompt, shape_checks_blank=True)
    try:
        validate(CompareRequest, {"prompt": prompt, "backends": backends})
    except ValidationError as exc:
        raise UsageError("compare: %s" % exc)
    options = {k: getattr(args, k) for k in ("approval_mode", "sandbox_mode", "max_turns",
                                             "system_prompt", "verbose", "timeout", "profile")
               if getattr(args, k)}
    cancel = execute.Cancel()
    progress = progress_on_stderr(not args.json, cfg, backends)
    try:
        summary, interrupted = run_interruptibly(
            lambda: orchestrate.run_compare(
                prompt, backends, cfg, model=args.model or "", workdir=args.workdir or "",
                sequential=args.sequential, dry_run=bool(args.dry_run), options=options,
                cancel=cancel, on_progress=_text_progress(progress),
                item_stderr=not args.json),
            cancel, progress)
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    if args.json:
        write_json(summary.to_dict())
    else:
        write(render.format_compare_text(summary))
    if interrupted is not None:
        raise interrupted
    return EXIT_OK if all(r.ok for r in summary.results) else EXIT_FAILED
