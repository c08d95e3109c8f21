"""The live view of clinvk (the built zipapp) in a pseudo-terminal, driving the REAL claude,
codex and gemini against the fake model API (tests/ptyterm.py)."""

from __future__ import annotations

import re
import sys

import pytest

from tests.e2e import realclis
from tests.e2e.conftest import BACKENDS, PYZ
from tests.ptyterm import Terminal

pytestmark = pytest.mark.usefixtures("built_pyz")

PIECE_DELAY = 1.5         # seconds the fake model API waits between two pieces of text


def status_lines(err):
    return [piece.strip() for piece in err.replace("\r\n", "\n").split("\r")
            if " \u00b7 " in piece and "\n" not in piece]


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_view_shows_the_reply_of_the_real_cli(backend, fake_api, clinvk_env, workdir):
    fake_api.set_reply("FAKE-REPLY: one, two, three", pieces=3,
                       delay_between_chunks=PIECE_DELAY)
    t = Terminal([], command=[sys.executable, PYZ, "-b", backend, "-w", workdir, "live"],
                 env=clinvk_env, cwd=workdir)
    try:
        t.wait_for("FAKE-REP")
        whole_so_far = "FAKE-REPLY: one, two, three" in t.out
        code = t.wait(timeout=180)
    finally:
        t.close()
    assert code == 0, t.err
    if backend != "codex":          # codex prints its message whole: no token deltas
        assert not whole_so_far, "the reply appeared only once it was complete"
    # Once, and nothing else; the one thing allowed is a line break that makes room for a
    # line the backend wrote on stderr meanwhile (gemini may log one when the host is slow).
    assert t.out.endswith("\r\n")
    parts = t.out[:-2].split("\r\n")
    assert "".join(parts) == "FAKE-REPLY: one, two, three", t.out
    if len(parts) > 1:
        assert [piece for piece in re.split(r"[\r\n]+", t.err)
                if piece.strip() and " \u00b7 " not in piece], (t.out, t.err)
    assert any(re.search(r"%s \u00b7 waiting on the model \u00b7 \d+s$" % backend, s)
               for s in status_lines(t.err)), t.err
    assert "\x1b" not in t.out + t.err                      # clinvk_env sets NO_COLOR
    assert t.err.endswith("\r")                             # the status line was cleared


def test_codex_retries_are_shown_and_repeated_in_the_timeout_message(real_clis, real_home,
                                                                    workdir, tmp_path):
    # A model API nobody listens on: codex-cli 0.169.0 reports "Reconnecting..." for ever.
    env = dict(realclis.no_egress_env("http://127.0.0.1:9", real_home),
               CLINVK_HOME=str(tmp_path / "clinvk-home"))
    t = Terminal([], command=[sys.executable, PYZ, "-b", "codex", "-w", workdir, "--timeout",
                              "20", "hello"], env=env, cwd=workdir)
    try:
        t.wait_for(r"codex: warning: Reconnecting", "err", timeout=60)
        code = t.wait(timeout=120)
    finally:
        t.close()
    assert code == 124
    assert re.search(r"codex timed out after 20s and was stopped; last backend message: "
                     r"Reconnecting", t.err), t.err
