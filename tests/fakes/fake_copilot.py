"""Fake ``copilot`` (GitHub Copilot CLI 1.0.102, prompt mode) for unit tests.

Run through tests/fakes/bin/copilot, with fake_cli.py's environment variables (FAKE_CLI_MODE,
FAKE_CLI_AUTH, FAKE_CLI_TOOL, FAKE_CLI_CHUNKS, FAKE_CLI_STATE_DIR, ...). It parses the flags
the way copilot's clap parser does, reads the whole prompt from stdin and prints copilot's
``--output-format json`` lines as captured from the real CLI (tests/fixtures/real/copilot).
Sessions are kept where copilot keeps them, ``$COPILOT_HOME/session-state/<id>/`` (without
COPILOT_HOME: in the fake's state folder, never the real ~/.copilot), so clinvk's clean-up of
an ephemeral run can be seen to work.
"""

import json
import os
import sys
import uuid

from fake_cli import UsageError, fail, last, now, parse_flags

VERSION = "GitHub Copilot CLI 1.0.102.\nRun 'copilot update' to check for updates."
FLAGS = {
    "--no-auto-update": "bool", "--no-custom-instructions": "bool", "--allow-all-tools": "bool",
    "--allow-all-paths": "bool", "--allow-all-urls": "bool", "--allow-all": "bool",
    "--yolo": "bool", "--sandbox": "bool", "--disable-builtin-mcps": "bool",
    "--disallow-temp-dir": "bool", "--no-ask-user": "bool", "--trust-folder": "bool",
    "-s": "bool", "--silent": "bool", "-v": "bool", "--version": "bool",
    "--output-format": "value", "--model": "value", "--stream": "value",
    "--session-id": "value", "--add-dir": "value", "--attachment": "value",
    "--disable-mcp-server": "value", "--reasoning-effort": "value", "--context": "value",
    "--max-ai-credits": "value", "--log-level": "value", "-r": "optional",
    "--resume": "optional", "--allow-tool": "many", "--deny-tool": "many",
    "--available-tools": "many", "--excluded-tools": "many", "--deny-url": "many",
    "--allow-url": "many", "--secret-env-vars": "many",
}
ALIASES = {"-r": "--resume", "-s": "--silent", "-v": "--version"}
CHOICES = {"--output-format": ("text", "json"), "--stream": ("on", "off"),
           "--reasoning-effort": ("none", "minimal", "low", "medium", "high", "xhigh", "max")}
NO_AUTH = ("Error: No authentication information found.\n\nCopilot can be authenticated with "
           "GitHub using an OAuth Token or a Fine-Grained Personal Access Token.")


def session_dir(run, session_id):
    home = os.environ.get("COPILOT_HOME") or os.path.join(run.state_dir, "copilot-home")
    return os.path.join(home, "session-state", session_id)


def resume(run, session_id):
    """Loads the session's turn count; False when copilot has no such session."""
    try:
        with open(os.path.join(session_dir(run, session_id), "events.jsonl")) as f:
            run.history = sum(1 for _ in f)
    except OSError:
        return False
    run.session_id = session_id
    return True


def save(run):
    os.makedirs(session_dir(run, run.session_id), exist_ok=True)
    with open(os.path.join(session_dir(run, run.session_id), "events.jsonl"), "a") as f:
        f.write(json.dumps({"type": "user.message", "data": {"content": run.prompt}}) + "\n")


def event(kind, data, ephemeral=False):
    obj = {"type": kind, "data": data, "id": str(uuid.uuid4()), "timestamp": now(),
           "parentId": str(uuid.uuid4())}
    if ephemeral:
        obj["ephemeral"] = True
    return obj


def run_copilot(run, args, stdin_text):
    flags, positionals, _ = parse_flags("copilot", args, FLAGS, ALIASES)
    if "--version" in flags:
        print(VERSION)
        return 0
    if positionals:
        raise UsageError("error: unexpected argument '%s' found" % positionals[0], 1)
    for name, choices in CHOICES.items():
        if last(flags, name, choices[0]) not in choices:
            raise UsageError("error: invalid value '%s' for '%s'" % (last(flags, name), name), 1)
    run.prompt = stdin_text
    if os.environ.get("FAKE_CLI_AUTH") == "none":
        return fail(NO_AUTH)
    resume_id = last(flags, "--resume")
    if resume_id and not resume(run, resume_id):
        return fail("Error: No session, task, or name matched '%s'." % resume_id)
    if run.mode == "fail":
        return fail("Error: fake failure (FAKE_CLI_MODE=fail)")
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    if last(flags, "--output-format", "text") != "json":
        run.document(run.reply)
        save(run)
        return 0
    model = last(flags, "--model") or os.environ.get("COPILOT_MODEL") or "claude-sonnet-4.6"
    exit_code = emit_turn(run, model, flags)
    if exit_code == 0:
        save(run)
    run.emit({"type": "result", "timestamp": now(), "sessionId": run.session_id,
              "exitCode": exit_code, "usage": {"premiumRequests": 0, "totalApiDurationMs": 12,
                                               "sessionDurationMs": 40}})
    return 0 if run.mode == "error_exit0" else exit_code


def emit_turn(run, model, flags):
    """The turn's event lines; the exit code copilot reports."""
    run.emit(event("session.tools_updated", {"model": model}, ephemeral=True))
    run.emit(event("user.message", {"content": run.prompt, "turnId": "0"}))
    run.emit(event("model.call_start", {"turnId": "0", "model": model}, ephemeral=True))
    failure = {"rate_limited": (429, "rate_limit", "429 Rate limited, please try again in 20s "
                                "(FAKE_CLI_MODE=rate_limited)"),
               "error_exit0": (400, "query", "400 fake failure (FAKE_CLI_MODE=error_exit0)")
               }.get(run.mode)
    if failure:
        status, kind, message = failure
        run.emit(event("session.error", {"errorType": kind, "message": message,
                                         "statusCode": status}))
        return 1
    if run.tool:
        emit_tool(run, model, "--allow-all-tools" in flags)
    message_id = str(uuid.uuid4())
    delta = "--stream" not in flags or last(flags, "--stream") == "on"
    for piece in run.pieces() if delta else ():
        run.emit(event("assistant.message_delta", {"messageId": message_id,
                                                   "deltaContent": piece}, ephemeral=True))
    run.emit(event("assistant.message", {"messageId": message_id, "model": model,
                                         "content": run.reply, "toolRequests": [],
                                         "turnId": "1" if run.tool else "0"}))
    run.emit(event("assistant.turn_end", {"turnId": "0"}))
    return 0


def emit_tool(run, model, allowed):
    """A shell call: refused in prompt mode unless every tool is allowed (copilot 1.0.102)."""
    call_id = "call_fake_1"
    arguments = {"command": "cat note.txt", "description": "read the note"}
    run.emit(event("assistant.message", {"messageId": str(uuid.uuid4()), "model": model,
                                         "content": "", "toolRequests": [{
                                             "toolCallId": call_id, "name": "bash",
                                             "arguments": arguments}]}))
    run.emit(event("tool.execution_start", {"toolCallId": call_id, "toolName": "bash",
                                            "arguments": arguments}))
    if allowed:
        outcome = {"success": True, "result": {"content": "fake file content"}}
    else:
        outcome = {"success": False, "error": {
            "message": "Permission denied because no interactive user response was "
                       "available.", "code": "denied"}}
    run.emit(event("tool.execution_complete", dict(outcome, toolCallId=call_id, model=model)))


if __name__ == "__main__":
    sys.exit("run through tests/fakes/bin/copilot")
