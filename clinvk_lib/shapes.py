"""The shapes every front end takes: a prompt, a parallel task, a chain step, a compare request,
session queries, and the command line's task and chain files, declared once.

The HTTP API validates its bodies with them (and documents them in /openapi.json), the MCP
tools cut their input schemas from them, and ``clinvk parallel`` / ``clinvk chain`` read their
files with them (strictly: a misspelt field is refused), so a task field is accepted, honoured
and refused the same way whichever front end received it, with the same message. The
vocabulary and the validator are in ``schema.py``; the shapes only the HTTP API speaks (its
responses, errors, the OpenAI and Anthropic bodies) are in ``server/api_shapes.py``.

Parallel tasks and chain steps never store a session, so a task refuses ``tags`` and ``meta``
rather than accept and drop them; ``id`` and ``name`` label a task and come back in its result.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .backends import options
from .backends.base import NAMES
from .backends.options import APPROVAL_MODES, SANDBOX_MODES
from .schema import NO_DEFAULT, Array, Boolean, Field, Integer, Map, Obj, Problem, String
from .session_record import LIST_LIMIT as SESSIONS_LIMIT, STATUSES as SESSION_STATUSES

OUTPUT_FORMATS = ("default",) + options.OUTPUT_FORMATS
PREVIOUS = "{{previous}}"   # in a chain step's prompt: the previous step's output
SESSION = "{{session}}"     # refused in chains: their steps store no session

# --- Value checks used by the shapes below -------------------------------------------------


def _reject_true(value: bool) -> Optional[str]:
    if value:
        return ("not supported: chains are always ephemeral (no session is stored), so "
                "pass_session_id and persist_sessions must be false or absent; pass results "
                "on with {{previous}}")
    return None


def _not_blank(prompt: str) -> Optional[str]:
    """A fan-out item whose prompt is only whitespace would run a backend for nothing."""
    return None if prompt.strip() else "must not be blank (only whitespace)"


def _chain_prompt(prompt: str) -> Optional[str]:
    if SESSION in prompt:
        return ("the {{session}} placeholder is not supported: chain steps are always "
                "ephemeral (use {{previous}} for the previous step's output)")
    return _not_blank(prompt)


def _first_step_has_no_previous(steps: List[Any]) -> Problem:
    if steps and PREVIOUS in steps[0]["prompt"]:
        return ("[0].prompt", "uses {{previous}}, but the first step has no previous output")
    return None


def _no_nul(value: Any) -> Optional[str]:
    """Values that reach a command line (argv) cannot hold NUL bytes."""
    return "must not contain NUL bytes" if "\x00" in value else None


# --- One prompt ----------------------------------------------------------------------------

_BACKEND = Field("backend", String(enum=NAMES), required=True,
                 description="Backend CLI that runs the prompt.", example="claude")
_PROMPT = Field("prompt", String(min_length=1), required=True,
                description="The prompt (given to the CLI on stdin, never in argv).",
                example="explain this code")
# Fan-out items (tasks, steps, compare) also refuse a prompt of only whitespace.
_ITEM_PROMPT = _PROMPT.but(check=_not_blank)
_MODEL = Field("model", String(), default="", check=_no_nul,
               description="Model override; empty = the backend's configured model.")
_WORKDIR = Field("workdir", String(), default="", check=_no_nul,
                 description="Working directory: an absolute path inside the server's allowed "
                             "prefixes, outside its blocked ones and not containing one; empty = "
                             "the server's server.default_workdir, checked the same way.")
_APPROVAL = Field("approval_mode", String(enum=APPROVAL_MODES), default="default",
                  description="When the agent asks before acting. 'none' (never asks) is refused "
                              "unless the server sets allow_dangerous_modes.")
_SANDBOX = Field("sandbox_mode", String(enum=SANDBOX_MODES), default="default",
                 description="What the agent may touch. 'full' is refused unless the server "
                             "sets allow_dangerous_modes.")
_OUTPUT_FORMAT = Field("output_format", String(enum=OUTPUT_FORMATS), default="default",
                       description="'stream-json' answers application/x-ndjson, one unified event "
                                   "per line; anything else answers one JSON object.")
_MAX_TOKENS = Field("max_tokens", Integer(minimum=0), default=0,
                    description="Accepted for compatibility; no backend CLI has a flag for it.")
_MAX_TURNS = Field("max_turns", Integer(minimum=0), default=0,
                   description="Maximum agentic turns (claude only); 0 = the CLI's default.")
_SYSTEM_PROMPT = Field("system_prompt", String(), default="", check=_no_nul,
                       description="System prompt, passed by the backend's own mechanism.")
_VERBOSE = Field("verbose", Boolean(), default=False, description="Ask the CLI for verbose output.")
_DRY_RUN = Field("dry_run", Boolean(), default=False,
                 description="Return the exact command that would run (in output); run nothing.")
_EPHEMERAL = Field("ephemeral", Boolean(), default=False,
                   description="Run without creating or continuing a session.")
_EXTRA = Field("extra", Array(String()), default=[],
               description="Extra CLI flags, each checked against the backend's allowlist.")
_METADATA = Field("metadata", Map(String()), default={},
                  description="String key/value pairs stored with the session.")
_SESSION_ID = Field("session_id", String(), default="",
                    description="Continue this session (its id or a unique prefix) instead of "
                                "starting a new one.")

_PROMPT_FIELDS = (_BACKEND, _PROMPT, _MODEL, _WORKDIR, _EPHEMERAL, _APPROVAL, _SANDBOX,
                  _OUTPUT_FORMAT, _MAX_TOKENS, _MAX_TURNS, _SYSTEM_PROMPT, _VERBOSE, _DRY_RUN,
                  _EXTRA, _METADATA, _SESSION_ID)

PromptRequest = Obj(
    *_PROMPT_FIELDS,
    name="PromptRequest",
    description="Run one prompt on one backend.",
    # No workdir: the example runs as written in server.default_workdir (a made-up path
    # would be refused); extra holds a flag that needs no path for the same reason.
    example={"backend": "claude", "prompt": "explain this code",
             "model": "claude-opus-4-5-20251101", "approval_mode": "auto",
             "sandbox_mode": "workspace", "output_format": "json", "max_turns": 10,
             "system_prompt": "You are a helpful assistant.", "extra": ["--effort", "high"],
             "metadata": {"project": "demo"}},
)

# --- Fan-out: parallel, chain, compare ------------------------------------------------------

_NO_SESSION_LABELS = ("not supported: a task is ephemeral, so no session keeps tags or "
                      "metadata; label it with id or name")

ParallelTask = Obj(
    _BACKEND, _ITEM_PROMPT,
    *[f for f in _PROMPT_FIELDS if f.name not in ("backend", "prompt", "ephemeral", "dry_run",
                                                   "metadata", "session_id")],
    Field("id", String(), default="", description="A label echoed in the task's result (and, "
                                                  "on the command line, its output file name)."),
    Field("name", String(), default="", description="A label echoed in the task's result."),
    Field("dry_run", Boolean(), description="Describe this task's command instead of running "
                                            "it; the request's dry_run covers every task."),
    name="ParallelTask",
    description="One task of a parallel run: the fields of a prompt request, plus labels. "
                "Tasks are always ephemeral (no session).",
    refuses={"tags": _NO_SESSION_LABELS, "meta": _NO_SESSION_LABELS},
)

ParallelRequest = Obj(
    Field("tasks", Array(ParallelTask, min_items=1), required=True,
          description="The tasks; results come back in this order."),
    Field("max_parallel", Integer(minimum=1),
          description="How many tasks run at once; default: the server's parallel.max_workers."),
    Field("fail_fast", Boolean(), default=False,
          description="Cancel the remaining tasks after the first failure."),
    _DRY_RUN,
    name="ParallelRequest",
    description="Run several prompts at once.",
    example={"tasks": [{"backend": "claude", "prompt": "review the auth module"},
                       {"backend": "codex", "prompt": "optimise the parser"}],
             "max_parallel": 3, "fail_fast": False},
)

ChainStep = Obj(
    Field("name", String(), default="", description="A label echoed in the step's result."),
    _BACKEND,
    _PROMPT.but(check=_chain_prompt,
                description="The step's prompt; {{previous}} is replaced by the previous step's "
                            "output.",
                example="improve based on: {{previous}}"),
    _MODEL, _WORKDIR, _APPROVAL, _SANDBOX, _MAX_TURNS, _SYSTEM_PROMPT,
    name="ChainStep",
)

ChainRequest = Obj(
    Field("steps", Array(ChainStep, min_items=1), required=True,
          check=_first_step_has_no_previous, description="The steps, run one after another."),
    Field("stop_on_failure", Boolean(), default=False,
          description="Stop at the first failed step."),
    Field("pass_working_dir", Boolean(), default=False,
          description="A step without workdir uses the previous step's."),
    _DRY_RUN,
    Field("pass_session_id", Boolean(), check=_reject_true,
          description="Not supported (chains are always ephemeral): true is rejected."),
    Field("persist_sessions", Boolean(), check=_reject_true,
          description="Not supported (chains are always ephemeral): true is rejected."),
    name="ChainRequest",
    description="Run steps in sequence, each seeing the previous step's output.",
    example={"steps": [{"name": "analyze", "backend": "claude", "prompt": "analyze the code"},
                       {"name": "improve", "backend": "codex",
                        "prompt": "improve based on: {{previous}}"}],
             "stop_on_failure": False, "pass_working_dir": False},
)

CompareRequest = Obj(
    _ITEM_PROMPT,
    Field("backends", Array(String(enum=NAMES), min_items=1), required=True,
          description="Backends to run the prompt on.", example=["claude", "codex", "gemini"]),
    _MODEL, _WORKDIR,
    Field("sequential", Boolean(), default=False,
          description="Run the backends one after another instead of at once."),
    _DRY_RUN,
    name="CompareRequest",
    description="Run one prompt on several backends.",
    example={"prompt": "explain this algorithm", "backends": ["claude", "codex", "gemini"],
             "sequential": False},
)

# --- The command line's files: the requests above, plus what only a file says ---------------
# A setting a file leaves out stays unset (absent), so the command line can tell it from an
# explicit false and fall back to its flags and the configuration.

ParallelFile = Obj(
    ParallelRequest.field("tasks"),
    ParallelRequest.field("max_parallel"),
    ParallelRequest.field("fail_fast").but(default=NO_DEFAULT),
    ParallelRequest.field("dry_run").but(default=NO_DEFAULT),
    Field("output_dir", String(min_length=1),
          description="Also write summary.json and one JSON file per task here."),
    description="A task file of clinvk parallel.",
)

ChainFile = Obj(
    *[f.but(default=NO_DEFAULT) if f.name in ("stop_on_failure", "dry_run") else f
      for f in ChainRequest.fields],
    description="A chain file of clinvk chain.",
)

# --- Sessions -------------------------------------------------------------------------------

def list_query(name: str, noun: str, statuses: Sequence[str], default_limit: int,
               *filters: Field) -> Obj:
    """The query of a route that lists ``noun``: its own ``filters``, then ``status``,
    ``limit`` (0 = all) and ``offset``."""
    return Obj(
        *filters,
        Field("status", String(enum=statuses), description="Only %s in this status." % noun),
        Field("limit", Integer(minimum=0), default=default_limit,
              description="At most this many %s; 0 = all." % noun),
        Field("offset", Integer(minimum=0), default=0,
              description="Skip this many %s first." % noun),
        name=name,
    )


SessionsQuery = list_query(
    "SessionsQuery", "sessions", SESSION_STATUSES, SESSIONS_LIMIT,
    Field("backend", String(enum=NAMES), description="Only sessions of this backend."),
    Field("workdir", String(), description="Only sessions whose working directory's path "
                                           "contains this text."))

SessionPath = Obj(
    # No example: no example value can name a session of the reader's, and /docs turns a
    # path parameter without one into a placeholder it tells the reader to replace.
    Field("id", String(min_length=1), required=True,
          description="Session id, or a unique prefix of one."),
    name="SessionPath",
)
