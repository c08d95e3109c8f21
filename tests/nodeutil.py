"""Running a JavaScript client (an npm SDK) under node against a test server.

The packages live in ``$CLINVK_TEST_CACHE/npm-sdk`` (test.sh installs them). Without node or
a package a test is skipped with the reason, and fails under ``CI=true``, where every tier
must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Sequence

import pytest

NODE_SDK = os.path.join(os.environ.get("CLINVK_TEST_CACHE") or os.path.expanduser(
    "~/.cache/clinvk-test"), "npm-sdk")


def node_with(*packages: str) -> str:
    """The node binary, once ``packages`` are installed; skips (fails under CI=true) when
    node or one of them is missing."""
    node = shutil.which("node")
    missing = [p for p in packages
               if not os.path.isdir(os.path.join(NODE_SDK, "node_modules", p))]
    if node and not missing:
        return node
    what = "node" if not node else "the npm packages %s" % ", ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail("%s missing (%s; ./test.sh installs them); CI requires this test"
                    % (what, NODE_SDK))
    pytest.skip("%s missing (%s; ./test.sh installs them)" % (what, NODE_SDK))


def run_script(tmp_path: Any, name: str, source: str, args: Sequence[str],
               packages: Sequence[str], timeout: float = 120) -> Any:
    """Run ``source`` (saved as ``name``: .js for CommonJS, .mjs for a module) with ``args``;
    what it printed, as JSON. CommonJS finds the packages through NODE_PATH, a module
    through ``createRequire(process.env.CLINVK_NODE_SDK + '/package.json')``."""
    node = node_with(*packages)
    script = tmp_path / name
    script.write_text(source)
    env = dict(os.environ, NODE_PATH=os.path.join(NODE_SDK, "node_modules"),
               CLINVK_NODE_SDK=NODE_SDK)
    out = subprocess.run([node, str(script)] + list(args), env=env, capture_output=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)
