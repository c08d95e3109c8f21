"""`clinvk serve` (the built zipapp) with the REAL CLIs behind it, against the fake model API.

The native API is driven with http.client, as the seeds' curl examples would: prompt (json and
stream-json) on every backend, and parallel, chain and compare across all three.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Dict

import pytest

from tests.e2e.conftest import BACKENDS, user_texts


def post(port: int, path: str, body: Dict[str, Any], timeout: float = 240):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp, conn


def post_json(port: int, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
    resp, conn = post(port, path, body)
    data = resp.read()
    conn.close()
    assert resp.status == 200, data
    return json.loads(data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_json_on_the_real_cli(backend, serve_port, fake_api, workdir):
    d = post_json(serve_port, "/api/v1/prompt",
                  {"backend": backend, "prompt": "hello server", "workdir": workdir})
    assert d["exit_code"] == 0 and d["output"] == "FAKE-REPLY: hello server"
    assert d["session_id"] and d["token_usage"]["output_tokens"] > 0
    assert user_texts(fake_api, backend) == ["hello server"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_stream_json_on_the_real_cli(backend, serve_port, fake_api, workdir):
    resp, conn = post(serve_port, "/api/v1/prompt",
                      {"backend": backend, "prompt": "stream it", "workdir": workdir,
                       "output_format": "stream-json"})
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("application/x-ndjson")
    events = [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]
    conn.close()
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    messages = [e["content"] for e in events if e["type"] == "message"]
    partial = "".join(m["text"] for m in messages if m["is_partial"])
    assert (partial or "".join(m["text"] for m in messages)) == "FAKE-REPLY: stream it"


def test_parallel_across_the_three_real_clis(serve_port, fake_api, workdir):
    d = post_json(serve_port, "/api/v1/parallel", {"tasks": [
        {"backend": b, "prompt": "task for %s" % b, "workdir": workdir} for b in BACKENDS]})
    assert d["total_tasks"] == 3 and d["completed"] == 3 and d["failed"] == 0
    assert [r["output"] for r in d["results"]] == ["FAKE-REPLY: task for %s" % b for b in BACKENDS]


def test_chain_claude_then_codex_passes_the_first_reply_to_the_model(serve_port, fake_api,
                                                                     workdir):
    d = post_json(serve_port, "/api/v1/chain", {"steps": [
        {"name": "analyze", "backend": "claude", "prompt": "analyze X", "workdir": workdir},
        {"name": "improve", "backend": "codex", "prompt": "improve on: {{previous}}",
         "workdir": workdir}]})
    assert d["completed_steps"] == 2, d
    codex_turn = fake_api.main_requests("openai")[-1]["user_text"]
    assert codex_turn == "improve on: FAKE-REPLY: analyze X"


def test_compare_on_all_three_real_clis(serve_port, fake_api, workdir):
    d = post_json(serve_port, "/api/v1/compare",
                  {"prompt": "compare me", "backends": BACKENDS, "workdir": workdir})
    assert [r["backend"] for r in d["results"]] == BACKENDS
    assert all(r["exit_code"] == 0 and r["output"] == "FAKE-REPLY: compare me"
               for r in d["results"])
