"""The server-sent events of one streamed Responses API reply, in the order the official SDKs'
stream helpers (``client.responses.stream``) and Codex CLI read them::

    response.created, response.in_progress            the response, status in_progress
    response.output_item.added                         the message item, no content yet
    response.content_part.added                        its output_text part, text ""
    response.output_text.delta ...                     the text as the backend produces it
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed                                 the whole response, with usage

A round of a bridged run (client tools, ``responses_tools``) opens the message item only with
its first text, and when it ends on tool calls, each ``function_call`` item comes after it::

    response.output_item.added                         the function_call, arguments ""
    response.function_call_arguments.delta             its arguments, whole
    response.function_call_arguments.done, response.output_item.done

A run that fails ends the stream with ``response.failed`` (the response with its ``error``)
instead of the events after the deltas. Every event carries ``type`` (also its SSE ``event:``
name) and ``sequence_number`` (0, 1, 2, ...); text events carry ``item_id``,
``output_index``, ``content_index`` and ``logprobs: []``. There is no ``data: [DONE]``: the
Responses API ends a stream by closing it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator

from . import compat, sse
from .http import close_iterator
from .response_object import Draft, message_item, output_text_part
from .responses_tools import function_call_item
from .toolcalls import ToolCalls


class EventWriter:
    """The events of ``draft``'s stream; ``on_end(response)`` gets the final response object
    (completed or failed) before the last event goes out."""

    def __init__(self, draft: Draft, on_end: Callable[[Dict[str, Any]], None],
                 bridged: bool = False) -> None:
        self.draft = draft
        self.on_end = on_end
        self.sequence = 0
        self.bridged = bridged
        self.opened = False

    def event(self, kind: str, **fields: Any) -> bytes:
        body: Dict[str, Any] = {"type": kind, "sequence_number": self.sequence}
        body.update(fields)
        self.sequence += 1
        return sse.frame(body, kind)

    def _text_event(self, kind: str, **fields: Any) -> bytes:
        return self.event(kind, item_id=self.draft.item_id, output_index=0, content_index=0,
                          **fields)

    def stream(self, pieces: Iterator[Any]) -> Iterator[bytes]:
        """The events for ``pieces`` (``compat.reply_pieces``: Delta..., then Finished or
        Failed; a bridged round's may end in ``toolcalls.ToolCalls``)."""
        draft = self.draft
        text = []
        try:
            yield self.event("response.created", response=draft.snapshot())
            yield self.event("response.in_progress", response=draft.snapshot())
            if not self.bridged:
                for event in self._open():
                    yield event
            for piece in pieces:
                if isinstance(piece, compat.Delta):
                    for event in self._open():
                        yield event
                    text.append(piece.text)
                    yield self._text_event("response.output_text.delta", delta=piece.text,
                                           logprobs=[])
                elif isinstance(piece, compat.Failed):
                    final = draft.fail(piece.error, "".join(text))
                    self.on_end(final)
                    yield self.event("response.failed", response=final)
                elif isinstance(piece, ToolCalls):
                    for event in self._calls(piece):
                        yield event
                else:
                    for event in self._open():
                        yield event
                    for event in self._finish(piece):
                        yield event
        finally:
            close_iterator(pieces)

    def _open(self) -> Iterator[bytes]:
        """The message item's first events, once."""
        if self.opened:
            return
        self.opened = True
        yield self.event("response.output_item.added", output_index=0,
                         item=message_item(self.draft.item_id, None, "in_progress"))
        yield self._text_event("response.content_part.added", part=output_text_part(""))

    def _calls(self, round_end: ToolCalls) -> Iterator[bytes]:
        """The message's last events (when the round had text), then each function_call."""
        draft = self.draft
        if self.opened:
            yield self._text_event("response.output_text.done", text=round_end.text,
                                   logprobs=[])
            yield self._text_event("response.content_part.done",
                                   part=output_text_part(round_end.text))
            yield self.event("response.output_item.done", output_index=0,
                             item=message_item(draft.item_id, round_end.text))
        first = 1 if self.opened else 0
        for index, call in enumerate(round_end.calls, first):
            item = function_call_item(call)
            yield self.event("response.output_item.added", output_index=index,
                             item=function_call_item(call, "in_progress"))
            yield self.event("response.function_call_arguments.delta", item_id=item["id"],
                             output_index=index, delta=item["arguments"])
            yield self.event("response.function_call_arguments.done", item_id=item["id"],
                             output_index=index, arguments=item["arguments"])
            yield self.event("response.output_item.done", output_index=index, item=item)
        final = draft.complete(round_end.text if self.opened else "", round_end.usage,
                               [function_call_item(c) for c in round_end.calls])
        self.on_end(final)
        yield self.event("response.completed", response=final)

    def _finish(self, finished: compat.Finished) -> Iterator[bytes]:
        draft = self.draft
        yield self._text_event("response.output_text.done", text=finished.reply, logprobs=[])
        yield self._text_event("response.content_part.done",
                               part=output_text_part(finished.reply))
        final = draft.complete(finished.reply, finished.usage)
        yield self.event("response.output_item.done", output_index=0, item=final["output"][0])
        self.on_end(final)
        yield self.event("response.completed", response=final)
