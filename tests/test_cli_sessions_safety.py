"""Deleting sessions from the command line is never a surprise: ``sessions delete`` and
``sessions clean`` ask on a terminal, refuse without ``--yes`` anywhere else, show what would
go with ``--dry-run``, and delete only what was shown. The listing has the working directory;
a session keeps its last reply, bounded, and shows it without letting it drive the terminal."""

from __future__ import annotations

import json
import os
import re

import pytest

from clinvk_lib import render, session_record
from clinvk_lib.cli import common
from clinvk_lib.sessions import SessionStore
from tests.ptyterm import Terminal
from tests.serverutil import start_server  # noqa: F401 (a fixture)
from tests.test_cli import env, run, run_process  # noqa: F401 (env: a fixture)


def listing(capsys):
    return json.loads(run(capsys, "sessions", "list", "--json")[1])


def make_sessions(capsys, n):
    ids = []
    for i in range(n):
        _, out, _ = run(capsys, "-b", "claude", "-o", "json", "prompt %d" % i)
        ids.append(json.loads(out)["session_id"])
    return ids


# -- delete and clean ask first -------------------------------------------------------------------


@pytest.mark.parametrize("action", [["delete", "ID"], ["clean", "--older-than", "1s"]])
def test_without_a_terminal_nothing_is_deleted_without_yes(env, capsys, action):
    [sid] = make_sessions(capsys, 1)
    SessionStore(str(env["home"])).update(
        sid, lambda s: setattr(s, "last_used", "2020-01-01T00:00:00.000000Z"))
    argv = ["sessions"] + [sid if a == "ID" else a for a in action]
    p = run_process(*argv, stdin=b"y\n")        # stdin is a pipe: nobody can be asked
    assert p.returncode == common.EXIT_USAGE
    assert b"add --yes" in p.stderr and b"--dry-run" in p.stderr
    assert listing(capsys)["total"] == 1


def test_delete_with_yes_deletes_without_asking(env, capsys):
    [sid] = make_sessions(capsys, 1)
    p = run_process("sessions", "delete", "--yes", sid[:8], stdin=b"")
    assert p.returncode == 0 and sid in p.stdout.decode()
    assert listing(capsys)["total"] == 0


def test_delete_dry_run_names_the_session_and_deletes_nothing(env, capsys):
    [sid] = make_sessions(capsys, 1)
    code, out, _ = run(capsys, "sessions", "delete", "--dry-run", sid[:6])
    assert code == 0 and out.startswith("would delete session %s (claude, 1 turn" % sid)
    assert listing(capsys)["total"] == 1


def test_clean_dry_run_lists_every_session_it_would_delete(env, capsys):
    ids = make_sessions(capsys, 3)
    store = SessionStore(str(env["home"]))
    for sid in ids[:2]:
        store.update(sid, lambda s: setattr(s, "last_used", "2020-01-01T00:00:00.000000Z"))
    code, out, _ = run(capsys, "sessions", "clean", "--older-than", "30d", "--dry-run")
    assert code == 0
    assert out.splitlines()[0] == "would delete: 2 sessions not used for 30d"
    assert {line.split()[0] for line in out.splitlines()[1:]} == set(ids[:2])
    assert listing(capsys)["total"] == 3


def ask_on_a_terminal(env_vars, argv, answer):
    with Terminal(argv, cwd=str(env_vars["tmp"])) as term:
        term.wait_for(r"\[y/N\] ", stream="err")
        term.type(answer + "\r")
        code = term.wait()
        return code, term.out, term.err


@pytest.mark.parametrize("answer, deleted", [("y", True), ("n", False), ("", False)])
def test_delete_on_a_terminal_asks_and_only_yes_deletes(env, capsys, answer, deleted):
    [sid] = make_sessions(capsys, 1)
    code, out, err = ask_on_a_terminal(env, ["sessions", "delete", sid[:8]], answer)
    assert code == 0
    assert "delete session %s (claude, 1 turn" % sid in err
    assert ("deleted session %s" % sid in out) is deleted
    assert listing(capsys)["total"] == (0 if deleted else 1)


def test_clean_on_a_terminal_says_how_many_and_deletes_only_those_shown(env, capsys):
    ids = make_sessions(capsys, 3)
    store = SessionStore(str(env["home"]))
    for sid in ids[:2]:
        store.update(sid, lambda s: setattr(s, "last_used", "2020-01-01T00:00:00.000000Z"))
    code, out, err = ask_on_a_terminal(env, ["sessions", "clean", "--older-than", "30d"], "y")
    assert code == 0 and "delete 2 sessions not used for 30d" in err
    assert "deleted 2 sessions" in out
    assert [s["id"] for s in listing(capsys)["sessions"]] == [ids[2]]


def test_clean_deletes_only_the_sessions_that_were_confirmed(tmp_path):
    store = SessionStore(str(tmp_path))
    shown = store.create("claude", "/w")
    later = store.create("codex", "/w")
    for sid in (shown.id, later.id):
        store.update(sid, lambda s: setattr(s, "last_used", "2020-01-01T00:00:00.000000Z"))
    assert store.clean(86400, only=[shown.id]) == [shown.id]
    assert [s.id for s in store.list()[0]] == [later.id]


# -- the listing ---------------------------------------------------------------------------------


def test_sessions_list_has_an_aligned_header_and_a_workdir_column(env, capsys):
    work = env["tmp"] / "project-alpha"
    work.mkdir()
    run(capsys, "-b", "codex", "-w", str(work), "first prompt")
    run(capsys, "-b", "gemini", "second prompt")
    code, out, _ = run(capsys, "sessions", "list")
    header, *rows = out.splitlines()
    assert code == 0 and len(rows) == 2
    for name in ("BACKEND", "STATUS", "LAST USED", "TURNS", "WORKDIR", "TITLE"):
        column = header.index(name)
        assert all(row[column - 1] == " " for row in rows), (name, out)
    assert rows[0][header.index("BACKEND"):].startswith("gemini")
    assert "project-alpha" in rows[1][header.index("WORKDIR"):header.index("TITLE")]
    assert max(len(line) for line in out.splitlines()) <= 79


def test_sessions_list_here_shows_only_the_current_directory(env, capsys):
    other = env["tmp"] / "other"
    other.mkdir()
    run(capsys, "-b", "claude", "here")
    run(capsys, "-b", "claude", "-w", str(other), "there")
    here = listing_of(capsys, "--here")
    assert [s["title"] for s in here["sessions"]] == ["here"] and here["total"] == 1
    assert [s["title"] for s in listing_of(capsys, "-w", str(other))["sessions"]] == ["there"]


def listing_of(capsys, *flags):
    return json.loads(run(capsys, "sessions", "list", "--json", *flags)[1])


def test_a_long_working_directory_keeps_its_end_in_the_table():
    assert render.short_dir("/home/me/work/clients/acme/very-long-project-name", 20,
                            "/home/me") == "\u2026" + "very-long-project-name"[-19:]
    assert render.short_dir("/srv/clients/acme/project-alpha", 20) == "\u2026/project-alpha"
    assert render.short_dir("/home/me/src", 20, "/home/me") == "~/src"


# -- the last reply -------------------------------------------------------------------------------


def test_a_session_keeps_its_last_reply_and_show_prints_it(env, capsys):
    _, out, _ = run(capsys, "-b", "gemini", "-o", "json", "first question")
    sid = json.loads(out)["session_id"]
    run(capsys, "resume", sid, "second question")
    code, out, _ = run(capsys, "sessions", "show", sid)
    assert code == 0
    assert out.endswith("Last reply:\n  [history: 1 turns] echo: second question\n")
    shown = json.loads(run(capsys, "sessions", "show", sid, "--json")[1])
    assert shown["last_reply"] == "[history: 1 turns] echo: second question"


def test_the_stored_reply_is_bounded(tmp_path):
    store = SessionStore(str(tmp_path))
    s = store.create("claude", "/w")
    huge = "\u00e9" * (session_record.LAST_REPLY_BYTES)          # two bytes each
    store.record_turn(s.id, "b-1", {}, reply=huge)
    kept = store.get(s.id).last_reply
    assert len(kept.encode("utf-8")) < session_record.LAST_REPLY_BYTES + 200
    assert kept.startswith("\u00e9" * 100) and "clinvk keeps the first 65536" in kept
    assert os.path.getsize(os.path.join(store.dir, s.id + ".json")) < 3 * 65536


def test_listings_do_not_carry_the_last_reply(tmp_path):
    store = SessionStore(str(tmp_path))
    s = store.create("claude", "/w")
    store.record_turn(s.id, "b-1", {}, reply="the answer")
    assert store.list()[0][0].last_reply == ""
    assert "the answer" not in open(os.path.join(store.dir, "index.json")).read()


def test_a_reply_with_terminal_escapes_is_shown_escaped(tmp_path):
    store = SessionStore(str(tmp_path))
    s = store.create("claude", "/w")
    store.record_turn(s.id, "b-1", {}, reply="line one\n\x1b]0;owned\x07\x1b[2Jline two")
    text = render.format_session(store.get(s.id))
    assert "\x1b" not in text and "\x07" not in text
    assert re.search(r"  \\x1b\]0;owned\\x07\\x1b\[2Jline two\n\Z", text)


def test_the_json_listing_leaves_the_last_reply_out_and_show_has_it(env, capsys):
    [sid] = make_sessions(capsys, 1)
    assert "last_reply" not in listing(capsys)["sessions"][0]
    shown = json.loads(run(capsys, "sessions", "show", "--json", sid)[1])
    assert shown["last_reply"] == "echo: prompt 0"


def test_the_http_api_shows_a_sessions_last_reply_in_its_details_only(start_server, capsys):
    srv = start_server()
    reply = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "secret answer please"})
    sid = reply.json()["session_id"]
    detail = srv.get("/api/v1/sessions/%s" % sid).json()
    listed = srv.get("/api/v1/sessions").json()["sessions"][0]
    # The web console's Sessions page shows it; lists stay small.
    assert detail["id"] == sid and detail["last_reply"].startswith("echo: secret answer")
    assert "last_reply" not in listed and "echo: secret" not in json.dumps(listed)
