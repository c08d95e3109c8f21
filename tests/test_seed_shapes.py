"""The response shapes the API contract (the seed documents) promises, through the HTTP server
with the fake CLIs: fields that are always present, counts that add up, the effective list
limit, a session's metadata, and /docs examples that run as they are written."""

from __future__ import annotations

import html
import http.client
import re
import shlex
import threading
import urllib.parse
from typing import Any, Dict, List, Tuple

import pytest

from tests.serverutil import (  # noqa: F401 (fixtures)
    Reply, fresh_backend_probe, send_request, server, start_server, wait_for)
from tests.test_openapi import missing_required

pytestmark = pytest.mark.usefixtures("fresh_backend_probe")

RELATIVE_WORKDIR = "not/absolute"      # refused by the workdir policy before anything starts


def ok_task(prompt: str) -> Dict[str, Any]:
    return {"backend": "claude", "prompt": prompt}


def refused_task() -> Dict[str, Any]:
    return {"backend": "claude", "prompt": "x", "workdir": RELATIVE_WORKDIR}


# -- POST /api/v1/chain: failed_step ----------------------------------------------------------


def test_chain_reply_has_failed_step_0_when_no_step_failed(server):
    body = server.post("/api/v1/chain", {"steps": [ok_task("a"), ok_task("b: {{previous}}")]})
    assert body.status == 200
    assert body.json()["failed_step"] == 0


def test_chain_reply_failed_step_is_the_1_based_number_of_the_failed_step(server):
    body = server.post("/api/v1/chain", {"steps": [ok_task("a"), refused_task()]}).json()
    assert (body["completed_steps"], body["failed_step"]) == (1, 2)


def test_chain_reply_keys_are_in_the_seed_order(server):
    body = server.post("/api/v1/chain", {"steps": [ok_task("a")]}).json()
    assert list(body) == ["total_steps", "completed_steps", "failed_step", "total_duration_ms",
                          "results"]


# -- POST /api/v1/parallel: cancelled ---------------------------------------------------------


def test_parallel_reply_has_cancelled_0_when_nothing_was_cancelled(server):
    body = server.post("/api/v1/parallel", {"tasks": [ok_task("a"), refused_task()]}).json()
    assert (body["completed"], body["failed"], body["cancelled"]) == (1, 1, 0)


def test_parallel_counts_add_up_to_total_tasks_when_fail_fast_cancels_the_rest(server):
    body = server.post("/api/v1/parallel", {
        "tasks": [refused_task(), ok_task("a"), ok_task("b")], "fail_fast": True}).json()
    assert (body["completed"], body["failed"], body["cancelled"]) == (0, 1, 2)
    assert body["completed"] + body["failed"] + body["cancelled"] == body["total_tasks"] == 3


# -- error and output always present ----------------------------------------------------------


def test_prompt_success_has_error_as_empty_string(server):
    body = server.post("/api/v1/prompt", ok_task("hello")).json()
    assert (body["output"], body["error"]) == ("echo: hello", "")


def test_prompt_failure_has_output_as_empty_string(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    body = server.post("/api/v1/prompt", ok_task("hello")).json()
    assert body["output"] == "" and "fake failure" in body["error"]


def test_prompt_dry_run_has_error_as_empty_string(server):
    body = server.post("/api/v1/prompt", dict(ok_task("hello"), dry_run=True)).json()
    assert body["error"] == "" and body["output"].startswith("would run: ")


def test_parallel_results_always_carry_output_and_error(server):
    results = server.post("/api/v1/parallel",
                          {"tasks": [ok_task("a"), refused_task()]}).json()["results"]
    assert (results[0]["output"], results[0]["error"]) == ("echo: a", "")
    assert results[1]["output"] == "" and "workdir" in results[1]["error"]


def test_chain_results_always_carry_output_and_error(server):
    results = server.post("/api/v1/chain", {"steps": [ok_task("a"), refused_task()],
                                            "stop_on_failure": True}).json()["results"]
    assert (results[0]["output"], results[0]["error"]) == ("echo: a", "")
    assert results[1]["output"] == "" and "workdir" in results[1]["error"]


def test_compare_results_always_carry_output_and_error(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    results = server.post("/api/v1/compare", {"prompt": "p", "backends": ["claude", "codex"]}
                          ).json()["results"]
    assert [r["output"] for r in results] == ["", ""]
    assert all(r["error"] for r in results)


def test_compare_success_results_have_error_as_empty_string(server):
    results = server.post("/api/v1/compare", {"prompt": "p", "backends": ["claude", "codex"]}
                          ).json()["results"]
    assert [(r["output"], r["error"]) for r in results] == [("echo: p", ""), ("echo: p", "")]


# -- GET /health: session_store.error ---------------------------------------------------------


def test_health_session_store_error_is_empty_string_when_the_store_is_fine(server):
    body = server.get("/health").json()
    assert body["session_store"] == {"available": True, "session_count": 0, "error": ""}


# -- GET /api/v1/sessions: the effective limit ------------------------------------------------


def test_sessions_list_without_limit_reports_and_applies_the_default_limit_100(server, tmp_path):
    for i in range(101):
        server.app.store.create("claude", str(tmp_path), initial_prompt="p%d" % i)
    body = server.get("/api/v1/sessions").json()
    assert (body["limit"], body["total"], len(body["sessions"])) == (100, 101, 100)


def test_sessions_list_with_limit_0_lists_every_session(server, tmp_path):
    for i in range(3):
        server.app.store.create("claude", str(tmp_path), initial_prompt="p%d" % i)
    body = server.get("/api/v1/sessions?limit=0").json()
    assert (body["limit"], body["total"], len(body["sessions"])) == (0, 3, 3)


# -- GET /api/v1/sessions/{id}: metadata ------------------------------------------------------


def test_session_metadata_sent_with_the_prompt_is_readable(server):
    sid = server.post("/api/v1/prompt", dict(ok_task("hi"), metadata={"project": "demo"})
                      ).json()["session_id"]
    assert server.get("/api/v1/sessions/" + sid).json()["metadata"] == {"project": "demo"}


def test_session_without_metadata_shows_an_empty_object(server):
    sid = server.post("/api/v1/prompt", ok_task("hi")).json()["session_id"]
    assert server.get("/api/v1/sessions/" + sid).json()["metadata"] == {}


# -- the documented shapes: every required field is in every reply ----------------------------


def documented_200(doc: Dict[str, Any], method: str, path: str) -> Dict[str, Any]:
    return doc["paths"][path][method]["responses"]["200"]["content"]["application/json"][
        "schema"]


@pytest.mark.parametrize("method,path,body", [
    ("post", "/api/v1/prompt", ok_task("hi")),
    ("post", "/api/v1/parallel", {"tasks": [ok_task("a"), refused_task()]}),
    ("post", "/api/v1/chain", {"steps": [ok_task("a")]}),
    ("post", "/api/v1/compare", {"prompt": "p", "backends": ["claude"]}),
    ("get", "/health", None),
    ("get", "/api/v1/sessions", None),
])
def test_reply_has_every_field_the_openapi_document_marks_required(server, method, path, body):
    server.post("/api/v1/prompt", dict(ok_task("make a session"), metadata={"k": "v"}))
    doc = server.get("/openapi.json").json()
    reply = server.request(method.upper(), path, body)
    assert reply.status == 200, reply
    assert missing_required(doc, documented_200(doc, method, path), reply.json()) == []


def test_session_reply_has_every_field_the_openapi_document_marks_required(server):
    sid = server.post("/api/v1/prompt", ok_task("hi")).json()["session_id"]
    doc = server.get("/openapi.json").json()
    reply = server.get("/api/v1/sessions/" + sid).json()
    schema = documented_200(doc, "get", "/api/v1/sessions/{id}")
    assert missing_required(doc, schema, reply) == []


# -- /docs: its examples run as written -------------------------------------------------------


def docs_examples(page: str) -> List[Tuple[str, str, str]]:
    """(operation anchor, curl command, the note under it) for every example on the page."""
    found = re.findall(r'<section class="op" id="([^"]+)"[^>]*>.*?<h4>Example</h4><pre>(.*?)</pre>'
                       r'\s*(?:<p class="muted">(.*?)</p>)?', page, re.S)
    return [(anchor, html.unescape(curl), html.unescape(note)) for anchor, curl, note in found]


def run_curl(command: str, env: Dict[str, str]) -> Reply:
    """Send what the curl ``command`` of the docs would send (its -X, URL, -H and -d), with
    ``$NAME`` in double-quoted words expanded from ``env`` as a shell would."""
    words = shlex.split(command.replace("\\\n", " "), posix=True)
    assert words[0] == "curl", command
    method, url, headers, data = "GET", "", {}, None
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-X":
            method, i = words[i + 1], i + 2
        elif word == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""),
                                           value.strip())
            i += 2
        elif word == "-d":
            data, i = words[i + 1].encode("utf-8"), i + 2
            method = "POST" if method == "GET" else method
        elif word == "-N":
            i += 1
        else:
            url, i = word, i + 1
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    return send_request(conn, method, parts.path + ("?" + parts.query if parts.query else ""),
                        data, headers)


def placeholder_of(note: str) -> Tuple[str, str]:
    """(parameter, the placeholder the example shows for it) named by a docs note such as
    'Replace ID in the URL with a real {id}: Session id, or a unique prefix of one.'"""
    m = re.search(r"Replace (\S+) in the URL with a real \{(\w+)\}", note)
    assert m, note
    return m.group(2), m.group(1)


def readers_own(srv, anchor: str, note: str, key: str) -> str:
    """The id of a thing of the reader's that the example of ``anchor`` can act on: a
    response (a background one still running, for cancel), a run in flight (for a few
    seconds) or a session."""
    headers = {"X-Api-Key": key}
    if "run id" in note:
        threading.Thread(target=srv.post, args=("/api/v1/prompt", ok_task(
            "FAKE_SLEEP: 3\nfor " + anchor)), kwargs={"headers": headers}, daemon=True).start()
        runs: List[Dict[str, Any]] = []
        assert wait_for(lambda: runs.extend(srv.get("/api/v1/runs", headers=headers).json()[
            "runs"]) or runs)
        return runs[0]["id"]
    if "Job id" in note:
        job_id = srv.post("/api/v1/jobs", {"kind": "prompt", "request": ok_task("for " + anchor)},
                          headers=headers).json()["id"]
        assert wait_for(lambda: srv.get("/api/v1/jobs/" + job_id, headers=headers).json()[
            "status"] == "succeeded")
        return job_id
    if "Response id" in note:
        body: Dict[str, Any] = {"model": "claude", "input": "for " + anchor}
        if "cancel" in anchor:
            body.update(background=True, input="FAKE_SLEEP: 30\nfor " + anchor)
        return srv.post("/openai/v1/responses", body, headers=headers).json()["id"]
    return srv.post("/api/v1/prompt", ok_task("for " + anchor),
                    headers=headers).json()["session_id"]


@pytest.mark.parametrize("keys", [False, True], ids=["no-keys", "api-keys"])
def test_every_docs_example_runs_as_written(start_server, tmp_path, keys):
    key = "docs-example-key-0123456789abcdef"
    settings: Dict[str, Any] = {"server.metrics_enabled": True}
    if keys:
        settings["server.api_keys"] = [key]
    srv = start_server(**settings)
    env = {"CLINVK_API_KEY": key} if keys else {}
    page = srv.get("/docs").body.decode("utf-8")
    examples = docs_examples(page)
    assert len(examples) >= 15, "the /docs page should show one example per operation"
    for anchor, curl, note in examples:
        if note:
            # A path parameter that names something of the reader's (a session, a stored
            # response): the page says so, and the example runs once a real one is put in
            # its place.
            _, shown = placeholder_of(note)
            assert "/" + shown in curl
            curl = curl.replace("/" + shown, "/" + readers_own(srv, anchor, note, key))
        reply = run_curl(curl, env)
        assert reply.status in (200, 202), (anchor, curl, reply)
        if reply.headers.get("Content-Type", "").startswith("application/json"):
            body = reply.json()
            assert body.get("exit_code", 0) == 0 and not body.get("error"), (anchor, body)


def test_docs_examples_use_no_made_up_path_that_fails_when_copied(server):
    assert "/path/to/" not in html.unescape(server.get("/docs").body.decode("utf-8"))


def test_docs_say_which_path_parameters_must_be_replaced(server):
    notes = {anchor: note for anchor, _, note in docs_examples(server.get("/docs").body.decode())}
    assert placeholder_of(notes["getsession"]) == ("id", "ID")
    assert placeholder_of(notes["deletesession"]) == ("id", "ID")
    assert notes["openaigetmodel"] == "", "a model example (claude) runs as written"


def test_docs_examples_are_found_on_the_page(server):
    anchors = [anchor for anchor, _, _ in docs_examples(server.get("/docs").body.decode())]
    assert {"executeprompt", "executeparallel", "executechain", "executecompare",
            "healthcheck", "listsessions"} <= set(anchors)
