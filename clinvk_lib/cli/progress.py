"""The live view of ``clinvk parallel|chain|compare`` on a terminal, and running the fan-out
so that Ctrl-C stops it cleanly.

Progress (a status line redrawn in place on stderr, and one line per finished item) appears
only when stderr is a terminal and the command prints no JSON. Ctrl-C stops every running
backend and still returns what finished, so the command can print it before exiting 130.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from .. import execute
from ..config import Config
from ..fanout_results import ProgressPayload, Summary
from ..render import seconds, status_line
from ..textutil import cut
from .common import Interrupted
from .live import terminal_width, use_color

TICK_SECONDS = 0.2      # how often the status line's elapsed time is redrawn

_STATUS_WORDS = {"completed": "done", "failed": "failed", "cancelled": "cancelled",
                 "skipped": "skipped"}
_STATUS_COLORS = {"completed": "32", "failed": "31", "cancelled": "33", "skipped": "33"}


class Progress:
    """Progress on a terminal: one line per finished item, and below them a status line
    (running / done / failed / waiting, elapsed) redrawn in place. Safe to call from the
    engine's worker threads."""

    def __init__(self, stream: TextIO, labels: Sequence[str], color: bool) -> None:
        self.stream = stream
        self.labels = list(labels)
        self.color = color
        self.started = time.monotonic()
        self.running: List[int] = []
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self.lock = threading.Lock()

    def update(self, kind: str, index: int, payload: ProgressPayload) -> None:
        """The engine's ``on_progress`` callback."""
        with self.lock:
            if kind == "started":
                self.running.append(index)
            elif kind == "skipped":
                self._finished(index, "skipped", 0, payload.reason)
            elif kind == "finished":
                self._finished(index, payload.status, payload.duration_ms, payload.error)
            self._draw()

    def note(self, line: str) -> None:
        """A line of its own (a backend's stderr line or warning) above the status line."""
        with self.lock:
            self._clear()
            self.stream.write(line + "\n")
            self._draw()

    def tick(self) -> None:
        with self.lock:
            self._draw()

    def close(self) -> None:
        with self.lock:
            self._clear()
            self.stream.flush()

    def _finished(self, index: int, status: str, duration_ms: int, error: str) -> None:
        if index in self.running:
            self.running.remove(index)
        self.counts[status] = self.counts.get(status, 0) + 1
        self._clear()
        self.stream.write(self._finished_line(index, status, duration_ms, error) + "\n")

    def _finished_line(self, index: int, status: str, duration_ms: int, error: str) -> str:
        word = "%-9s" % _STATUS_WORDS.get(status, status)
        if self.color:
            word = "\x1b[%sm%s\x1b[0m" % (_STATUS_COLORS.get(status, "0"), word)
        line = "%s %s" % (word, self.labels[index])
        if status != "skipped":
            line += "  " + seconds(duration_ms)
        if status != "completed" and error:
            line += "  " + cut(error, 100)
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
        timer = "%.1fs elapsed" % (time.monotonic() - self.started)
        width = terminal_width(self.stream) - 1
        # One physical line, so \r can redraw it: a wrapped line could not be erased. The
        # timer is kept whole on a narrow terminal; the counts are cut.
        self.stream.write("\r\x1b[K" + status_line([" | ".join(parts)], timer, width))
        self.stream.flush()

    def _clear(self) -> None:
        self.stream.write("\r\x1b[K")


def progress_on_stderr(show: bool, cfg: Config, labels: Sequence[str]) -> Optional[Progress]:
    """A Progress on stderr when ``show`` and stderr is a terminal, else None."""
    if not show or not sys.stderr.isatty():
        return None
    return Progress(sys.stderr, labels, use_color(cfg))


def run_interruptibly(work: Callable[[], Summary], cancel: execute.Cancel,
                      progress: Optional[Progress]
                      ) -> Tuple[Summary, Optional[BaseException]]:
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
