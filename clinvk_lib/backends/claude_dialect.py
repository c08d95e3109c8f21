"""The Claude stream dialect: the ``stream-json`` lines (and the json array of the same
messages) that claude prints and that qwen-code copies, read by one tolerant parser.

What a line may hold (claude 2.1.197 to 2.1.332, qwen-code 0.24.4), by ``type``:

- ``system`` / ``init``: ``session_id``, ``model``, ``mcp_servers`` (``[{name, status}]``) and,
  since claude 2.1.2xx, ``mcp_server_errors``; a server that failed to start is a warning.
- ``system/api_retry``: a warning (code ``retry``) saying what failed and when claude retries.
- ``system`` with another subtype (``status``, ``hook_*``, ``task_*``), and the
  progress lines newer releases add: nothing for the reply, skipped.
- ``stream_event``: an Anthropic streaming event (``message_start``, ``content_block_*``,
  ``message_delta``, ``message_stop``), the token deltas of ``--include-partial-messages``;
  other events (qwen's ``goal_state``) are skipped.
- ``assistant`` / ``user``: whole messages (text, thinking, tool calls, tool results); those
  with ``parent_tool_use_id`` set come from a sub-agent.
- ``result``: the final text, the session id, usage and cost, or the errors of a failed run.

Any other type, and any field not named here, is ignored: a CLI release that adds some must
not break a run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import events as ev
from . import parsing


class DialectParser(parsing.StreamParser):
    """Parses Claude-dialect stream lines (and the items of the json array form).

    Text that arrived as ``stream_event`` deltas is not repeated when the whole ``assistant``
    message follows. Sub-agent text (``parent_tool_use_id`` set) is not part of the reply and
    is left out; the sub-agent's tool calls are kept. A subclass names its backend and what
    differs in its CLI (the class attributes below).
    """

    final_types = ("result",)
    # The usage's input_tokens already count the cached input (qwen-code reports the model
    # API's prompt tokens); False: add cache reads and writes to it (Anthropic's usage).
    input_counts_cache = False
    # Starts of an assistant text that is the CLI's report of a failed API call rather than
    # the model's words (qwen-code 0.24.4: "[API Error: 401 ...]"); claude marks those with
    # an "error" field instead.
    api_error_prefixes: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.final_text = ""          # the result line's text: the CLI's own final answer
        self._tool_names: Dict[str, str] = {}
        self._message_id = ""
        self._streamed: Dict[Any, str] = {}   # (message id, "text"|"thinking") -> deltas
        self._last_delta = ""         # the latest text delta sent
        self._new_text_block = False
        self._api_error = ""
        self._retry_status: Optional[int] = None  # the last api_retry line's error_status

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "stream_event":
            return self._stream_event(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        return []                     # rate_limit_event, progress and future types

    def finish(self, exit_code: int, stderr: str = "") -> List[ev.Event]:
        """As StreamParser.finish; a run that failed with no error on stdout is reported by
        the JSON error object the CLI printed on stderr, when there is one (qwen-code 0.24.4:
        FatalTurnLimitedError after --max-session-turns, exit code 53)."""
        found: List[ev.Event] = []
        if exit_code != 0 and not self.error and not self._finished:
            message, kind = parsing.stderr_error(stderr)
            if message:
                found.append(ev.error(self.backend_name, message,
                                      code=kind or "exit_%d" % exit_code))
                self.classify(found[0], stderr)
                self.error = message
                self.events.extend(found)
        return found + super().finish(exit_code, stderr)

    # -- line types ----------------------------------------------------------------------------

    def _system(self, obj: Dict[str, Any]) -> List[ev.Event]:
        if obj.get("subtype") == "api_retry":
            return self._api_retry(obj)
        if obj.get("subtype") != "init":
            return []                 # status, hook_*, task_*: progress noise
        self.backend_session_id = parsing.as_str(obj.get("session_id")) or self.backend_session_id
        self.model = parsing.as_str(obj.get("model")) or self.model
        return [ev.init(self.backend_name, self.model, self.backend_session_id)] + \
            self._mcp_warnings(obj)

    def _api_retry(self, obj: Dict[str, Any]) -> List[ev.Event]:
        """claude 2.1.197 retries a failed model API call on its own, for minutes, and says so
        only in ``system/api_retry`` lines ({attempt, max_retries, retry_delay_ms,
        error_status, error}): a warning, so the wait is not silent, and the status is kept
        to classify a run that then fails without one (429 is rate_limited)."""
        status = obj.get("error_status")
        if isinstance(status, int) and not isinstance(status, bool):
            self._retry_status = status
        why = parsing.as_str(obj.get("error")) or "error"
        attempt, most = obj.get("attempt"), obj.get("max_retries")
        delay = obj.get("retry_delay_ms")
        message = "model API %s%s; retrying%s%s" % (
            "%d " % status if isinstance(status, int) else "", why,
            " (%s of %s)" % (attempt, most) if attempt is not None and most is not None else "",
            " in %.1fs" % (delay / 1000.0) if isinstance(delay, (int, float)) else "")
        return [ev.error(self.backend_name, message, code="retry", fatal=False)]

    def _mcp_warnings(self, init: Dict[str, Any]) -> List[ev.Event]:
        """One warning per MCP server that did not start: a ``mcp_servers`` entry whose status
        says so, or an entry of ``mcp_server_errors`` (a list of {name, error}, or a map of
        name to error)."""
        failed: List[Tuple[str, str]] = []
        for server in init.get("mcp_servers") or []:
            if isinstance(server, dict) and server.get("status") in ("failed", "error"):
                failed.append((parsing.as_str(server.get("name")),
                               parsing.as_str(server.get("error")) or "failed to start"))
        errors = init.get("mcp_server_errors")
        if isinstance(errors, dict):
            errors = [{"name": k, "error": v} for k, v in errors.items()]
        for entry in errors if isinstance(errors, list) else []:
            if isinstance(entry, dict):
                failed.append((parsing.as_str(entry.get("name")) or parsing.as_str(
                    entry.get("server")), parsing.as_str(entry.get("error")) or parsing.as_str(
                        entry.get("message")) or "failed to start"))
        return [ev.error(self.backend_name, "MCP server %r: %s" % (name, why),
                         code="mcp_server_error", fatal=False) for name, why in failed]

    def _stream_event(self, obj: Dict[str, Any]) -> List[ev.Event]:
        event = obj.get("event")
        if not isinstance(event, dict) or obj.get("parent_tool_use_id"):
            return []
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            self._message_id = parsing.as_str(message.get("id"))
            return []
        if kind == "content_block_start":
            block = event.get("content_block") if isinstance(event.get("content_block"),
                                                             dict) else {}
            self._new_text_block = block.get("type") == "text"
            return []
        if kind != "content_block_delta" or not isinstance(event.get("delta"), dict):
            return []
        return self._delta(event["delta"])

    def _delta(self, delta: Dict[str, Any]) -> List[ev.Event]:
        if delta.get("type") == "text_delta":
            text = parsing.as_str(delta.get("text"))
            if not text:
                return []
            if self._new_text_block and self._is_api_error(text):
                # qwen-code 0.24.4 streams its "[API Error: ...]" as one whole delta too.
                self._api_error, self._new_text_block = text, False
                return []
            self._remember("text", text)
            if self._new_text_block and self._last_delta and not self._last_delta.endswith("\n"):
                # A new text block after earlier streamed text (the model spoke, used a
                # tool, spoke again): keep the two apart as events.collect_text does.
                text = "\n\n" + text
            self._new_text_block = False
            self._last_delta = text
            return [ev.message(self.backend_name, text, partial=True)]
        if delta.get("type") == "thinking_delta":
            text = parsing.as_str(delta.get("thinking"))
            if not text:
                return []
            self._remember("thinking", text)
            return [ev.thinking(self.backend_name, text, partial=True)]
        return []                     # input_json_delta, signature_delta, citations_delta

    def _remember(self, kind: str, text: str) -> None:
        key = (self._message_id, kind)
        self._streamed[key] = self._streamed.get(key, "") + text

    def _already_streamed(self, message_id: str, kind: str, text: str) -> bool:
        """True when ``text`` (a whole block) was already sent as deltas; consumes it."""
        key = (message_id or self._message_id, kind)
        pending = self._streamed.get(key, "")
        if not pending or not text:
            return False
        if pending.startswith(text):
            self._streamed[key] = pending[len(text):]
            return True
        return text.strip() in pending

    def _assistant(self, obj: Dict[str, Any]) -> List[ev.Event]:
        message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            return []
        message_id = parsing.as_str(message.get("id"))
        subagent = bool(obj.get("parent_tool_use_id"))
        out: List[ev.Event] = []
        for block in content:
            if isinstance(block, dict):
                out += self._block(obj, block, message_id, subagent)
        return out

    def _block(self, obj: Dict[str, Any], block: Dict[str, Any], message_id: str,
               subagent: bool) -> List[ev.Event]:
        kind = block.get("type")
        if kind == "text":
            text = parsing.as_str(block.get("text"))
            if obj.get("error") or self._is_api_error(text):
                # claude 2.1.197 reports an API failure as an assistant text ("API Error:
                # 400 ...") with an "error" field, qwen-code 0.24.4 as "[API Error: ...]";
                # the result line repeats it.
                self._api_error = text
            elif text and not subagent and not self._already_streamed(message_id, "text", text):
                return [ev.message(self.backend_name, text)]
        elif kind == "thinking":
            text = parsing.as_str(block.get("thinking"))
            if text and not subagent and not self._already_streamed(message_id, "thinking", text):
                return [ev.thinking(self.backend_name, text)]
        elif kind in ("tool_use", "server_tool_use"):
            tool_id = parsing.as_str(block.get("id"))
            name = parsing.as_str(block.get("name"))
            self._tool_names[tool_id] = name
            return [ev.tool_use(self.backend_name, tool_id, name, block.get("input"))]
        return []

    def _is_api_error(self, text: str) -> bool:
        return bool(self.api_error_prefixes) and text.startswith(self.api_error_prefixes)

    def _user(self, obj: Dict[str, Any]) -> List[ev.Event]:
        message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        content = message.get("content")
        if not isinstance(content, list):
            return []                 # a replayed prompt, not a tool result
        out: List[ev.Event] = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                tool_id = parsing.as_str(block.get("tool_use_id"))
                out.append(ev.tool_result(self.backend_name, tool_id,
                                          tool_output(block.get("content")),
                                          bool(block.get("is_error")),
                                          self._tool_names.get(tool_id, "")))
        return out

    def _result(self, obj: Dict[str, Any]) -> List[ev.Event]:
        self.backend_session_id = parsing.as_str(obj.get("session_id")) or self.backend_session_id
        self.usage = result_usage(obj, self.input_counts_cache)
        if not self.model:
            self.model = main_model(obj.get("modelUsage"))
        subtype = parsing.as_str(obj.get("subtype"))
        if obj.get("is_error") or subtype not in ("", "success"):
            return [ev.error(self.backend_name, self._failure(obj, subtype),
                             code=_error_code(obj, subtype, self._retry_status))]
        self.final_text = parsing.as_str(obj.get("result"))
        # claude 2.1.197 with --json-schema: the value the model called StructuredOutput
        # with; absent when it never called it validly (the result is then its text).
        self.structured = obj.get("structured_output")
        if self.final_text and not any(e.type == ev.MESSAGE for e in self.events):
            return [ev.message(self.backend_name, self.final_text)]
        return []

    def _failure(self, result: Dict[str, Any], subtype: str) -> str:
        """What a failed result says: its ``errors`` (claude), its ``error.message`` (qwen),
        its text, or the API error an assistant message reported."""
        errors = [parsing.as_str(e) for e in result.get("errors") or [] if parsing.as_str(e)]
        error = result.get("error") if isinstance(result.get("error"), dict) else {}
        return ("; ".join(errors) or parsing.as_str(error.get("message"))
                or parsing.as_str(result.get("result")) or self._api_error
                or "%s reported an error (%s)" % (self.backend_name, subtype or "is_error"))


def _error_code(result: Dict[str, Any], subtype: str, retried: Optional[int] = None) -> str:
    """``api_error_<status>`` from the result's own status, else from the last api_retry
    line's (the result of a run that gave up retrying may carry none), else the subtype."""
    status = result.get("api_error_status")
    if not isinstance(status, int) or isinstance(status, bool):
        status = retried
    if isinstance(status, int) and not isinstance(status, bool):
        return "api_error_%d" % status
    return subtype or "is_error"


def tool_output(content: Any) -> str:
    """A tool result's content as text: a string, or the text parts of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(parsing.as_str(part.get("text")) for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    return ""


def result_usage(result: Dict[str, Any], input_counts_cache: bool) -> ev.Usage:
    """Usage of a result line, input counting every prompt token (cached ones included)."""
    u = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    cache_read = parsing.as_int(u.get("cache_read_input_tokens"))
    prompt = parsing.as_int(u.get("input_tokens"))
    if not input_counts_cache:
        prompt += cache_read + parsing.as_int(u.get("cache_creation_input_tokens"))
    cost = result.get("total_cost_usd")
    return ev.Usage(
        input_tokens=prompt,
        output_tokens=parsing.as_int(u.get("output_tokens")),
        cached_tokens=cache_read,
        cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool)
        else None)


def main_model(model_usage: Any) -> str:
    """The model that wrote the most output (claude also uses a small model on the side)."""
    best, most = "", -1
    for name, u in (model_usage.items() if isinstance(model_usage, dict) else ()):
        output = parsing.as_int(u.get("outputTokens")) if isinstance(u, dict) else 0
        if output > most:
            best, most = name, output
    return best


def parse_document(parser: DialectParser, stdout: str, stderr: str,
                   exit_code: int) -> parsing.Result:
    """The Result of a json-format run: one result object, the array of all messages, or
    NDJSON lines, all read by ``parser``. The result line's text is the reply."""
    doc = parsing.decode_json_document(stdout)
    values = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else []
    for value in values:
        parser.feed_value(value)
    if not values and exit_code == 0:
        shown = parsing.last_meaningful_line(stdout)
        parser.error = "%s printed no JSON result%s" % (parser.backend_name,
                                                       ": " + shown if shown else "")
    parser.finish(exit_code, stderr)
    result = parser.result(exit_code)
    if parser.final_text and not result.error:
        result.text = parser.final_text
    return result
