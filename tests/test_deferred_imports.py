"""Modules the server imports by name but only some requests use (TLS, hashes) are loaded on
their first use: an idle server maps no libssl or libcrypto, and a request that needs them
loads them (deferred.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import List

import pytest

from clinvk_lib import deferred
from tests.serveproc import ServeProcess

PROBE = '''
import time
LOADS.append(1)
time.sleep(%s)
VALUE = "real"
'''


@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch) -> List[str]:
    """A module ``deferred_probe`` on sys.path that counts its imports in ``loads`` (a list in
    the builtins namespace it finds) and takes 0.2 s to import; removed afterwards."""
    (tmp_path / "deferred_probe.py").write_text(
        "import builtins\nLOADS = builtins.deferred_probe_loads\n" + PROBE % "0.2")
    loads: List[str] = []
    monkeypatch.setattr("builtins.deferred_probe_loads", loads, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "deferred_probe", raising=False)
    yield loads
    sys.modules.pop("deferred_probe", None)


def test_a_deferred_module_is_not_loaded_by_its_import(probe_module):
    deferred.defer("deferred_probe")
    import deferred_probe
    assert isinstance(deferred_probe, deferred.DeferredModule) and probe_module == []


def test_the_first_attribute_read_loads_the_real_module_once(probe_module):
    deferred.defer("deferred_probe")
    import deferred_probe
    assert (deferred_probe.VALUE, deferred_probe.VALUE) == ("real", "real")
    from deferred_probe import VALUE
    assert VALUE == "real" and probe_module == [1]
    assert not isinstance(sys.modules["deferred_probe"], deferred.DeferredModule)


def test_threads_that_meet_a_loading_module_all_see_it_loaded(probe_module):
    deferred.defer("deferred_probe")
    import deferred_probe
    seen: List[str] = []
    threads = [threading.Thread(target=lambda: seen.append(deferred_probe.VALUE))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == ["real"] * 8 and probe_module == [1]


def test_an_attribute_set_through_the_stand_in_reaches_the_real_module(probe_module):
    deferred.defer("deferred_probe")
    import deferred_probe
    deferred_probe.VALUE = "patched"
    assert sys.modules["deferred_probe"].VALUE == "patched"
    del deferred_probe.VALUE
    assert not hasattr(sys.modules["deferred_probe"], "VALUE")


def test_a_module_already_loaded_or_missing_is_left_alone():
    deferred.defer("json", "no_such_module_anywhere")
    assert not isinstance(sys.modules["json"], deferred.DeferredModule)
    assert "no_such_module_anywhere" not in sys.modules


def mapped_crypto_libraries(pid: int) -> List[str]:
    with open("/proc/%d/maps" % pid) as f:
        return sorted({line.split()[-1] for line in f
                       if "libssl" in line or "libcrypto" in line})


def test_an_idle_server_maps_no_tls_or_crypto_library(tmp_path):
    srv = ServeProcess(str(tmp_path / "home"))
    try:
        assert srv.get("/health").status == 200
        assert mapped_crypto_libraries(srv.pid) == []
    finally:
        srv.stop()


def test_a_request_that_needs_a_hash_loads_it(tmp_path):
    srv = ServeProcess(str(tmp_path / "home"), env={"CLINVK_API_KEYS": "k-123"})
    try:
        reply = srv.get("/api/v1/sessions", headers={"Authorization": "Bearer k-123"})
        assert reply.status == 200
        assert srv.get("/api/v1/sessions", headers={"Authorization": "Bearer nope"}).status == 401
        assert any("libcrypto" in path for path in mapped_crypto_libraries(srv.pid))
    finally:
        srv.stop()
