"""The ``clinvk_cluster_*`` series of ``/metrics``: what every node on the shared store
(``server.store``) counted, read from Redis at each scrape (``usage_shared``).

Three kinds: the cluster's totals (runs, tokens, cost, requests, per backend and per API key
id); per node (``node`` label: ``server.worker_name``) its requests, runs by outcome, and the
processes, run slots and busy runs its heartbeats advertise, for the nodes with a live
heartbeat only; and the run and HTTP request duration histograms summed over every node.
The histograms carry no ``node`` label: each node's own ``/metrics`` has its histograms
already, a copy per node would multiply the series by the nodes, and a node's series would
vanish with it while the cluster's sums must not.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..redisclient import RedisError
from ..shared_store import worker_name
from .metrics import (HTTP_BUCKETS, OUTCOMES, RUN_BUCKETS, TOKEN_KINDS, Counter, Gauge,
                      Histogram)
from .remote_run import is_api_node
from .usage_shared import (HTTP_HISTOGRAM, RUN_HISTOGRAM, Figures, NodeFigures, Observed,
                           SharedUsage)


def install(app: Any) -> SharedUsage:
    """The shared counters of ``app`` (its ``shared_store``), with the cluster series added
    to its ``/metrics`` when it serves one."""
    usage = SharedUsage(app.shared_store, app.log, worker_name(app.cfg),
                        count_runs=not is_api_node(app))
    if app.metrics is not None:
        app.metrics.add_lines(lambda: metric_lines(usage))
    return usage


def metric_lines(usage: SharedUsage) -> List[str]:
    """The ``clinvk_cluster_*`` series: the store's counters, and
    ``clinvk_cluster_store_up`` (0, and no other cluster series, while Redis does not
    answer)."""
    up = Gauge("clinvk_cluster_store_up", "1 when the shared store (server.store) answered "
               "this scrape: the clinvk_cluster_* series are then every node's; 0 otherwise.")
    try:
        figures = usage.read()
        nodes = usage.read_nodes()
        observed = usage.read_histograms()
    except RedisError:
        up.set(0)
        return up.render()
    up.set(1)
    lines = up.render()
    for metric in total_series(figures) + node_series(nodes) + histogram_series(observed):
        lines.extend(metric.render())
    return lines


def total_series(figures: Figures) -> List[Any]:
    """The cluster's totals, per backend and per API key id."""
    runs = Counter("clinvk_cluster_runs_total", "Backend CLI runs on every node sharing "
                   "server.store, by outcome.", ("backend", "outcome"))
    tokens = Counter("clinvk_cluster_tokens_total", "Tokens the backends reported on every "
                     "node, by kind.", ("backend", "kind"))
    cost = Counter("clinvk_cluster_cost_usd_total", "Cost in US dollars the backends "
                   "reported on every node.", ("backend",))
    requests = Counter("clinvk_cluster_http_requests_total", "HTTP requests answered by "
                       "every node.")
    key_runs = Counter("clinvk_cluster_key_runs_total", "Backend CLI runs on every node by "
                       "the API key id that asked, by outcome.", ("key_id", "outcome"))
    key_requests = Counter("clinvk_cluster_key_requests_total", "HTTP requests every node "
                           "answered, by API key id.", ("key_id",))
    key_tokens = Counter("clinvk_cluster_key_tokens_total", "Tokens the backends reported on "
                         "every node, by API key id and kind.", ("key_id", "kind"))
    key_cost = Counter("clinvk_cluster_key_cost_usd_total", "Cost in US dollars on every "
                       "node, by API key id.", ("key_id",))
    requests.inc(amount=figures["http_requests"])
    for group, runs_of, tokens_of, cost_of in (("backends", runs, tokens, cost),
                                               ("keys", key_runs, key_tokens, key_cost)):
        for who, row in figures[group].items():
            for name, value in row.items():
                if name in OUTCOMES:
                    runs_of.inc(who, name, amount=value)
                elif name.endswith("_tokens") and name[:-len("_tokens")] in TOKEN_KINDS:
                    tokens_of.inc(who, name[:-len("_tokens")], amount=value)
            cost_of.inc(who, amount=row.get("cost_usd", 0.0))
            if group == "keys":
                key_requests.inc(who, amount=row.get("requests", 0))
    return [requests, runs, tokens, cost, key_requests, key_runs, key_tokens, key_cost]


def node_series(nodes: List[NodeFigures]) -> List[Any]:
    """Per node with a live heartbeat: its counters and what its heartbeats advertise."""
    requests = Counter("clinvk_cluster_node_http_requests_total", "HTTP requests the "
                       "node answered (its processes: server.worker_name).", ("node",))
    runs = Counter("clinvk_cluster_node_runs_total", "Backend CLI runs on the node, by "
                   "outcome.", ("node", "outcome"))
    processes = Gauge("clinvk_cluster_node_processes", "Processes of the node (clinvk serve "
                      "or worker) whose heartbeat has not expired.", ("node",))
    capacity = Gauge("clinvk_cluster_node_capacity_runs", "Run slots for jobs the node's "
                     "processes advertise (0 for an API node).", ("node",))
    busy = Gauge("clinvk_cluster_node_busy_runs", "Jobs holding run slots on the node, as "
                 "its last heartbeats said.", ("node",))
    for node in nodes:
        requests.inc(node.name, amount=node.counts.get("http_requests", 0))
        for outcome in OUTCOMES:
            if node.counts.get(outcome):
                runs.inc(node.name, outcome, amount=node.counts[outcome])
        processes.set(node.processes, node.name)
        capacity.set(node.capacity, node.name)
        busy.set(node.busy, node.name)
    return [requests, runs, processes, capacity, busy]


def histogram_series(observed: Dict[str, Dict[Tuple[str, ...], Observed]]) -> List[Any]:
    """The duration histograms, summed over every node."""
    runs = Histogram("clinvk_cluster_backend_run_duration_seconds", "Duration of backend "
                     "CLI runs on every node.", ("backend",), RUN_BUCKETS)
    requests = Histogram("clinvk_cluster_http_request_duration_seconds", "Time from request "
                         "to the end of the response (streams included) on every node.",
                         ("method", "route"), HTTP_BUCKETS)
    for histogram, name in ((runs, RUN_HISTOGRAM), (requests, HTTP_HISTOGRAM)):
        for labels, series in observed[name].items():
            if len(labels) == len(histogram.labelnames):
                histogram.add_counts(series.counts, series.total, *labels)
    return [runs, requests]
