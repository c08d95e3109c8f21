"""The execution policy through a running server (fake CLIs): path-flag lists are checked
the way each CLI splits them, a workdir may not contain a blocked prefix, a path the OS cannot
resolve is a 400, and a request without workdir runs only where the policy allows. Every
refusal happens before any backend starts."""

from __future__ import annotations

import json
import os
import re

import pytest

from clinvk_lib import config, execute
from clinvk_lib.policy import Policy
from clinvk_lib.backends import base
from tests.backendutil import fixture
from tests.conftest import records
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)
from tests.test_policy import deny_readlink

CHAT = {"model": "claude", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
HELP = {"claude": "claude.txt", "codex": "codex_exec.txt", "gemini": "gemini.txt"}


def prompt(srv, **fields):
    return srv.post("/api/v1/prompt", dict({"backend": "claude", "prompt": "hello"}, **fields))


def refused(reply, field: str, fragment: str) -> None:
    body = reply.json()
    assert reply.status == 400, reply
    assert body["field"] == field and fragment in body["message"], body


@pytest.fixture
def dirs(tmp_path):
    """Two allowed directories, a and b (real paths)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return [os.path.realpath(str(tmp_path / name)) for name in ("a", "b")]


# -- path flags as the CLI splits them ----------------------------------------------------------


@pytest.mark.parametrize("backend, extra, index", [
    ("gemini", ["--include-directories={a},/etc"], 0),
    ("gemini", ["--include-directories", "{a}, /proc"], 1),
    ("codex", ["--image={a},/etc/passwd"], 0),
    ("codex", ["-i", "{a},/root/.ssh/id_rsa"], 1),
    ("claude", ["--add-dir", "{a}", "{b}", "/etc"], 3),
])
def test_a_path_list_with_a_blocked_element_is_400_before_any_backend_starts(
        server, record, dirs, backend, extra, index):
    a, b = dirs
    reply = prompt(server, backend=backend, extra=[e.format(a=a, b=b) for e in extra])
    refused(reply, "extra[%d]" % index, "blocked prefix")
    assert records(record) == []


@pytest.mark.parametrize("backend, extra, words", [
    ("gemini", ["--include-directories={a},{b}"],
     ["--include-directories={a}", "--include-directories={b}"]),
    ("codex", ["--image", "{a},{b}"], ["--image={a}", "--image={b}"]),
    ("claude", ["--add-dir", "{a}", "{b}"], ["--add-dir={a}", "--add-dir={b}"]),
])
def test_an_allowed_path_list_reaches_the_cli_one_checked_path_per_word(
        server, record, dirs, backend, extra, words):
    a, b = dirs
    reply = prompt(server, backend=backend, extra=[e.format(a=a, b=b) for e in extra])
    assert reply.status == 200, reply
    argv = records(record)[-1]["argv"]
    expected = [w.format(a=a, b=b) for w in words]
    assert argv[argv.index(expected[0]):][:2] == expected


def test_codex_images_cannot_swallow_the_stdin_marker(server, record, dirs):
    # codex-cli 0.169.0 reads "-i A -" as two images; clinvk's "-" must stay the prompt marker.
    assert prompt(server, backend="codex", extra=["-i", dirs[0]]).status == 200
    argv = records(record)[-1]["argv"]
    assert "-i=" + dirs[0] in argv and argv[-1] == "-"


@pytest.mark.parametrize("name", ["claude", "codex", "gemini"])
def test_path_flags_are_variadic_exactly_where_the_cli_help_says_so(name):
    """A flag the real --help shows as ``<VALUE>...`` takes several words."""
    text = fixture("help", HELP[name])
    for flag, spec in base.get(name).path_extra_flags.items():
        line = re.search(r"(?:^|[ ,])%s\b[^\n]*" % re.escape(flag), text, re.M).group(0)
        assert spec.variadic == bool(re.search(r"\.\.\.\s*>?\s", line + " ")), (name, flag)


# -- ancestors of the blocked prefixes ----------------------------------------------------------


@pytest.mark.parametrize("workdir", ["/", "/usr/..", "/proc/self/root"])
def test_a_workdir_that_contains_a_blocked_prefix_is_400(server, record, workdir):
    refused(prompt(server, workdir=workdir), "workdir", "contains the blocked prefix /etc")
    assert records(record) == []


@pytest.mark.parametrize("extra", [["--add-dir=/"], ["--add-dir", "/usr/.."]])
def test_a_path_flag_that_contains_a_blocked_prefix_is_400(server, record, extra):
    refused(prompt(server, extra=extra), "extra[%d]" % (len(extra) - 1),
            "contains the blocked prefix /etc")
    assert records(record) == []


# -- paths the OS cannot resolve ---------------------------------------------------------------


def test_a_workdir_link_the_server_may_not_read_is_400_not_500(server, record, monkeypatch):
    deny_readlink(monkeypatch, "/proc/1/cwd")
    reply = prompt(server, workdir="/proc/1/cwd")
    assert reply.status == 400 and reply.json()["field"] == "workdir", reply
    assert records(record) == []


def test_a_lone_surrogate_in_workdir_is_a_clean_400_naming_workdir(server, record):
    body = json.dumps({"backend": "claude", "prompt": "hi", "workdir": "/tmp/\ud800"})
    reply = server.post("/api/v1/prompt", body.encode("ascii"),
                        headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["field"] == "workdir", reply
    assert records(record) == []


def test_the_policy_refuses_a_lone_surrogate_for_every_front_end(clinvk_home, fake_path):
    """MCP and the CLI call prepare directly, without the HTTP layer's body checks."""
    cfg = config.load(None, env=dict(os.environ))
    for field, request in [("workdir", {"workdir": "/tmp/\ud800"}),
                           ("extra[0]", {"extra": ["--add-dir=/tmp/\ud800"]})]:
        req = execute.Request(backend="claude", prompt="hi", **request)
        with pytest.raises(execute.ExecError) as info:
            execute.prepare(req, cfg, policy=Policy.from_config(cfg))
        assert info.value.field == field
        str(info.value).encode("utf-8")


# -- the default workdir -----------------------------------------------------------------------


def test_a_request_without_workdir_runs_in_server_default_workdir(start_server, record, dirs):
    srv = start_server(**{"server.default_workdir": dirs[0]})
    assert prompt(srv).status == 200
    assert records(record)[-1]["cwd"] == dirs[0]


@pytest.mark.parametrize("path, body", [("/api/v1/prompt", {"backend": "claude", "prompt": "hi"}),
                                        ("/openai/v1/chat/completions", CHAT),
                                        ("/anthropic/v1/messages", MESSAGE)])
def test_a_refused_default_workdir_is_400_naming_the_setting(start_server, record, path, body):
    srv = start_server(**{"server.default_workdir": "/etc"})
    reply = srv.post(path, body)
    assert reply.status == 400, reply
    assert "server.default_workdir (/etc)" in reply.body.decode()
    assert records(record) == []


def test_the_servers_own_directory_is_checked_when_no_default_is_set(start_server, record,
                                                                    monkeypatch):
    monkeypatch.chdir("/")
    reply = start_server().post("/openai/v1/chat/completions", CHAT)
    assert reply.status == 400 and "set server.default_workdir" in reply.body.decode(), reply
    assert records(record) == []


def test_the_command_line_keeps_running_in_the_current_directory(clinvk_home, fake_path,
                                                                 monkeypatch):
    monkeypatch.chdir("/")
    cfg = config.load(None, env=dict(os.environ))
    prepared = execute.prepare(execute.Request(backend="claude", prompt="hi", dry_run=True), cfg)
    assert prepared.cwd == "/"
