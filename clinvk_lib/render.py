"""Everything a person or a model reads about a run, a session or the configuration: the
terminal tables and summaries of the CLI, the text of the MCP tools' results, the dry-run
"would run" lines and the stable JSON renderings.

Plain data in, text (or JSON-ready dicts) out: nothing here prints, runs or reads a file, so
the CLI and the MCP server word every fact the same way. Objects come duck-typed (an
``execute.Outcome``, a ``session_record.Session``) or typed (the fan-out results of
``fanout_results``, named for type checkers only), so this module imports nothing of clinvk's
at run time but the text helpers every layer shares (``textutil``).
"""

from __future__ import annotations

import calendar
import json
import shlex
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Sequence, Tuple

from .textutil import cut

if TYPE_CHECKING:
    from .fanout_results import (ChainSummary, CompareSummary, ItemResult, ParallelSummary,
                                 Skipped)

# -- small pieces --------------------------------------------------------------------------------


def seconds(ms: int) -> str:
    """``1234`` -> ``"1.23s"``."""
    return "%.2fs" % (ms / 1000.0)


def short_count(n: int) -> str:
    """A count in at most 4 columns: ``"-"`` for 0, ``"250k"``, ``"12M"``."""
    if n >= 10_000_000:
        return "%dM" % (n // 1_000_000)
    if n >= 100_000:
        return "%dk" % (n // 1000)
    return str(n) if n else "-"


def age(ts: str, now: Optional[float] = None) -> str:
    """'just now', '5m ago', '3h ago', '2d ago', or the date, for an RFC 3339 UTC time ('?'
    when it is not one). The fields are sliced, not parsed: a 10,000-row listing calls this
    once per row."""
    try:
        t = calendar.timegm((int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                             int(ts[14:16]), int(ts[17:19]), 0, 0, 0))
    except (ValueError, TypeError, IndexError):
        return "?"
    secs = (time.time() if now is None else now) - t
    if secs < 60:
        return "just now"
    if secs < 3600:
        return "%dm ago" % (secs // 60)
    if secs < 86400:
        return "%dh ago" % (secs // 3600)
    if secs < 7 * 86400:
        return "%dd ago" % (secs // 86400)
    return ts[:10]


# -- one run -------------------------------------------------------------------------------------


def would_run(command: Sequence[str]) -> str:
    """``would run: ARGV`` with the argv shell-quoted, so it can be pasted into a shell."""
    return "would run: " + shlex.join(command)


def dry_run_text(info: Dict[str, Any]) -> str:
    """A dry run (``Prepared.describe()``): the command, where it would run, what goes to its
    stdin, and the session it continues when there is one."""
    text = "%s\n       in: %s\n    stdin: %s\n" % (would_run(info["command"]), info["workdir"],
                                                  info["stdin"])
    if info.get("session_id"):
        text += "  session: %s (continued)\n" % info["session_id"]
    return text


def outcome_to_json(outcome: Any) -> Dict[str, Any]:
    """The stable ``-o json`` object of a finished run (documented in the README), also the
    structured result of the MCP ``clinvk_prompt`` tool."""
    r = outcome.result
    d = {
        "backend": r.backend,
        "content": r.text,
        "session_id": outcome.session_id,
        "backend_session_id": r.backend_session_id,
        "model": r.model,
        "duration_ms": r.duration_ms,
        "exit_code": r.exit_code if r.exit_code or r.ok else 1,
        "usage": r.usage.to_dict(),
    }
    if r.error:
        d["error"] = r.error
    return d


def reply_text(output: str, error: str, backend: str) -> str:
    """A run's reply followed by its failure, as one text (for a model)."""
    if not error:
        return output
    failure = "%s failed: %s" % (backend, error)
    return "%s\n\n%s" % (output.rstrip(), failure) if output.strip() else failure


def run_facts(result: Any, tokens: bool, timing: bool) -> str:
    """``[tokens: 12 in, 34 out, time: 1.20s]`` (each part when asked for), or ""."""
    facts = []
    if tokens and result.usage:
        facts.append("tokens: %d in, %d out" % (result.usage.input_tokens,
                                                result.usage.output_tokens))
    if timing:
        facts.append("time: %.2fs" % (result.duration_ms / 1000.0))
    return "[%s]\n" % ", ".join(facts) if facts else ""


# -- sessions ------------------------------------------------------------------------------------


def session_list_json(found: Sequence[Any], total: int, limit: int,
                      offset: int) -> Dict[str, Any]:
    """``{sessions, total, limit, offset}``: one page of a session listing."""
    return {"sessions": [s.to_dict() for s in found], "total": total, "limit": limit,
            "offset": offset}


def format_session_table(found: Sequence[Any], total: int, offset: int) -> str:
    """At most 79 columns: id, backend, status, last used, turns, tokens, title; a last line
    says how many are not shown."""
    if not found:
        return "no sessions at offset %d (of %d)\n" % (offset, total) if total else \
            "no sessions\n"
    now = time.time()
    lines = ["%-12s %-6s %-9s %-10s %5s %7s  %s" % ("ID", "BACKEND", "STATUS", "LAST USED",
                                                    "TURNS", "TOKENS", "TITLE")]
    for s in found:
        u = s.token_usage or {}
        tokens = (u.get("input_tokens", 0) or 0) + (u.get("output_tokens", 0) or 0)
        lines.append("%-12s %-6s %-9s %-10s %5d %7s  %s" % (
            s.id[:12], s.backend[:7], (s.status or "")[:9], age(s.last_used, now), s.turn_count,
            short_count(tokens), cut(s.title or s.initial_prompt, 21)))
    if total > len(found):
        lines.append("(%d of %d shown; use --limit/--offset)" % (len(found), total))
    return "\n".join(lines) + "\n"


def format_session(s: Any) -> str:
    """One session, one ``Name: value`` line per fact it has (empty facts are left out)."""
    d = s.to_dict()
    rows = [("ID", d["id"]), ("Backend", d["backend"]),
            ("Backend session", d.get("backend_session_id")),
            ("Status", d.get("status")), ("Model", d.get("model")), ("Title", d.get("title")),
            ("Working dir", d.get("working_dir")), ("Created", d.get("created_at")),
            ("Last used", "%s (%s)" % (d.get("last_used"), age(d.get("last_used", "")))),
            ("Turns", d.get("turn_count")), ("Tags", ", ".join(d.get("tags") or [])),
            ("Last error", d.get("last_error"))]
    u = d.get("token_usage") or {}
    rows.append(("Tokens", "%d in, %d out, %d cached, %d reasoning" % (
        u.get("input_tokens", 0), u.get("output_tokens", 0), u.get("cached_tokens", 0),
        u.get("reasoning_tokens", 0))))
    for k, v in sorted((d.get("metadata") or {}).items()):
        rows.append(("meta." + k, v))
    rows.append(("Initial prompt", cut(d.get("initial_prompt", ""), 200)))
    return "".join("%-16s %s\n" % (k + ":", v) for k, v in rows if v not in (None, "", []))


# -- backends and configuration ------------------------------------------------------------------


def format_backends_table(rows: Iterable[Dict[str, Any]]) -> str:
    """``backends.probe.probe_all`` as a terminal table: name, state, path, version."""
    out = []
    for b in rows:
        state = "installed" if b["available"] else "not installed"
        if not b["enabled"]:
            state += ", disabled"
        out.append("%-7s %-22s %s%s\n" % (b["name"], state, b["path"] or "-",
                                          "  (%s)" % b["version"] if b["version"] else ""))
    return "".join(out)


def format_backends_text(rows: Iterable[Dict[str, Any]]) -> str:
    """``backends.probe.probe_all`` as one sentence-like line per backend (for a model)."""
    lines = []
    for b in rows:
        state = "installed" if b["available"] else "not installed"
        if not b["enabled"]:
            state += ", disabled in the configuration"
        lines.append("%s: %s%s%s" % (b["name"], state, " at %s" % b["path"] if b["path"] else "",
                                     " (%s)" % b["version"] if b["version"] else ""))
    return "\n".join(lines)


def format_doctor(rows: Iterable[Dict[str, Any]]) -> str:
    """``clinvk doctor``'s report: per backend a line with its state, command and version,
    then how it authenticates, why it cannot run, its warnings and its probe, indented."""
    out = []
    for b in rows:
        state = "ok" if b["usable"] else "disabled" if not b["enabled"] else "NOT USABLE"
        version = b["version"] and "%s%s" % (b["version"], {
            True: "  (tested)", False: "  (outside tested %s)" % b["tested_versions"]}.get(
                b["version_tested"], ""))
        out.append("%-9s %-11s %s%s\n" % (b["name"], state, b["command"] or "-",
                                          "  " + version if version else ""))
        details = [("auth", b["auth"]), ("reason", b["reason"])]
        details += [("warning", w) for w in b["warnings"]]
        probe = b.get("probe")
        if probe:
            details.append(("probe", "ok: %s" % probe["reply"] if probe["ok"]
                            else "failed: %s" % probe["error"]))
        out += ["          %-8s %s\n" % (label + ":", text) for label, text in details if text]
    return "".join(out)


def format_settings(path: str, rows: Sequence[Tuple[str, Any, str, str]]) -> str:
    """``Config.rows()`` as ``key  value-as-JSON  (source)`` lines under the file's path."""
    width = max(len(k) for k, _v, _s, _m in rows)
    return "# %s\n" % path + "".join("%-*s  %-28s  (%s)\n" % (width, k, json.dumps(v), src)
                                     for k, v, src, _meaning in rows)


# -- fan-out summaries ---------------------------------------------------------------------------


def task_label(task: Dict[str, Any], index: int) -> str:
    """What to call a task: its name, its id, the start of its prompt, or ``task N``."""
    return task.get("name") or task.get("id") or cut(task.get("prompt", ""), 40) \
        or "task %d" % (index + 1)


def format_block(title: str, r: ItemResult) -> str:
    """One item's answer under a header naming it, its status, duration and tokens."""
    if r.dry_run is not None:
        facts = ["dry run"]
    else:
        facts = ["%s in %s" % (r.status, seconds(r.duration_ms))]
    if r.usage.input_tokens or r.usage.output_tokens:
        facts.append("%d in / %d out tokens" % (r.usage.input_tokens, r.usage.output_tokens))
    out = ["=== %s: %s ===\n" % (title, ", ".join(facts))]
    if r.dry_run is not None:
        out.append(dry_run_text(r.dry_run))
    if r.output:
        out.append(r.output if r.output.endswith("\n") else r.output + "\n")
    if r.error:
        out.append("error: %s\n" % r.error)
    return "".join(out) + "\n"


def format_parallel_text(summary: ParallelSummary, tasks: Sequence[Dict[str, Any]],
                         quiet: bool, table: bool) -> str:
    """Each task's answer in input order (not with ``quiet``), then a table (with ``table``
    or ``quiet``; errors under failed rows when the answers are hidden), then the totals."""
    out = []
    if not quiet:
        for r in summary.results:
            title = "[%d] %s (%s)" % (r.index + 1, task_label(tasks[r.index], r.index), r.backend)
            out.append(format_block(title, r))
    if table or quiet:
        out.append(_parallel_table(summary, tasks, errors=quiet))
    out.append("%d tasks: %d completed, %d failed, %d cancelled in %s\n" % (
        summary.total_tasks, summary.completed, summary.failed, summary.cancelled,
        seconds(summary.total_duration_ms)))
    return "".join(out)


def _parallel_table(summary: ParallelSummary, tasks: Sequence[Dict[str, Any]],
                    errors: bool) -> str:
    out = ["%-4s %-8s %-10s %9s %7s  %s\n" % ("#", "BACKEND", "STATUS", "TIME", "TOKENS", "TASK")]
    for r in summary.results:
        tokens = r.usage.input_tokens + r.usage.output_tokens
        out.append("%-4d %-8s %-10s %9s %7s  %s\n" % (
            r.index + 1, r.backend, r.status, seconds(r.duration_ms),
            tokens or "-", cut(task_label(tasks[r.index], r.index), 36)))
        if errors and r.error:
            out.append("     error: %s\n" % cut(r.error, 200))
    return "".join(out)


def format_chain_text(summary: ChainSummary) -> str:
    """Each step's answer in order, then one line saying how far the chain got."""
    n = summary.total_steps
    out = [format_block("step %d/%d%s (%s)" % (r.step, n, " " + r.name if r.name else "",
                                               r.backend), r)
           for r in summary.results]
    line = "chain: %d of %d steps completed in %s" % (summary.completed_steps, n,
                                                       seconds(summary.total_duration_ms))
    if summary.failed_step:
        line += "; step %d failed" % summary.failed_step
    elif len(summary.results) < n:
        line += "; stopped"
    return "".join(out) + line + "\n"


def format_compare_text(summary: CompareSummary) -> str:
    """Each backend's answer under its name (and model), then the totals."""
    out = [format_block("%s%s" % (r.backend, " (%s)" % r.model if r.model else ""), r)
           for r in summary.results]
    counts: Dict[str, int] = {}
    for r in summary.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.append("compared %d backend%s in %s: %s\n" % (
        len(summary.results), "" if len(summary.results) == 1 else "s",
        seconds(summary.total_duration_ms),
        ", ".join("%d %s" % (counts[s], s) for s in ("completed", "failed", "cancelled")
                  if counts.get(s))))
    return "".join(out)


def skipped_text(skipped: Iterable[Skipped]) -> str:
    """``skipped BACKEND: REASON`` per backend a compare left out."""
    return "".join("skipped %s: %s\n" % (s.backend, s.reason) for s in skipped)
