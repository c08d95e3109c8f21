"""The OpenAI Responses API's response object, from ``in_progress`` to its end (completed,
failed or cancelled), with every field the official SDKs' ``Response`` model reads.

The reply is one ``message`` output item (``msg_...``) holding one ``output_text`` part (no
annotations, no logprobs), followed by a ``function_call`` item per client tool the agent
called (``responses_tools``; then the message is left out when it has no text). Parameters
clinvk accepts and ignores are reported as what is in effect: ``tools`` holds the request's
function tools only, ``tool_choice`` is ``auto``, ``truncation``
``disabled``, and the sampling ones (``temperature``, ``top_p``, ``max_output_tokens``,
``reasoning``) null. ``output_text`` is left to the SDKs, which compute it from ``output``.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .. import events as ev
from . import compat, errors

IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "in_progress", "completed", "failed", "cancelled"
RUNNING = ("queued", IN_PROGRESS)
DEFAULT_TEXT = {"format": {"type": "text"}}


def output_text_part(text: str) -> Dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: Optional[str], status: str = COMPLETED,
                 role: str = "assistant") -> Dict[str, Any]:
    """A ``message`` item; ``text`` None: no content part yet (a stream's first view)."""
    content = [] if text is None else [output_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": role,
            "content": content}


def usage_body(usage: ev.Usage) -> Dict[str, Any]:
    """The Responses usage object: input tokens include the cached ones (as OpenAI counts)."""
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens}


class Draft:
    """One response object being made: ``snapshot()`` while it runs, then exactly one of
    ``complete``, ``fail`` or ``cancel``, each returning the final object."""

    def __init__(self, response_id: str, request: Dict[str, Any]) -> None:
        self.id = response_id
        self.item_id = compat.new_id("msg_")
        self.body: Dict[str, Any] = {
            "id": response_id, "object": "response", "created_at": compat.created_now(),
            "status": IN_PROGRESS, "background": request["background"], "error": None,
            "incomplete_details": None, "instructions": request.get("instructions"),
            "max_output_tokens": None, "max_tool_calls": None, "model": request["model"],
            "output": [], "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"), "reasoning": None,
            "store": request["store"], "temperature": None,
            "text": request.get("text") or DEFAULT_TEXT, "tool_choice": "auto",
            "tools": [t for t in request.get("tools") or []
                      if isinstance(t, dict) and t.get("type") == "function"],
            "top_p": None, "truncation": "disabled", "usage": None, "user": None,
            "metadata": dict(request.get("metadata") or {}),
        }

    @classmethod
    def of(cls, response: Dict[str, Any]) -> "Draft":
        """The draft of a stored, still running ``response`` (to end it from another thread or
        process than the one that made it)."""
        draft = cls.__new__(cls)
        draft.id = response["id"]
        draft.item_id = compat.new_id("msg_")
        draft.body = dict(response)
        return draft

    def snapshot(self) -> Dict[str, Any]:
        """The object as it stands (a copy; its lists are new)."""
        return dict(self.body, output=list(self.body["output"]))

    def complete(self, text: str, usage: ev.Usage,
                 call_items: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Completed with ``text`` and, when the round ended on client tool calls, their
        ``function_call`` items (the message only when it has text)."""
        message = [message_item(self.item_id, text)] if text or not call_items else []
        return self._end(COMPLETED, output=message + list(call_items or []),
                         usage=usage_body(usage))

    def fail(self, err: errors.ApiError, partial: str = "") -> Dict[str, Any]:
        """Failed with ``err``'s message (OpenAI's ``server_error``: the run, not the request,
        failed); ``partial`` is the text the backend had produced, if any."""
        output = [message_item(self.item_id, partial, "incomplete")] if partial else []
        return self._end(FAILED, output=output,
                         error={"code": "server_error", "message": err.message})

    def cancel(self) -> Dict[str, Any]:
        return self._end(CANCELLED)

    def _end(self, status: str, **fields: Any) -> Dict[str, Any]:
        self.body.update(fields, status=status)
        self.body["completed_at"] = int(time.time()) if status == COMPLETED else None
        return self.snapshot()


def input_message(item_id: str, role: str, parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """An input item as ``input_items`` lists it: assistant messages as output messages
    (``output_text`` parts with annotations), the others as input messages."""
    if role == "assistant":
        return {"id": item_id, "type": "message", "status": COMPLETED, "role": role,
                "content": [output_text_part(p["text"]) for p in parts]}
    return {"id": item_id, "type": "message", "status": COMPLETED, "role": role,
            "content": [{"type": "input_text", "text": p["text"]} for p in parts]}
