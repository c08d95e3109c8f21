"""The unified event model: what every backend's stream turns into.

An event is a small object with ``type``, ``backend``, ``session_id`` (ours, not the
backend's), ``timestamp`` (RFC 3339, UTC) and ``content`` (a dict whose keys depend on the
type). Wire formats (NDJSON, OpenAI SSE, Anthropic SSE, the CLI's text) are adapters over it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .textutil import rfc3339

INIT = "init"
MESSAGE = "message"
THINKING = "thinking"
TOOL_USE = "tool_use"
TOOL_RESULT = "tool_result"
ERROR = "error"
DONE = "done"

TYPES = (INIT, MESSAGE, THINKING, TOOL_USE, TOOL_RESULT, ERROR, DONE)

# The token counts of a run, in the order every report lists them (a session's token_usage,
# the native API's); cost_usd is apart because only some backends report it.
USAGE_KEYS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


class Usage:
    """Token counts of one run. ``cost_usd`` is kept only when the backend reports it."""

    __slots__ = USAGE_KEYS + ("cost_usd",)

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0,
                 reasoning_tokens: int = 0, cost_usd: Optional[float] = None) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.cost_usd = cost_usd

    def to_dict(self) -> Dict[str, Any]:
        d = {key: getattr(self, key) for key in USAGE_KEYS}   # type: Dict[str, Any]
        if self.cost_usd is not None:
            d["cost_usd"] = self.cost_usd
        return d

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "Usage":
        d = d or {}
        return cls(int(d.get("input_tokens") or 0), int(d.get("output_tokens") or 0),
                   int(d.get("cached_tokens") or 0), int(d.get("reasoning_tokens") or 0),
                   d.get("cost_usd"))

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens or self.cached_tokens
                    or self.reasoning_tokens or self.cost_usd)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Usage) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "Usage(%r)" % (self.to_dict(),)


class Event:
    """One unified event. ``content`` keys per type:

    - init: ``model``, ``backend_session_id`` (either may be empty)
    - message: ``text``, ``role`` ("assistant"), ``is_partial`` (True for token deltas)
    - thinking: ``text``, ``is_partial``
    - tool_use: ``tool_id``, ``tool_name``, ``input``
    - tool_result: ``tool_id``, ``tool_name``, ``output``, ``is_error``
    - error: ``message``, ``code`` (optional), ``fatal`` (False for warnings)
    - done: ``usage`` (Usage.to_dict()), ``model``, ``backend_session_id``, ``exit_code``,
      and ``structured_output`` when the CLI enforced an output schema and reported the value
    """

    __slots__ = ("type", "backend", "content", "session_id", "timestamp")

    def __init__(self, type: str, backend: str, content: Optional[Dict[str, Any]] = None,
                 session_id: str = "", timestamp: str = "") -> None:
        self.type = type
        self.backend = backend
        self.content = content if content is not None else {}
        self.session_id = session_id
        self.timestamp = timestamp or rfc3339()

    def to_dict(self) -> Dict[str, Any]:
        d = {"type": self.type, "backend": self.backend}
        if self.session_id:
            d["session_id"] = self.session_id
        d["timestamp"] = self.timestamp
        d["content"] = self.content
        return d

    def __repr__(self) -> str:
        return "Event(%s, %r)" % (self.type, self.content)


def init(backend: str, model: str = "", backend_session_id: str = "") -> Event:
    return Event(INIT, backend, {"model": model, "backend_session_id": backend_session_id})


def message(backend: str, text: str, partial: bool = False) -> Event:
    return Event(MESSAGE, backend, {"text": text, "role": "assistant", "is_partial": partial})


def thinking(backend: str, text: str, partial: bool = False) -> Event:
    return Event(THINKING, backend, {"text": text, "is_partial": partial})


def tool_use(backend: str, tool_id: str, tool_name: str, input: Any) -> Event:
    return Event(TOOL_USE, backend, {"tool_id": tool_id, "tool_name": tool_name, "input": input})


def tool_result(backend: str, tool_id: str, output: Any, is_error: bool = False,
                tool_name: str = "") -> Event:
    return Event(TOOL_RESULT, backend, {"tool_id": tool_id, "tool_name": tool_name,
                                        "output": output, "is_error": is_error})


def error(backend: str, message: str, code: str = "", fatal: bool = True) -> Event:
    content = {"message": message, "fatal": fatal}
    if code:
        content["code"] = code
    return Event(ERROR, backend, content)


def done(backend: str, usage: Optional[Usage] = None, model: str = "",
         backend_session_id: str = "", exit_code: int = 0) -> Event:
    return Event(DONE, backend, {"usage": (usage or Usage()).to_dict(), "model": model,
                                 "backend_session_id": backend_session_id,
                                 "exit_code": exit_code})


class ReplyText:
    """The assistant's reply, assembled from message events as they arrive.

    ``add(event)`` returns the text the event adds to the reply ("" for none), so a stream
    can forward each piece at once: partial message pieces are added as they are; a whole
    (non-partial) message that repeats text already streamed as pieces adds nothing; other
    whole messages are added after a blank line. ``text`` is the reply so far.
    """

    def __init__(self) -> None:
        self._parts: List[str] = []
        self._streamed = ""

    def add(self, event: Event) -> str:
        if event.type != MESSAGE:
            return ""
        text = event.content.get("text", "")
        if event.content.get("is_partial"):
            self._streamed += text
            self._parts.append(text)
            return text
        if self._streamed and text.strip() == self._streamed.strip():
            self._streamed = ""
            return ""
        self._streamed = ""
        added = ""
        if self._parts and not self._parts[-1].endswith("\n"):
            self._parts.append("\n\n")
            added = "\n\n"
        self._parts.append(text)
        return added + text

    @property
    def text(self) -> str:
        return "".join(self._parts)


def collect_text(events: List[Event]) -> str:
    """The assistant's reply from a list of events (the rules of ``ReplyText``)."""
    reply = ReplyText()
    for event in events:
        reply.add(event)
    return reply.text
