"""Prometheus metrics in the text exposition format 0.0.4, and the set clinvk exports.

Recording is a lock and a dict update, so it never holds up a streaming response; all
formatting happens in ``render()``, when ``GET /metrics`` asks.
"""

from __future__ import annotations

import bisect
import math
import platform
import re
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..events import Usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``3``, ``0.25``, ``+Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return "%d" % value
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join('%s="%s"' % (n, escape_label_value(v))
                          for n, v in zip(names, values)) + "}"


class _Metric:
    """A metric family: a name, help text, label names and one value per label combination."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError("invalid metric name %r" % (name,))
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError("invalid label name %r for metric %s" % (label, name))
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labelvalues: Sequence[object]) -> Tuple[str, ...]:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError("%s takes labels %s: got %d value(s)"
                             % (self.name, ", ".join(self.labelnames) or "(none)",
                                len(labelvalues)))
        return tuple(str(v) for v in labelvalues)

    def render(self) -> List[str]:
        lines = ["# HELP %s %s" % (self.name, _escape_help(self.help)),
                 "# TYPE %s %s" % (self.name, self.kind)]
        lines.extend(self._samples())
        return lines

    def _samples(self) -> List[str]:
        raise NotImplementedError


class _Scalar(_Metric):
    """Counter and Gauge: one number per label combination."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: Dict[Tuple[str, ...], float] = {}
        if not self.labelnames:
            self._values[()] = 0.0          # an unlabelled series exists from the start

    def _add(self, labelvalues: Sequence[object], amount: float) -> None:
        key = self._key(labelvalues)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labelvalues: object) -> float:
        """The current value for these label values (0 if never recorded)."""
        key = self._key(labelvalues)
        with self._lock:
            return self._values.get(key, 0.0)

    def _snapshot(self) -> List[Tuple[Tuple[str, ...], float]]:
        with self._lock:
            return sorted(self._values.items())

    def _samples(self) -> List[str]:
        return ["%s%s %s" % (self.name, _label_text(self.labelnames, key), format_value(v))
                for key, v in self._snapshot()]


class Counter(_Scalar):
    """A count that only goes up."""

    kind = "counter"

    def inc(self, *labelvalues: object, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counter %s cannot decrease (amount %r)" % (self.name, amount))
        self._add(labelvalues, amount)


class Gauge(_Scalar):
    """A value that goes up and down, or (with ``callback``, unlabelled) one read at render
    time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 callback: Optional[Callable[[], float]] = None) -> None:
        if callback is not None and labelnames:
            raise ValueError("gauge %s: a callback gauge has no labels" % (name,))
        super().__init__(name, help, labelnames)
        self.callback = callback

    def set(self, value: float, *labelvalues: object) -> None:
        key = self._key(labelvalues)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, *labelvalues: object, amount: float = 1.0) -> None:
        self._add(labelvalues, amount)

    def dec(self, *labelvalues: object, amount: float = 1.0) -> None:
        self._add(labelvalues, -amount)

    def _snapshot(self) -> List[Tuple[Tuple[str, ...], float]]:
        if self.callback is None:
            return super()._snapshot()
        try:
            return [((), float(self.callback()))]
        except Exception:
            # A failing source (say, an unreadable session store) must not take down the whole
            # /metrics page; the series is left out and /health reports the cause.
            return []


class Histogram(_Metric):
    """Observations counted into cumulative ``le`` buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                             2.5, 5.0, 10.0)) -> None:
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError("histogram %s needs distinct finite buckets: got %r" % (name, buckets))
        self.buckets = tuple(bounds)
        # key -> [per-bucket counts (last one: above every bound), sum]
        self._series: Dict[Tuple[str, ...], list] = {}
        if not self.labelnames:
            self._series[()] = [[0] * (len(bounds) + 1), 0.0]

    def observe(self, value: float, *labelvalues: object) -> None:
        self._add_to(labelvalues, {bucket_bound(self.buckets, value): 1}, value)

    def add_counts(self, counts: Dict[float, int], total: float, *labelvalues: object) -> None:
        """Add observations counted elsewhere: ``counts`` by bucket upper bound (``math.inf``
        for the last), ``total`` their sum. A bound this histogram lacks counts in the next
        one above it, so the buckets stay cumulative and true."""
        self._add_to(labelvalues, counts, total)

    def _add_to(self, labelvalues: Sequence[object], counts: Dict[float, int],
                total: float) -> None:
        key = self._key(labelvalues)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [[0] * (len(self.buckets) + 1), 0.0]
            for bound, count in counts.items():
                series[0][bisect.bisect_left(self.buckets, bound)] += count
            series[1] += total

    def _samples(self) -> List[str]:
        with self._lock:
            snapshot = sorted((key, list(s[0]), s[1]) for key, s in self._series.items())
        lines = []
        names = self.labelnames + ("le",)
        for key, counts, total in snapshot:
            cumulative = 0
            for bound, count in zip(self.buckets + (math.inf,), counts):
                cumulative += count
                lines.append("%s_bucket%s %d" % (
                    self.name, _label_text(names, key + (format_value(bound),)), cumulative))
            labels = _label_text(self.labelnames, key)
            lines.append("%s_sum%s %s" % (self.name, labels, format_value(total)))
            lines.append("%s_count%s %d" % (self.name, labels, cumulative))
        return lines


def bucket_bound(buckets: Sequence[float], value: float) -> float:
    """The upper bound of the bucket of sorted ``buckets`` that ``value`` counts in (``le``
    is <=): the first bound >= ``value``, else ``math.inf``."""
    index = bisect.bisect_left(buckets, value)
    return buckets[index] if index < len(buckets) else math.inf


class Registry:
    """The metrics one ``/metrics`` page shows, in registration order."""

    def __init__(self) -> None:
        self._metrics: List[_Metric] = []

    def register(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError("metric %s is already registered" % (metric.name,))
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The exposition text (format 0.0.4), ending in a newline."""
        lines: List[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


# Agent runs take seconds to many minutes; the defaults of Prometheus clients stop at 10 s.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# Any other method string is counted as OTHER: a client must not be able to mint label values.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def method_label(method: str) -> str:
    """The ``method`` label of an HTTP request: its method, or OTHER for any other string."""
    return method if method in _METHODS else "OTHER"

TOKEN_KINDS = ("input", "output", "cached", "reasoning")
OUTCOMES = ("success", "failure", "timeout", "cancelled")


class ServerMetrics:
    """The clinvk metric set and the calls the server makes to record it."""

    def __init__(self, version: str, session_count: Optional[Callable[[], float]] = None,
                 python_version: str = platform.python_version()) -> None:
        r = self.registry = Registry()
        self._sources: List[Callable[[], List[str]]] = []
        self.http_requests = r.register(Counter(
            "clinvk_http_requests_total", "HTTP requests answered, by route template and status.",
            ("method", "route", "status")))
        self.http_duration = r.register(Histogram(
            "clinvk_http_request_duration_seconds",
            "Time from request to the end of the response (streams included).",
            ("method", "route"), HTTP_BUCKETS))
        self.in_flight = r.register(Gauge(
            "clinvk_http_requests_in_flight", "HTTP requests being handled now."))
        self.backend_runs = r.register(Counter(
            "clinvk_backend_runs_total", "Backend CLI runs, by outcome.", ("backend", "outcome")))
        self.backend_duration = r.register(Histogram(
            "clinvk_backend_run_duration_seconds", "Duration of backend CLI runs.",
            ("backend",), RUN_BUCKETS))
        self.backend_tokens = r.register(Counter(
            "clinvk_backend_tokens_total", "Tokens the backends reported, by kind.",
            ("backend", "kind")))
        self.rate_limited = r.register(Counter(
            "clinvk_rate_limited_total", "Requests refused with 429 by the rate limiter."))
        self.auth_failures = r.register(Counter(
            "clinvk_auth_failures_total", "Requests refused with 401 (missing or wrong API key)."))
        self.sessions = r.register(Gauge(
            "clinvk_sessions", "Sessions in the session store.", callback=session_count))
        self.jobs_submitted = r.register(Counter(
            "clinvk_jobs_submitted_total", "Durable jobs accepted, by kind.", ("kind",)))
        self.jobs_finished = r.register(Counter(
            "clinvk_jobs_finished_total", "Durable jobs ended in this process, by kind and "
            "final status.", ("kind", "status")))
        self.jobs_queued = r.register(Gauge(
            "clinvk_jobs_queued", "Durable jobs of this process waiting for a run slot."))
        self.jobs_running = r.register(Gauge(
            "clinvk_jobs_running", "Durable jobs of this process holding run slots."))
        self.webhook_deliveries = r.register(Counter(
            "clinvk_webhook_deliveries_total", "Webhook delivery attempts, by outcome: "
            "delivered, retried (another attempt follows) or failed (the delivery gave up).",
            ("outcome",)))
        self.build_info = r.register(Gauge(
            "clinvk_build_info", "Always 1; the labels name the running build.",
            ("version", "python")))
        self.build_info.set(1, version, python_version)
        self.backend_cost = r.register(Counter(
            "clinvk_backend_cost_usd_total", "Cost in US dollars the backends reported.",
            ("backend",)))
        self.key_runs = r.register(Counter(
            "clinvk_key_runs_total", "Backend CLI runs by the API key that asked (its key id), "
            "when API keys are set.", ("key_id", "backend", "outcome")))
        self.key_tokens = r.register(Counter(
            "clinvk_key_tokens_total", "Tokens the backends reported, by API key id and kind.",
            ("key_id", "kind")))
        self.key_cost = r.register(Counter(
            "clinvk_key_cost_usd_total", "Cost in US dollars the backends reported, by API key "
            "id.", ("key_id",)))

    def add_lines(self, source: Callable[[], List[str]]) -> None:
        """Append ``source()``'s exposition lines to every render (series read elsewhere,
        such as the shared store's ``clinvk_cluster_*``)."""
        self._sources.append(source)

    def count_parked_runs(self, count: Callable[[], float]) -> None:
        """Serve ``clinvk_parked_runs``: runs waiting for a client's tool result."""
        self.parked_runs = self.registry.register(Gauge(
            "clinvk_parked_runs", "Backend runs parked on a client tool call, waiting for "
            "the result (each holds a run slot).", callback=count))

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record a finished request. ``route`` is the matched template
        (``/api/v1/sessions/{id}``), never the raw path, so ids do not become series."""
        self.in_flight.dec()
        method = method_label(method)
        self.http_requests.inc(method, route, status)
        self.http_duration.observe(seconds, method, route)

    def run_finished(self, backend: str, outcome: str, seconds: float,
                     usage: Optional[Usage] = None, key_id: str = "") -> None:
        """Record a finished backend run and the tokens (and cost) it reported, also under
        the id of the API key that asked for it when there is one."""
        self.backend_runs.inc(backend, outcome)
        self.backend_duration.observe(seconds, backend)
        if key_id:
            self.key_runs.inc(key_id, backend, outcome)
        if usage is None:
            return
        for kind in TOKEN_KINDS:
            count = getattr(usage, kind + "_tokens", 0)
            if count:
                self.backend_tokens.inc(backend, kind, amount=count)
                if key_id:
                    self.key_tokens.inc(key_id, kind, amount=count)
        if usage.cost_usd:
            self.backend_cost.inc(backend, amount=usage.cost_usd)
            if key_id:
                self.key_cost.inc(key_id, amount=usage.cost_usd)

    def requests_answered(self) -> float:
        """HTTP requests answered since start."""
        return sum(n for _, n in self.http_requests._snapshot())

    def usage(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        """What the counters say per backend and per API key id since start:
        ``{"backends": {name: {"runs", "<outcome>", "<kind>_tokens", "cost_usd"}},
        "keys": {key_id: {...the same}}}`` (the console's Usage page)."""
        out: Dict[str, Dict[str, Dict[str, float]]] = {"backends": {}, "keys": {}}

        def add(group: str, who: str, name: str, value: float) -> None:
            row = out[group].setdefault(who, {"runs": 0, "cost_usd": 0.0})
            row[name] = row.get(name, 0) + value
        for group, runs, tokens, cost in (
                ("backends", self.backend_runs, self.backend_tokens, self.backend_cost),
                ("keys", self.key_runs, self.key_tokens, self.key_cost)):
            for labels, n in runs._snapshot():       # (backend | key_id, ..., outcome)
                add(group, labels[0], "runs", n)
                add(group, labels[0], labels[-1], n)
            for (who, kind), n in tokens._snapshot():
                add(group, who, kind + "_tokens", n)
            for (who,), n in cost._snapshot():
                add(group, who, "cost_usd", n)
        return out

    def watch_jobs(self, counts: Callable[[], Tuple[int, int]]) -> None:
        """Read the queued and running job gauges from ``counts()`` (queued, running)."""
        self.jobs_queued.callback = lambda: counts()[0]
        self.jobs_running.callback = lambda: counts()[1]

    def job_submitted(self, kind: str) -> None:
        self.jobs_submitted.inc(kind)

    def job_finished(self, kind: str, status: str) -> None:
        self.jobs_finished.inc(kind, status)

    def webhook_attempted(self, outcome: str) -> None:
        self.webhook_deliveries.inc(outcome)

    def render(self) -> str:
        text = self.registry.render()
        for source in self._sources:
            lines = source()
            if lines:
                text += "\n".join(lines) + "\n"
        return text
