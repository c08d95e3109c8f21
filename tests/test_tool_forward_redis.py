"""Client tool results on any node of a shared store (toolbridge.peers_redis, toolforward): two
``clinvk serve`` processes with different CLINVK_HOMEs (as on two hosts) and one real
redis-server; a run parked on node A is continued by a result sent to node B."""

from __future__ import annotations

import json
import os
import time

import pytest

from clinvk_lib.redisclient import Client
from clinvk_lib.toolbridge.peers_redis import CALL_PREFIX, KEY_NAME, SharedPeers
from tests.redisutil import RedisServer
from tests.serveproc import ServeProcess

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
ASK_TOOL = [{"role": "user", "content": 'CALL-TOOL: get_weather {"city": "Paris"}'}]
PREFIX = "tf:"
KEYS = ("key-one", "key-two")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """redis-server and two nodes on it, each with a home of its own, both with two API keys
    (and an API node, ``api_node``)."""
    root = str(tmp_path_factory.mktemp("tool-forward-redis"))
    with RedisServer(os.path.join(root, "redis")) as redis:
        config = {"server": {"store": redis.url, "store_key_prefix": PREFIX}}
        env = {"CLINVK_API_KEYS": ",".join(KEYS)}
        nodes = []
        try:
            for home in ("home-a", "home-b"):
                nodes.append(ServeProcess(os.path.join(root, home), env=env, config=config))
            yield [redis] + nodes
        finally:
            for node in nodes:
                node.stop()


@pytest.fixture(scope="module")
def api_node(cluster):
    redis = cluster[0]
    node = ServeProcess(os.path.join(os.path.dirname(redis.directory), "home-api"),
                        env={"CLINVK_API_KEYS": ",".join(KEYS)}, config={"server": {
                            "store": redis.url, "store_key_prefix": PREFIX, "role": "api"}})
    yield node
    node.stop()


def auth(key: str = KEYS[0]):
    return {"Authorization": "Bearer " + key}


def park_on(node, key: str = KEYS[0]):
    """The message of a chat completion through ``node`` that ended on a tool call."""
    r = node.post("/openai/v1/chat/completions",
                  {"model": "claude", "tools": WEATHER, "messages": ASK_TOOL}, headers=auth(key))
    assert r.status == 200, r.body
    message = r.json()["choices"][0]["message"]
    assert message["tool_calls"], message
    return message


def result_for(message, result: str, **extra):
    return dict({"model": "claude", "tools": WEATHER, "messages": ASK_TOOL + [message, {
        "role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": result}]},
        **extra)


def test_nodes_of_a_store_keep_no_registry_in_their_homes(cluster):
    redis, a, b = cluster
    park_on(a)
    root = os.path.dirname(redis.directory)
    for home in ("home-a", "home-b"):
        assert not os.path.exists(os.path.join(root, home, "tool-bridge"))


def test_a_tool_result_sent_to_the_other_node_completes_the_parked_run(cluster):
    _, a, b = cluster
    message = park_on(a)
    r = b.post("/openai/v1/chat/completions", result_for(message, "sunny"), headers=auth())
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: sunny"


def test_a_streamed_answer_is_relayed_from_the_node_holding_the_run(cluster):
    _, a, b = cluster
    message = park_on(b)
    r = a.post("/openai/v1/chat/completions", result_for(message, "rain", stream=True),
               headers=auth())
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in r.body.decode().splitlines()
                   if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert text == "TOOL-RESULT-SEEN: rain"


def test_an_api_node_hands_a_tool_result_to_the_node_holding_the_run(cluster, api_node):
    _, a, _ = cluster
    message = park_on(a)
    r = api_node.post("/openai/v1/chat/completions", result_for(message, "snow"),
                      headers=auth())
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: snow"


def test_another_api_keys_result_is_refused_by_the_node_holding_the_run(cluster):
    _, a, b = cluster
    message = park_on(a, KEYS[0])
    r = b.post("/openai/v1/chat/completions", result_for(message, "x"), headers=auth(KEYS[1]))
    assert r.status == 404 and r.json()["error"]["code"] == "tool_call_not_found"
    r = b.post("/openai/v1/chat/completions", result_for(message, "y"), headers=auth(KEYS[0]))
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: y"


def test_a_request_marked_with_the_stores_key_is_answered_where_it_lands(cluster):
    redis, a, b = cluster
    message = park_on(a)
    key = Client(redis.url).execute("GET", PREFIX + KEY_NAME).decode()
    marked = dict(auth(), **{"X-Clinvk-Forwarded": key})
    r = b.post("/openai/v1/chat/completions", result_for(message, "x"), headers=marked)
    assert r.status == 404 and r.json()["error"]["code"] == "tool_call_not_found"
    # A client's own mark (not the store's key) does not stop the forwarding.
    forged = dict(auth(), **{"X-Clinvk-Forwarded": "guess"})
    r = b.post("/openai/v1/chat/completions", result_for(message, "z"), headers=forged)
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: z"


def test_a_parked_call_is_recorded_under_the_prefix_with_the_result_timeout(cluster):
    redis, a, _ = cluster
    message = park_on(a)
    client = Client(redis.url)
    name = PREFIX + CALL_PREFIX + message["tool_calls"][0]["id"]
    assert client.execute("GET", name).decode() == "127.0.0.1:%d" % a.port
    assert 290 < client.execute("TTL", name) <= 300     # server.tool_result_timeout_secs


# -- the registry itself ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with RedisServer(str(tmp_path / "redis")) as redis:
        client = Client(redis.url, prefix="p:")
        yield redis, client
        client.close()


def test_a_node_finds_the_others_calls_but_not_its_own_nor_expired_ones(store):
    _, client = store
    mine, theirs = SharedPeers(client, "10.0.0.1"), SharedPeers(client, "10.0.0.2")
    mine.register("00000001", 8081)
    theirs.register("00000002", 8082)
    theirs.parked(["call_00000002_a", "call_00000002_b"], 300)
    mine.parked(["call_00000001_c"], 300)
    assert mine.address_of("call_00000002_b") == ("10.0.0.2", 8082)
    assert mine.address_of("call_00000001_c") is None
    assert mine.address_of("call_00000003_d") is None
    theirs.parked(["call_00000002_e"], 0.05)
    time.sleep(0.2)
    assert mine.address_of("call_00000002_e") is None


def test_every_node_of_a_store_shares_one_forward_key(store):
    _, client = store
    one, two = SharedPeers(client, "a"), SharedPeers(client, "b")
    assert one.key and one.key == two.key
    assert one.forwarded(two.key) and not one.forwarded("guess") and not one.forwarded("")


def test_an_unreachable_store_forwards_nothing(store):
    redis, client = store
    peers = SharedPeers(client, "a")
    peers.register("00000001", 1)
    redis.stop()
    peers.parked(["call_00000001_a"], 300)
    assert peers.address_of("call_00000002_a") is None
    assert peers.key == "" and not peers.forwarded("anything")
