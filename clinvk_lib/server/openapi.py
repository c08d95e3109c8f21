"""The OpenAPI 3.0.3 document of the HTTP API, generated from the route list and the shape
tables in ``shapes.py`` and ``api_shapes.py`` (the same tables that validate requests)."""

from __future__ import annotations

import http
import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .. import __version__, shapes
from ..schema import Field, Node, Obj, OneOf, to_json_schema
from . import api_shapes as api
from . import jobs_shapes as js
from . import responses_shapes as rs
from . import runs_shapes as runs

NATIVE = "Native API"
OPENAI = "OpenAI Compatible"
ANTHROPIC = "Anthropic Compatible"
META = "Meta"

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

TAG_DESCRIPTIONS = {
    NATIVE: "Every clinvk feature with explicit backend selection; NDJSON streaming of "
            "unified events.",
    OPENAI: "Chat Completions and Responses for OpenAI SDKs and tools (base URL "
            ".../openai/v1).",
    ANTHROPIC: "Messages for Anthropic SDKs and tools (base URL .../anthropic).",
    META: "Health, metrics and this documentation.",
}

# Each API style answers errors in its own clients' shape.
ERROR_SCHEMAS = {NATIVE: api.NativeError, META: api.NativeError, OPENAI: api.OpenAIError,
                 ANTHROPIC: api.AnthropicError}

_STREAM_NOTES = {NDJSON: "an NDJSON stream of unified events (one per line) when "
                         "output_format is stream-json",
                 SSE: "server-sent events when stream is true"}

_ERROR_NOTES = {
    400: "Unparsable JSON, a body that is not an object, or a field that is missing, of the "
         "wrong type or out of range (the message names it); a malformed Idempotency-Key",
    401: "Missing or invalid API key (unauthorized); on a route that runs a backend also "
         "backend_not_authenticated: the backend's CLI on the server cannot authenticate to "
         "its model API (the message says how to fix it)",
    403: "Refused: a request a browser sent for a page on another origin (an Origin not in "
         "server.cors_allowed_origins, or Sec-Fetch-Site cross-site or same-site), a refused "
         "CORS preflight, or a non-loopback Host on a loopback bind",
    404: "Not found (a session of another API key is not found either)",
    409: "The session is busy: another turn still holds it after "
         "server.session_busy_wait_secs; or it cannot be resumed; or the first request with "
         "the same Idempotency-Key was cancelled, or its answer was too large to keep (it is "
         "not run again: send a new key)",
    413: "Request body over server.max_request_body_bytes",
    415: "Content-Type is missing or not application/json (or application/*+json)",
    422: "The Idempotency-Key was used for a different request (method, path, body) within "
         "server.idempotency_window_secs",
    424: "The backend CLI ran and failed, or ran over server.request_timeout_secs and was "
         "killed; the message carries its error. Not a 502/504: clients retry those by "
         "themselves, and a retry is a second agent run (X-Should-Retry: false as well)",
    429: "Rate limited (rate_limited); retry after Retry-After seconds. On a route that runs a "
         "backend also backend_rate_limited: the backend's model API refused the run for its "
         "rate or quota (Retry-After when the CLI said when to retry)",
    500: "Internal error",
    503: "Backend CLI not installed, the server is at its concurrency limit, the session "
         "store cannot be written (session_store_unavailable), every Idempotency-Key the "
         "server holds is a request still running (idempotency_keys_full), or, on an API "
         "node (server.role: api), no worker started the run within "
         "server.queue_timeout_secs (no_worker)",
    504: "The backend run exceeded server.request_timeout_secs",
}

_RETRY_HEADERS = {
    "Retry-After": {"description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"}},
}
_RATE_HEADERS = dict(_RETRY_HEADERS, **{
    "RateLimit-Limit": {"description": "Bucket size (requests).", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the bucket.",
                            "schema": {"type": "integer"}},
})
_REQUEST_ID_HEADER = {"X-Request-Id": {"description": "The request's id, as in the access log.",
                                       "schema": {"type": "string"}}}
_REPLAYED_HEADER = {"Idempotent-Replayed": {
    "description": "true when this is the kept answer to an earlier request with the same "
                   "Idempotency-Key (no backend ran for this one).",
    "schema": {"type": "string", "enum": ["true"]}}}
_LOCATION_HEADER = {"Location": {"description": "Where the accepted resource is (GET it).",
                                 "schema": {"type": "string"}}}
_IDEMPOTENCY_KEY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "maxLength": 255, "pattern": "^[!-~]{1,255}$"},
    "description": "Makes retries safe: a later request with the same key (and the same "
                   "method, path and body) within server.idempotency_window_secs gets this "
                   "request's answer, waiting for it while it runs, and starts no run."}

_PROFILE_PARAM = {
    "name": "X-Clinvk-Profile", "in": "header", "required": False,
    "schema": {"type": "string", "enum": ["agent", "chat"]},
    "description": "chat: the backend runs without its agent tools, settings, project files, "
                   "MCP servers and skills, with a short system prompt and one turn; agent: "
                   "as the CLI runs by itself. Default: server.default_profile (a "
                   "<backend>-chat model id always runs the chat profile). A durable job "
                   "or background response keeps the profile it was submitted with."}


# The client tool flow (the tool bridge, README "Client tools"), per dialect: how the call
# comes out, how the result goes in, a worked example.
_TOOLS_NOTE = (" Client tools: the agent (claude, codex; gemini where runs load the workdir's "
               "configuration) may call the request's tools; the "
               "reply then ends with %s and the run waits (parked, up to "
               "server.tool_result_timeout_secs) for the next request, which carries the "
               "results as %s; its answer continues the run. An id no parked run waits for is "
               "a 404 tool_call_not_found. Example: %s")


class Operation(NamedTuple):
    """One operation of the API, as the OpenAPI document describes it.

    ``params`` declares path and query parameters: a field whose name appears as ``{name}`` in
    ``path`` is a path parameter, any other a query parameter. ``response`` is the 200 body's
    schema (``None``: a free-form object for JSON, a string for other media types).
    ``starts_runs``: the operation may start backend runs, so the App answers a retry carrying
    the same ``Idempotency-Key`` with the first answer instead of running again
    (``idempotency``). ``success`` is the status of a successful answer (202 for a job that
    is accepted to run later); ``stream_note`` says when the answer is a ``streaming`` one, if
    not as ``_STREAM_NOTES`` says it.
    """

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    request: Optional[Obj] = None
    response: Optional[Node] = None
    errors: Tuple[int, ...] = ()
    streaming: Tuple[str, ...] = ()
    params: Optional[Obj] = None
    media_type: str = "application/json"
    public: bool = False
    description: str = ""
    starts_runs: bool = False
    success: int = 200
    stream_note: str = ""


_EVERY_ROUTE = (403,)                           # the cross-site refusal guards every route
_BODY = (400, 401, 413, 415, 429)               # every route with a JSON body
_RUN = (503, 504)                               # every route that runs a backend
_COMPAT = (400, 401, 404, 409, 413, 415, 424, 429, 500, 503)
_STREAM_NOTE = (" With stream: true the headers (X-Clinvk-Session-Id included, a new "
                "session's too) and the API's first event go out before the backend starts, "
                "and a keep-alive after every server.sse_keepalive_secs of silence; from then "
                "on a failure (the run's, or no run slot within server.queue_timeout_secs) "
                "ends the stream in the API's error event.")
# What an Idempotency-Key adds: a malformed key, one whose first answer is lost, one used for
# another request, and a key table full of requests still running.
_IDEMPOTENT = (400, 409, 422, 503)
_SCOPED = (" With API keys, only the sessions the caller's key created are seen (every session "
           "for a key in server.admin_api_keys).")

_RUN_SCOPED = (" With API keys, a key sees (and cancels) only the runs its own requests started; "
               "a key in server.admin_api_keys every run.")

_JOB_SCOPED = (" With API keys, only the jobs the caller's key created are seen (every job for "
               "a key in server.admin_api_keys); another key's job is not found.")

DEFAULT_ROUTES: Tuple[Operation, ...] = (
    Operation("POST", "/api/v1/prompt", "executePrompt", NATIVE, "Execute a prompt",
              request=shapes.PromptRequest, response=api.PromptResponse,
              errors=_BODY + (404, 409) + _RUN, streaming=(NDJSON,), starts_runs=True,
              description="Runs one prompt. Unless ephemeral, creates a session (or continues "
                          "session_id, an id or unique prefix; 404 if the caller has no such "
                          "session, 409 if another turn holds it past "
                          "server.session_busy_wait_secs). A backend that ran and failed is a 200 "
                          "with exit_code and error."),
    Operation("POST", "/api/v1/parallel", "executeParallel", NATIVE, "Execute parallel tasks",
              request=shapes.ParallelRequest, response=api.ParallelResponse, errors=_BODY + _RUN,
              starts_runs=True,
              description="Runs the tasks concurrently (always ephemeral)."),
    Operation("POST", "/api/v1/chain", "executeChain", NATIVE, "Execute a chain of steps",
              request=shapes.ChainRequest, response=api.ChainResponse, errors=_BODY + _RUN,
              starts_runs=True,
              description="Runs the steps in order, replacing {{previous}} with the previous "
                          "step's output (always ephemeral)."),
    Operation("POST", "/api/v1/compare", "executeCompare", NATIVE, "Compare backends",
              request=shapes.CompareRequest, response=api.CompareResponse, errors=_BODY + _RUN,
              starts_runs=True,
              description="Runs one prompt on several backends (always ephemeral)."),
    Operation("GET", "/api/v1/backends", "listBackends", NATIVE, "List backends",
              response=api.BackendsResponse, errors=(401, 429),
              description="What clinvk doctor reports, for the runs this server makes: per "
                          "backend whether it is installed, its version and the tested range, "
                          "whether it can authenticate (its own status command or its "
                          "settings; never a model call) and why it is not usable. Checked "
                          "at most every 30 seconds."),
    Operation("GET", "/api/v1/sessions", "listSessions", NATIVE, "List sessions",
              response=api.SessionsList, errors=(400, 401, 429, 503), params=shapes.SessionsQuery,
              description="Most recently used first." + _SCOPED),
    Operation("GET", "/api/v1/sessions/{id}", "getSession", NATIVE, "Get a session",
              response=api.SessionDetail, errors=(401, 404, 409, 429, 503),
              params=shapes.SessionPath,
              description="By id or unique prefix, with the metadata it was created with; 409 if "
                          "its file is damaged." + _SCOPED),
    Operation("DELETE", "/api/v1/sessions/{id}", "deleteSession", NATIVE, "Delete a session",
              response=api.SessionDeleted, errors=(401, 404, 409, 429, 503),
              params=shapes.SessionPath,
              description="By id or unique prefix, a damaged session file included; 409 if a "
                          "turn holds it past server.session_busy_wait_secs." + _SCOPED),
    Operation("POST", "/api/v1/jobs", "createJob", NATIVE, "Start a durable job",
              request=js.JobCreateRequest, response=js.Job, success=202,
              errors=_BODY + (404, 409, 503), starts_runs=True,
              description="Answers 202 at once with Location and the job (queued): the request "
                          "is validated as its synchronous route validates it (same 400s), and a "
                          "job that cannot start (backend not installed or disabled, a refused "
                          "workdir, an unknown session) is refused with that route's error. "
                          "Jobs start in the order submitted as run slots free up (shared with "
                          "the synchronous routes); 503 with Retry-After past "
                          "server.max_queued_jobs queued jobs. A job survives a restart of the "
                          "server." + _JOB_SCOPED),
    Operation("GET", "/api/v1/jobs", "listJobs", NATIVE, "List jobs", response=js.JobList,
              errors=(400, 401, 429, 503), params=js.JobsQuery,
              description="Newest first, without their request and result." + _JOB_SCOPED),
    Operation("GET", "/api/v1/jobs/{id}", "getJob", NATIVE, "Get a job", response=js.Job,
              errors=(401, 404, 429, 503), params=js.JobPath,
              description="The job object; result once it finished." + _JOB_SCOPED),
    Operation("DELETE", "/api/v1/jobs/{id}", "deleteJob", NATIVE, "Cancel or remove a job",
              response=OneOf(js.Job, js.JobDeleted), errors=(401, 404, 429, 503),
              params=js.JobPath,
              description="A queued or running job is cancelled (its backends' process groups "
                          "are killed; the answer is the job once it has stopped, normally "
                          "cancelled); a finished one is removed with its events "
                          "({\"id\", \"deleted\": true})." + _JOB_SCOPED),
    Operation("GET", "/api/v1/jobs/{id}/events", "getJobEvents", NATIVE, "Stream a job's events",
              response=js.JobEvent, errors=(400, 401, 404, 429, 503), params=js.JobEventsParams,
              media_type=NDJSON, streaming=(SSE,),
              stream_note="server-sent events (id: seq) with Accept: text/event-stream",
              description="Every event so far after ?after=N (SSE: Last-Event-ID), then each as "
                          "it comes while the job runs; the stream ends after the job's final "
                          "job event (and after server.write_timeout_secs at the latest). "
                          "Reconnect with the last seq seen: no event is lost or repeated."
                          + _JOB_SCOPED),
    Operation("GET", "/api/v1/runs", "listRuns", NATIVE, "List the runs in flight",
              response=runs.RunList, errors=(401, 429),
              description="Every request running a backend right now, or waiting for a run "
                          "slot: synchronous prompts, streams, fan-outs, OpenAI and Anthropic "
                          "turns (durable jobs are in GET /api/v1/jobs), with backend, route, "
                          "elapsed time, client and API key id." + _RUN_SCOPED),
    Operation("GET", "/api/v1/runs/{id}/events", "getRunEvents", NATIVE,
              "Watch a run's events", response=runs.RunEvent, errors=(401, 404, 429),
              params=runs.RunPath, media_type=NDJSON,
              description="The run's latest events (up to 200 kept), then each as it comes; the "
                          "stream ends with a run_ended event when the run ends. Unified events "
                          "for a stream; the backend's stderr lines for a request answered "
                          "whole; item_started / item_finished for a fan-out." + _RUN_SCOPED),
    Operation("DELETE", "/api/v1/runs/{id}", "cancelRun", NATIVE, "Cancel a run",
              response=runs.RunCancelled, errors=(401, 404, 429), params=runs.RunPath,
              description="Stops the run: its backends' process groups get SIGTERM, then "
                          "SIGKILL after 2 s; its client gets the answer of a cancelled run. "
                          "Answers once the run has ended (ended: true) or after 5 s."
                          + _RUN_SCOPED),
    Operation("GET", "/api/v1/usage", "getUsage", NATIVE, "Usage",
              response=runs.Usage, errors=(401, 429),
              description="Runs, tokens and cost per backend and per API key id: every "
                          "node's from the shared store with server.store (scope cluster), "
                          "else this server's since it started, from the counters of "
                          "/metrics (all zero unless server.metrics_enabled; scope node)."),
    Operation("GET", "/openai/v1/models", "openaiListModels", OPENAI, "List models",
              response=api.OpenAIModelList, errors=(401, 429),
              description="The backends as models, plus backend/model entries for configured "
                          "models."),
    Operation("GET", "/openai/v1/models/{id}", "openaiGetModel", OPENAI, "Get a model",
              response=api.OpenAIModel, errors=(401, 404, 429), params=api.ModelPath),
    Operation("POST", "/openai/v1/chat/completions", "openaiChatCompletions", OPENAI,
              "Create a chat completion", request=api.ChatCompletionRequest,
              response=api.OpenAIChatCompletion, errors=_COMPAT, streaming=(SSE,), starts_runs=True,
              description="The reply carries X-Clinvk-Session-Id; send it back as a request header "
                          "to continue that session with only the newest user turn."
                          + _STREAM_NOTE + (
                              _TOOLS_NOTE % (
                                  "finish_reason tool_calls and message.tool_calls",
                                  "role tool messages (tool_call_id)",
                                  '{"model": "claude", "messages": [{"role": "user", "content": '
                                  '"Weather in Paris?"}], "tools": [{"type": "function", '
                                  '"function": {"name": "get_weather", "parameters": {"type": '
                                  '"object", "properties": {"city": {"type": "string"}}}}}]} '
                                  'answers message.tool_calls [{"id": "call_5f2c9a1e_...", '
                                  '"type": "function", "function": {"name": "get_weather", '
                                  '"arguments": "{\\"city\\": \\"Paris\\"}"}}]; the next '
                                  'request sends the same messages, that assistant message and '
                                  '{"role": "tool", "tool_call_id": "call_5f2c9a1e_...", '
                                  '"content": "sunny"}, and its answer is the agent\'s reply.'))),
    Operation("POST", "/openai/v1/responses", "openaiCreateResponse", OPENAI,
              "Create a response", request=rs.ResponsesRequest, response=rs.OpenAIResponse,
              errors=_COMPAT, streaming=(SSE,), starts_runs=True,
              description="One agent turn. previous_response_id continues the clinvk session "
                          "of a stored response with only this request's input; store (default "
                          "true) keeps the response for the caller's API key; background: true "
                          "answers at once (queued) and runs as a durable job of kind response "
                          "(503 past server.max_queued_jobs). The reply carries "
                          "X-Clinvk-Session-Id." + _STREAM_NOTE + (
                              _TOOLS_NOTE % (
                                  "function_call output items (call_id)",
                                  "function_call_output items (call_id), with or without "
                                  "previous_response_id",
                                  '{"model": "codex", "input": "Weather in Paris?", "tools": '
                                  '[{"type": "function", "name": "get_weather", "parameters": '
                                  '{"type": "object", "properties": {"city": {"type": '
                                  '"string"}}}}]} answers output [{"type": "function_call", '
                                  '"call_id": "call_5f2c9a1e_...", "name": "get_weather", '
                                  '"arguments": "{\\"city\\": \\"Paris\\"}"}]; the next '
                                  'request sends {"previous_response_id": "resp_...", "input": '
                                  '[{"type": "function_call_output", "call_id": '
                                  '"call_5f2c9a1e_...", "output": "sunny"}]} and its answer is '
                                  'the agent\'s reply. Client tools cannot run in the '
                                  'background.'))),
    Operation("GET", "/openai/v1/responses/{id}", "openaiGetResponse", OPENAI,
              "Get a stored response", response=rs.OpenAIResponse,
              errors=(401, 404, 429, 503), params=rs.ResponsePath,
              description="A response another API key created is not found either."),
    Operation("DELETE", "/openai/v1/responses/{id}", "openaiDeleteResponse", OPENAI,
              "Delete a stored response", response=rs.ResponseDeleted,
              errors=(401, 404, 429, 503), params=rs.ResponsePath,
              description="A background run of it is stopped."),
    Operation("POST", "/openai/v1/responses/{id}/cancel", "openaiCancelResponse", OPENAI,
              "Cancel a background response", response=rs.OpenAIResponse,
              errors=(400, 401, 404, 429, 503), params=rs.ResponsePath,
              description="Cancels its job (the backend's process group is killed, whichever "
                          "server process on the store runs it); the response ends cancelled. "
                          "400 if it was not created with background: true or has already "
                          "ended."),
    Operation("GET", "/openai/v1/responses/{id}/input_items", "openaiListInputItems", OPENAI,
              "List a stored response's input items", response=rs.ResponseInputItemList,
              errors=(400, 401, 404, 429, 503),
              params=Obj(*rs.ResponsePath.fields, *rs.InputItemsQuery.fields,
                         name="InputItemsParams")),
    Operation("POST", "/anthropic/v1/messages", "anthropicCreateMessage", ANTHROPIC,
              "Create a message", request=api.MessagesRequest,
              response=api.AnthropicMessageResponse,
              errors=_COMPAT, streaming=(SSE,), starts_runs=True,
              description="Also served at /anthropic/v1/v1/messages, the path the Anthropic SDK "
                          "requests when its base_url ends in /v1." + _STREAM_NOTE + (
                              _TOOLS_NOTE % (
                                  "stop_reason tool_use and tool_use content blocks",
                                  "tool_result blocks (tool_use_id) in its last user message",
                                  '{"model": "claude", "max_tokens": 1024, "messages": '
                                  '[{"role": "user", "content": "Weather in Paris?"}], "tools": '
                                  '[{"name": "get_weather", "input_schema": {"type": "object", '
                                  '"properties": {"city": {"type": "string"}}}}]} answers '
                                  'content [{"type": "tool_use", "id": "toolu_5f2c9a1e_...", '
                                  '"name": "get_weather", "input": {"city": "Paris"}}]; the next '
                                  'request adds that assistant message and {"role": "user", '
                                  '"content": [{"type": "tool_result", "tool_use_id": '
                                  '"toolu_5f2c9a1e_...", "content": "sunny"}]}, and its answer '
                                  'is the agent\'s reply.'))),
    Operation("POST", "/anthropic/v1/messages/count_tokens", "anthropicCountTokens", ANTHROPIC,
              "Count tokens (estimate)", request=api.CountTokensRequest,
              response=api.CountTokensResponse, errors=(400, 401, 404, 413, 415, 429)),
    Operation("GET", "/health", "healthCheck", META, "Health check", response=api.Health,
              errors=(429,), public=True,
              description="200 when ok or degraded; 503 with the same body when unhealthy (the "
                          "session store cannot be written or listed). Needs no API key, so no "
                          "server path appears in it."),
    Operation("GET", "/metrics", "getMetrics", META, "Prometheus metrics", errors=(401, 404, 429),
              media_type="text/plain",
              description="Prometheus text exposition format 0.0.4. 404 unless "
                          "server.metrics_enabled; needs an API key unless server.metrics_public. "
                          "With server.store, also the clinvk_cluster_* series: every node's "
                          "totals, each live node's (label node) and the duration histograms "
                          "summed over the nodes."),
    Operation("GET", "/openapi.json", "getOpenAPI", META, "This OpenAPI document", errors=(429,),
              public=True),
    Operation("GET", "/docs", "getDocs", META, "API documentation (HTML)", errors=(429,),
              media_type="text/html", public=True,
              description="A self-contained page: no external scripts, styles or fonts. Each "
                          "operation has a Try it form (with the console's scripts)."),
    Operation("GET", "/", "getConsole", META, "Web console (HTML)", errors=(404, 429),
              media_type="text/html", public=True,
              description="For a browser (Accept: text/html): the web console (runs in "
                          "flight, sessions, chat, usage; the API key is kept in the tab "
                          "only). Any other client gets the 404 it always got."),
    Operation("GET", "/console/{name}", "getConsoleAsset", META,
              "A script or style sheet of the console", errors=(404, 429),
              media_type="text/plain", public=True, params=runs.ConsoleAssetPath,
              description="Served with its own content type, an ETag, and cached for a year "
                          "when asked for with ?v= its current version."),
)

_PATH_PARAM = re.compile(r"{([^}]+)}")


def build_openapi(routes: Sequence[Operation] = DEFAULT_ROUTES, version: str = __version__,
                  server_url: str = "http://127.0.0.1:8080") -> Dict[str, Any]:
    """The OpenAPI 3.0.3 document (a JSON-ready dict) describing ``routes``."""
    refs: Dict[str, dict] = {}
    paths: Dict[str, Dict[str, Any]] = {}
    tags: List[str] = []
    for route in routes:
        if route.tag not in tags:
            tags.append(route.tag)
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "clinvk API",
            "version": version,
            "description": "One HTTP API for the coding-agent CLIs (claude, codex, gemini, "
                           "qwen, copilot, opencode): a native "
                           "REST API plus OpenAI- and Anthropic-compatible endpoints. When the "
                           "server has API keys configured, send one as X-Api-Key or as "
                           "Authorization: Bearer. Send request bodies with Content-Type: "
                           "application/json. Requests a web browser sends for a page on "
                           "another origin are refused (403) unless that origin is in "
                           "server.cors_allowed_origins.",
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": t, "description": TAG_DESCRIPTIONS.get(t, "")} for t in tags],
        "paths": paths,
        "components": {
            "schemas": {name: refs[name] for name in sorted(refs)},
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "BearerAuth": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
    }


def _operation(route: Operation, refs: Dict[str, dict]) -> Dict[str, Any]:
    op: Dict[str, Any] = {"operationId": route.operation_id, "tags": [route.tag],
                          "summary": route.summary}
    if route.description:
        op["description"] = route.description
    parameters = _parameters(route, refs)
    if route.starts_runs:
        parameters.append(dict(_IDEMPOTENCY_KEY_PARAM))
    if route.starts_runs and route.success == 200:     # a job keeps no header: not there
        parameters.append(dict(_PROFILE_PARAM))
    if parameters:
        op["parameters"] = parameters
    if route.request is not None:
        media: Dict[str, Any] = {"schema": to_json_schema(route.request, refs)}
        if route.request.example is not None:
            media["example"] = route.request.example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    op["responses"] = _responses(route, refs)
    if route.public:
        op["security"] = []
    return op


def _parameters(route: Operation, refs: Dict[str, dict]) -> List[Dict[str, Any]]:
    in_path = _PATH_PARAM.findall(route.path)
    declared = {f.name: f for f in route.params.fields} if route.params else {}
    out = []
    for name in in_path:
        field = declared.get(name)
        param: Dict[str, Any] = {"name": name, "in": "path", "required": True,
                                 "schema": field.node.json_schema(refs) if field else
                                 {"type": "string"}}
        if field is not None:
            _describe_param(param, field)
        out.append(param)
    for name, field in declared.items():
        if name in in_path:
            continue
        param = {"name": name, "in": "query", "required": field.required,
                 "schema": field.json_schema(refs)}
        _describe_param(param, field)
        out.append(param)
    return out


def _describe_param(param: Dict[str, Any], field: Field) -> None:
    if field.description:
        param["description"] = field.description
    if field.example is not None:
        param["example"] = field.example


def _responses(route: Operation, refs: Dict[str, dict]) -> Dict[str, Any]:
    if route.response is not None:
        body = to_json_schema(route.response, refs)
    elif route.media_type == "application/json":
        body = {"type": "object"}
    else:
        body = {"type": "string"}
    media: Dict[str, Any] = {"schema": body}
    example = getattr(route.response, "example", None)
    if example is not None:
        media["example"] = example
    content = {route.media_type: media}
    notes = []
    for streaming in route.streaming:
        content[streaming] = {"schema": {"type": "string"}}
        notes.append(route.stream_note or _STREAM_NOTES.get(streaming, streaming))
    headers = dict(_REQUEST_ID_HEADER, **(_REPLAYED_HEADER if route.starts_runs else {}))
    if route.success == 202:
        headers.update(_LOCATION_HEADER)
    ok = {"description": "; or ".join([http.HTTPStatus(route.success).phrase] + notes),
          "headers": headers, "content": content}
    responses: Dict[str, Any] = {str(route.success): ok}
    error_schema = to_json_schema(ERROR_SCHEMAS[route.tag], refs)
    statuses = set(route.errors) | set(_EVERY_ROUTE) | set(_IDEMPOTENT if route.starts_runs
                                                           else ())
    for status in sorted(statuses):
        resp: Dict[str, Any] = {
            "description": _ERROR_NOTES.get(status, http.HTTPStatus(status).phrase),
            "content": {"application/json": {"schema": error_schema}},
        }
        if status == 429:
            resp["headers"] = dict(_RATE_HEADERS)
        elif status == 503:
            resp["headers"] = dict(_RETRY_HEADERS)
        responses[str(status)] = resp
    return responses
