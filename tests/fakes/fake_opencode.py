"""Fake ``opencode`` (opencode-ai 1.18.33: ``run``, ``session delete``) for unit tests.

Run through tests/fakes/bin/opencode, with fake_cli.py's environment variables (FAKE_CLI_MODE,
FAKE_CLI_AUTH, FAKE_CLI_TOOL, FAKE_CLI_STATE_DIR, ...). It parses the flags the way opencode's
yargs parser does, reads the whole message from stdin when no message words are given and
prints ``run --format json`` lines as captured from the real CLI
(tests/fixtures/real/opencode): no line ends a run, an ``error`` line and exit code 1 report
a failure. The reply text is whole (opencode prints no token deltas).
"""

import json
import os
import random
import string
import sys
import time

from fake_cli import UsageError, fail, last, parse_flags, tokens

VERSION = "1.18.33"
FLAGS = {
    "--print-logs": "bool", "--pure": "bool", "-c": "bool", "--continue": "bool",
    "--fork": "bool", "--share": "bool", "--thinking": "bool", "--auto": "bool",
    "-i": "bool", "--interactive": "bool", "-h": "bool", "--help": "bool", "-v": "bool",
    "--version": "bool", "--log-level": "value", "--command": "value", "-s": "value",
    "--session": "value", "-m": "value", "--model": "value", "--agent": "value",
    "--format": "value", "--title": "value", "--attach": "value", "--dir": "value",
    "--port": "value", "--variant": "value", "-f": "many", "--file": "many",
}
ALIASES = {"-c": "--continue", "-s": "--session", "-m": "--model", "-f": "--file",
           "-i": "--interactive", "-v": "--version", "-h": "--help"}
CHOICES = {"--format": ("default", "json"), "--log-level": ("DEBUG", "INFO", "WARN", "ERROR")}
# opencode 1.18.33 colours stderr whatever NO_COLOR and TERM say.
RED_ERROR = "\x1b[91m\x1b[1mError: \x1b[0m"


def new_session_id():
    return "ses_" + "".join(random.choice(string.ascii_letters + string.digits)
                            for _ in range(26))


def line(run, kind, **fields):
    obj = {"type": kind, "timestamp": int(time.time() * 1000), "sessionID": run.session_id}
    obj.update(fields)
    run.emit(obj)


def part(run, kind, **fields):
    return dict({"id": "prt_fake", "messageID": "msg_fake", "sessionID": run.session_id,
                 "type": kind}, **fields)


def run_opencode(run, args, stdin_text):
    if args[:1] == ["session"]:
        return session_command(run, args[1:])
    command, args = (args[0], args[1:]) if args and not args[0].startswith("-") else ("", args)
    flags, positionals, _ = parse_flags("opencode", args, FLAGS, ALIASES)
    if "--version" in flags:
        print(VERSION)
        return 0
    if command != "run":
        return fail("fake opencode: only `run` and `session delete` are supported")
    for name, choices in CHOICES.items():
        if name in flags and last(flags, name) not in choices:
            raise UsageError("Invalid values:\n  Argument: %s, Given: \"%s\", Choices: %s"
                             % (name.lstrip("-"), last(flags, name),
                                ", ".join('"%s"' % c for c in choices)), 1)
    run.prompt = " ".join(positionals) or stdin_text
    run.session_id = new_session_id()
    session = last(flags, "--session")
    if session and not run.resume(session):
        return fail(RED_ERROR + "Session not found")
    if run.mode == "fail":
        return fail(RED_ERROR + "fake failure (FAKE_CLI_MODE=fail)")
    if run.mode == "invalid_json":
        run.invalid_json()
        return 0
    if last(flags, "--format", "default") != "json":
        run.document(run.reply)
        run.save()
        return 0
    refusal = refused(run)
    if refusal:
        line(run, "error", error=refusal)
        return 0 if run.mode == "error_exit0" else 1
    emit_steps(run)
    run.save()
    return 0


def refused(run):
    """The error object of a run the fake's mode or missing credentials make fail."""
    if os.environ.get("FAKE_CLI_AUTH") == "none":
        status, message = 401, "Incorrect API key provided (FAKE_CLI_AUTH=none)"
    elif run.mode == "rate_limited":
        status, message = 429, ("Rate limited, please try again in 20s "
                                "(FAKE_CLI_MODE=rate_limited)")
    elif run.mode == "error_exit0":
        status, message = 400, "fake failure (FAKE_CLI_MODE=error_exit0)"
    else:
        return None
    return {"name": "APIError", "data": {"message": message, "statusCode": status,
                                         "isRetryable": status == 429}}


def emit_steps(run):
    """step_start, the tool call (FAKE_CLI_TOOL), the whole text, step_finish per step."""
    if run.tool:
        line(run, "step_start", part=part(run, "step-start"))
        line(run, "tool_use", part=part(run, "tool", tool="read", callID="call_fake_1", state={
            "status": "completed", "input": {"filePath": "note.txt"},
            "output": "fake file content", "title": "note.txt"}))
        finish_step(run, "tool-calls", 8, 4)
    line(run, "step_start", part=part(run, "step-start"))
    line(run, "text", part=part(run, "text", text=run.reply))
    finish_step(run, "stop", tokens(run.prompt), tokens(run.reply))


def finish_step(run, reason, used_in, used_out):
    line(run, "step_finish", part=part(run, "step-finish", reason=reason, cost=0.0005, tokens={
        "total": used_in + used_out + 4, "input": used_in, "output": used_out,
        "reasoning": 0, "cache": {"write": 0, "read": 4}}))


def session_command(run, args):
    """``opencode session delete <id>`` (and ``list``, which prints the fake's sessions)."""
    flags, positionals, _ = parse_flags("opencode", args, FLAGS, ALIASES)
    if positionals[:1] == ["delete"] and len(positionals) == 2:
        path = run._state_file(positionals[1])
        if not os.path.exists(path):
            return fail(RED_ERROR + "Session not found: %s" % positionals[1])
        os.remove(path)
        sys.stdout.write("\x1b[92m\x1b[1mSession %s deleted\x1b[0m\n" % positionals[1])
        return 0
    if positionals[:1] == ["list"]:
        prefix = "opencode-"
        names = sorted(n for n in os.listdir(run.state_dir) if n.startswith(prefix)) \
            if os.path.isdir(run.state_dir) else []
        print(json.dumps([n[len(prefix):-len(".json")] for n in names]))
        return 0
    return fail("opencode session <command>\n\nmanage sessions")


if __name__ == "__main__":
    sys.exit("run through tests/fakes/bin/opencode")
