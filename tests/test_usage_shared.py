"""Usage counters in the shared store (server.store): runs, tokens, cost and requests per
backend and per API key, written by every node, read by any (GET /api/v1/usage scope
cluster, /metrics clinvk_cluster_*); kept in memory while Redis is down and written once it
is back. A real redis-server, and real `clinvk serve` / `clinvk worker` processes."""

from __future__ import annotations

import re

import pytest

from clinvk_lib.events import Usage
from clinvk_lib.redisclient import Client
from clinvk_lib.server.keys import key_id
from clinvk_lib.server.usage_shared import SharedUsage, metric_lines
from tests.redisutil import RedisServer, WorkerProcess
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


@pytest.fixture
def redis(tmp_path):
    with RedisServer(str(tmp_path / "redis")) as server:
        yield server


def counters(redis, count_runs=True):
    """One node's counters, on connections of its own as another process would have."""
    return SharedUsage(Client(redis.url, prefix="t:", connect_attempts=1), Log(), count_runs)


def written(usage: SharedUsage) -> bool:
    return usage.flush(10.0)


# -- the counters ------------------------------------------------------------------------------


def test_two_nodes_counts_add_up_in_the_store(redis):
    a, b = counters(redis), counters(redis)
    a.count_run("claude", "success", Usage(input_tokens=10, output_tokens=3, cost_usd=0.25),
                "k1")
    b.count_run("claude", "failure", Usage(input_tokens=5, cost_usd=0.5), "k2")
    b.count_run("codex", "success", None)
    a.count_request("k1")
    b.count_request("")
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
    api.count_run("claude", "success", None, "k1")
    api.count_request("k1")
    assert written(api)
    figures = api.read()
    assert figures["backends"] == {} and figures["keys"]["k1"] == {
        "runs": 0, "cost_usd": 0.0, "requests": 1}


def test_counts_made_while_redis_is_down_are_written_once_it_is_back(redis):
    node = counters(redis)
    node.count_run("claude", "success", None)
    assert written(node)
    redis.stop()
    node.count_run("claude", "success", Usage(output_tokens=7))     # never blocks
    node.count_run("claude", "timeout", None)
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
        node.count_run("gemini", "success", Usage(output_tokens=2))
    node.close()
    node.count_run("gemini", "success", None)          # after close: not counted
    assert counters(redis).read()["backends"]["gemini"]["output_tokens"] == 100
    assert counters(redis).read()["backends"]["gemini"]["runs"] == 50


def test_cluster_series_name_every_backend_and_key(redis):
    node = counters(redis)
    node.count_run("claude", "success", Usage(input_tokens=4, cost_usd=0.5), "k1")
    node.count_request("k1")
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
    nodes = [ServeProcess(str(tmp_path / name), config=node_settings(redis))
             for name in ("a", "b")]
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
    api = ServeProcess(str(tmp_path / "api"), config=node_settings(redis, role="api"))
    worker = WorkerProcess(str(tmp_path / "w1"), {"server": {"store": redis.url}})
    try:
        assert api.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                        headers=as_key(KEY)).status == 200
        assert wait_for(lambda: claude_runs(api) == 1, 15)
    finally:
        worker.stop()           # writes what it had not yet
    try:
        usage = api.get("/api/v1/usage", headers=as_key(KEY)).json()
        assert usage["backends"]["claude"]["runs"] == 1
        assert usage["keys"][key_id(KEY)]["runs"] == 1
    finally:
        api.stop()
