"""The typed results of a fan-out: what ``orchestrate.run_parallel``, ``run_chain`` and
``run_compare`` return, and the payloads of their ``on_progress`` callback.

Every front end reads these by attribute; ``to_dict()`` gives the JSON the CLI prints with
``--json``, writes into ``--output-dir`` and MCP returns as ``structuredContent`` (the
native HTTP API words its own shapes from the same attributes). Data only: nothing here runs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, TypeVar, Union

from .events import Event, Usage

COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"


class Ending(NamedTuple):
    """How one item ended, before it is told which task, step or backend it was: ``status``
    (COMPLETED, FAILED or CANCELLED), ``exit_code`` (-1: it did not finish), ``output`` and
    ``error`` ("" when there is none), ``duration_ms``, ``usage`` (None: no tokens),
    ``dry_run`` (a dry run's ``Prepared.describe()``, else None) and ``model`` (the model the
    backend reported, else the one it was given; "" when it did not run)."""

    status: str
    exit_code: int
    output: str = ""
    error: str = ""
    duration_ms: int = 0
    usage: Optional[Usage] = None
    dry_run: Optional[Dict[str, Any]] = None
    model: str = ""


class ItemResult:
    """What every task, step and compared backend result says: its ``backend`` and how it
    ended (``Ending``'s fields but ``model``; ``usage`` is always an ``events.Usage``).
    ``to_dict()`` is its JSON; the subclasses add what names the item."""

    __slots__ = ("backend", "status", "exit_code", "output", "error", "duration_ms", "usage",
                 "dry_run")

    def __init__(self, backend: str, ending: Ending) -> None:
        self.backend = backend
        self.status = ending.status
        self.exit_code = ending.exit_code
        self.output = ending.output
        self.error = ending.error
        self.duration_ms = ending.duration_ms
        self.usage = ending.usage if ending.usage is not None else Usage()
        self.dry_run = ending.dry_run

    @property
    def ok(self) -> bool:
        """True when the item completed."""
        return self.status == COMPLETED

    def to_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _ending_dict(self) -> Dict[str, Any]:
        """``{status, exit_code, output, error, duration_ms, usage}``, then ``dry_run`` for a
        dry run: the part of ``to_dict()`` every kind of result shares, in its key order."""
        d = {"status": self.status, "exit_code": self.exit_code, "output": self.output,
             "error": self.error, "duration_ms": self.duration_ms, "usage": self.usage.to_dict()}
        if self.dry_run is not None:
            d["dry_run"] = self.dry_run
        return d

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self.to_dict())


class TaskResult(ItemResult):
    """One parallel task: ``index`` (its position in the input), its ``id`` and ``name`` (""
    when it has none)."""

    __slots__ = ("index", "id", "name")

    def __init__(self, index: int, id: str, name: str, backend: str, ending: Ending) -> None:
        super().__init__(backend, ending)
        self.index = index
        self.id = id
        self.name = name

    def to_dict(self) -> Dict[str, Any]:
        """``{index, id, name, backend, status, exit_code, output, error, duration_ms, usage}``
        (and ``dry_run``)."""
        return dict({"index": self.index, "id": self.id, "name": self.name,
                     "backend": self.backend}, **self._ending_dict())


class StepResult(ItemResult):
    """One chain step: ``step`` (its 1-based number) and ``name`` ("" when it has none)."""

    __slots__ = ("step", "name")

    def __init__(self, step: int, name: str, backend: str, ending: Ending) -> None:
        super().__init__(backend, ending)
        self.step = step
        self.name = name

    def to_dict(self) -> Dict[str, Any]:
        """``{step, name, backend, status, exit_code, output, error, duration_ms, usage}``
        (and ``dry_run``)."""
        return dict({"step": self.step, "name": self.name, "backend": self.backend},
                    **self._ending_dict())


class CompareResult(ItemResult):
    """One compared backend, with the ``model`` it answered with ("" when unknown)."""

    __slots__ = ("model",)

    def __init__(self, backend: str, model: str, ending: Ending) -> None:
        super().__init__(backend, ending)
        self.model = model

    def to_dict(self) -> Dict[str, Any]:
        """``{backend, model, status, exit_code, output, error, duration_ms, usage}`` (and
        ``dry_run``)."""
        return dict({"backend": self.backend, "model": self.model}, **self._ending_dict())


class Started(NamedTuple):
    """The ``on_progress`` payload of an item that starts running."""

    index: int
    backend: str
    name: str


class Skipped(NamedTuple):
    """A backend that compare left out (not installed, or disabled), and why."""

    backend: str
    reason: str

    def to_dict(self) -> Dict[str, str]:
        return {"backend": self.backend, "reason": self.reason}


class Note(NamedTuple):
    """The ``on_progress`` payload of a line an item's backend wrote on its stderr
    (``"stderr"``) or of its warning, a non-fatal error event (``"warning"``)."""

    backend: str
    text: str


ProgressPayload = Union[Started, ItemResult, Skipped, Event, Note]
ProgressFn = Callable[[str, int, ProgressPayload], None]


def _count(results: Sequence[ItemResult], status: str) -> int:
    return sum(1 for r in results if r.status == status)


class ParallelSummary:
    """What ``run_parallel`` returns: one ``TaskResult`` per task, in input order, and counts
    that add up (completed + failed + cancelled == total_tasks)."""

    __slots__ = ("total_tasks", "completed", "failed", "cancelled", "total_duration_ms",
                 "results")

    def __init__(self, results: List[TaskResult], total_duration_ms: int) -> None:
        self.total_tasks = len(results)
        self.completed = _count(results, COMPLETED)
        self.failed = _count(results, FAILED)
        self.cancelled = _count(results, CANCELLED)
        self.total_duration_ms = total_duration_ms
        self.results = results

    def to_dict(self) -> Dict[str, Any]:
        """``{total_tasks, completed, failed, cancelled, total_duration_ms, results}``."""
        return {"total_tasks": self.total_tasks, "completed": self.completed,
                "failed": self.failed, "cancelled": self.cancelled,
                "total_duration_ms": self.total_duration_ms,
                "results": [r.to_dict() for r in self.results]}


class ChainSummary:
    """What ``run_chain`` returns: the ``StepResult`` of every step that ran, in order;
    ``failed_step`` is the number of the first failed step (0 when none failed)."""

    __slots__ = ("total_steps", "completed_steps", "failed_step", "total_duration_ms",
                 "results")

    def __init__(self, total_steps: int, results: List[StepResult],
                 total_duration_ms: int) -> None:
        self.total_steps = total_steps
        self.completed_steps = _count(results, COMPLETED)
        self.failed_step = next((r.step for r in results if r.status == FAILED), 0)
        self.total_duration_ms = total_duration_ms
        self.results = results

    def to_dict(self) -> Dict[str, Any]:
        """``{total_steps, completed_steps, failed_step, total_duration_ms, results}``."""
        return {"total_steps": self.total_steps, "completed_steps": self.completed_steps,
                "failed_step": self.failed_step, "total_duration_ms": self.total_duration_ms,
                "results": [r.to_dict() for r in self.results]}


class CompareSummary:
    """What ``run_compare`` returns: the ``backends`` that ran, their ``CompareResult`` in
    that order, and those ``skipped``."""

    __slots__ = ("prompt", "backends", "total_duration_ms", "results", "skipped")

    def __init__(self, prompt: str, backends: List[str], results: List[CompareResult],
                 skipped: List[Skipped], total_duration_ms: int) -> None:
        self.prompt = prompt
        self.backends = backends
        self.total_duration_ms = total_duration_ms
        self.results = results
        self.skipped = skipped

    def to_dict(self) -> Dict[str, Any]:
        """``{prompt, backends, total_duration_ms, results, skipped: [{backend, reason}]}``."""
        return {"prompt": self.prompt, "backends": list(self.backends),
                "total_duration_ms": self.total_duration_ms,
                "results": [r.to_dict() for r in self.results],
                "skipped": [s.to_dict() for s in self.skipped]}


# What a fan-out returns, for helpers that run any of the three and hand back its summary.
Summary = TypeVar("Summary", ParallelSummary, ChainSummary, CompareSummary)
