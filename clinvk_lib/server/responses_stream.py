"""The server-sent events of one streamed Responses API reply, in the order the official SDKs'
stream helpers (``client.responses.stream``) and Codex CLI read them::

    response.created, response.in_progress            the response, status in_progress
    response.output_item.added                         the message item, no content yet
    response.content_part.added                        its output_text part, text ""
    response.output_text.delta ...                     the text as the backend produces it
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed                                 the whole response, with usage

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


class EventWriter:
    """The events of ``draft``'s stream; ``on_end(response)`` gets the final response object
    (completed or failed) before the last event goes out."""

    def __init__(self, draft: Draft, on_end: Callable[[Dict[str, Any]], None]) -> None:
        self.draft = draft
        self.on_end = on_end
        self.sequence = 0

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
        Failed)."""
        draft = self.draft
        text = []
        try:
            yield self.event("response.created", response=draft.snapshot())
            yield self.event("response.in_progress", response=draft.snapshot())
            yield self.event("response.output_item.added", output_index=0,
                             item=message_item(draft.item_id, None, "in_progress"))
            yield self._text_event("response.content_part.added", part=output_text_part(""))
            for piece in pieces:
                if isinstance(piece, compat.Delta):
                    text.append(piece.text)
                    yield self._text_event("response.output_text.delta", delta=piece.text,
                                           logprobs=[])
                elif isinstance(piece, compat.Failed):
                    final = draft.fail(piece.error, "".join(text))
                    self.on_end(final)
                    yield self.event("response.failed", response=final)
                else:
                    for event in self._finish(piece):
                        yield event
        finally:
            close_iterator(pieces)

    def _finish(self, finished: compat.Finished) -> Iterator[bytes]:
        draft = self.draft
        yield self._text_event("response.output_text.done", text=finished.reply, logprobs=[])
        yield self._text_event("response.content_part.done",
                               part=output_text_part(finished.reply))
        final = draft.complete(finished.reply, finished.usage)
        yield self.event("response.output_item.done", output_index=0, item=final["output"][0])
        self.on_end(final)
        yield self.event("response.completed", response=final)
