"""Client tools on the OpenAI Responses API (the tool bridge, ``toolcalls``): ``tools`` of type
``function`` and ``tool_choice`` in, ``function_call`` output items out, and the
``function_call_output`` items of the next request (with or without ``previous_response_id``)
resuming the parked run.

- A request whose input ends with ``function_call_output`` items (after its last message)
  carries results: their ``call_id`` names the parked run they go to (404
  ``tool_call_not_found`` in OpenAI's error shape otherwise), and the continuation is this
  response. ``function_call`` items the client echoes back are history.
- Other ``function_call`` / ``function_call_output`` items (an earlier round of the
  conversation) become history turns of a new run.
- Tools of other types (``web_search``, ``file_search``, ...) are ignored as before: the agent
  uses its own. So are function tools without a ``tool_choice`` (or ``auto``) on a backend
  the bridge cannot give them to: Codex CLI as a client sends its own tools with every turn.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from . import compat, errors, toolcalls

FUNCTION_CALL, FUNCTION_CALL_OUTPUT = "function_call", "function_call_output"


def tool_request(body: Dict[str, Any]) -> toolcalls.ToolRequest:
    """The request's function tools and ``tool_choice`` (a string, or ``{"type":
    "function", "name": N}``)."""
    tools = [toolcalls.tool_spec(t.get("name"), t.get("description"), t.get("parameters"),
                                 "tools[%d]" % i)
             for i, t in enumerate(body.get("tools") or [])
             if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice") or toolcalls.AUTO
    if isinstance(choice, dict):
        choice = choice.get("name") if choice.get("type") == "function" else toolcalls.AUTO
    if not isinstance(choice, str):
        raise errors.invalid("expected auto, none, required or {\"type\": \"function\", "
                             "\"name\": ...}", "tool_choice")
    return toolcalls.checked(tools, choice, "tools")


def tool_results(items: Any) -> Tuple[Dict[str, Tuple[str, bool]], int]:
    """The results of the ``function_call_output`` items after the input's last message, by
    ``call_id``, and the index of the last one ({} and -1 when there are none)."""
    results: Dict[str, Tuple[str, bool]] = {}
    last = -1
    for index, item in enumerate(items if isinstance(items, list) else []):
        kind = item.get("type") or "message"
        if kind == "message":
            results, last = {}, -1
        elif kind == FUNCTION_CALL_OUTPUT:
            for name in ("call_id", "output"):
                if name not in item:
                    raise errors.invalid("field required", "input[%d].%s" % (index, name))
            results[item["call_id"]] = (output_text(item["output"]), False)
            last = index
    return results, last


def output_text(output: Any) -> str:
    """A function_call_output's ``output``: a string, or a list of ``input_text`` parts."""
    if isinstance(output, list):
        return compat.content_text(output)
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def history_turn(item: Dict[str, Any], index: int) -> compat.Turn:
    """An earlier round's function_call (the assistant called a tool) or its output (what the
    tool said), as a turn of a new run's history."""
    if item["type"] == FUNCTION_CALL:
        return compat.Turn("assistant", "(called the tool %s with the arguments %s)"
                           % (item.get("name") or "", item.get("arguments") or "{}"), index)
    return compat.Turn("tool", output_text(item.get("output")), index)


def function_call_item(call: Any, status: str = "completed",
                       arguments: str = "") -> Dict[str, Any]:
    """A call as a Responses ``function_call`` output item (``arguments`` "" while it
    streams: the first view)."""
    return {"id": "fc_" + call.id.split("_", 1)[-1], "type": FUNCTION_CALL, "status": status,
            "call_id": call.id, "name": call.name,
            "arguments": arguments if status != "completed" else call.arguments_json}


def call_items(calls: List[Any]) -> List[Dict[str, Any]]:
    return [function_call_item(c) for c in calls]
