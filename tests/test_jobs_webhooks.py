"""A finished job calls its webhook (the delivery itself is tested in test_webhooks.py): the
signed job object goes out once the job has ended, whatever ended it, its state is kept in
the job, and a delivery a killed server left pending is finished by the next server."""

from __future__ import annotations

import json
import signal

import pytest

from tests.serveproc import ServeProcess
from tests.serverutil import (  # noqa: F401 (fixtures)
    fresh_backend_probe, start_server, wait_for)
from tests.test_jobs import submit, wait_status
from tests.test_webhooks import SECRET, receivers, signature_is_valid  # noqa: F401

HOOKS = {"server.webhook_allowed_hosts": ["127.0.0.1"], "server.webhook_secret": SECRET}


def submit_with_hook(srv, url, prompt="hello"):
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "webhook_url": url,
                                      "request": {"backend": "claude", "prompt": prompt}})
    assert reply.status == 202, reply
    return reply.json()


def webhook_of(srv, job_id, state):
    found = {}

    def reached():
        found.update(srv.get("/api/v1/jobs/" + job_id).json().get("webhook") or {})
        return found.get("status") == state
    assert wait_for(reached, 20, 0.05), found
    return found


@pytest.mark.usefixtures("fresh_backend_probe")
def test_a_finished_job_is_posted_signed_to_its_webhook_and_the_delivery_kept(start_server,
                                                                              receivers):
    hook = receivers([204])
    srv = start_server(**HOOKS)
    accepted = submit_with_hook(srv, hook.url)
    assert accepted["webhook"] == {"url": "http://127.0.0.1:%d" % hook.port,
                                   "status": "pending", "delivery_id": "", "attempts": []}
    delivered = webhook_of(srv, accepted["id"], "delivered")
    (path, headers, body), = hook.requests
    sent = json.loads(body)
    assert signature_is_valid(headers, body) and path == "/hook?token=t0k3n"
    assert sent["id"] == accepted["id"] and sent["status"] == "succeeded"
    assert sent["result"]["output"] == "echo: hello"
    assert headers["X-Clinvk-Delivery"] == delivered["delivery_id"]
    assert [a["status_code"] for a in delivered["attempts"]] == [204]
    assert "t0k3n" not in json.dumps(srv.get("/api/v1/jobs/" + accepted["id"]).json())


@pytest.mark.usefixtures("fresh_backend_probe")
def test_a_job_cancelled_while_queued_calls_its_webhook_too(start_server, receivers):
    hook = receivers([200])
    srv = start_server(**dict(HOOKS, **{"server.max_concurrent_runs": 1}))
    blocker = submit(srv, backend="claude", prompt="FAKE_SLEEP: 60\nx")["id"]
    wait_status(srv, blocker, ("running",))
    queued = submit_with_hook(srv, hook.url)["id"]
    srv.request("DELETE", "/api/v1/jobs/" + queued)
    webhook_of(srv, queued, "delivered")
    assert json.loads(hook.requests[0][2])["status"] == "cancelled"
    srv.request("DELETE", "/api/v1/jobs/" + blocker)


def test_a_delivery_a_killed_server_left_pending_is_finished_by_the_next(tmp_path, receivers):
    hook = receivers([500, 200])
    home = str(tmp_path / "home")
    config = {"server": {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_secret": SECRET}}
    srv = ServeProcess(home, config=config)
    try:
        job_id = submit_with_hook(srv, hook.url)["id"]
        first = webhook_of(srv, job_id, "pending")
        assert wait_for(lambda: len(hook.requests) == 1, 20)
        assert wait_for(lambda: webhook_of(srv, job_id, "pending")["attempts"], 20)
        srv.signal(signal.SIGKILL)
        srv.proc.wait(10)
        again = ServeProcess(home, config=config)
        try:
            done = webhook_of(again, job_id, "delivered")
        finally:
            again.stop()
    finally:
        srv.stop()
    ids = [h["X-Clinvk-Delivery"] for _, h, _ in hook.requests]
    assert len(ids) == 2 and ids[0] == ids[1] == done["delivery_id"]
    assert first["url"] == "http://127.0.0.1:%d" % hook.port
    assert [a["attempt"] for a in done["attempts"]] == [1, 2]


def test_a_job_interrupted_by_a_killed_server_calls_its_webhook_from_the_next(tmp_path,
                                                                             receivers):
    hook = receivers([200])
    home = str(tmp_path / "home")
    config = {"server": {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_secret": SECRET}}
    srv = ServeProcess(home, config=config)
    try:
        job_id = submit_with_hook(srv, hook.url, "FAKE_SLEEP: 60\nx")["id"]
        assert wait_for(lambda: srv.get("/api/v1/jobs/" + job_id).json()["status"] ==
                        "running")
        srv.signal(signal.SIGKILL)
        srv.proc.wait(10)
        again = ServeProcess(home, config=config)
        try:
            webhook_of(again, job_id, "delivered")
        finally:
            again.stop()
    finally:
        srv.stop()
    assert json.loads(hook.requests[0][2])["status"] == "interrupted"
