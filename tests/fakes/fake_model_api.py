"""A fake model API on 127.0.0.1 that the real claude, codex and gemini CLIs can talk to.

It imitates just enough of three vendor wire formats for one headless turn each:

- Anthropic Messages: POST /v1/messages (SSE when "stream": true), /v1/messages/count_tokens
- OpenAI Responses:  POST /v1/responses (always SSE)
- OpenAI Chat Completions: POST /v1/chat/completions (SSE when "stream": true)
- Gemini:            POST /v1beta/models/M:generateContent, :streamGenerateContent?alt=sse, :countTokens

    with FakeModelAPI() as api:
        env = no_egress_env(api.url, home)      # tests/e2e/realclis.py
        ... run a CLI ...
        assert api.main_requests("anthropic")[-1]["user_text"] == "hello"

Every request is recorded in `.requests`. The default reply is "FAKE-REPLY: " plus the first 60
characters of the last user turn, so a test can prove its prompt reached the model.

Structured output, as each CLI asks for it: claude's --json-schema offers the model a
`StructuredOutput` tool (claude 2.1.197), which the fake calls with an instance of its input
schema; codex's --output-schema sends `text.format` {type: json_schema, schema, strict} (codex
0.169.0), which the fake answers with an instance as JSON text; a prompt that ends with a
schema between <json_schema> tags (clinvk's prompt route, for gemini) gets the same.

Client tools (clinvk's tool bridge): a line `CALL-TOOL: <name> <json args>` in the user turn makes
the model call the offered tool whose name ends with `<name>` (the CLIs prefix MCP tool names),
one call per such line, all in one model turn; the turn that carries those calls' results is
answered `TOOL-RESULT-SEEN: <result>` (several joined by " | "), unless a result itself holds
CALL-TOOL lines: then the model calls again (a second round).
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import urlsplit

Reply = Union[str, Callable[[Dict[str, Any]], str]]

# Request kinds that are real model turns (what main_requests() returns), per vendor.
MAIN_KINDS = {"anthropic": "anthropic", "openai": "openai", "gemini": "gemini", "chat": "chat"}
# The model turns that obey CALL-TOOL lines.
CALL_TOOL_KINDS = ("anthropic", "openai", "gemini")
# Claude Code 2.1.197 prepends context to the user turn in blocks like this; they are not the prompt.
CLAUDE_REMINDER = "<system-reminder>"
# Gemini CLI 0.61.0 puts a context part before the prompt in the first user turn.
GEMINI_CONTEXT = "<session_context>"
# Codex 0.169.0 sends its environment and instructions as extra user messages wrapped in tags.
CODEX_CONTEXT_TAGS = ("<environment_context>", "<user_instructions>", "<permissions", "# AGENTS.md")
# copilot 1.0.102 puts the time in front of the prompt: "<current_datetime>...</current_datetime>\n\n".
CHAT_CONTEXT_END = "</current_datetime>"
# opencode 1.18.33 asks for a session title in a side request whose system prompt starts so.
TITLE_REQUEST = "You are a title generator"


CALL_TOOL = re.compile(r"^CALL-TOOL: (\S+) (.*)$", re.M)
CALL_TOOL_ID = "toolu_calltool_"
# codex 0.169.0 hands the model an MCP tool's result as "Wall time: 0.3 seconds\nOutput:\n<text>".
CODEX_TOOL_OUTPUT = re.compile(r"\AWall time: [^\n]*\nOutput:\n")
# gemini 0.61.0 wraps an MCP tool's result in these tags.
GEMINI_TOOL_OUTPUT = re.compile(r"\A<untrusted_context>\n?(.*?)\n?</untrusted_context>\Z", re.S)


def tool_calls_asked(text: str, tool_names: List[str]) -> List[Dict[str, Any]]:
    """The calls `CALL-TOOL:` lines in `text` ask for: the offered tool whose name ends with
    the given name (the name itself when none does) and the arguments."""
    calls = []
    for suffix, arguments in CALL_TOOL.findall(text):
        name = next((n for n in tool_names if n.endswith(suffix)), suffix)
        calls.append({"name": name, "input": json.loads(arguments)})
    return calls


def _searchable(body: Dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("type") == "tool_search" for t in body.get("tools") or [])


def offered_tool_names(body: Dict[str, Any]) -> List[str]:
    """The tool names a model request offers (Anthropic, Responses or Chat Completions), with
    those a Responses tool_search found ("NAMESPACE/NAME" for a tool of a namespace)."""
    names = []
    found = []
    for item in body.get("input") if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and item.get("type") == "tool_search_output":
            for tool in item.get("tools") or []:
                found += [(tool.get("name") or "") + "/" + (t.get("name") or "")
                          for t in tool.get("tools") or []] if tool.get("type") == "namespace" else [tool.get("name") or ""]
    names += found
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            names.append(function.get("name") or "")
            for declaration in tool.get("functionDeclarations") or []:     # gemini
                names.append(declaration.get("name") or "")
    return [n for n in names if n]


# What a CLI names the tool its output schema becomes (claude 2.1.197 --json-schema).
STRUCTURED_TOOL = "StructuredOutput"
_SCHEMA_BLOCK = re.compile(r"<json_schema>\s*(.*?)\s*</json_schema>", re.S)


def default_reply(request: Dict[str, Any]) -> str:
    """The reply used unless a test sets another: an instance of the schema the turn asks
    for (requested_schema), else echoes the start of the last user turn, or the tool results
    the turn carries (the turn after a queued tool use)."""
    schema = requested_schema(request)
    if schema is not None:
        return json.dumps(schema_example(schema))
    if request.get("call_tool_results"):
        return "TOOL-RESULT-SEEN: " + " | ".join(request["tool_results"])
    if request["tool_results"]:
        return "FAKE-REPLY: tool said: " + "\n".join(request["tool_results"])[:200]
    return "FAKE-REPLY: " + request["user_text"][:60]


def requested_schema(request: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The JSON schema a text reply must follow: an OpenAI Responses text.format json_schema,
    or the last <json_schema> block of the user turn; None when there is none."""
    fmt = ((request["json"].get("text") or {}).get("format") or {}) \
        if isinstance(request["json"].get("text"), dict) else {}
    if fmt.get("type") == "json_schema":
        return fmt.get("schema") or {}
    blocks = _SCHEMA_BLOCK.findall(request["user_text"])
    return json.loads(blocks[-1]) if blocks else None


def structured_tool_schema(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The input schema of the StructuredOutput tool an Anthropic request offers, or None."""
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name") == STRUCTURED_TOOL:
            return tool.get("input_schema") or {}
    return None


def split_pieces(text: str, pieces: int) -> List[str]:
    """Split text into at most `pieces` non-empty consecutive parts (whole text when short)."""
    pieces = max(1, min(pieces, len(text)))
    size = -(-len(text) // pieces)
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def schema_example(schema: Any, root: Any = None) -> Any:
    """A value that satisfies a JSON schema of the kind structured output uses: $ref into the
    same schema, the first anyOf/oneOf alternative that is not null, allOf merged, const and
    enum, every property, minItems copies of the item, minLength, and numeric bounds."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return "fake"
    if "$ref" in schema:
        return schema_example(_resolve(root, schema["$ref"]), root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")]
            return schema_example((options or schema[key])[0], root)
    if "allOf" in schema:
        merged: Dict[str, Any] = {"type": "object", "properties": {}}
        for sub in schema["allOf"]:
            sub = _resolve(root, sub["$ref"]) if "$ref" in sub else sub
            merged["properties"].update(sub.get("properties") or {})
        return schema_example(merged, root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = ([k for k in kind if k != "null"] or ["null"])[0]
    kind = str(kind).lower()
    if kind == "object":
        return {name: schema_example(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        prefix = [schema_example(sub, root) for sub in schema.get("prefixItems") or []]
        missing = min(100, max(0, schema.get("minItems", 0) - len(prefix)))   # bounded: a fake
        return prefix + [schema_example(schema.get("items") or {"type": "string"}, root)] * missing
    if kind in ("number", "integer"):
        return _number_example(schema)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = "fake" + "x" * min(1000, max(0, schema.get("minLength", 0) - 4))
    return text[:schema["maxLength"]] if "maxLength" in schema else text


def _number_example(schema: Dict[str, Any]) -> Any:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, (int, float)) and not isinstance(exclusive, bool):
        low = exclusive + 1
    value = low if low is not None else 1
    high = schema.get("maximum")
    return min(value, high) if high is not None else value


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for token in ref.lstrip("#").split("/")[1:]:
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def _anthropic_user_turn(body: Dict[str, Any]) -> Dict[str, Any]:
    # Claude Code 2.1.197 may append a role:"system" entry after the user turn: find the last user.
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return {"text": content, "tool_results": [], "tool_result_ids": []}
            texts, results, ids = [], [], []
            for block in content or []:
                if block.get("type") == "text" and not block.get("text", "").startswith(CLAUDE_REMINDER):
                    texts.append(block["text"])
                elif block.get("type") == "tool_result":
                    results.append(_tool_result_text(block.get("content")))
                    ids.append(block.get("tool_use_id") or "")
            return {"text": "\n".join(texts), "tool_results": results, "tool_result_ids": ids}
    return {"text": "", "tool_results": [], "tool_result_ids": []}


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _openai_user_text(body: Dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("role") != "user":
            continue
        texts = [part.get("text", "") for part in item.get("content") or []
                 if part.get("type") == "input_text"]
        texts = [t for t in texts if not t.lstrip().startswith(CODEX_CONTEXT_TAGS)]
        if texts:
            return "\n".join(texts)
    return ""


def _latest_results(results: List[Any]) -> Dict[str, Any]:
    """Of (id, text) tool results, those answering the fake's latest CALL-TOOL turn (ids
    CALL_TOOL_ID<n>_<i>: the highest n), all of them when none has such an id; as a turn's
    tool_results and tool_result_ids."""
    turns = [int(i[len(CALL_TOOL_ID):].split("_")[0]) for i, _ in results
             if i.startswith(CALL_TOOL_ID)]
    if turns:
        mark = "%s%d_" % (CALL_TOOL_ID, max(turns))
        results = [(i, t) for i, t in results if i.startswith(mark)]
    return {"tool_results": [t for _, t in results], "tool_result_ids": [i for i, _ in results]}


def _openai_results(body: Dict[str, Any]) -> Dict[str, Any]:
    """The function_call_output items of a Responses request after its last user message
    (codex 0.169.0 resends the whole history; its output is a string or content items)."""
    items = body.get("input") if isinstance(body.get("input"), list) else []
    results: List[Any] = []
    for item in items:
        if item.get("role") == "user" and item.get("type", "message") == "message":
            results = []
        elif item.get("type") == "function_call_output":
            output = item.get("output")
            text = _tool_result_text(output) if isinstance(output, list) else str(output or "")
            text = CODEX_TOOL_OUTPUT.sub("", text, count=1)
            results.append((str(item.get("call_id") or ""), text))
    return _latest_results(results)


def _gemini_results(body: Dict[str, Any]) -> Dict[str, Any]:
    """The functionResponse parts of a Gemini request's last user content (gemini 0.61.0 echoes
    the functionCall's id in the functionResponse)."""
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    results = []
    for part in last.get("parts") or []:
        response = part.get("functionResponse")
        if isinstance(response, dict):
            value = response.get("response")
            text = value.get("output", value.get("error", "")) if isinstance(value, dict) else value
            text = text if isinstance(text, str) else json.dumps(text)
            results.append((str(response.get("id") or ""), GEMINI_TOOL_OUTPUT.sub(r"\1", text)))
    return _latest_results(results)


def _gemini_user_text(body: Dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [part["text"] for part in content.get("parts") or []
                     if "text" in part and not part["text"].startswith(GEMINI_CONTEXT)]
            if texts:
                return "\n".join(texts)
    return ""


def _chat_texts(content: Any) -> List[str]:
    """The texts of a Chat Completions message content (a string or a list of parts)."""
    if isinstance(content, str):
        return [content]
    return [part.get("text", "") for part in content or []
            if isinstance(part, dict) and part.get("type") == "text"]


def _chat_turn(body: Dict[str, Any]) -> Dict[str, Any]:
    """The last user text and the tool results sent after the last assistant message."""
    messages = body.get("messages") or []
    results: List[str] = []
    for message in reversed(messages):
        if message.get("role") == "tool":
            results.insert(0, "\n".join(_chat_texts(message.get("content"))))
        elif message.get("role") == "assistant":
            break
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            # qwen-code 0.24.4 sends its context as <system-reminder> parts before the prompt,
            # and the prompt with the trailing newlines of stdin.
            text = "\n".join(t for t in _chat_texts(message.get("content"))
                             if not t.startswith(CLAUDE_REMINDER)).rstrip("\n")
            text = text.split(CHAT_CONTEXT_END, 1)[-1].lstrip("\n")
            break
    last = messages[-1].get("role") if messages else ""
    return {"text": text, "tool_results": results if last == "tool" else []}


def _chat_is_side_request(body: Dict[str, Any]) -> bool:
    """A request that is not the user's turn: a session title (opencode 1.18.33) or a forced
    one-tool classifier call (qwen-code's approval classifier)."""
    for message in body.get("messages") or []:
        if message.get("role") == "system" and \
                any(t.lstrip().startswith(TITLE_REQUEST) for t in _chat_texts(message.get("content"))):
            return True
    return body.get("tool_choice") == "required" and not body.get("stream")


def classify(method: str, path: str, body: Dict[str, Any]) -> str:
    """Name the kind of call: anthropic, anthropic_count, openai, chat, chat_side, gemini,
    gemini_json, gemini_count."""
    if path.startswith("/v1/chat/completions"):
        return "chat_side" if _chat_is_side_request(body) else "chat"
    if path.startswith("/v1/messages/count_tokens"):
        return "anthropic_count"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/responses"):
        return "openai"
    if ":countTokens" in path:
        return "gemini_count"
    if ":streamGenerateContent" in path:
        return "gemini"
    if ":generateContent" in path:
        config = body.get("generationConfig") or {}
        # Gemini CLI 0.61.0 routes each turn through a classifier call that wants schema JSON.
        if config.get("responseJsonSchema") or config.get("responseSchema"):
            return "gemini_json"
        return "gemini_text"
    return "other %s" % method


class FakeModelAPI:
    """A loopback model API server; start with `with FakeModelAPI() as api:` or start()/stop()."""

    def __init__(self, reply: Reply = default_reply, pieces: int = 3,
                 delay_between_chunks: float = 0.0) -> None:
        self.reply: Reply = reply
        self.pieces = pieces
        self.delay_between_chunks = delay_between_chunks
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._failures: List[int] = []
        self._fail_always = 0
        self._tool_uses: List[Dict[str, Any]] = []
        self._counter = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- control ---------------------------------------------------------------------------
    def set_reply(self, reply: Reply, pieces: Optional[int] = None,
                  delay_between_chunks: Optional[float] = None) -> None:
        """Reply with fixed text, or reply(request) -> text; optionally change the streaming split."""
        with self._lock:
            self.reply = reply
            if pieces is not None:
                self.pieces = pieces
            if delay_between_chunks is not None:
                self.delay_between_chunks = delay_between_chunks

    def fail_next(self, status: int, times: int = 1) -> None:
        """Make the next `times` model turns (any vendor) answer HTTP `status` with an error body."""
        with self._lock:
            self._failures.extend([status] * times)

    def fail_every(self, status: int) -> None:
        """Make every model turn from now on answer HTTP `status`: a whole run fails however
        many attempts its CLI makes (claude 2.1.197 makes one on a 400, 2.1.332 six)."""
        with self._lock:
            self._fail_always = status

    def queue_tool_use(self, name: str, tool_input: Dict[str, Any]) -> None:
        """Make the next Anthropic or Chat Completions turn a call of tool `name`; the turn after
        it echoes the result."""
        with self._lock:
            self._tool_uses.append({"name": name, "input": tool_input})

    def main_requests(self, kind: str) -> List[Dict[str, Any]]:
        """Recorded real model turns of one vendor: 'anthropic', 'openai' or 'gemini'."""
        with self._lock:
            return [r for r in self.requests if r["kind"] == MAIN_KINDS[kind]]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeModelAPI is not started"
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def start(self) -> "FakeModelAPI":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeModelAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- per-request decisions (called from handler threads) --------------------------------
    def _calls_tool(self, record: Dict[str, Any]) -> bool:
        """Decide a CALL-TOOL turn: the calls the user text (or a CALL-TOOL result) asks for go
        in record["tool_uses"]; the results of earlier CALL-TOOL calls mark the turn
        record["call_tool_results"]. True when either applies."""
        ids = record.get("tool_result_ids") or []
        answered = bool(ids) and all(i.startswith(CALL_TOOL_ID) for i in ids)
        source = "\n".join(record["tool_results"]) if answered else \
            ("" if record["tool_results"] else record["user_text"])
        offered = offered_tool_names(record["json"])
        asked = tool_calls_asked(source, offered)
        if asked and record["kind"] == "openai" and _searchable(record["json"]) and \
                not all(call["name"] in offered for call in asked):
            # codex 0.169.0 defers MCP tools behind its client-side tool_search tool: search
            # first, as a model does; the found tools come back in a tool_search_output item.
            record["tool_search"] = " ".join(call["name"] for call in asked)
            return True
        if asked:
            record["tool_uses"] = asked
        elif answered:
            record["call_tool_results"] = True
        return bool(asked or answered)

    def _record(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Store the request and decide its outcome: failure status, tool use, or reply text."""
        with self._lock:
            self.requests.append(record)
            self._counter += 1
            record["n"] = self._counter
            if record["kind"] not in MAIN_KINDS.values():
                return record
            if self._failures or self._fail_always:
                record["fail_status"] = self._failures.pop(0) if self._failures else self._fail_always
            elif record["kind"] in ("anthropic", "chat") and self._tool_uses:
                record["tool_use"] = self._tool_uses.pop(0)
            elif record["kind"] in CALL_TOOL_KINDS and self._calls_tool(record):
                pass
            elif record["kind"] == "anthropic" and not record["tool_results"] \
                    and structured_tool_schema(record["json"]) is not None:
                record["tool_use"] = {"name": STRUCTURED_TOOL, "input": schema_example(
                    structured_tool_schema(record["json"]))}
            reply, pieces, delay = self.reply, self.pieces, self.delay_between_chunks
        text = reply(record) if callable(reply) else reply
        record["reply"] = text
        record["pieces"] = split_pieces(text, pieces)
        record["delay"] = delay
        record["sent_pieces"] = 0  # counted as they go out, so a test can see streaming happen
        return record


def _handler_for(api: FakeModelAPI) -> type:
    class Handler(_Handler):
        fake = api
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeModelAPI

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "fake model API: no GET %s" % self.path}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        split = urlsplit(self.path)
        kind = classify("POST", split.path, body)
        record: Dict[str, Any] = {
            "path": self.path, "kind": kind, "headers": dict(self.headers.items()), "json": body,
            "user_text": "", "tool_results": [],
        }
        if kind.startswith("anthropic"):
            turn = _anthropic_user_turn(body)
            record["user_text"], record["tool_results"] = turn["text"], turn["tool_results"]
            record["tool_result_ids"] = turn["tool_result_ids"]
        elif kind == "openai":
            record["user_text"] = _openai_user_text(body)
            record.update(_openai_results(body))
        elif kind.startswith("chat"):
            turn = _chat_turn(body)
            record["user_text"], record["tool_results"] = turn["text"], turn["tool_results"]
        elif kind.startswith("gemini"):
            record["user_text"] = _gemini_user_text(body)
            if kind == "gemini":
                record.update(_gemini_results(body))
        record = self.fake._record(record)
        if "fail_status" in record:
            return self._send_error(record["fail_status"], kind)
        if kind == "anthropic":
            return self._anthropic(record)
        if kind == "anthropic_count":
            return self._send_json(200, {"input_tokens": _tokens(record["user_text"])})
        if kind == "openai":
            return self._openai(record)
        if kind == "chat":
            return self._chat(record)
        if kind == "chat_side":
            return self._chat_side(record)
        if kind == "gemini":
            return self._gemini_stream(record)
        if kind == "gemini_json":
            config = body["generationConfig"]
            schema = config.get("responseJsonSchema") or config.get("responseSchema")
            return self._send_json(200, _gemini_chunk(json.dumps(schema_example(schema)), "STOP", 50, 10))
        if kind == "gemini_text":
            return self._send_json(200, _gemini_chunk("FAKE-REPLY: " + record["user_text"][:60], "STOP", 50, 10))
        if kind == "gemini_count":
            return self._send_json(200, {"totalTokens": _tokens(record["user_text"])})
        return self._send_json(404, {"error": {"message": "fake model API: no POST %s" % split.path}})

    # -- vendors ---------------------------------------------------------------------------
    def _anthropic(self, r: Dict[str, Any]) -> None:
        model = r["json"].get("model", "claude-fake")
        usage_in = _tokens(r["user_text"])
        message = {"id": "msg_fake_%d" % r["n"], "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": usage_in, "output_tokens": 1,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        tools = [r["tool_use"]] if r.get("tool_use") else r.get("tool_uses") or []
        # (block as started, its deltas, the whole block)
        blocks = []
        for i, tool in enumerate(tools):
            tool_id = ("%s%d_%d" % (CALL_TOOL_ID, r["n"], i)) if r.get("tool_uses") else "toolu_fake_%d" % r["n"]
            block = {"type": "tool_use", "id": tool_id, "name": tool["name"], "input": {}}
            blocks.append((block, [{"type": "input_json_delta", "partial_json": json.dumps(tool["input"])}],
                           dict(block, input=tool["input"])))
        if tools:
            stop, usage_out = "tool_use", 20
        else:
            blocks.append(({"type": "text", "text": ""},
                           [{"type": "text_delta", "text": piece} for piece in r["pieces"]],
                           {"type": "text", "text": r["reply"]}))
            stop, usage_out = "end_turn", _tokens(r["reply"])
        if not r["json"].get("stream"):
            done = dict(message, content=[whole for _, _, whole in blocks], stop_reason=stop)
            done["usage"] = dict(message["usage"], output_tokens=usage_out)
            return self._send_json(200, done)
        events = [("message_start", {"type": "message_start", "message": message})]
        for index, (block, deltas, _) in enumerate(blocks):
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": block}))
            events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                       for d in deltas]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events += [("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": usage_out}}),
                   ("message_stop", {"type": "message_stop"})]
        self._send_sse(events, r, delta_event="content_block_delta")

    def _openai(self, r: Dict[str, Any]) -> None:
        rid, mid = "resp_fake_%d" % r["n"], "msg_fake_%d" % r["n"]
        model = r["json"].get("model", "gpt-fake")
        used_in, used_out = _tokens(r["user_text"]), _tokens(r["reply"])
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model,
                    "status": "in_progress", "output": []}
        events = [("response.created", {"type": "response.created", "response": response})]
        if r.get("tool_search"):
            item = {"type": "tool_search_call", "id": "ts_fake_%d" % r["n"], "call_id": "ts_call_%d" % r["n"],
                    "execution": "client", "status": "completed",
                    "arguments": {"query": r["tool_search"], "limit": 8}}
            items = [item]
            events += [("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                       "item": item}),
                       ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                      "item": item})]
            used_out = 10
        elif r.get("tool_uses"):
            items = [{"type": "function_call", "id": "fc_fake_%d_%d" % (r["n"], i), "status": "completed",
                      "call_id": "%s%d_%d" % (CALL_TOOL_ID, r["n"], i), "name": tool["name"].split("/")[-1],
                      "arguments": json.dumps(tool["input"])} for i, tool in enumerate(r["tool_uses"])]
            for item, tool in zip(items, r["tool_uses"]):
                if "/" in tool["name"]:
                    item["namespace"] = tool["name"].split("/")[0]
            for index, item in enumerate(items):
                events += [("response.output_item.added", {
                    "type": "response.output_item.added", "output_index": index,
                    "item": dict(item, status="in_progress", arguments="")}),
                    ("response.function_call_arguments.delta", {
                        "type": "response.function_call_arguments.delta", "item_id": item["id"],
                        "output_index": index, "delta": item["arguments"]}),
                    ("response.function_call_arguments.done", {
                        "type": "response.function_call_arguments.done", "item_id": item["id"],
                        "output_index": index, "arguments": item["arguments"]}),
                    ("response.output_item.done", {"type": "response.output_item.done",
                                                   "output_index": index, "item": item})]
            used_out = 20
        else:
            item = {"type": "message", "id": mid, "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": r["reply"], "annotations": []}]}
            items = [item]
            events.append(("response.output_item.added", {
                "type": "response.output_item.added", "output_index": 0,
                "item": dict(item, status="in_progress", content=[])}))
            events += [("response.output_text.delta", {"type": "response.output_text.delta", "item_id": mid,
                                                       "output_index": 0, "content_index": 0, "delta": piece})
                       for piece in r["pieces"]]
            events.append(("response.output_item.done", {"type": "response.output_item.done",
                                                         "output_index": 0, "item": item}))
        usage = {"input_tokens": used_in, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": used_out, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": used_in + used_out}
        events.append(("response.completed", {"type": "response.completed",
                                              "response": dict(response, status="completed", output=items,
                                                               usage=usage)}))
        self._send_sse(events, r, delta_event="response.output_text.delta")

    def _chat(self, r: Dict[str, Any]) -> None:
        cid, model = "chatcmpl-fake-%d" % r["n"], r["json"].get("model", "gpt-fake")
        used_in, used_out = _tokens(r["user_text"]), _tokens(r["reply"])
        usage = {"prompt_tokens": used_in, "completion_tokens": used_out, "total_tokens": used_in + used_out}
        tool = r.get("tool_use")
        call = {"id": "call_fake_%d" % r["n"], "type": "function",
                "function": {"name": tool["name"], "arguments": json.dumps(tool["input"])}} if tool else None
        finish = "tool_calls" if tool else "stop"
        if not r["json"].get("stream"):
            message = {"role": "assistant", "content": None if tool else r["reply"]}
            if call:
                message["tool_calls"] = [call]
            return self._send_json(200, _chat_body(cid, model, "chat.completion",
                                                   [{"index": 0, "message": message, "finish_reason": finish}],
                                                   usage))
        chunk = lambda delta, reason: ("chunk", _chat_body(cid, model, "chat.completion.chunk", [
            {"index": 0, "delta": delta, "finish_reason": reason}]))
        if call:
            deltas = [{"tool_calls": [dict(call, index=0)]}]
        else:
            deltas = [{"content": piece} for piece in r["pieces"]]
        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk(d, None) for d in deltas] + [chunk({}, finish)]
        if (r["json"].get("stream_options") or {}).get("include_usage"):
            events.append(("usage", _chat_body(cid, model, "chat.completion.chunk", [], usage)))
        self._send_sse(events, r, delta_event="chunk", done_line=True)

    def _chat_side(self, r: Dict[str, Any]) -> None:
        """A title for a title request; for a forced tool call, a call of the one tool offered
        with arguments that satisfy its schema."""
        body, cid = r["json"], "chatcmpl-side-%d" % r["n"]
        tools = body.get("tools") or []
        if body.get("tool_choice") == "required" and tools:
            function = tools[0].get("function") or {}
            call = {"id": "call_side_%d" % r["n"], "type": "function",
                    "function": {"name": function.get("name", ""),
                                 "arguments": json.dumps(schema_example(function.get("parameters") or {}))}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": "Fake title"},
                      "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not body.get("stream"):
            return self._send_json(200, _chat_body(cid, body.get("model", ""), "chat.completion", [choice], usage))
        delta = dict(choice["message"])
        if "tool_calls" in delta:
            delta["tool_calls"] = [dict(c, index=0) for c in delta["tool_calls"]]
        events = [("chunk", _chat_body(cid, body.get("model", ""), "chat.completion.chunk",
                                       [{"index": 0, "delta": delta, "finish_reason": choice["finish_reason"]}],
                                       usage))]
        self._send_sse(events, r, delta_event=None, done_line=True)

    def _gemini_stream(self, r: Dict[str, Any]) -> None:
        used_in = _tokens(r["user_text"])
        pieces = r["pieces"]
        if r.get("tool_uses"):
            parts = [{"functionCall": {"id": "%s%d_%d" % (CALL_TOOL_ID, r["n"], i), "name": tool["name"],
                                       "args": tool["input"]}} for i, tool in enumerate(r["tool_uses"])]
            chunk = _gemini_chunk("", "STOP", used_in, 20)
            chunk["candidates"][0]["content"]["parts"] = parts
            return self._send_sse([(None, chunk)], r, delta_event=None)
        events = [(None, _gemini_chunk(piece, "STOP" if i == len(pieces) - 1 else None,
                                       used_in, _tokens(r["reply"])))
                  for i, piece in enumerate(pieces)]
        self._send_sse(events, r, delta_event=None)

    # -- wire helpers ----------------------------------------------------------------------
    def _send_error(self, status: int, kind: str) -> None:
        message = "fake model API: injected failure %d" % status
        if kind.startswith("anthropic"):
            body = {"type": "error", "error": {"type": "api_error" if status >= 500 else "invalid_request_error",
                                               "message": message}}
        elif kind.startswith("gemini"):
            body = {"error": {"code": status, "message": message,
                              "status": "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"}}
        else:
            body = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                              "code": None, "param": None}}
        self._send_json(status, body)

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_fake")
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: List[Any], r: Dict[str, Any], delta_event: Optional[str],
                  done_line: bool = False) -> None:
        """Send events as SSE (chunked encoding), pausing r["delay"] between text pieces.

        Names starting with "chunk" or "usage" are sent without an event: line (Chat
        Completions frames are unnamed); ``done_line`` ends the stream with "data: [DONE]"."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first_delta = True
        for name, payload in events:
            is_delta = name == delta_event or delta_event is None
            if is_delta and not first_delta and r.get("delay"):
                time.sleep(r["delay"])
            first_delta = first_delta and not is_delta
            named = name and name not in ("chunk", "usage")
            frame = ("event: %s\n" % name if named else "") + "data: %s\n\n" % json.dumps(payload)
            self._write_chunk(frame.encode())
            if is_delta:
                r["sent_pieces"] = r.get("sent_pieces", 0) + 1
        if done_line:
            self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _chat_body(cid: str, model: str, obj: str, choices: List[Dict[str, Any]],
               usage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {"id": cid, "object": obj, "created": int(time.time()), "model": model,
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def _gemini_chunk(text: str, finish: Optional[str], used_in: int, used_out: int) -> Dict[str, Any]:
    candidate: Dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": "gemini-fake",
            "usageMetadata": {"promptTokenCount": used_in, "candidatesTokenCount": used_out,
                              "totalTokenCount": used_in + used_out}}


def _tokens(text: str) -> int:
    """A deterministic stand-in for a token count: one per four characters, at least one."""
    return max(1, len(text) // 4)
