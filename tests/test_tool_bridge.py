"""Client tools over the OpenAI Chat Completions API (the tool bridge), against the fake claude:
the agent calls the client's function through clinvk's MCP server, the response ends with the
call, the run is parked, and the request carrying the result continues it."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any, Dict, List


from tests.serverutil import server, start_server, wait_for  # noqa: F401 - fixtures

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
ASK = 'CALL-TOOL: get_weather {"city": "Paris"}'


def chat(srv, messages: List[Dict[str, Any]], **extra: Any):
    return srv.post("/openai/v1/chat/completions",
                    dict({"model": "claude", "messages": messages, "tools": TOOLS}, **extra),
                    **({"headers": extra.pop("headers")} if "headers" in extra else {}))


def answered(messages: List[Dict[str, Any]], reply: Dict[str, Any],
             *results: str) -> List[Dict[str, Any]]:
    """The conversation with the assistant's calls and one tool message per result."""
    message = reply["choices"][0]["message"]
    return messages + [message] + [
        {"role": "tool", "tool_call_id": call["id"], "content": result}
        for call, result in zip(message["tool_calls"], results)]


def test_the_agent_calls_the_clients_function_and_the_response_ends_with_the_call(server):
    r = chat(server, [{"role": "user", "content": ASK}])
    assert r.status == 200, r.body
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call, = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert choice["message"]["content"] is None


def test_the_result_continues_the_parked_run(server):
    messages = [{"role": "user", "content": ASK}]
    first = chat(server, messages).json()
    r = chat(server, answered(messages, first, "sunny, 21 C"))
    assert r.status == 200, r.body
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "TOOL-RESULT-SEEN: sunny, 21 C"


def test_the_continuation_keeps_the_session_of_the_first_round(server):
    messages = [{"role": "user", "content": ASK}]
    first = chat(server, messages)
    second = chat(server, answered(messages, first.json(), "ok"))
    session = first.headers["X-Clinvk-Session-Id"]
    assert session and second.headers["X-Clinvk-Session-Id"] == session


def sse_chunks(body: bytes) -> List[Any]:
    lines = [line[len(b"data: "):] for line in body.split(b"\n") if line.startswith(b"data: ")]
    return [json.loads(line) for line in lines if line != b"[DONE]"]


def test_a_streamed_round_ends_with_a_tool_calls_delta_and_its_finish_reason(server):
    r = chat(server, [{"role": "user", "content": ASK}], stream=True)
    assert r.status == 200
    chunks = sse_chunks(r.body)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["index"] == 0
    assert calls[0][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert r.body.rstrip().endswith(b"data: [DONE]")


def test_two_calls_of_one_turn_come_in_one_response_and_are_answered_together(server):
    messages = [{"role": "user", "content": ASK + '\nCALL-TOOL: get_time {}'}]
    first = chat(server, messages).json()
    calls = first["choices"][0]["message"]["tool_calls"]
    assert sorted(c["function"]["name"] for c in calls) == ["get_time", "get_weather"]
    by_name = {c["function"]["name"]: c for c in calls}
    ordered = dict(first, choices=[dict(first["choices"][0], message=dict(
        first["choices"][0]["message"], tool_calls=[by_name["get_weather"], by_name["get_time"]]))])
    r = chat(server, answered(messages, ordered, "sunny", "noon"))
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: sunny | noon"


def test_a_result_that_asks_for_another_call_makes_a_second_round(server):
    messages = [{"role": "user", "content": ASK}]
    first = chat(server, messages).json()
    messages = answered(messages, first, "CALL-TOOL: get_time {}")
    second = chat(server, messages).json()
    call, = second["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    assert call["id"] != first["choices"][0]["message"]["tool_calls"][0]["id"]
    third = chat(server, answered(messages, second, "noon")).json()
    assert third["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: noon"


def test_a_result_for_an_unknown_call_is_a_404_in_openais_shape(server):
    r = chat(server, [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": None, "tool_calls": []},
                      {"role": "tool", "tool_call_id": "call_nope", "content": "x"}])
    assert r.status == 404
    error = r.json()["error"]
    assert error["code"] == "tool_call_not_found" and "call_nope" in error["message"]
    assert error["param"] == "messages[2].tool_call_id"


def test_a_result_already_given_is_unknown_the_second_time(server):
    messages = [{"role": "user", "content": ASK}]
    resent = answered(messages, chat(server, messages).json(), "sunny")
    assert chat(server, resent).status == 200
    assert chat(server, resent).json()["error"]["code"] == "tool_call_not_found"


def test_answering_only_some_calls_of_a_turn_is_a_400_naming_the_others(server):
    messages = [{"role": "user", "content": ASK + '\nCALL-TOOL: get_time {}'}]
    first = chat(server, messages).json()
    calls = first["choices"][0]["message"]["tool_calls"]
    r = chat(server, messages + [first["choices"][0]["message"],
                                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "x"}])
    assert r.status == 400 and calls[1]["id"] in r.json()["error"]["message"]


def test_a_parked_run_without_a_result_is_killed_after_the_tool_result_timeout(start_server):
    srv = start_server(**{"server.tool_result_timeout_secs": 1})
    messages = [{"role": "user", "content": ASK}]
    first = chat(srv, messages).json()
    assert wait_for(lambda: srv.app.tool_bridge.runs.parked_count() == 0, 15)
    assert wait_for(lambda: srv.app.limiter.in_use == 0, 15)
    r = chat(srv, answered(messages, first, "too late"))
    assert r.status == 404 and "tool_result_timeout_secs" in r.json()["error"]["message"]


def test_a_parked_run_holds_its_run_slot_and_shows_in_metrics(start_server):
    srv = start_server(**{"server.metrics_enabled": True})
    messages = [{"role": "user", "content": ASK}]
    first = chat(srv, messages).json()
    assert srv.app.limiter.in_use == 1
    assert "clinvk_parked_runs 1" in srv.get("/metrics").body.decode()
    chat(srv, answered(messages, first, "ok"))
    assert wait_for(lambda: srv.app.limiter.in_use == 0)
    assert "clinvk_parked_runs 0" in srv.get("/metrics").body.decode()


def test_a_client_that_hangs_up_while_parked_does_not_lose_the_run(server):
    messages = [{"role": "user", "content": ASK}]
    body = json.dumps({"model": "claude", "messages": messages, "tools": TOOLS,
                       "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        seen = b""
        while b"data: [DONE]" not in seen:
            seen += s.recv(65536)
    call_id = sse_chunks(seen.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))[1][
        "choices"][0]["delta"]["tool_calls"][0]["id"]
    r = chat(server, messages + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "still here"}])
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: still here"


def test_shutdown_stops_parked_runs_and_lets_a_round_being_answered_end_with_its_calls(
        start_server):
    srv = start_server()
    chat(srv, [{"role": "user", "content": ASK}])
    assert srv.app.tool_bridge.runs.parked_count() == 1
    got = {}
    slow = threading.Thread(target=lambda: got.update(reply=chat(
        srv, [{"role": "user", "content": "FAKE_SLEEP: 1\n" + ASK}])))
    slow.start()
    # The slow run holds the second run slot once its request is accepted and running (the
    # first request may still count as in flight for a moment after its reply is read).
    assert wait_for(lambda: srv.app.limiter.in_use == 2)
    srv.stop()                      # as SIGTERM: drain, then cancel what is left
    slow.join()
    reply = got["reply"]
    assert reply.status == 200 and reply.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert wait_for(lambda: srv.app.limiter.in_use == 0)
    assert srv.app.tool_bridge.runs.parked_count() == 0


def test_another_api_keys_call_is_unknown(start_server):
    srv = start_server(**{"server.api_keys": ["k-one", "k-two"]})
    messages = [{"role": "user", "content": ASK}]
    first = chat(srv, messages, headers={"Authorization": "Bearer k-one"}).json()
    r = chat(srv, answered(messages, first, "x"), headers={"Authorization": "Bearer k-two"})
    assert r.status == 404 and r.json()["error"]["code"] == "tool_call_not_found"
    r = chat(srv, answered(messages, first, "x"), headers={"Authorization": "Bearer k-one"})
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: x"


def test_codex_gets_the_tools_from_its_mcp_servers_config_and_a_round_trip_works(server):
    messages = [{"role": "user", "content": ASK + "\nCALL-TOOL: get_time {}"}]
    first = chat(server, messages, model="codex").json()
    calls = first["choices"][0]["message"]["tool_calls"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert sorted(c["function"]["name"] for c in calls) == ["get_time", "get_weather"]
    results = ["sunny" if c["function"]["name"] == "get_weather" else "noon" for c in calls]
    second = chat(server, answered(messages, first, *results), model="codex").json()
    assert second["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: sunny | noon"


def test_gemini_gets_the_tools_when_its_runs_load_the_workdirs_configuration(start_server):
    srv = start_server(**{"server.allow_project_config": True})
    messages = [{"role": "user", "content": ASK + "\nCALL-TOOL: get_time {}"}]
    first = chat(srv, messages, model="gemini").json()
    calls = first["choices"][0]["message"]["tool_calls"]
    assert sorted(c["function"]["name"] for c in calls) == ["get_time", "get_weather"]
    results = ["rain" if c["function"]["name"] == "get_weather" else "dusk" for c in calls]
    second = chat(srv, answered(messages, first, *results), model="gemini").json()
    assert second["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: rain | dusk"


def test_gemini_untrusted_is_a_400_saying_why(server):
    r = chat(server, [{"role": "user", "content": ASK}], model="gemini")
    assert r.status == 400 and r.json()["error"]["param"] == "tools"
    assert "server.allow_project_config" in r.json()["error"]["message"]


def test_tool_choice_none_runs_without_the_tools(server):
    r = chat(server, [{"role": "user", "content": "plain"}], tool_choice="none")
    assert r.json()["choices"][0]["message"]["content"] == "echo: plain"


def test_a_backend_that_cannot_take_tools_is_a_400_naming_it(server):
    for backend in ("qwen", "gemini"):
        r = chat(server, [{"role": "user", "content": ASK}], model=backend)
        assert r.status == 400
        assert r.json()["error"]["param"] == "tools" and backend in r.json()["error"]["message"]


def test_a_tool_name_the_clis_cannot_take_is_a_400_naming_it(server):
    bad = [{"type": "function", "function": {"name": "no spaces", "parameters": {}}}]
    r = chat(server, [{"role": "user", "content": ASK}], tools=bad)
    assert r.status == 400 and r.json()["error"]["param"] == "tools[0].function.name"


def test_a_named_tool_choice_must_name_a_tool(server):
    r = chat(server, [{"role": "user", "content": ASK}],
             tool_choice={"type": "function", "function": {"name": "nope"}})
    assert r.status == 400 and r.json()["error"]["param"] == "tool_choice"


# -- the Anthropic Messages dialect ----------------------------------------------------------

ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "The weather in a city.",
                    "input_schema": {"type": "object",
                                     "properties": {"city": {"type": "string"}}}},
                   {"name": "get_time", "input_schema": {"type": "object"}}]


def message(srv, messages: List[Dict[str, Any]], **extra: Any):
    return srv.post("/anthropic/v1/messages", dict(
        {"model": "claude", "max_tokens": 100, "messages": messages, "tools": ANTHROPIC_TOOLS},
        **extra))


def test_anthropic_tool_use_then_tool_result_continues_the_run(server):
    messages = [{"role": "user", "content": ASK}]
    first = message(server, messages).json()
    assert first["stop_reason"] == "tool_use"
    use, = [b for b in first["content"] if b["type"] == "tool_use"]
    assert use["id"].startswith("toolu_") and use["name"] == "get_weather"
    assert use["input"] == {"city": "Paris"}
    r = message(server, messages + [
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                      "content": [{"type": "text", "text": "rain"}]}]}])
    assert r.json()["stop_reason"] == "end_turn"
    assert r.json()["content"] == [{"type": "text", "text": "TOOL-RESULT-SEEN: rain"}]


def test_anthropic_streamed_round_ends_with_tool_use_blocks(server):
    r = message(server, [{"role": "user", "content": ASK}], stream=True)
    events = [json.loads(line[len(b"data: "):]) for line in r.body.split(b"\n")
              if line.startswith(b"data: ")]
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    partial = [e["delta"]["partial_json"] for e in events
               if e["type"] == "content_block_delta" and e["index"] == 1]
    assert json.loads("".join(partial)) == {"city": "Paris"}
    assert [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"] == [
        "tool_use"]


def test_anthropic_result_for_an_expired_call_is_a_404_in_anthropics_shape(server):
    r = message(server, [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_0badc0de_" + "0" * 20, "content": "x"}]}])
    assert r.status == 404
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"


def test_anthropic_results_of_calls_made_elsewhere_stay_history(server):
    r = message(server, [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01ABC", "content": "out"}]}])
    assert r.status == 200 and r.json()["stop_reason"] == "end_turn"


def test_a_parked_run_shows_on_the_runs_page_and_an_operator_can_cancel_it(server):
    messages = [{"role": "user", "content": ASK}]
    first = chat(server, messages).json()
    listed, = server.get("/api/v1/runs").json()["runs"]
    assert (listed["state"], listed["backends"]) == ("parked", ["claude"])
    assert server.request("DELETE", "/api/v1/runs/" + listed["id"]).status == 200
    assert wait_for(lambda: server.app.tool_bridge.runs.parked_count() == 0, 15)
    assert wait_for(lambda: server.get("/api/v1/runs").json()["runs"] == [])
    assert wait_for(lambda: server.app.limiter.in_use == 0)
    r = chat(server, answered(messages, first, "too late"))
    assert r.status == 404 and r.json()["error"]["code"] == "tool_call_not_found"
