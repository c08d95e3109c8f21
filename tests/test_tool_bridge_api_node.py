"""Client tools (the tool bridge) through API nodes (server.role: api): the run is a worker's
job, parked on the worker between rounds, and the request carrying the results may reach any
API node. Real processes: a redis-server, two API nodes (with API keys), one worker driving
the fake claude, which calls the client's tools through clinvk's MCP server."""

from __future__ import annotations

import json
import os

import pytest

from tests.redisutil import RedisServer, WorkerProcess
from tests.serveproc import ServeProcess, started_by
from tests.serverutil import encode_body, wait_for

pytestmark = pytest.mark.slow

KEY, OTHER_KEY = "key-one-0123456789", "key-two-0123456789"
AUTH = {"Authorization": "Bearer " + KEY}
RESULT_TIMEOUT = 8
ASK = 'CALL-TOOL: get_weather {"city": "Paris"}'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def settings(redis, **server):
    return {"server": dict({"store": redis.url, "job_visibility_timeout_secs": 5,
                            "tool_result_timeout_secs": RESULT_TIMEOUT}, **server)}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """(API node one, API node two, the worker)."""
    root = str(tmp_path_factory.mktemp("tools-api"))
    with RedisServer(os.path.join(root, "redis")) as redis:
        keys = {"CLINVK_API_KEYS": "%s,%s" % (KEY, OTHER_KEY), "PATH": "/usr/bin:/bin"}
        one = ServeProcess(os.path.join(root, "one"), env=keys,
                           config=settings(redis, role="api", queue_timeout_secs=10))
        two = ServeProcess(os.path.join(root, "two"), env=keys,
                           config=settings(redis, role="api", queue_timeout_secs=10,
                                           metrics_enabled=True))
        worker = WorkerProcess(os.path.join(root, "worker"), settings(redis))
        try:
            yield one, two, worker
        finally:
            for proc in (one, two, worker):
                proc.stop()


def openai_client(node, key=KEY):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url="http://127.0.0.1:%d/openai/v1" % node.port, api_key=key,
                         max_retries=0, timeout=60)


def runs_counted(node):
    needle = 'clinvk_backend_runs_total{backend="claude",outcome="success"} '
    for line in node.get("/metrics", headers=AUTH).body.decode().splitlines():
        if line.startswith(needle):
            return float(line[len(needle):])
    return 0.0


def test_chat_completions_results_sent_to_another_api_node_continue_the_run(nodes):
    """And the node that followed the run to its end counts it in its metrics."""
    one, two, worker = nodes
    counted = runs_counted(two)
    messages = [{"role": "user", "content": ASK}]
    first = openai_client(one).chat.completions.with_raw_response.create(
        model="claude", messages=messages, tools=TOOLS)
    reply = first.parse()
    assert reply.choices[0].finish_reason == "tool_calls"
    call, = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [reply.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = openai_client(two).chat.completions.with_raw_response.create(
        model="claude", messages=messages, tools=TOOLS)
    done = second.parse()
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.content == "TOOL-RESULT-SEEN: sunny, 21 C"
    session = first.headers["X-Clinvk-Session-Id"]
    assert session and second.headers["X-Clinvk-Session-Id"] == session
    # The session the API node named is the one the worker's run recorded.
    assert wait_for(lambda: one.get("/api/v1/sessions/" + session, headers=AUTH).status
                    == 200, 10)
    assert one.children() == [] and two.children() == []    # the worker ran it
    assert runs_counted(two) == counted + 1
    # The run ended: the job is gone from the store, and its calls with it.
    assert wait_for(lambda: one.get("/api/v1/jobs?kind=run", headers=AUTH).json()["jobs"]
                    == [], 10)
    again = two.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": messages, "tools": TOOLS}, headers=AUTH)
    assert again.status == 404 and again.json()["error"]["code"] == "tool_call_not_found"


def test_chat_completions_streamed_round_trip_through_two_api_nodes(nodes):
    one, two, _ = nodes
    messages = [{"role": "user", "content": ASK}]
    with openai_client(one).chat.completions.stream(model="claude", messages=messages,
                                                    tools=TOOLS) as stream:
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    call, = first.choices[0].message.tool_calls
    messages += [{"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
                 {"role": "tool", "tool_call_id": call.id, "content": "rain"}]
    with openai_client(two).chat.completions.stream(model="claude", messages=messages,
                                                    tools=TOOLS) as stream:
        done = stream.get_final_completion()
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.content == "TOOL-RESULT-SEEN: rain"


@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_messages_round_trip_through_two_api_nodes(nodes, streamed):
    anthropic = pytest.importorskip("anthropic")
    one, two, _ = nodes

    def client(node):
        return anthropic.Anthropic(base_url="http://127.0.0.1:%d/anthropic" % node.port,
                                   api_key=KEY, max_retries=0, timeout=60)

    def create(node, messages):
        kw = dict(model="claude", max_tokens=256, messages=messages, tools=[{
            "name": "get_weather", "description": "The weather in a city.",
            "input_schema": TOOLS[0]["function"]["parameters"]}])
        if not streamed:
            return client(node).messages.create(**kw)
        with client(node).messages.stream(**kw) as stream:
            return stream.get_final_message()
    first = create(one, [{"role": "user", "content": ASK}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    done = create(two, [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "windy"}]}])
    assert done.stop_reason == "end_turn"
    assert done.content[0].text == "TOOL-RESULT-SEEN: windy"


def test_responses_round_trip_through_two_api_nodes(nodes):
    """The first round whole, the next one streamed, from the other node."""
    one, two, _ = nodes
    tools = [dict(TOOLS[0]["function"], type="function")]
    first = openai_client(one).responses.create(model="claude", input=ASK, tools=tools)
    call, = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather"
    events = list(openai_client(two).responses.create(
        model="claude", previous_response_id=first.id, tools=tools, stream=True,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}]))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "TOOL-RESULT-SEEN: snow"
    assert events[-1].type == "response.completed"


def test_an_unknown_call_id_is_404_on_an_api_node(nodes):
    one, _, _ = nodes
    messages = [{"role": "user", "content": ASK},
                {"role": "assistant", "tool_calls": [{
                    "id": "call_0123abcd_0123456789abcdef0123", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0123abcd_0123456789abcdef0123",
                 "content": "x"}]
    reply = one.post("/openai/v1/chat/completions", {"model": "claude", "messages": messages,
                                                     "tools": TOOLS}, headers=AUTH)
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "tool_call_not_found"


def parked_call(node, key=KEY):
    """A first round through ``node``: (the conversation so far, the call it ended on)."""
    messages = [{"role": "user", "content": ASK}]
    reply = node.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": messages, "tools": TOOLS},
        headers={"Authorization": "Bearer " + key})
    assert reply.status == 200, reply.body
    message = reply.json()["choices"][0]["message"]
    return messages + [message], message["tool_calls"][0]


def test_a_call_of_another_api_key_is_not_found_and_its_owner_continues_it(nodes):
    one, two, _ = nodes
    messages, call = parked_call(one)
    answered = messages + [{"role": "tool", "tool_call_id": call["id"], "content": "fog"}]
    body = {"model": "claude", "messages": answered, "tools": TOOLS}
    stranger = two.post("/openai/v1/chat/completions", body,
                        headers={"Authorization": "Bearer " + OTHER_KEY})
    assert stranger.status == 404
    assert stranger.json()["error"]["code"] == "tool_call_not_found"
    owner = two.post("/openai/v1/chat/completions", body, headers=AUTH)
    assert owner.status == 200, owner.body
    assert owner.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: fog"


def chat(node, messages, key=KEY):
    return node.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": messages, "tools": TOOLS},
        headers={"Authorization": "Bearer " + key})


def test_a_run_of_several_rounds_goes_on_through_either_api_node(nodes):
    one, two, _ = nodes
    messages, call = parked_call(one)
    again = 'CALL-TOOL: get_weather {"city": "Lyon"}'
    second = chat(two, messages + [{"role": "tool", "tool_call_id": call["id"],
                                    "content": again}])
    assert second.status == 200, second.body
    message = second.json()["choices"][0]["message"]
    call2, = message["tool_calls"]
    assert json.loads(call2["function"]["arguments"]) == {"city": "Lyon"}
    assert call2["id"] != call["id"]
    messages += [{"role": "tool", "tool_call_id": call["id"], "content": again}, message,
                 {"role": "tool", "tool_call_id": call2["id"], "content": "cloudy"}]
    third = chat(one, messages)
    assert third.status == 200, third.body
    assert third.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: cloudy"


def test_every_call_of_a_round_needs_its_result_in_one_request(nodes):
    one, two, _ = nodes
    messages = [{"role": "user", "content": ASK + '\nCALL-TOOL: get_weather {"city": "Nice"}'}]
    first = chat(one, messages)
    message = first.json()["choices"][0]["message"]
    a, b = message["tool_calls"]
    messages.append(message)
    partial = chat(two, messages + [{"role": "tool", "tool_call_id": a["id"], "content": "1"}])
    assert partial.status == 400, partial.body
    assert b["id"] in partial.json()["error"]["message"]
    whole = chat(two, messages + [{"role": "tool", "tool_call_id": a["id"], "content": "1"},
                                  {"role": "tool", "tool_call_id": b["id"], "content": "2"}])
    assert whole.status == 200, whole.body
    assert whole.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: 1 | 2"


def test_results_of_two_runs_in_one_request_are_refused_and_each_run_goes_on(nodes):
    one, two, _ = nodes
    first, call1 = parked_call(one)
    second, call2 = parked_call(two)
    mixed = chat(one, first + [{"role": "tool", "tool_call_id": call1["id"], "content": "1"},
                               {"role": "tool", "tool_call_id": call2["id"], "content": "2"}])
    assert mixed.status == 400 and "different runs" in mixed.json()["error"]["message"]
    for node, messages, call in ((two, first, call1), (one, second, call2)):
        done = chat(node, messages + [{"role": "tool", "tool_call_id": call["id"],
                                       "content": "ok"}])
        assert done.status == 200, done.body


def test_no_result_in_time_stops_the_run_on_the_worker(nodes):
    one, two, worker = nodes
    before = set(started_by(worker.proc.pid))
    messages, call = parked_call(one)
    running = set(started_by(worker.proc.pid)) - before
    assert running                           # the fake claude and its MCP server wait
    assert wait_for(lambda: not set(started_by(worker.proc.pid)) & running,
                    RESULT_TIMEOUT + 20)
    late = two.post("/openai/v1/chat/completions", {
        "model": "claude", "tools": TOOLS, "messages": messages + [
            {"role": "tool", "tool_call_id": call["id"], "content": "late"}]}, headers=AUTH)
    assert late.status == 404
    assert late.json()["error"]["code"] == "tool_call_not_found"
    # Ended while parked, followed by no request: its job is gone from the store too.
    assert wait_for(lambda: one.get("/api/v1/jobs?kind=run", headers=AUTH).json()["jobs"]
                    == [], 10)


def test_a_client_that_hangs_up_mid_round_cancels_the_run_on_the_worker(nodes):
    one, _, worker = nodes
    before = set(started_by(worker.proc.pid))
    conn = one.connection()
    conn.request("POST", "/openai/v1/chat/completions", *encode_body({
        "model": "claude", "stream": True, "tools": TOOLS,
        "messages": [{"role": "user", "content": "FAKE_SLEEP: 60\n" + ASK}]}, AUTH))
    resp = conn.getresponse()
    assert resp.status == 200
    assert wait_for(lambda: set(started_by(worker.proc.pid)) - before, 20)
    running = set(started_by(worker.proc.pid)) - before
    conn.close()                             # the client hangs up
    assert wait_for(lambda: not set(started_by(worker.proc.pid)) & running, 20)
    assert wait_for(lambda: any("(run) ended cancelled" in line
                                for line in worker.log_lines), 20)


def test_the_worker_prepares_the_run_again_with_its_own_policy(tmp_path):
    """The API node lets claude run; the worker has it disabled: its refusal is the answer,
    in the client's error shape, and no call is parked."""
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
        worker = WorkerProcess(str(tmp_path / "w"), dict(
            settings(redis), backends={"claude": {"enabled": False}}))
        try:
            reply = api.post("/openai/v1/chat/completions", {
                "model": "claude", "tools": TOOLS,
                "messages": [{"role": "user", "content": ASK}]})
            assert reply.status == 503, reply.body
            error = reply.json()["error"]
            assert error["code"] == "backend_disabled" and "enabled: false" in error["message"]
            assert worker.log_lines and api.children() == []
        finally:
            api.stop()
            worker.stop()
