"""The shapes of the durable jobs API (``/api/v1/jobs``): the request that creates a job, the
job object, the list, the events, declared once for validation and for /openapi.json (built
from the vocabulary in ``schema.py``, as ``api_shapes.py`` is)."""

from __future__ import annotations

from .. import shapes
from ..job_store import ALL_KINDS, KINDS, LIST_LIMIT, RESPONSE, RUN, STATUSES
from ..schema import Any, Array, Boolean, Field, Integer, Map, Obj, OneOf, String
from . import api_shapes as api
from .responses_shapes import OpenAIResponse

# The synchronous route whose body each kind's ``request`` is, and that body's shape.
KIND_ROUTES = {"prompt": ("/api/v1/prompt", shapes.PromptRequest),
               "parallel": ("/api/v1/parallel", shapes.ParallelRequest),
               "chain": ("/api/v1/chain", shapes.ChainRequest),
               "compare": ("/api/v1/compare", shapes.CompareRequest)}
# The route each kind of job answers as (a response job: a background Responses request).
JOB_TARGETS = dict({kind: route for kind, (route, _) in KIND_ROUTES.items()},
                   **{RESPONSE: "/openai/v1/responses", RUN: "/api/v1/prompt"})

_COUNT = Integer(minimum=0)

JobCreateRequest = Obj(
    Field("kind", String(enum=KINDS), required=True,
          description="Which synchronous route the job runs: prompt (/api/v1/prompt), parallel, "
                      "chain or compare."),
    Field("request", Map(Any()), required=True,
          description="Exactly the body of that route (PromptRequest, ParallelRequest, "
                      "ChainRequest or CompareRequest), validated as that route validates it. "
                      "A prompt job's output_format makes no difference: its events are in "
                      "/events and its result is the JSON answer."),
    Field("webhook_url", String(min_length=1),
          description="POSTed the job object when the job finishes (X-Clinvk-Event: "
                      "job.finished, signed in X-Clinvk-Signature); its host must be in "
                      "server.webhook_allowed_hosts."),
    Field("metadata", Map(String()), default={},
          description="String key/value pairs kept with the job and shown in it."),
    name="JobCreateRequest",
    description="Start a durable job: answered at once (202), run in the server's run slots "
                "in the order submitted.",
    example={"kind": "prompt", "request": {"backend": "claude", "prompt": "explain this code"},
             "metadata": {"ticket": "OPS-12"}},
)

RunOutcome = Obj(
    Field("backend", String(), required=True),
    Field("text", String(), required=True),
    Field("backend_session_id", String(), required=True),
    Field("model", String(), required=True),
    Field("usage", Map(Any()), required=True),
    Field("error", String(), required=True),
    Field("exit_code", Integer(), required=True),
    Field("duration_ms", _COUNT, required=True),
    Field("structured", Any(), nullable=True, required=True),
    Field("session_id", String(), required=True),
    Field("timed_out", Boolean(), required=True),
    Field("cancelled", Boolean(), required=True),
    Field("timeout", Any(), nullable=True, required=True),
    Field("error_kind", String(), required=True),
    Field("retry_after", Integer(), nullable=True, required=True),
    name="RunOutcome",
    description="The result of a run job: one backend run an API node (server.role: api) "
                "handed a worker, as the worker's run ended.",
)

JobError = Obj(
    Field("error", String(), required=True, description="A stable code (as the synchronous "
                                                        "route's error, or run_failed, "
                                                        "cancelled, interrupted)."),
    Field("message", String(), required=True),
    Field("status", Integer(), description="The HTTP status the synchronous route would have "
                                           "answered, when it would have failed."),
    Field("field", String()),
    name="JobError",
)

JobWebhook = Obj(
    Field("url", String(), required=True,
          description="The webhook_url, without user info and query string."),
    Field("status", String(enum=("pending", "delivered", "failed")), required=True),
    Field("delivery_id", String(), description="The X-Clinvk-Delivery of every attempt."),
    Field("attempts", Array(Map(Any())), description="One entry per attempt, oldest first."),
    name="JobWebhook",
)

_JOB_HEAD = (
    Field("id", String(), required=True, description="job_ and 24 hex digits."),
    Field("kind", String(enum=ALL_KINDS), required=True,
          description="prompt, parallel, chain or compare (POST /api/v1/jobs), response: a "
                      "Responses API request with background: true (POST "
                      "/openai/v1/responses), which runs as a job, or run: one backend run "
                      "of a synchronous request an API node (server.role: api) handed a "
                      "worker."),
    Field("status", String(enum=STATUSES), required=True,
          description="queued, running, then one of succeeded (every run exited 0), failed "
                      "(the job could not run, or a run failed: a prompt that exited non-zero, "
                      "any failed or cancelled task, step or compared backend), cancelled (by "
                      "DELETE or clinvk jobs cancel) or interrupted (the server stopped or "
                      "died while it ran)."),
    Field("created_at", String(), required=True),
    Field("started_at", String(), nullable=True, required=True),
    Field("finished_at", String(), nullable=True, required=True),
)
_JOB_TAIL = (
    Field("error", JobError, nullable=True, required=True,
          description="Why the job failed, was cancelled or interrupted; null otherwise."),
    Field("metadata", Map(String()), required=True),
    Field("event_count", _COUNT, required=True,
          description="Events recorded so far (the seq of the last one)."),
    Field("attempt", Integer(minimum=1), required=True,
          description="1, and one more each time the job is run again because its worker "
                      "died while running it (server.job_retries, with server.store)."),
    Field("webhook", JobWebhook, description="Present when the job has a webhook_url."),
    Field("profile", String(enum=["agent", "chat"]),
          description="The run profile its runs use: the X-Clinvk-Profile header it was "
                      "submitted with, else server.default_profile then (a <backend>-chat "
                      "model of a background response runs the chat profile whatever this "
                      "says)."),
)

Job = Obj(
    *_JOB_HEAD,
    Field("request", Map(Any()), required=True,
          description="The synchronous route's body as validated (defaults filled in, unknown "
                      "fields dropped); for a response job: response_id, response (the "
                      "Responses request), session_id and ephemeral."),
    Field("result", OneOf(api.PromptResponse, api.ParallelResponse, api.ChainResponse,
                          api.CompareResponse, OpenAIResponse, RunOutcome), nullable=True,
                   required=True,
          description="Exactly the synchronous route's answer, once finished; null until then "
                      "and when the route would have answered an error (see error)."),
    *_JOB_TAIL,
    name="Job",
    example={"id": "job_0623f1c2a9b4e7d1c3f5a7b9", "kind": "prompt", "status": "succeeded",
             "created_at": "2025-01-01T12:00:00.000Z", "started_at": "2025-01-01T12:00:00.012Z",
             "finished_at": "2025-01-01T12:00:02.530Z",
             "request": {"backend": "claude", "prompt": "explain this code"},
             "result": {"session_id": "b681dac8", "backend": "claude", "exit_code": 0,
                        "duration_ms": 2510, "output": "It parses...", "error": ""},
             "error": None, "metadata": {"ticket": "OPS-12"}, "event_count": 6,
             "attempt": 1},
)

JobSummary = Obj(*_JOB_HEAD, *_JOB_TAIL, name="JobSummary",
                 description="A job without its request and result (GET the job for them).")

JobList = Obj(
    Field("jobs", Array(JobSummary), required=True, description="Newest first."),
    Field("total", _COUNT, required=True, description="Jobs matching the filters."),
    Field("limit", _COUNT, required=True, description="The limit applied (0 = none)."),
    Field("offset", _COUNT, required=True),
    name="JobList",
)

JobDeleted = Obj(
    Field("id", String(), required=True),
    Field("deleted", Boolean(), required=True),
    name="JobDeleted",
)

JobEvent = Obj(
    Field("seq", Integer(minimum=1), required=True,
          description="The event's number: 1 for the first, no gaps; resume after it."),
    Field("type", String(), required=True,
          description="job (content.status: running, then the final status; the last event), "
                      "a unified event (init, message, thinking, tool_use, tool_result, "
                      "error, done) of a prompt or response job's backend or of a fan-out "
                      "job's item (with index), item_started, item_finished, item_skipped "
                      "(content.index: the task, step or backend) of a fan-out job, or "
                      "events_truncated (server.job_events_max_bytes)."),
    Field("index", Integer(minimum=0),
          description="On a fan-out job's unified events: the task, step or backend (its "
                      "position in the request) whose backend sent it."),
    Field("backend", String()),
    Field("session_id", String()),
    Field("timestamp", String(), required=True),
    Field("content", Map(Any()), required=True),
    name="JobEvent",
    description="One line of the NDJSON stream (the data of one SSE event, whose id is seq).",
)

JobsQuery = shapes.list_query(
    "JobsQuery", "jobs", STATUSES, LIST_LIMIT,
    Field("kind", String(enum=ALL_KINDS), description="Only jobs of this kind."))

JobPath = Obj(
    Field("id", String(min_length=1), required=True, description="Job id (job_...)."),
    name="JobPath",
)

JobEventsParams = Obj(
    *JobPath.fields,
    Field("after", Integer(minimum=0), default=0,
          description="Only the events after this seq (NDJSON; SSE clients send "
                      "Last-Event-ID)."),
    name="JobEventsParams",
)
