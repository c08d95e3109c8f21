"""Usage counters in the shared store (server.store): runs, tokens, cost and requests per
backend, per API key and per node, and the duration histograms, written by every node, read
by any (GET /api/v1/usage scope cluster, /metrics clinvk_cluster_*); kept in memory while
Redis is down and written once it is back; each batch applied once however often sent. A
real redis-server, and real `clinvk serve` / `clinvk worker` processes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from clinvk_lib.events import Usage
from clinvk_lib.job_queue_redis import RunnerHeartbeat
from clinvk_lib.redisclient import Client
from clinvk_lib.server.cluster_metrics import metric_lines
from clinvk_lib.server.keys import key_id
from clinvk_lib.server.usage_shared import APPLY_BATCH, Batch, SharedUsage
from tests.redisutil import WorkerProcess, free_port
from tests.test_metrics import exposition_problems
from tests.serveproc import ServeProcess
from tests.serverutil import start_server, wait_for  # noqa: F401  (a fixture)

KEY, OTHER, ADMIN = "key-one-0123456789", "key-two-0123456789", "admin-key-0123456789"


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, **fields):
        self.lines.append(msg)

    def error(self, msg, request_id="", details=""):
        self.lines.append(msg)


def counters(redis, count_runs=True, node="node-a", url=""):
    """One node's counters, on connections of its own as another process would have."""
    return SharedUsage(Client(url or redis.url, prefix="t:", connect_attempts=1), Log(), node,
                       count_runs)


def written(usage: SharedUsage) -> bool:
    return usage.flush(10.0)


# -- the counters ------------------------------------------------------------------------------


def test_two_nodes_counts_add_up_in_the_store(redis):
    a, b = counters(redis), counters(redis)
    a.count_run("claude", "success", 1.0,
                Usage(input_tokens=10, output_tokens=3, cost_usd=0.25), "k1")
    b.count_run("claude", "failure", 1.0, Usage(input_tokens=5, cost_usd=0.5), "k2")
    b.count_run("codex", "success", 1.0)
    a.count_request("POST", "/api/v1/prompt", 0.1, "k1")
    b.count_request("GET", "/health", 0.1)
    assert written(a) and written(b)
    for node in (a, b):
        figures = node.read()
        assert figures["backends"]["claude"] == {
            "runs": 2, "success": 1, "failure": 1, "input_tokens": 15, "output_tokens": 3,
            "cost_usd": 0.75}
        assert figures["backends"]["codex"] == {"runs": 1, "success": 1, "cost_usd": 0.0}
        assert figures["keys"]["k1"] == {"runs": 1, "success": 1, "input_tokens": 10,
                                         "output_tokens": 3, "cost_usd": 0.25, "requests": 1}
        assert figures["keys"]["k2"]["runs"] == 1 and "requests" not in figures["keys"]["k2"]
        assert figures["http_requests"] == 2 and figures["since"]


def test_an_api_node_counts_requests_but_not_the_runs_a_worker_ran(redis):
    api = counters(redis, count_runs=False)
    api.count_run("claude", "success", 1.0, None, "k1")
    api.count_request("POST", "/api/v1/prompt", 1.0, "k1")
    assert written(api)
    figures = api.read()
    assert figures["backends"] == {} and figures["keys"]["k1"] == {
        "runs": 0, "cost_usd": 0.0, "requests": 1}


def test_counts_made_while_redis_is_down_are_written_once_it_is_back(redis):
    node = counters(redis)
    node.count_run("claude", "success", 1.0)
    assert written(node)
    redis.stop()
    node.count_run("claude", "success", 1.0, Usage(output_tokens=7))     # never blocks
    node.count_run("claude", "timeout", 1.0)
    assert wait_for(lambda: node.down, 10)
    assert any("kept in memory" in line for line in node.log.lines)
    redis.start()           # empty: only what was kept comes back
    assert wait_for(lambda: not node.down, 15)
    assert written(node)
    row = node.read()["backends"]["claude"]
    assert (row["runs"], row["success"], row["timeout"], row["output_tokens"]) == (2, 1, 1, 7)
    assert any("takes them again" in line for line in node.log.lines)


def test_closing_writes_what_was_still_in_memory(redis):
    node = counters(redis)
    for _ in range(50):
        node.count_run("gemini", "success", 1.0, Usage(output_tokens=2))
    node.close()
    node.count_run("gemini", "success", 1.0)          # after close: not counted
    assert counters(redis).read()["backends"]["gemini"]["output_tokens"] == 100
    assert counters(redis).read()["backends"]["gemini"]["runs"] == 50


def test_cluster_series_name_every_backend_and_key(redis):
    node = counters(redis)
    node.count_run("claude", "success", 1.0, Usage(input_tokens=4, cost_usd=0.5), "k1")
    node.count_request("GET", "/api/v1/sessions", 0.1, "k1")
    assert written(node)
    text = "\n".join(metric_lines(node))
    for sample in ('clinvk_cluster_store_up 1', 'clinvk_cluster_http_requests_total 1',
                   'clinvk_cluster_runs_total{backend="claude",outcome="success"} 1',
                   'clinvk_cluster_tokens_total{backend="claude",kind="input"} 4',
                   'clinvk_cluster_cost_usd_total{backend="claude"} 0.5',
                   'clinvk_cluster_key_runs_total{key_id="k1",outcome="success"} 1',
                   'clinvk_cluster_key_requests_total{key_id="k1"} 1',
                   'clinvk_cluster_key_tokens_total{key_id="k1",kind="input"} 4',
                   'clinvk_cluster_key_cost_usd_total{key_id="k1"} 0.5'):
        assert sample in text.splitlines(), sample


def test_cluster_series_say_the_store_is_down_and_nothing_else(redis):
    node = counters(redis)
    redis.stop()
    assert metric_lines(node) == [
        "# HELP clinvk_cluster_store_up 1 when the shared store (server.store) answered this "
        "scrape: the clinvk_cluster_* series are then every node's; 0 otherwise.",
        "# TYPE clinvk_cluster_store_up gauge", "clinvk_cluster_store_up 0"]


# -- each batch once ----------------------------------------------------------------------------


def test_a_batch_applied_twice_counts_once(redis):
    node = counters(redis)
    keys, args = node.script_arguments(Batch(1, {"usage:b:claude": {"runs": 1, "success": 1}}))
    assert node.client.run_script(APPLY_BATCH, keys, args) == 1
    assert node.client.run_script(APPLY_BATCH, keys, args) == 0
    assert node.read()["backends"]["claude"]["runs"] == 1
    keys, args = node.script_arguments(Batch(2, {"usage:b:claude": {"runs": 1}}))
    assert node.client.run_script(APPLY_BATCH, keys, args) == 1
    assert node.read()["backends"]["claude"]["runs"] == 2


class ReplyDropper:
    """A TCP proxy to Redis that, once ``armed``, closes the connection instead of passing on
    the first ``:1`` reply (the batch script's "applied"): Redis ran the batch, the client
    never heard so."""

    def __init__(self, port: int) -> None:
        self.port, self.armed, self.dropped = port, False, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "redis://127.0.0.1:%d/0" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            for source, sink, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(source, sink, replies),
                                 daemon=True).start()

    def _pipe(self, source, sink, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if replies and self.armed and data.startswith(b":1\r\n"):
                    self.armed, self.dropped = False, self.dropped + 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_batch_whose_reply_was_lost_is_sent_again_and_counted_once(redis):
    proxy = ReplyDropper(int(redis.url.rsplit(":", 1)[1].split("/")[0]))
    try:
        node = counters(redis, url=proxy.url)
        node.count_run("claude", "success", 1.0)
        assert written(node)
        proxy.armed = True
        node.count_run("claude", "success", 1.0, Usage(output_tokens=5))
        assert wait_for(lambda: proxy.dropped == 1, 10)
        assert wait_for(lambda: written(node), 15)
        row = counters(redis).read()["backends"]["claude"]
        assert (row["runs"], row["success"], row["output_tokens"]) == (2, 2, 5)
    finally:
        proxy.close()


def test_a_batch_a_read_only_replica_refused_is_kept_until_it_takes_writes(redis):
    node, admin = counters(redis), Client(redis.url)
    admin.execute("REPLICAOF", "127.0.0.1", str(free_port()))      # a primary that is not there
    node.count_run("claude", "success", 1.0)
    assert wait_for(lambda: node.down.startswith("READONLY"), 10)
    admin.execute("REPLICAOF", "NO", "ONE")
    assert wait_for(lambda: not node.down, 15) and written(node)
    assert node.read()["backends"]["claude"]["runs"] == 1


def test_a_batch_redis_refuses_for_good_is_dropped_and_said_so(redis):
    node = counters(redis)
    node.client.execute("SET", "t:usage:b:claude", "not a hash")
    node.count_run("claude", "success", 1.0)
    assert written(node)
    assert any("refused a batch, dropped (WRONGTYPE" in line for line in node.log.lines)
    node.count_run("codex", "success", 1.0)
    assert written(node) and node.client.execute("HGET", "t:usage:b:codex", "runs") == b"1"


# -- per node and histograms ---------------------------------------------------------------------


def heartbeat(redis, node, capacity=4, busy=1):
    """A live process of ``node``, as ``clinvk serve`` / ``clinvk worker`` advertises one."""
    beat = RunnerHeartbeat(Client(redis.url, prefix="t:"), 60, lambda: {
        "worker": node, "backends": "claude", "capacity": str(capacity), "busy": str(busy)})
    beat.take()
    return beat


def series(usage):
    return "\n".join(metric_lines(usage)).splitlines()


def test_each_live_node_is_reported_with_its_requests_runs_and_run_slots(redis):
    a, b = counters(redis, node="node-a"), counters(redis, node="node-b")
    beats = [heartbeat(redis, "node-a"), heartbeat(redis, "node-b", 2, 0),
             heartbeat(redis, "node-b", 2, 2)]
    a.count_request("GET", "/health", 0.01)
    b.count_run("claude", "success", 3.0)
    b.count_run("claude", "timeout", 900.0)
    b.count_request("POST", "/api/v1/prompt", 3.5)
    assert written(a) and written(b)
    lines = series(a)
    for sample in ('clinvk_cluster_node_http_requests_total{node="node-a"} 1',
                   'clinvk_cluster_node_http_requests_total{node="node-b"} 1',
                   'clinvk_cluster_node_runs_total{node="node-b",outcome="success"} 1',
                   'clinvk_cluster_node_runs_total{node="node-b",outcome="timeout"} 1',
                   'clinvk_cluster_node_processes{node="node-b"} 2',
                   'clinvk_cluster_node_capacity_runs{node="node-b"} 4',
                   'clinvk_cluster_node_busy_runs{node="node-b"} 2',
                   'clinvk_cluster_node_busy_runs{node="node-a"} 1'):
        assert sample in lines, sample
    assert not any('node="node-a",outcome' in line for line in lines)
    for beat in beats[1:]:
        beat.release()              # as its expiry would
    lines = series(a)
    assert not any('node="node-b"' in line for line in lines)
    assert 'clinvk_cluster_node_http_requests_total{node="node-a"} 1' in lines
    beats[0].release()


def test_a_nodes_counters_expire_once_it_has_stopped(redis):
    node = counters(redis, node="node-gone")
    node.node_ttl_secs = 1.0
    node.count_request("GET", "/health", 0.01)
    assert written(node)
    key = "t:usage:n:node-gone"
    assert 0 < node.client.execute("PTTL", key) <= 1000
    time.sleep(2.5)
    assert node.client.execute("EXISTS", key) == 1          # renewed while the node lives
    node.close()
    assert wait_for(lambda: node.client.execute("EXISTS", key) == 0, 5)


def test_duration_histograms_sum_every_nodes_observations(redis):
    a, b = counters(redis, node="node-a"), counters(redis, node="node-b")
    a.count_run("claude", "success", 0.3)
    b.count_run("claude", "failure", 45.0)
    b.count_run("codex", "success", 5000.0)
    a.count_request("POST", "/api/v1/prompt", 0.3)
    b.count_request("BREW", "unmatched", 0.002)
    assert written(a) and written(b)
    lines = series(a)
    for sample in (
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="claude",le="0.25"} 0',
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="claude",le="0.5"} 1',
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="claude",le="60"} 2',
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="claude",le="+Inf"} 2',
            'clinvk_cluster_backend_run_duration_seconds_sum{backend="claude"} 45.3',
            'clinvk_cluster_backend_run_duration_seconds_count{backend="claude"} 2',
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="codex",le="1800"} 0',
            'clinvk_cluster_backend_run_duration_seconds_bucket{backend="codex",le="+Inf"} 1',
            'clinvk_cluster_http_request_duration_seconds_bucket{method="POST",'
            'route="/api/v1/prompt",le="0.5"} 1',
            'clinvk_cluster_http_request_duration_seconds_count{method="OTHER",'
            'route="unmatched"} 1'):
        assert sample in lines, sample


def test_cluster_series_are_valid_exposition_text(redis):
    node = counters(redis)
    beat = heartbeat(redis, "node-a")
    node.count_run("claude", "success", 2.0, Usage(input_tokens=3, cost_usd=0.1), "k1")
    node.count_request("POST", "/api/v1/prompt", 2.1, "k1")
    node.count_request("GET", '/a "quoted" \\ route', 0.01)
    assert written(node)
    text = "\n".join(metric_lines(node)) + "\n"
    assert exposition_problems(text) == []
    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "metrics"], input=text,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=30)
        assert (result.returncode, result.stdout) == (0, "")
    beat.release()


# -- two `clinvk serve` nodes --------------------------------------------------------------------


def node_settings(redis, **server):
    return {"server": dict({"store": redis.url, "metrics_enabled": True,
                            "api_keys": [KEY, OTHER, ADMIN], "admin_api_keys": [ADMIN]},
                           **server)}


def as_key(key):
    return {"X-Api-Key": key}


def claude_runs(srv, key=ADMIN):
    return srv.get("/api/v1/usage", headers=as_key(key)).json()["backends"].get(
        "claude", {}).get("runs")


def test_runs_on_two_nodes_add_up_in_the_usage_and_metrics_of_either(redis, tmp_path):
    nodes = [ServeProcess(str(tmp_path / name), config=node_settings(
        redis, worker_name=name, max_concurrent_runs=3)) for name in ("a", "b")]
    try:
        a, b = nodes
        for srv, key in ((a, KEY), (b, KEY), (b, OTHER)):
            assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                            headers=as_key(key)).status == 200
        assert wait_for(lambda: claude_runs(a) == 3 and claude_runs(b) == 3, 15)
        for srv in nodes:
            mine = srv.get("/api/v1/usage", headers=as_key(KEY)).json()
            assert mine["scope"] == "cluster" and mine["backends"]["claude"]["runs"] == 3
            assert list(mine["keys"]) == [key_id(KEY)] and mine["keys"][key_id(KEY)]["runs"] == 2
            assert mine["keys"][key_id(KEY)]["requests"] >= 2
            assert mine["http_requests"] >= 3
            everyone = srv.get("/api/v1/usage", headers=as_key(ADMIN)).json()
            assert everyone["keys"][key_id(OTHER)]["runs"] == 1
            text = srv.get("/metrics", headers=as_key(ADMIN)).body.decode()
            assert 'clinvk_cluster_runs_total{backend="claude",outcome="success"} 3' in text
            assert re.search(r'^clinvk_cluster_tokens_total\{backend="claude",kind="output"\} '
                             r'[1-9]', text, re.M)
            own = re.search(r'^clinvk_backend_runs_total\{backend="claude",outcome="success"\} '
                            r'(\d+)', text, re.M)
            assert own and int(own.group(1)) in (1, 2)         # the node's own series stay
            assert exposition_problems(text) == []
            lines = text.splitlines()
            assert 'clinvk_cluster_node_runs_total{node="a",outcome="success"} 1' in lines
            assert 'clinvk_cluster_node_runs_total{node="b",outcome="success"} 2' in lines
            assert 'clinvk_cluster_node_capacity_runs{node="b"} 3' in lines
            assert 'clinvk_cluster_backend_run_duration_seconds_count{backend="claude"} 3' \
                in lines
            assert wait_for(lambda: 'clinvk_cluster_http_request_duration_seconds_count{'
                            'method="POST",route="/api/v1/prompt"} 3' in srv.get(
                                "/metrics", headers=as_key(ADMIN)).body.decode(), 10)
    finally:
        for srv in nodes:
            srv.stop()


def test_without_the_store_the_usage_is_the_nodes_and_says_why(redis, start_server):
    srv = start_server(**{"server.store": redis.url, "server.metrics_enabled": True})
    assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"}).status == 200
    assert wait_for(lambda: claude_runs(srv) == 1, 10)
    redis.stop()
    usage = srv.get("/api/v1/usage").json()
    assert usage["scope"] == "node" and "Redis" in usage["store_error"]
    assert usage["backends"]["claude"]["runs"] == 1           # the node's own count
    text = srv.get("/metrics").body.decode()
    assert "clinvk_cluster_store_up 0" in text.splitlines()
    assert "clinvk_cluster_runs_total" not in text


def test_without_a_store_the_usage_is_the_nodes(start_server):
    usage = start_server(**{"server.metrics_enabled": True}).get("/api/v1/usage").json()
    assert usage["scope"] == "node" and "store_error" not in usage


@pytest.mark.slow
def test_a_run_through_an_api_node_is_counted_once_by_the_worker_under_the_key(redis, tmp_path):
    api = ServeProcess(str(tmp_path / "api"), config=node_settings(redis, role="api",
                                                                    worker_name="api1"))
    worker = WorkerProcess(str(tmp_path / "w1"), {"server": {
        "store": redis.url, "worker_name": "w1", "max_concurrent_runs": 2}})
    try:
        assert api.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                        headers=as_key(KEY)).status == 200
        assert wait_for(lambda: claude_runs(api) == 1, 15)
        lines = api.get("/metrics", headers=as_key(ADMIN)).body.decode().splitlines()
        for sample in ('clinvk_cluster_node_runs_total{node="w1",outcome="success"} 1',
                       'clinvk_cluster_node_capacity_runs{node="w1"} 2',
                       'clinvk_cluster_node_capacity_runs{node="api1"} 0',
                       'clinvk_cluster_backend_run_duration_seconds_count{backend="claude"} 1'):
            assert sample in lines, sample
        assert not any(line.startswith('clinvk_cluster_node_runs_total{node="api1"')
                       for line in lines)
    finally:
        worker.stop()           # writes what it had not yet
    try:
        usage = api.get("/api/v1/usage", headers=as_key(KEY)).json()
        assert usage["backends"]["claude"]["runs"] == 1
        assert usage["keys"][key_id(KEY)]["runs"] == 1
    finally:
        api.stop()
