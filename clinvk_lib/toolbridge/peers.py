"""The serving processes that share one CLINVK_HOME (the nginx recipe runs several), so that a
tool result reaching the wrong one can be handed to the one whose run waits for it. (With
``server.store`` the nodes find each other in Redis instead: ``peers_redis``.)

Each process registers ``<home>/tool-bridge/<instance>.json`` (``{"port", "pid"}``: it is
reached on 127.0.0.1 only) while it serves, and every process of the home shares one random
key (``forward.key``, 0600, in a 0700 directory): a request one process forwards to another
carries it, which is how the other knows not to forward it again.
"""

from __future__ import annotations

import errno
import hmac
import json
import os
import time
from typing import Iterable, Optional, Tuple

KEY_FILE = "forward.key"
LOOPBACK = "127.0.0.1"


class Peers:
    """This process's entry in the home's registry (``register``, ``unregister``), where the
    run of another process's call waits (``address_of``; ``port_of`` by instance) and the
    shared ``key``. ``parked`` (a run parked on calls) has nothing to record here: a call id
    names its instance."""

    def __init__(self, home: str) -> None:
        self.directory = os.path.join(home, "tool-bridge")
        self.key = ""
        self._registered = ""

    def register(self, instance: str, port: int) -> None:
        """Register ``instance`` as served on 127.0.0.1:``port`` (OSError when the home
        cannot be written)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.key = self._shared_key()
        path = os.path.join(self.directory, instance + ".json")
        temp = "%s.%d.tmp" % (path, os.getpid())
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"port": port, "pid": os.getpid()}, f)
        os.replace(temp, path)
        self._registered = path

    def unregister(self) -> None:
        if self._registered:
            try:
                os.unlink(self._registered)
            except OSError:
                pass
            self._registered = ""

    def parked(self, call_ids: Iterable[str], ttl: float) -> None:
        """Nothing to do: ``address_of`` reads the instance from the call id."""

    def address_of(self, call_id: str) -> Optional[Tuple[str, int]]:
        """(host, port) of the other live process of this home whose run made ``call_id``."""
        port = self.port_of(instance_of(call_id) or "")
        return (LOOPBACK, port) if port else None

    def port_of(self, instance: str) -> int:
        """The port another live process of this home serves ``instance`` on (0: none)."""
        if not instance or not instance.isalnum():
            return 0
        try:
            with open(os.path.join(self.directory, instance + ".json"), encoding="utf-8") as f:
                entry = json.load(f)
            port, pid = int(entry["port"]), int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        if pid == os.getpid() or not _alive(pid) or not 0 < port < 65536:
            return 0
        return port

    def forwarded(self, header: str) -> bool:
        """Whether a request's forwarding header carries this home's key."""
        return bool(self.key) and hmac.compare_digest(header.encode(), self.key.encode())

    def _shared_key(self) -> str:
        path = os.path.join(self.directory, KEY_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        else:
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(24).hex())
        for _ in range(50):             # another process may be writing it right now
            with open(path, encoding="utf-8") as f:
                key = f.read().strip()
            if key:
                return key
            time.sleep(0.01)
        raise OSError("the tool bridge key %s is empty" % path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def instance_of(call_id: str) -> Optional[str]:
    """The instance id a bridge call id embeds (``call_<instance>_<random>``), else None."""
    parts = call_id.split("_")
    return parts[1] if len(parts) == 3 and len(parts[1]) == 8 else None
