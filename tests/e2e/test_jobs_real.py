"""Durable jobs on `clinvk serve` (the built zipapp) with the REAL CLIs behind it, against the
fake model API: a prompt job and a chain job, their results the synchronous routes' answers,
their events read back in pieces."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Dict, List, Optional

import pytest

from tests.e2e.conftest import BACKENDS, user_texts

FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def request(port: int, method: str, path: str, body: Optional[Dict[str, Any]] = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"} if body is not None else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def submit(port: int, kind: str, body: Dict[str, Any]) -> str:
    status, headers, data = request(port, "POST", "/api/v1/jobs",
                                    {"kind": kind, "request": body})
    assert status == 202, data
    job = json.loads(data)
    assert headers["Location"] == "/api/v1/jobs/" + job["id"]
    return job["id"]


def finished(port: int, job_id: str) -> Dict[str, Any]:
    deadline = time.monotonic() + 240
    while True:
        job = json.loads(request(port, "GET", "/api/v1/jobs/" + job_id)[2])
        if job["status"] in FINAL:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def events(port: int, job_id: str, after: int = 0) -> List[Dict[str, Any]]:
    data = request(port, "GET", "/api/v1/jobs/%s/events?after=%d" % (job_id, after))[2]
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_prompt_job_on_the_real_cli(backend, serve_port, fake_api, workdir):
    job_id = submit(serve_port, "prompt", {"backend": backend, "prompt": "hello job",
                                           "workdir": workdir})
    followed = events(serve_port, job_id)          # open while it runs, ends when it ends
    job = finished(serve_port, job_id)
    assert job["status"] == "succeeded", job
    assert job["result"]["exit_code"] == 0 and job["result"]["output"] == "FAKE-REPLY: hello job"
    assert job["result"]["session_id"] and job["result"]["token_usage"]["output_tokens"] > 0
    assert user_texts(fake_api, backend) == ["hello job"]
    assert [e["seq"] for e in followed] == list(range(1, job["event_count"] + 1))
    types = [e["type"] for e in followed]
    assert types[0] == "job" and "init" in types and "done" in types and types[-1] == "job"
    assert followed[3:] == events(serve_port, job_id, after=3)


def test_a_chain_job_on_the_real_clis(serve_port, fake_api, workdir):
    job_id = submit(serve_port, "chain", {"steps": [
        {"name": "analyze", "backend": "claude", "prompt": "analyze X", "workdir": workdir},
        {"name": "improve", "backend": "codex", "prompt": "improve on: {{previous}}",
         "workdir": workdir}]})
    job = finished(serve_port, job_id)
    assert job["status"] == "succeeded", job
    assert job["result"]["completed_steps"] == 2 and job["result"]["failed_step"] == 0
    assert [r["output"] for r in job["result"]["results"]] == [
        "FAKE-REPLY: analyze X", "FAKE-REPLY: improve on: FAKE-REPLY: analyze X"]
    assert fake_api.main_requests("openai")[-1]["user_text"] == \
        "improve on: FAKE-REPLY: analyze X"
    got = events(serve_port, job_id)
    assert [e["type"] for e in got if "index" not in e] == [
        "job", "item_started", "item_finished", "item_started", "item_finished", "job"]
    assert got[-1]["content"]["status"] == "succeeded"
    for index, backend, reply in ((0, "claude", "FAKE-REPLY: analyze X"),
                                  (1, "codex", "FAKE-REPLY: improve on: FAKE-REPLY: analyze X")):
        step = [e for e in got if e.get("index") == index]
        assert step[0]["type"] == "init" and step[-1]["type"] == "done"
        assert {e["backend"] for e in step} == {backend}
        assert "".join(e["content"]["text"] for e in step if e["type"] == "message") == reply
        started = [i for i, e in enumerate(got) if e["type"] == "item_started"][index]
        ended = [i for i, e in enumerate(got) if e["type"] == "item_finished"][index]
        assert all(started < got.index(e) < ended for e in step)


def test_a_background_response_runs_as_a_job_on_the_real_cli(serve_port, fake_api):
    status, _, data = request(serve_port, "POST", "/openai/v1/responses", {
        "model": "claude", "input": "hello in the background", "background": True})
    assert status == 200, data
    made = json.loads(data)
    assert made["status"] == "queued" and made["background"] is True
    deadline = time.monotonic() + 240
    while True:
        done = json.loads(request(serve_port, "GET", "/openai/v1/responses/" + made["id"])[2])
        if done["status"] not in ("queued", "in_progress"):
            break
        assert time.monotonic() < deadline, done
        time.sleep(0.2)
    assert done["status"] == "completed", done
    assert done["output"][0]["content"][0]["text"] == "FAKE-REPLY: hello in the background"
    jobs = json.loads(request(serve_port, "GET", "/api/v1/jobs?kind=response")[2])["jobs"]
    (job,) = [j for j in jobs if j["status"] != "running"] or jobs
    assert job["kind"] == "response"
    assert "done" in [e["type"] for e in events(serve_port, job["id"])]
