"""Third-party clients of the tool bridge and of forced tools, against the fake CLIs: the OpenAI
Agents SDK running a function_tool end to end (Responses API), instructor's TOOLS mode (a forced
function on Chat Completions) and LangChain's ChatAnthropic.with_structured_output (a forced
Anthropic tool). Everything talks to the in-process server on 127.0.0.1 only."""

from __future__ import annotations

import asyncio

import pytest

from tests.serverutil import server, start_server  # noqa: F401 - fixtures

pydantic = pytest.importorskip("pydantic")


class Person(pydantic.BaseModel):
    name: str
    age: int


def run_weather_agent(base_url: str, backend: str, streamed: bool = False):
    """An Agents SDK agent with one function_tool on ``backend`` (``streamed``: the Responses
    API's streams); (the cities the tool was called with, the run's result)."""
    agents = pytest.importorskip("agents")
    openai = pytest.importorskip("openai")
    agents.set_tracing_disabled(True)           # no trace export: nothing leaves the machine
    seen = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return "sunny in " + city

    async def run():
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        model = agents.OpenAIResponsesModel(model=backend, openai_client=client)
        agent = agents.Agent(name="weather", instructions="Use the tools.",
                             tools=[get_weather], model=model)
        ask = 'CALL-TOOL: get_weather {"city": "Paris"}'
        try:
            if not streamed:
                return await agents.Runner.run(agent, ask)
            result = agents.Runner.run_streamed(agent, ask)
            async for _ in result.stream_events():
                pass
            return result
        finally:
            await client.close()
    return seen, asyncio.run(run())


def instructor_person(url: str, backend: str) -> Person:
    instructor = pytest.importorskip("instructor")
    openai = pytest.importorskip("openai")
    client = instructor.from_openai(
        openai.OpenAI(base_url=url + "/openai/v1", api_key="unused", max_retries=0),
        mode=instructor.Mode.TOOLS)
    return client.chat.completions.create(
        model=backend, response_model=Person, max_retries=0,
        messages=[{"role": "user", "content": "Ada is 36."}])


def langchain_person(url: str, backend: str) -> Person:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    model = langchain_anthropic.ChatAnthropic(model=backend, base_url=url + "/anthropic",
                                              api_key="unused", max_retries=0)
    return model.with_structured_output(Person).invoke("Ada is 36.")


@pytest.mark.parametrize("backend, streamed", [("claude", False), ("codex", False),
                                               ("claude", True)])
def test_the_openai_agents_sdk_runs_a_function_tool_end_to_end(server, backend, streamed):
    seen, result = run_weather_agent(server.url + "/openai/v1", backend, streamed)
    assert seen == ["Paris"]
    assert result.final_output == "TOOL-RESULT-SEEN: sunny in Paris"


@pytest.mark.parametrize("backend", ["claude", "gemini"])
def test_instructor_tools_mode_gets_the_forced_functions_arguments(server, backend):
    assert isinstance(instructor_person(server.url, backend), Person)


def test_a_forced_function_streamed_is_one_tool_call_chunk(server):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=server.url + "/openai/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "function": {"name": "Person",
                                               "parameters": Person.model_json_schema()}}]
    with c.chat.completions.stream(model="claude", tools=tools, messages=[
            {"role": "user", "content": "Ada is 36."}],
            tool_choice={"type": "function", "function": {"name": "Person"}}) as stream:
        final = stream.get_final_completion()
    call, = final.choices[0].message.tool_calls
    assert call.function.name == "Person"
    Person.model_validate_json(call.function.arguments)


def test_langchain_chat_anthropic_with_structured_output(server):
    assert isinstance(langchain_person(server.url, "claude"), Person)
