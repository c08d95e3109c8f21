"""One run in text mode: live on a terminal, and the backend's diagnostics either way.

On a terminal (stdout and stderr both), ``run_live`` shows the reply on stdout as it streams
(token deltas where the backend has them), and on stderr a status line (backend, what the
agent does now, elapsed time) redrawn in place and cleared at the end, and one line per tool
call and result. The streamed text is the reply: nothing prints it again. Anywhere else,
``run_plain`` runs the backend as before and stdout gets the reply only at the end.

In both, the backend's warnings (non-fatal error events) and the lines of its stderr are shown
on stderr; with ``--verbose`` its stderr passes through as it is, with ``--quiet`` only the
warnings are left. Text a backend or a model wrote is shown with the terminal's control
characters escaped, so it can never move the cursor, retitle the window or set the clipboard.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional, TextIO

from .. import events as ev
from .. import execute, render
from ..config import Config

if TYPE_CHECKING:
    from ..sessions import SessionStore

TICK_SECONDS = 0.2        # how often the status line is redrawn (spinner, elapsed time)
TEXT_PAUSE = 0.4          # seconds without text before the status line may come back

QUIET, NORMAL, FULL = "quiet", "normal", "full"     # how much of tools and stderr is shown

_SPINNER_UTF8 = "\u280b\u2819\u2839\u2838\u283c\u2834\u2826\u2827\u2807\u280f"
_SPINNER_ASCII = "|/-\\"


def use_color(cfg: Config) -> bool:
    """Colour per config ``output.color``: ``auto`` means unless NO_COLOR is set (no-color.org)
    or the terminal says it has none (TERM=dumb)."""
    choice = cfg.get("output.color")
    if choice == "auto":
        return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    return choice == "always"


def on_terminal() -> bool:
    """True when stdout and stderr are both terminals: the live view's condition."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream: Optional[TextIO]) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def detail_of(quiet: bool, verbose: bool) -> str:
    """QUIET, NORMAL or FULL for the ``--quiet`` and ``--verbose`` flags (quiet wins)."""
    return QUIET if quiet else FULL if verbose else NORMAL


class Style:
    """Colours and symbols for one stream: no escape code at all without colour, and ASCII
    symbols when the stream's encoding is not UTF-8."""

    def __init__(self, stream: TextIO, color: bool) -> None:
        self.color = color
        utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        self.call, self.ok, self.failed = \
            ("\u2192", "\u2713", "\u2717") if utf8 else ("->", "ok", "x")
        self.spinner = _SPINNER_UTF8 if utf8 else _SPINNER_ASCII

    def paint(self, sgr: str, text: str) -> str:
        """``text`` in the SGR colour ``sgr`` ("2" dim, "31" red, "33" yellow...)."""
        return "\x1b[%sm%s\x1b[0m" % (sgr, text) if self.color and text else text


class Diagnostics:
    """The backend's warnings and stderr lines for a person: each through ``emit`` (one line,
    no newline), the same warning twice in a row only once. Safe from any thread."""

    def __init__(self, backend: str, detail: str, style: Style,
                 emit: Callable[[str], None]) -> None:
        self.backend = backend
        self.detail = detail
        self.style = style
        self.emit = emit
        self._last_warning = ""
        self._lock = threading.Lock()

    def warning(self, message: str) -> None:
        with self._lock:
            if not message or message == self._last_warning:
                return
            self._last_warning = message
        self.emit(self.style.paint("33", render.backend_warning(self.backend, message)))

    def stderr_line(self, line: str) -> None:
        if self.detail == FULL:
            self.emit(line)                 # --verbose: the backend's stderr as it is
        elif self.detail == NORMAL and line.strip():
            self.emit(self.style.paint("2", render.backend_stderr_line(self.backend, line)))


class LiveView:
    """The live view of one run: feed it ``event``s (and stderr lines through
    ``diagnostics``, from any thread); ``start()`` before, ``close()`` after (also on Ctrl-C).

    The status line is drawn only at the start of a line of stdout: text still being written
    on that line would be overwritten by it. A line on stderr (a tool call, a warning) while a
    line of text is unfinished first ends that line on stdout, and the newline that starts the
    next block of text is then not repeated.
    """

    def __init__(self, out: TextIO, err: TextIO, backend: str, color: bool,
                 detail: str) -> None:
        self.out = out
        self.err = err
        self.backend = backend
        self.detail = detail
        self.style = Style(err, color)
        self.diagnostics = Diagnostics(backend, detail, self.style, self.line)
        self.reply = ev.ReplyText()
        self.activity = "starting"
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._last_text = 0.0
        self._at_line_start = True      # stdout's cursor is at the start of a line
        self._broke_line = False        # we ended a line of text to print on stderr
        self._shown = 0                 # length of the status line on screen (0: none)
        self._frame = 0
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    # -- the run's side ----------------------------------------------------------------------

    def start(self) -> None:
        """Draw the status line and keep it ticking until ``close()``."""
        self._draw()
        self._ticker = threading.Thread(target=self._tick, name="clinvk-live", daemon=True)
        self._ticker.start()

    def event(self, e: ev.Event) -> None:
        """Show one event of the run."""
        now_doing = render.activity(e)
        with self._lock:
            self.activity = now_doing or self.activity
        if e.type == ev.MESSAGE:
            self._text(self.reply.add(e))
        elif e.type == ev.TOOL_USE and self.detail != QUIET:
            c = e.content
            self.line(self.style.paint("2", "%s %s" % (self.style.call, render.tool_call_line(
                c.get("tool_name", ""), c.get("input"), self.detail == FULL))))
        elif e.type == ev.TOOL_RESULT and self.detail != QUIET:
            c = e.content
            failed = bool(c.get("is_error"))
            mark = self.style.failed if failed else self.style.ok
            self.line(self.style.paint("31" if failed else "2", "%s %s" % (
                mark, render.tool_result_line(c.get("tool_name", ""), c.get("output"), failed,
                                              self.detail == FULL))))
        elif e.type == ev.ERROR and not e.content.get("fatal", True):
            self.diagnostics.warning(e.content.get("message", ""))
        with self._lock:
            self._draw()

    def line(self, text: str) -> None:
        """One line on stderr, above the status line."""
        with self._lock:
            self._clear()
            if not self._at_line_start:
                self._write(self.out, "\n")
                self._at_line_start = self._broke_line = True
            self._write(self.err, text + "\n")
            self._draw()

    def close(self) -> None:
        """Stop the status line and clear it; end the text with a newline."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        with self._lock:
            self._clear()
            if not self._at_line_start:
                self._write(self.out, "\n")
                self._at_line_start = True

    # -- drawing -------------------------------------------------------------------------------

    def _text(self, piece: str) -> None:
        if not piece:
            return
        with self._lock:
            if self._broke_line and piece.startswith("\n"):
                piece = piece[1:]
            self._broke_line = False
            if not piece:
                return
            self._clear()
            self._write(self.out, render.safe_text(piece))
            self._at_line_start = piece.endswith("\n")
            self._last_text = time.monotonic()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                self._frame += 1
                self._draw()

    def _draw(self) -> None:
        if self._stop.is_set() or not self._at_line_start \
                or time.monotonic() - self._last_text < TEXT_PAUSE:
            return
        width = terminal_width(self.err) - 1     # one physical line, or \r cannot redraw it
        timer = render.elapsed(time.monotonic() - self._started)
        spin = self.style.spinner[self._frame % len(self.style.spinner)]
        text = spin + " " + render.status_line([self.backend, self.activity], timer, width - 2)
        if self.style.color:
            self._write(self.err, "\r\x1b[K" + self.style.paint("2", text))
        else:
            # No escape codes: blank out what was longer on screen with spaces.
            self._write(self.err, "\r" + text + " " * max(0, self._shown - len(text)))
        self._shown = max(len(text), 1)

    def _clear(self) -> None:
        if not self._shown:
            return
        self._write(self.err, "\r\x1b[K" if self.style.color else
                    "\r" + " " * self._shown + "\r")
        self._shown = 0

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()


def terminal_width(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (80 when it cannot be known)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


# -- running one prompt ----------------------------------------------------------------------------


def run_live(prepared: execute.Prepared, store: Optional[SessionStore], color: bool,
             detail: str, cancel: Optional[execute.Cancel] = None) -> execute.Outcome:
    """Run a prepared (stream=True) run with the live view on stdout and stderr; the Outcome.
    ExecError when it cannot start; Ctrl-C leaves the screen clean and goes on up."""
    view = LiveView(sys.stdout, sys.stderr, prepared.backend.name, color, detail)
    collected: List[execute.Outcome] = []
    view.start()
    try:
        for e in execute.stream(prepared, store, cancel, outcome=collected,
                                on_stderr=view.diagnostics.stderr_line):
            view.event(e)
    finally:
        view.close()
    return collected[0]


_stderr_lock = threading.Lock()


def pass_stderr_through(line: str) -> None:
    """One line of the backend's stderr, as it is, on ours (``--verbose``)."""
    with _stderr_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_plain(prepared: execute.Prepared, store: Optional[SessionStore], detail: str
              ) -> execute.Outcome:
    """Run a prepared run to its end, the backend's stderr lines shown on stderr as they
    come and its warnings once it is over (nothing else: no terminal is assumed)."""
    diagnostics = Diagnostics(prepared.backend.name, detail, Style(sys.stderr, False),
                              pass_stderr_through)
    outcome = execute.run(prepared, store, on_stderr=diagnostics.stderr_line)
    for e in outcome.result.events:
        if e.type == ev.ERROR and not e.content.get("fatal", True):
            diagnostics.warning(e.content.get("message", ""))
    return outcome
