"""Stored Responses API objects across nodes on one Redis (``server.store``): `clinvk serve`
processes with homes of their own read, list, continue, cancel and delete what another
stored, with each API key still seeing only its own; a background response accepted by one
API node runs on a `clinvk worker` and is polled to completion through the other. Real
processes, a real redis-server."""

from __future__ import annotations

import os

import pytest

from tests.redisutil import WorkerProcess, store_settings as settings
from tests.serveproc import ServeProcess
from tests.serverutil import wait_for
from tests.test_responses import ALICE, BOB, KEYED, PATH, call, create, poll

pytestmark = pytest.mark.slow




@pytest.fixture
def nodes(redis, tmp_path):
    """Two nodes that run what they get; their homes differ, their CLIs' homes are one (the
    fake CLIs' sessions: server.shared_cli_homes)."""
    cli_homes = str(tmp_path / "cli-homes")
    keys = {k.split(".", 1)[1]: v for k, v in KEYED.items()}
    made = [ServeProcess(str(tmp_path / name), state_dir=cli_homes,
                         config=settings(redis, shared_cli_homes=True, **keys))
            for name in ("a", "b")]
    yield made
    for node in made:
        node.stop()


@pytest.fixture
def api_nodes(redis, tmp_path):
    made = [ServeProcess(str(tmp_path / name), config=settings(redis, role="api"))
            for name in ("a", "b")]
    yield made
    for node in made:
        node.stop()


def test_a_response_stored_via_one_node_is_read_listed_and_continued_via_another(nodes,
                                                                                  tmp_path):
    a, b = nodes
    made = create(a, key=ALICE, input=[{"role": "user", "content": c} for c in "xyz"]).json()
    assert made["status"] == "completed"
    assert not os.path.exists(str(tmp_path / "a" / "responses"))      # not on a's disk
    got = call(b, "GET", "%s/%s" % (PATH, made["id"]), ALICE)
    assert got.status == 200 and got.json() == made
    items = call(b, "GET", "%s/%s/input_items?order=asc" % (PATH, made["id"]), ALICE).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["x", "y", "z"]
    assert call(b, "GET", "%s/%s" % (PATH, made["id"]), BOB).status == 404
    follow = create(b, key=ALICE, input="next", previous_response_id=made["id"]).json()
    assert follow["output"][0]["content"][0]["text"] == "[history: 1 turns] echo: next"
    assert call(a, "GET", "%s/%s" % (PATH, follow["id"]), ALICE).json() == follow
    assert call(a, "DELETE", "%s/%s" % (PATH, made["id"]), ALICE).status == 200
    assert call(b, "GET", "%s/%s" % (PATH, made["id"]), ALICE).status == 404


def test_a_background_response_accepted_by_one_node_is_polled_to_completion_through_another(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis))
    try:
        made = create(a, background=True, input="in the background").json()
        assert made["status"] == "queued"
        done = poll(b, made["id"])
    finally:
        worker.stop()
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "echo: in the background"
    assert call(a, "GET", "%s/%s" % (PATH, made["id"])).json() == done
    assert any("(response) ended succeeded" in line for line in worker.log_lines)
    assert not any("ended" in line for node in api_nodes for line in node.log_lines)


def test_a_background_response_running_on_a_worker_is_cancelled_through_another_node(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis), env={"FAKE_CLI_MODE": "hang"})
    try:
        made = create(a, background=True).json()
        assert poll_status(b, made["id"]) == "in_progress"
        cancelled = call(b, "POST", "%s/%s/cancel" % (PATH, made["id"]))
        assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
        assert poll(a, made["id"])["status"] == "cancelled"
    finally:
        worker.stop()


def test_a_response_store_that_is_down_is_a_503_in_openai_shape(redis, api_nodes):
    a, _ = api_nodes
    redis.stop()
    reply = call(a, "GET", "%s/resp_%s" % (PATH, "0" * 24))
    error = reply.json()["error"]
    assert reply.status == 503 and error["code"] == "response_store_unavailable"
    assert set(error) == {"message", "type", "param", "code"}
    assert "response store (Redis, %s)" % redis.url in error["message"]


def poll_status(srv, response_id, want="in_progress", seconds=30.0):
    """The response's status once it is ``want`` (or has ended)."""
    seen = {}

    def there():
        seen["s"] = call(srv, "GET", "%s/%s" % (PATH, response_id)).json()["status"]
        return seen["s"] != "queued" or want == "queued"
    wait_for(there, seconds, 0.05)
    return seen["s"]
