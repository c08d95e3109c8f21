"""The registry of the serving processes of one CLINVK_HOME (toolbridge.peers): where a tool
result for another instance's call is forwarded (tests/test_nginx.py runs the forwarding)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from clinvk_lib.toolbridge.peers import Peers, instance_of


def test_an_instance_is_found_by_the_others_of_its_home_and_not_after_unregistering(tmp_path):
    mine, theirs = Peers(str(tmp_path)), Peers(str(tmp_path))
    theirs.register("0badc0de", 8082)
    path = tmp_path / "tool-bridge" / "0badc0de.json"
    # Registered under this test's pid: the registry refuses to forward to itself.
    assert mine.port_of("0badc0de") == 0
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(json.dumps({"port": 8082, "pid": child.pid}))
        assert mine.port_of("0badc0de") == 8082
    finally:
        child.kill()
        child.wait()
    assert mine.port_of("0badc0de") == 0            # that process is gone
    theirs.unregister()
    assert not path.exists()


def test_the_shared_key_is_private_and_the_same_for_every_instance(tmp_path):
    one, two = Peers(str(tmp_path)), Peers(str(tmp_path))
    one.register("00000001", 1)
    two.register("00000002", 2)
    assert one.key and one.key == two.key
    key_file = tmp_path / "tool-bridge" / "forward.key"
    assert stat.S_IMODE(os.stat(str(key_file)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / "tool-bridge")).st_mode) == 0o700
    assert one.forwarded(two.key) and not one.forwarded("guess") and not one.forwarded("")


def test_only_a_bridge_call_id_names_an_instance(tmp_path):
    assert instance_of("call_5f2c9a1e_" + "0" * 20) == "5f2c9a1e"
    assert instance_of("toolu_5f2c9a1e_" + "0" * 20) == "5f2c9a1e"
    assert instance_of("call_abc") is None
    assert Peers(str(tmp_path)).port_of("../../etc") == 0
