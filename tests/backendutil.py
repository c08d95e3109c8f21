"""What the per-backend tests (test_backend_claude/codex/gemini.py) share: reading the
captured outputs under tests/fixtures, feeding them to a backend's parsers, and running the
fake CLI with the argv clinvk builds."""

from __future__ import annotations

import os
import re
import subprocess
from typing import List, Set, Tuple

from clinvk_lib.backends import base, options, parsing
from tests.conftest import FAKE_BIN, ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def fixture(*parts: str) -> str:
    """The text of a file under tests/fixtures."""
    with open(os.path.join(FIXTURES, *parts), encoding="utf-8") as f:
        return f.read()


def help_flags(help_file: str) -> Set[str]:
    """Every flag named in a captured ``--help`` text (tests/fixtures/help/<help_file>)."""
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", fixture("help", help_file)))


class BackendKit:
    """One backend as its tests drive it: its real captures, its parsers, its fake CLI."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend = base.get(name)
        self.fake = os.path.join(FAKE_BIN, name)

    def real(self, case: str) -> Tuple[str, str, int]:
        """(stdout, stderr, exit code) of a capture from the real CLI."""
        return (fixture("real", self.name, case + ".stdout"),
                fixture("real", self.name, case + ".stderr"),
                int(fixture("real", self.name, case + ".exit")))

    def real_cases(self) -> List[str]:
        """The names of the real captures, sorted."""
        return sorted(f[:-len(".stdout")]
                      for f in os.listdir(os.path.join(FIXTURES, "real", self.name))
                      if f.endswith(".stdout"))

    def parse_real(self, case: str) -> Tuple[int, parsing.Result]:
        """(exit code, Result) of a real capture, parsed the way it was run (stream-json
        when the case name says "stream", else json)."""
        out, err, code = self.real(case)
        result = self.stream(out, err, code)[1] if "stream" in case else \
            self.backend.parse_json_output(out, err, code)
        return code, result

    def stream(self, stdout: str, stderr: str = "", exit_code: int = 0):
        """(events, Result) of feeding ``stdout`` line by line to a fresh stream parser."""
        parser = self.backend.new_stream_parser()
        events = [e for line in stdout.splitlines() for e in parser.feed(line)]
        events += parser.finish(exit_code, stderr)
        return events, parser.result(exit_code)

    def argv(self, **kw) -> list:
        """The argv clinvk builds for these Options, with the CLI's own name first."""
        return self.backend.build_argv(options.Options(**kw), self.name)

    def run_fake(self, tmp_path, prompt: str, env=None, **kw) -> Tuple[str, str, int]:
        """(stdout, stderr, exit code) of the fake CLI run with the argv clinvk builds."""
        args = self.backend.build_argv(options.Options(**kw), self.fake)
        environ = self.backend.child_env(dict(os.environ,
                                              FAKE_CLI_STATE_DIR=str(tmp_path / "state"),
                                              **(env or {})))
        p = subprocess.run(args, input=prompt.encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=str(tmp_path), env=environ, timeout=60)
        return p.stdout.decode("utf-8"), p.stderr.decode("utf-8"), p.returncode
