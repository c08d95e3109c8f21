"""The OpenAI Responses API (/openai/v1/responses) over raw HTTP against an in-process server
with the fake CLIs: the response object, what the backend receives, previous_response_id,
the store (retrieve, delete, input items, bounds, API-key scope), the SSE event sequence,
background runs (poll, cancel, shutdown) and the attacks on each."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from tests.conftest import records
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, server, start_server, wait_for)

from clinvk_lib.job_store import Job, JobStore, interrupted_error, new_job_id
from clinvk_lib.server import compat
from clinvk_lib.server.response_store import ResponseStore, StoredResponse
from clinvk_lib.sessions import EVERYTHING

PATH = "/openai/v1/responses"
ALICE, BOB, ADMIN = "sk-alice-4f1d2c", "sk-bob-9a8e7d", "sk-admin-5b6c7d"
KEYED = {"server.api_keys": [ALICE, BOB], "server.admin_api_keys": [ADMIN]}


def create(srv, key=None, headers=None, **body):
    body.setdefault("model", "claude")
    body.setdefault("input", "hi")
    sent = dict(headers or {})
    if key:
        sent["Authorization"] = "Bearer " + key
    return srv.post(PATH, body, headers=sent)


def call(srv, method, path, key=None):
    """A request without a body (a POST declares JSON, as the SDKs do: see
    test_a_cancel_not_declared_json_is_refused)."""
    headers = {"Authorization": "Bearer " + key} if key else {}
    if method == "POST":
        headers["Content-Type"] = "application/json"
    return srv.request(method, path, headers=headers)


def events_of(body: bytes):
    """[(SSE event name, data as JSON)] of a response stream."""
    out = []
    for block in body.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines.get("event"), json.loads(lines["data"])))
    return out


def poll(srv, response_id, key=None, seconds=30.0):
    """The response once it is no longer queued or in progress."""
    seen = {}

    def done():
        seen["r"] = call(srv, "GET", "%s/%s" % (PATH, response_id), key).json()
        return seen["r"]["status"] not in ("queued", "in_progress")
    assert wait_for(done, seconds, 0.05), seen.get("r")
    return seen["r"]


# -- the response object -------------------------------------------------------------------------


def test_response_object_has_the_fields_the_sdk_model_reads(server):
    reply = create(server, input="hello")
    assert reply.status == 200, reply
    r = reply.json()
    assert r["id"].startswith("resp_") and r["object"] == "response" and r["created_at"] > 0
    assert (r["status"], r["model"], r["error"], r["incomplete_details"]) == \
        ("completed", "claude", None, None)
    (item,) = r["output"]
    assert item["id"].startswith("msg_") and (item["type"], item["role"], item["status"]) == \
        ("message", "assistant", "completed")
    assert item["content"] == [{"type": "output_text", "text": "echo: hello", "annotations": [],
                                "logprobs": []}]
    usage = r["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert set(usage["input_tokens_details"]) == {"cached_tokens"}
    assert set(usage["output_tokens_details"]) == {"reasoning_tokens"}
    assert (r["store"], r["background"], r["tools"], r["text"], r["metadata"]) == \
        (True, False, [], {"format": {"type": "text"}}, {})
    for name in ("parallel_tool_calls", "tool_choice", "temperature", "top_p", "truncation",
                 "instructions", "previous_response_id", "completed_at"):
        assert name in r, name
    assert "output_text" not in r               # the SDKs compute it
    assert reply.headers["X-Clinvk-Session-Id"]


def test_metadata_is_echoed_and_stored_with_the_session(server):
    reply = create(server, metadata={"ticket": "T-1"})
    assert reply.json()["metadata"] == {"ticket": "T-1"}
    session = server.get("/api/v1/sessions/" + reply.headers["X-Clinvk-Session-Id"]).json()
    assert session["metadata"] == {"ticket": "T-1"} and "openai" in session["tags"]


# -- what the backend receives -------------------------------------------------------------------


def test_string_input_is_the_prompt_and_instructions_claudes_system_prompt(server, record):
    create(server, input="what is 2+2?", instructions="Be brief.")
    run = records(record)[-1]
    assert run["stdin"] == "what is 2+2?"
    assert "--system-prompt=Be brief." in run["argv"]


def test_instructions_then_system_and_developer_items_join_the_system_prompt(server, record):
    create(server, instructions="One.", input=[
        {"role": "system", "content": "Two."},
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "Three."}]},
        {"role": "user", "content": "hi"}])
    assert "--system-prompt=One.\n\nTwo.\n\nThree." in records(record)[-1]["argv"]


def test_instructions_go_to_codex_developer_instructions(server, record):
    create(server, model="codex", instructions="Be brief.")
    argv = records(record)[-1]["argv"]
    assert argv[argv.index("-c") + 1] == 'developer_instructions="Be brief."'


def test_instructions_open_the_prompt_on_gemini(server, record):
    create(server, model="gemini", instructions="Be brief.")
    assert records(record)[-1]["stdin"] == "<system>\nBe brief.\n</system>\n\nhi"


def test_list_input_becomes_one_tagged_prompt(server, record):
    reply = create(server, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "first"},
                                     {"type": "input_text", "text": "part two"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "answer", "annotations": []}]},
        {"role": "user", "content": "second"}])
    expected = ("<conversation_history>\n<user>\nfirst\npart two\n</user>\n<assistant>\n"
                "answer\n</assistant>\n</conversation_history>\n\nsecond")
    assert records(record)[-1]["stdin"] == expected
    assert reply.json()["output"][0]["content"][0]["text"] == "echo: " + expected


def test_vendor_model_id_is_mapped_as_in_chat(server, record):
    reply = create(server, model="gpt-5")
    run = records(record)[-1]
    assert run["backend"] == "codex" and "--model=gpt-5" in run["argv"]
    assert reply.json()["model"] == "gpt-5"


def test_the_body_codex_cli_sends_is_answered(server, record):
    """Codex CLI 0.169.0's request: instructions, developer and user items, its tools,
    reasoning, include, prompt_cache_key, store false, stream true."""
    reply = create(server, model="claude", stream=True, store=False, instructions="You are Codex.",
                   input=[{"type": "message", "role": "developer",
                           "content": [{"type": "input_text", "text": "<permissions/>"}]},
                          {"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "<environment_context/>"}]},
                          {"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "say hi"}]}],
                   tools=[{"type": "function", "name": "shell", "parameters": {}},
                          {"type": "web_search"}],
                   tool_choice="auto", parallel_tool_calls=False,
                   reasoning={"effort": "medium", "summary": "auto"},
                   include=["reasoning.encrypted_content"], prompt_cache_key="abc",
                   text={"verbosity": "low"}, service_tier="auto")
    assert reply.status == 200, reply
    assert events_of(reply.body)[-1][0] == "response.completed"
    assert records(record)[-1]["stdin"].endswith("</conversation_history>\n\nsay hi")


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", [
    {"type": "input_image", "image_url": "data:image/png;base64,AA=="},
    {"type": "input_file", "file_id": "file-1"}])
def test_a_content_part_that_is_not_text_is_a_400_naming_it(server, record, part):
    reply = create(server, input=[{"role": "user", "content": "look"},
                                  {"role": "user", "content": [part]}])
    error = reply.json()["error"]
    assert reply.status == 400 and error["param"] == "input[1].content[0].type"
    assert error["type"] == "invalid_request_error" and repr(part["type"]) in error["message"]
    assert records(record) == []


@pytest.mark.parametrize("item_type", ["reasoning", "item_reference", "web_search_call"])
def test_an_item_that_is_not_a_message_nor_a_function_call_is_a_400_naming_its_type(
        server, item_type):
    reply = create(server, input=[{"role": "user", "content": "hi"},
                                  {"type": item_type, "call_id": "c1", "output": "42"}])
    assert reply.status == 400 and reply.json()["error"]["param"] == "input[1].type"


def test_a_function_call_output_no_parked_run_waits_for_is_a_404_naming_it(server):
    # (Client tools: tests/test_tool_bridge_responses.py.)
    reply = create(server, input=[{"role": "user", "content": "hi"},
                                  {"type": "function_call_output", "call_id": "c1", "output": "42"}])
    assert reply.status == 404 and reply.json()["error"]["code"] == "tool_call_not_found"


def test_a_trailing_assistant_item_is_a_400_naming_its_role(server):
    reply = create(server, input=[{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "prefill"}])
    assert reply.status == 400 and reply.json()["error"]["param"] == "input[1].role"


def test_input_with_only_instructions_is_a_400_naming_input(server):
    reply = create(server, input=[{"role": "system", "content": "x"}])
    assert reply.status == 400 and reply.json()["error"]["param"] == "input"


def test_an_empty_string_input_is_a_400_naming_input(server):
    reply = create(server, input="  ")
    assert reply.status == 400 and reply.json()["error"]["param"] == "input"


@pytest.mark.parametrize("field, value", [("conversation", "conv_123"),
                                          ("prompt", {"id": "pmpt_123"})])
def test_state_kept_elsewhere_is_refused_rather_than_ignored(server, record, field, value):
    reply = create(server, **{field: value})
    assert reply.status == 400 and reply.json()["error"]["param"] == field
    assert records(record) == []


def test_unknown_model_is_a_404_model_not_found(server):
    error = create(server, model="llama-3").json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")


def test_a_failed_run_is_an_error_not_a_response_and_is_not_retried(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = create(server)
    assert reply.status >= 400 and reply.json()["error"]["code"] == "backend_failed"
    assert reply.headers["X-Should-Retry"] == "false"


# -- previous_response_id -------------------------------------------------------------------------


def test_previous_response_id_carries_a_fact_without_resending_it(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_RECALL", "1")
    first = create(server, input="the code word is kumquat").json()
    second = create(server, input="what is the code word?", previous_response_id=first["id"])
    assert second.status == 200, second
    sent = records(record)[-1]
    assert sent["stdin"] == "what is the code word?"       # the fact was not re-sent ...
    text = second.json()["output"][0]["content"][0]["text"]
    assert "kumquat" in text                              # ... the session remembered it
    assert second.json()["previous_response_id"] == first["id"]


def test_previous_response_id_sends_every_new_message_of_the_turn(server, record):
    first = create(server).json()
    create(server, previous_response_id=first["id"], input=[
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    assert records(record)[-1]["stdin"] == \
        "<conversation_history>\n<user>\none\n</user>\n</conversation_history>\n\ntwo"


def test_unknown_previous_response_id_is_a_404_naming_it(server, record):
    error = create(server, previous_response_id="resp_" + "0" * 24).json()["error"]
    assert (error["param"], error["type"]) == ("previous_response_id", "invalid_request_error")
    assert records(record) == []


def test_a_previous_response_of_another_backend_is_a_400_naming_the_model(server):
    first = create(server, model="claude").json()
    reply = create(server, model="gemini", previous_response_id=first["id"])
    assert reply.status == 400 and reply.json()["error"]["param"] == "model"


# -- the store -----------------------------------------------------------------------------------


def test_stored_response_is_retrieved_then_deleted(server):
    made = create(server).json()
    got = server.get("%s/%s" % (PATH, made["id"]))
    assert got.status == 200 and got.json() == made
    deleted = call(server, "DELETE", "%s/%s" % (PATH, made["id"]))
    assert deleted.json() == {"id": made["id"], "object": "response", "deleted": True}
    assert server.get("%s/%s" % (PATH, made["id"])).status == 404


def test_store_false_keeps_neither_the_response_nor_a_session(server):
    reply = create(server, store=False)
    made = reply.json()
    assert made["store"] is False and "X-Clinvk-Session-Id" not in reply.headers
    assert server.get("%s/%s" % (PATH, made["id"])).status == 404
    assert server.get("/api/v1/sessions").json()["total"] == 0
    again = create(server, previous_response_id=made["id"])
    assert again.status == 404 and again.json()["error"]["param"] == "previous_response_id"


def test_input_items_are_listed_newest_first_in_pages(server):
    made = create(server, input=[{"role": "user", "content": c} for c in "abcde"]).json()
    url = "%s/%s/input_items" % (PATH, made["id"])
    everything = server.get(url).json()
    assert [i["content"][0]["text"] for i in everything["data"]] == list("edcba")
    assert everything["object"] == "list" and everything["has_more"] is False
    page = server.get(url + "?limit=2&order=asc").json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["a", "b"]
    assert page["has_more"] is True and page["last_id"] == page["data"][1]["id"]
    rest = server.get(url + "?order=asc&after=" + page["last_id"]).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["c", "d", "e"]
    assert rest["first_id"] == rest["data"][0]["id"] and rest["has_more"] is False


def test_input_items_keep_roles_and_part_types(server):
    made = create(server, input=[{"role": "developer", "content": "rules"},
                                 {"role": "assistant", "content": "before"},
                                 {"role": "user", "content": "now"}]).json()
    items = server.get("%s/%s/input_items?order=asc" % (PATH, made["id"])).json()["data"]
    assert [(i["role"], i["content"][0]["type"]) for i in items] == [
        ("developer", "input_text"), ("assistant", "output_text"), ("user", "input_text")]
    assert all(i["id"].startswith("msg_") and i["type"] == "message" for i in items)


@pytest.mark.parametrize("query, param", [("limit=0", "limit"), ("limit=101", "limit"),
                                          ("order=up", "order"), ("after=msg_nope", "after")])
def test_a_bad_input_items_query_is_a_400_naming_it(server, query, param):
    made = create(server).json()
    reply = server.get("%s/%s/input_items?%s" % (PATH, made["id"], query))
    assert reply.status == 400 and reply.json()["error"]["param"] == param


@pytest.mark.parametrize("response_id", ["..%2F..%2Fconfig", "resp_..", "resp_ZZ", "%00",
                                         "resp_" + "0" * 24])
def test_an_id_that_names_no_stored_response_is_a_404_in_openai_shape(server, response_id):
    reply = server.get("%s/%s" % (PATH, response_id))
    assert reply.status == 404
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_stored_responses_are_private_files(server, clinvk_home):
    made = create(server).json()
    folder = os.path.join(str(clinvk_home), "responses")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(folder, made["id"] + ".json")).st_mode) == 0o600


def test_the_store_keeps_only_the_newest_responses_past_its_bound(start_server, clinvk_home):
    srv = start_server(**{"server.responses_max_stored": 3})
    ids = [create(srv, input="turn %d" % n).json()["id"] for n in range(5)]
    assert [srv.get("%s/%s" % (PATH, i)).status for i in ids] == [404, 404, 200, 200, 200]
    assert len(os.listdir(os.path.join(str(clinvk_home), "responses"))) == 3


def test_the_store_removes_responses_older_than_the_retention(clinvk_home):
    store = ResponseStore(str(clinvk_home), max_stored=100, max_age_secs=3600)
    old = stored_record("resp_" + "1" * 24)
    store.add(old)
    past = time.time() - 7200
    os.utime(os.path.join(store.dir, old.id + ".json"), (past, past))
    store._last_age_sweep = 0.0
    store.add(stored_record("resp_" + "2" * 24))
    assert store.get(old.id, EVERYTHING) is None
    assert store.get("resp_" + "2" * 24, EVERYTHING) is not None


def stored_record(response_id, status="completed", job_id=""):
    return StoredResponse({"id": response_id, "status": status, "background": True,
                           "store": True, "output": []}, [], job_id=job_id)


# -- API keys ------------------------------------------------------------------------------------


@pytest.fixture
def keyed(start_server):
    return start_server(**KEYED)


def test_another_key_cannot_read_delete_list_or_continue_a_response(keyed, record):
    made = create(keyed, key=ALICE).json()
    url = "%s/%s" % (PATH, made["id"])
    for method, path in (("GET", url), ("GET", url + "/input_items"), ("DELETE", url),
                         ("POST", url + "/cancel")):
        reply = call(keyed, method, path, BOB)
        assert reply.status == 404, (method, path, reply)
        assert reply.json()["error"]["code"] == "response_not_found"     # as an unknown id
    runs = len(records(record))
    assert create(keyed, key=BOB, previous_response_id=made["id"]).status == 404
    assert len(records(record)) == runs
    assert call(keyed, "GET", url, ALICE).json() == made        # still there for its owner


def test_an_admin_key_reads_every_response(keyed):
    made = create(keyed, key=ALICE).json()
    assert call(keyed, "GET", "%s/%s" % (PATH, made["id"]), ADMIN).status == 200


def test_responses_routes_need_an_api_key(keyed):
    made = create(keyed, key=ALICE).json()
    assert call(keyed, "GET", "%s/%s" % (PATH, made["id"])).status == 401
    assert create(keyed).status == 401


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["qwen", "copilot", "opencode"])
def test_the_newer_backends_answer_a_stored_response(server, backend):
    made = create(server, model=backend, input="hello there")
    assert made.status == 200, made
    body = made.json()
    assert body["status"] == "completed" and body["model"] == backend
    assert "hello there" in body["output"][0]["content"][0]["text"]
    assert call(server, "GET", "%s/%s" % (PATH, body["id"])).json()["status"] == "completed"


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini", "qwen", "copilot",
                                     "opencode"])
def test_stream_sends_the_full_event_sequence(server, backend):
    reply = create(server, model=backend, input="stream me", stream=True)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
    events = events_of(reply.body)
    names = [name for name, _ in events]
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    n = len(deltas)
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * n + [
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    item_id = events[2][1]["item"]["id"]
    for _, data in events[3:-2]:
        assert (data["item_id"], data["output_index"], data["content_index"]) == (item_id, 0, 0)
    assert all(d["logprobs"] == [] for d in deltas)
    assert "".join(d["delta"] for d in deltas) == "echo: stream me"
    assert events[-4][1]["text"] == "echo: stream me"
    assert events[3][1]["part"]["annotations"] == [] and events[2][1]["item"]["content"] == []
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
    assert final["output"][0]["id"] == item_id
    assert events[0][1]["response"]["status"] == "in_progress"
    assert reply.headers["X-Clinvk-Session-Id"]
    assert b"[DONE]" not in reply.body


def test_streamed_response_is_stored_as_completed(server):
    events = events_of(create(server, stream=True).body)
    final = events[-1][1]["response"]
    assert server.get("%s/%s" % (PATH, final["id"])).json() == final


def test_a_failed_stream_ends_with_response_failed_and_is_stored_failed(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "crash_midstream")
    reply = create(server, stream=True)
    name, data = events_of(reply.body)[-1]
    assert name == "response.failed" and data["response"]["status"] == "failed"
    error = data["response"]["error"]
    assert error["code"] == "server_error" and "the claude backend failed" in error["message"]
    assert server.get("%s/%s" % (PATH, data["response"]["id"])).json()["status"] == "failed"


# -- background ----------------------------------------------------------------------------------


def test_background_answers_at_once_and_completes_later(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.5")
    made = create(server, background=True, input="later")
    assert made.status == 200 and made.json()["status"] in ("queued", "in_progress")
    assert made.json()["background"] is True and made.json()["output"] == []
    done = poll(server, made.json()["id"])
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "echo: later"
    assert done["usage"]["output_tokens"] > 0


def test_background_run_can_be_continued_once_done(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_RECALL", "1")
    first = create(server, background=True, input="the fact is 42").json()
    poll(server, first["id"])
    second = create(server, input="and?", previous_response_id=first["id"]).json()
    assert "the fact is 42" in second["output"][0]["content"][0]["text"]


def test_cancel_stops_a_background_run(server, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    made = create(server, background=True).json()
    pid = read_pid(str(tmp_path / "fake.pid"))
    cancelled = call(server, "POST", "%s/%s/cancel" % (PATH, made["id"]))
    assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert poll(server, made["id"])["status"] == "cancelled"
    again = call(server, "POST", "%s/%s/cancel" % (PATH, made["id"]))
    assert again.status == 400 and "already ended" in again.json()["error"]["message"]


def test_cancelling_a_finished_or_foreground_response_is_a_400(server):
    made = create(server).json()
    reply = call(server, "POST", "%s/%s/cancel" % (PATH, made["id"]))
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    finished = create(server, background=True).json()
    poll(server, finished["id"])
    assert call(server, "POST", "%s/%s/cancel" % (PATH, finished["id"])).status == 400


def test_a_cancel_not_declared_json_is_refused(server, monkeypatch, tmp_path):
    """A web page's no-cors POST sends no JSON Content-Type: it must not stop a run."""
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    made = create(server, background=True).json()
    pid = read_pid(str(tmp_path / "fake.pid"))
    reply = server.request("POST", "%s/%s/cancel" % (PATH, made["id"]), b"",
                           headers={"Content-Type": "text/plain"})
    assert reply.status == 415 and pid_alive(pid)
    assert call(server, "POST", "%s/%s/cancel" % (PATH, made["id"])).status == 200


def test_another_key_cannot_cancel_a_background_run(keyed, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    made = create(keyed, key=ALICE, background=True).json()
    pid = read_pid(str(tmp_path / "fake.pid"))
    assert call(keyed, "POST", "%s/%s/cancel" % (PATH, made["id"]), BOB).status == 404
    assert pid_alive(pid)
    assert call(keyed, "POST", "%s/%s/cancel" % (PATH, made["id"]), ALICE).status == 200


def test_deleting_a_background_response_stops_its_run(server, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    made = create(server, background=True).json()
    pid = read_pid(str(tmp_path / "fake.pid"))
    assert call(server, "DELETE", "%s/%s" % (PATH, made["id"])).status == 200
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert wait_for(lambda: server.app.jobs.counts() == (0, 0), 10)
    assert server.get("%s/%s" % (PATH, made["id"])).status == 404


def test_background_needs_store_and_is_not_streamed(server, record):
    no_store = create(server, background=True, store=False)
    assert no_store.status == 400 and no_store.json()["error"]["param"] == "background"
    streamed = create(server, background=True, stream=True)
    assert streamed.status == 400 and streamed.json()["error"]["param"] == "stream"
    assert records(record) == []


@pytest.fixture
def one_slot_taken(start_server, monkeypatch, tmp_path):
    """A server with one run slot, held by a background response that runs for a minute;
    ``(server, that response)``."""
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0,
                          "server.max_queued_jobs": 1})
    running = create(srv, background=True, input="FAKE_SLEEP: 60\nfirst").json()
    read_pid(str(tmp_path / "fake.pid"))
    assert wait_for(lambda: srv.app.jobs.counts() == (0, 1), 10)
    yield srv, running
    call(srv, "POST", "%s/%s/cancel" % (PATH, running["id"]))


def test_a_background_run_holds_a_run_slot_and_the_next_one_waits_queued(one_slot_taken):
    srv, running = one_slot_taken
    assert call(srv, "GET", "%s/%s" % (PATH, running["id"])).json()["status"] == "in_progress"
    waiting = create(srv, background=True, input="second")
    assert waiting.status == 200 and waiting.json()["status"] == "queued"
    assert call(srv, "GET", "%s/%s" % (PATH, waiting.json()["id"])).json()["status"] == \
        "queued"
    assert create(srv).status == 503                        # no slot for a foreground run
    call(srv, "POST", "%s/%s/cancel" % (PATH, running["id"]))
    assert poll(srv, waiting.json()["id"])["status"] == "completed"


def test_background_requests_past_the_job_queue_bound_are_a_503_with_retry_after(
        one_slot_taken):
    srv, _ = one_slot_taken
    assert create(srv, background=True).status == 200       # the one queued place
    full = create(srv, background=True)
    assert full.status == 503 and full.headers["Retry-After"]
    assert full.json()["error"]["code"] == "job_queue_full"


def test_a_background_response_runs_as_a_job_of_its_key(keyed):
    made = create(keyed, key=ALICE, background=True, input="as a job").json()
    poll(keyed, made["id"], ALICE)
    listed = {}

    def job_ended():
        listed.update(keyed.get("/api/v1/jobs?kind=response",
                                headers={"X-Api-Key": ALICE}).json())
        return [j["status"] for j in listed["jobs"]] == ["succeeded"]
    assert wait_for(job_ended, 10), listed
    (job,) = listed["jobs"]
    assert job["kind"] == "response"
    assert keyed.get("/api/v1/jobs?kind=response",
                     headers={"X-Api-Key": BOB}).json()["jobs"] == []
    events = keyed.get("/api/v1/jobs/%s/events" % job["id"],
                       headers={"X-Api-Key": ALICE}).body.splitlines()
    types = [json.loads(line)["type"] for line in events]
    assert types[0] == "job" and "message" in types and types[-1] == "job"


def test_shutdown_stops_background_runs_and_records_them_failed(start_server, monkeypatch,
                                                                tmp_path, clinvk_home):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    srv = start_server(**{"server.shutdown_grace_secs": 0})
    made = create(srv, background=True).json()
    pid = read_pid(str(tmp_path / "fake.pid"))
    srv.stop()
    assert not pid_alive(pid)
    assert srv.app.jobs.counts() == (0, 0)
    record = ResponseStore(str(clinvk_home), 10).get(made["id"], EVERYTHING)
    assert record.status == "failed" and "shut down" in record.response["error"]["message"]


def test_a_response_whose_job_was_interrupted_is_reported_failed_saying_why(server,
                                                                            clinvk_home):
    store = JobStore(str(clinvk_home))
    job = Job(new_job_id(), "response", {"response_id": "resp_" + "3" * 24}, status="queued")
    store.create(job)
    store.finish(job.id, "interrupted", None, interrupted_error("the server process running "
                                                                "it ended"))
    orphan = stored_record("resp_" + "3" * 24, status="in_progress", job_id=job.id)
    ResponseStore(str(clinvk_home), 10).add(orphan)
    got = server.get("%s/%s" % (PATH, orphan.id)).json()
    assert got["status"] == "failed" and "the server process running it ended" in \
        got["error"]["message"]
    assert ResponseStore(str(clinvk_home), 10).get(orphan.id, EVERYTHING).status == "failed"


def test_a_response_whose_job_is_gone_is_reported_failed(server, clinvk_home):
    orphan = stored_record("resp_" + "4" * 24, status="queued", job_id=new_job_id())
    ResponseStore(str(clinvk_home), 10).add(orphan)
    got = server.get("%s/%s" % (PATH, orphan.id)).json()
    assert got["status"] == "failed" and "is gone" in got["error"]["message"]


def test_the_session_header_continues_a_session_as_in_chat(server, record):
    first = create(server)
    session = first.headers["X-Clinvk-Session-Id"]
    second = create(server, input="next", headers={compat.SESSION_HEADER: session})
    assert second.json()["output"][0]["content"][0]["text"] == "[history: 1 turns] echo: next"
    assert second.headers["X-Clinvk-Session-Id"] == session
