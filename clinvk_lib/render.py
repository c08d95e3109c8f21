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

import json
import re
import shlex
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Sequence, Tuple

from .textutil import cut, printable

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
    import calendar  # lazy: start-up (only listings show ages)
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
    if not r.model:
        # Unknown (codex reports none, and the run named none): no key rather than "".
        del d["model"]
    if r.error:
        d["error"] = r.error
    return d


def reply_text(output: str, error: str, backend: str) -> str:
    """A run's reply followed by its failure, as one text (for a model)."""
    if not error:
        return output
    failure = "%s failed: %s" % (backend, error)
    return "%s\n\n%s" % (output.rstrip(), failure) if output.strip() else failure


def run_error(backend: str, error: str) -> str:
    """A failed run's error naming its backend once ("codex: ..." unless the error already
    starts with the name: "codex timed out after 90s ...")."""
    if error.startswith(backend + " ") or error.startswith(backend + ":"):
        return error
    return "%s: %s" % (backend, error)


def run_facts(result: Any, tokens: bool, timing: bool) -> str:
    """``[tokens: 12 in, 34 out, time: 1.20s]`` (each part when asked for), or ""."""
    facts = []
    if tokens and result.usage:
        facts.append("tokens: %d in, %d out" % (result.usage.input_tokens,
                                                result.usage.output_tokens))
    if timing:
        facts.append("time: %.2fs" % (result.duration_ms / 1000.0))
    return "[%s]\n" % ", ".join(facts) if facts else ""


# -- one run, live on a terminal -----------------------------------------------------------------

# The input field that says best what a tool call does, first match wins: claude's Bash / Read /
# Edit / Grep / WebFetch / Task, codex's command_execution / web_search, gemini's
# run_shell_command / read_file / glob / google_web_search.
_TOOL_INPUT_KEYS = ("command", "file_path", "absolute_path", "path", "pattern", "query", "url",
                    "description", "prompt")
# C0 controls but newline and tab, DEL, C1 controls: what a terminal acts on instead of showing.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def elapsed(secs: float) -> str:
    """A running time in whole units: ``7s``, ``1m05s``, ``2h03m``."""
    s = int(secs)
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    return "%dh%02dm" % (s // 3600, s % 3600 // 60)


def status_line(parts: Sequence[str], timer: str, width: int) -> str:
    """``parts`` joined by " · ", then ``timer``, in at most ``width`` characters: the parts
    are cut to make room, the timer never is."""
    room = width - len(timer) - 3
    head = cut(" \u00b7 ".join(p for p in parts if p), room) if room > 0 else ""
    return (head + " \u00b7 " + timer) if head else timer[-max(width, 0):]


def activity(event: Any) -> str:
    """What the agent is doing, as the event that just arrived shows it ("" when it does not
    say: the activity stays what it was)."""
    kind = event.type
    if kind == "init" or kind == "tool_result":
        return "waiting on the model"
    if kind == "thinking":
        return "thinking"
    if kind == "message":
        return "writing"
    if kind == "tool_use":
        what = tool_input_summary(event.content.get("input"))
        return "running %s%s" % (event.content.get("tool_name") or "a tool",
                                 ": " + what if what else "")
    return ""


def tool_input_summary(tool_input: Any) -> str:
    """The one value of a tool call's input a person needs (its command, file, pattern,
    query...), else its compact JSON; on one line, control characters escaped."""
    value = tool_input
    if isinstance(tool_input, dict):
        for key in _TOOL_INPUT_KEYS:
            if tool_input.get(key):
                value = tool_input[key]
                break
        else:
            changes = tool_input.get("changes")        # codex file_change
            if isinstance(changes, list) and changes:
                value = ", ".join("%s %s" % (c.get("kind", ""), c.get("path", ""))
                                  for c in changes if isinstance(c, dict))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if not isinstance(value, str):
        value = "" if value in (None, {}, []) else json.dumps(value, ensure_ascii=False)
    return safe_line(value)


def tool_call_line(name: str, tool_input: Any, full: bool) -> str:
    """One tool call: its name and what it does (``full``: its whole input as JSON)."""
    what = safe_line(json.dumps(tool_input, ensure_ascii=False)) if full \
        else cut(tool_input_summary(tool_input), 200)
    return "%s %s" % (safe_line(name or "tool"), what) if what else safe_line(name or "tool")


def tool_result_line(name: str, output: Any, is_error: bool, full: bool) -> str:
    """One tool result: its name and how it went (the first line of a failure, the number of
    lines of an output); ``full`` adds the whole output below it, indented."""
    text = output if isinstance(output, str) else \
        ("" if output is None else json.dumps(output, ensure_ascii=False))
    lines = text.strip("\n").split("\n") if text.strip() else []
    if is_error:
        head = "%s failed%s" % (name or "tool",
                                ": " + cut(safe_line(lines[0]), 160) if lines else "")
    else:
        head = "%s: %s" % (name or "tool", "%d line%s of output" % (
            len(lines), "" if len(lines) == 1 else "s") if lines else "no output")
    if not full or not lines:
        return safe_line(head)
    return safe_line(head) + "".join("\n    " + safe_line(line) for line in lines)


def backend_warning(backend: str, message: str) -> str:
    """A backend's warning (a non-fatal error event) as one line."""
    return "%s: warning: %s" % (backend, safe_line(message))


def backend_stderr_line(backend: str, line: str) -> str:
    """A line the backend wrote on its stderr, as one line naming it."""
    return "%s: %s" % (backend, safe_line(line))


def safe_line(text: str) -> str:
    """``text`` with every character a terminal would act on escaped (``\\n``, ``\\x1b``...),
    so what a backend or a model wrote can never move the cursor or forge a line."""
    return printable(text, len(text))


def safe_text(text: str) -> str:
    """``text`` with the terminal's control characters escaped, its newlines and tabs kept:
    an answer printed on a terminal can never rewrite the screen, set the window title or the
    clipboard (OSC 52). A CR before a newline is dropped (it would only return the cursor)."""
    text = text.replace("\r\n", "\n")
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# -- sessions ------------------------------------------------------------------------------------


def session_list_json(found: Sequence[Any], total: int, limit: int,
                      offset: int) -> Dict[str, Any]:
    """``{sessions, total, limit, offset}``: one page of a session listing (without
    ``last_reply``, which a listing does not read: ``sessions show`` has it)."""
    return {"sessions": [_listed(s.to_dict()) for s in found], "total": total,
            "limit": limit, "offset": offset}


def _listed(d: Dict[str, Any]) -> Dict[str, Any]:
    d.pop("last_reply", None)
    return d


def format_session_table(found: Sequence[Any], total: int, offset: int, width: int = 80,
                         home: str = "") -> str:
    """A table in at most ``width`` - 1 columns: id (its first 8 characters, enough for
    ``clinvk resume``), backend, status, last used, turns, tokens (from 100 columns on), the
    working directory (``home`` shown as ``~``, its end kept) and the title; a last line says
    how many are not shown."""
    if not found:
        return "no sessions at offset %d (of %d)\n" % (offset, total) if total else \
            "no sessions\n"
    now = time.time()
    tokens = width >= 100
    fixed = "%-8s %-7s %-9s %-10s %5s" + (" %7s" if tokens else "")
    room = max(width - 1 - len(fixed % (("",) * (6 if tokens else 5))) - 4, 20)
    dir_width = min(room // 2, 48)
    row = fixed + "  %-*s  %s"
    header = ("ID", "BACKEND", "STATUS", "LAST USED", "TURNS") + (("TOKENS",) if tokens else ())
    lines = [(row % (header + (dir_width, "WORKDIR", "TITLE"))).rstrip()]
    for s in found:
        cells = (s.id[:8], s.backend[:7], (s.status or "")[:9], age(s.last_used, now),
                 s.turn_count)
        if tokens:
            u = s.token_usage or {}
            cells += (short_count((u.get("input_tokens", 0) or 0)
                                  + (u.get("output_tokens", 0) or 0)),)
        title = cut(printable(s.title or s.initial_prompt, 200), room - dir_width)
        lines.append((row % (cells + (dir_width, short_dir(s.working_dir, dir_width, home),
                                      title))).rstrip())
    if total > len(found):
        lines.append("(%d of %d shown; use --limit/--offset)" % (len(found), total))
    return "\n".join(lines) + "\n"


def short_dir(path: str, width: int, home: str = "") -> str:
    """``path`` in at most ``width`` characters: ``home`` as ``~``, and when still too long
    its end (the part that tells projects apart) after an ellipsis, from a ``/`` when one is
    there to start at."""
    if home and (path == home or path.startswith(home.rstrip("/") + "/")):
        path = "~" + path[len(home.rstrip("/")):]
    path = printable(path, 4096)
    if len(path) <= width:
        return path
    tail = path[-(width - 1):]
    slash = tail.find("/", 1)
    return "\u2026" + (tail[slash:] if 0 < slash < len(tail) - 1 else tail)


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
    text = "".join("%-16s %s\n" % (k + ":", v) for k, v in rows if v not in (None, "", []))
    reply = d.get("last_reply") or ""
    if reply:
        # Escaped line by line: a reply (maybe a remote client's session) must not drive
        # the terminal, and its lines stay lines.
        text += "Last reply:\n" + "".join("  %s\n" % printable(line, len(line))
                                          for line in reply.splitlines())
    return text


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
