"""The queues of jobs in Redis, and who pulls which (each one a ``job_queue_redis.JobQueue``).

Besides the shared queue there is one queue per set of backends a job needs
(``jobs:queue:backends:claude+codex``) and one per worker name (``jobs:queue:worker:<name>``,
the jobs continuing a session whose CLI transcript is on that
worker); the set ``jobs:queues`` names them all. A process pulls from its worker queue first,
then from every backend queue whose backends it has (starting at another one each time, so
none starves), then from the shared queue: one script takes the first job there is in that
order, and when there is none, one blocking XREADGROUP waits on all of those queues at once.
A job is thus only ever delivered to a process that can run it, and nothing loops.

A worker is gone once no process of its name has renewed its heartbeat for two heartbeat
lifetimes (the key ``worker:<name>``, set with each renewal, has expired: its heartbeat
lapsed and it did not come back within one more ``server.job_visibility_timeout_secs``):
``gone_workers`` names them, ``move`` hands a job of a gone worker's queue to another queue,
and ``drop_if_empty`` removes the queue once nothing is left in it.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable, Dict, Iterable, List, Optional

from .job_queue_redis import (GROUP, SHARED, WORKER_SEEN, Delivery, JobQueue, delivery_of,
                              read_reply)
from .redisclient import Client, ReplyError, Script


def worker_queue(worker: str) -> str:
    """The queue of the jobs only worker ``worker`` may run (they continue its sessions)."""
    return SHARED + ":worker:" + worker


def backends_queue(backends: Iterable[str]) -> str:
    """The queue of the jobs that need exactly these backends; the shared one for none."""
    names = sorted(set(backends))
    return SHARED + ":backends:" + "+".join(names) if names else SHARED


def queue_backends(name: str) -> Optional[frozenset]:
    """The backends a job in queue ``name`` needs; None for a worker's own queue."""
    if name == SHARED:
        return frozenset()
    prefix = SHARED + ":backends:"
    return frozenset(name[len(prefix):].split("+")) if name.startswith(prefix) else None


# KEYS[1] the registry, KEYS[2] the queue; ARGV[1] the queue's name, ARGV[2] the job id.
_PUSH = Script("""
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
""")

# KEYS[1] the registry, then the queues in the order they are tried; ARGV group, consumer,
# the visibility timeout (ms), the name of the process's own queue (registered, so that it
# is dropped once its worker is gone). Makes the groups that are missing, then returns the
# first job there is, {queue's position, 1 if reclaimed else 0, entry}: in each queue in turn,
# an entry left idle past the timeout, else a new one. false: none anywhere.
_TAKE = Script("""
redis.call('SADD', KEYS[1], ARGV[4])
for i = 2, #KEYS do
  redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM')
end
for i = 2, #KEYS do
  local claimed = redis.call('XAUTOCLAIM', KEYS[i], ARGV[1], ARGV[2], ARGV[3], '0-0',
                             'COUNT', 1)[2][1]
  if claimed and claimed[2] then return {i - 1, 1, claimed} end
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                          'STREAMS', KEYS[i], '>')
  if read then return {i - 1, 0, read[1][2][1]} end
end
return false
""")

# KEYS[1] the registry, KEYS[2] the queue a job leaves, KEYS[3] the one it goes to; ARGV group,
# the entry, the name of the queue it goes to, the job id. Returns the new entry's id.
_MOVE = Script("""
redis.call('SADD', KEYS[1], ARGV[3])
local moved = redis.call('XADD', KEYS[3], '*', 'job', ARGV[4])
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return moved
""")

# KEYS[1] the registry, KEYS[2] the queue; ARGV group, the queue's name. Removes the queue (and
# its name from the registry) when it holds no entry and none is pending; 1 if it did.
_DROP_IF_EMPTY = Script("""
if redis.call('XLEN', KEYS[2]) > 0 then return 0 end
local pending = redis.pcall('XPENDING', KEYS[2], ARGV[1])
if type(pending) == 'table' and not pending.err and tonumber(pending[1]) > 0 then return 0 end
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
""")


class RoutedQueues:
    """Every queue as one process (``consumer``, of worker ``worker``) sees it: ``push`` a job
    where the processes that can run it pull, ``pull`` from the queues this process can serve
    (``backends()``: the backends it has now), ``queue(name)`` for keeping and acknowledging
    an entry of one of them, ``waiting()`` across all of them; ``gone_workers``, ``move`` and
    ``drop_if_empty`` for the queues of workers that are gone."""

    REGISTRY = "jobs:queues"

    def __init__(self, client: Client, consumer: str, visibility_secs: float, worker: str,
                 backends: Callable[[], Iterable[str]]) -> None:
        self.client = client
        self.consumer = consumer
        self.visibility_secs = visibility_secs
        self.worker = worker
        self.backends = backends
        self._queues: Dict[str, JobQueue] = {}
        self._turn = itertools.count()
        self._registry = client.key(self.REGISTRY)

    def queue(self, name: str) -> JobQueue:
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = JobQueue(self.client, self.consumer,
                                                  self.visibility_secs, name)
        return found

    def push(self, job_id: str, backends: Iterable[str] = (), worker: str = "") -> str:
        """Queue ``job_id`` for worker ``worker`` when given, else for any process with all
        of ``backends``; the name of the queue."""
        name = worker_queue(worker) if worker else backends_queue(backends)
        self.client.run_script(_PUSH, [self._registry, self.client.key(name)], [name, job_id])
        return name

    def names(self) -> List[str]:
        """Every queue jobs were pushed on (the shared one included)."""
        found = self.client.execute("SMEMBERS", self._registry)
        return sorted({SHARED} | {n.decode() if isinstance(n, bytes) else n for n in found})

    def serving(self) -> List[str]:
        """The queues this process pulls from, in the order it tries them: its worker's
        own, the backend queues whose backends it has (from another one each time), then
        the shared one."""
        have = set(self.backends())
        routed = [n for n in self.names() if queue_backends(n) and queue_backends(n) <= have]
        if routed:
            start = next(self._turn) % len(routed)
            routed = routed[start:] + routed[:start]
        own = worker_queue(self.worker)
        return [own] + [n for n in routed if n != own] + [SHARED]

    def pull(self, block_secs: float) -> List[Delivery]:
        """One job for this process (reclaimed or new) from the first of its queues that
        has one; if none has, wait up to ``block_secs`` for one to be pushed on any of them
        (one blocking XREADGROUP), and [] if none comes."""
        names = self.serving()
        keys = [self.client.key(n) for n in names]
        try:
            found = self.client.run_script(_TAKE, [self._registry] + keys, [
                GROUP, self.consumer, int(self.visibility_secs * 1000), names[0]])
            if found:
                delivery = delivery_of(found[2], bool(found[1]))
                return [delivery._replace(queue=names[found[0] - 1])] if delivery else []
            reply = self.client.execute(
                "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", 1,
                "BLOCK", max(1, int(block_secs * 1000)), "STREAMS", *(keys + [">"] * len(keys)),
                timeout=block_secs + self.client.read_timeout)
        except ReplyError as exc:
            if exc.code == "NOGROUP":   # Redis restarted empty: the next pull makes them again
                return []
            raise
        order = {key.encode(): n for n, key in enumerate(keys)}
        got = sorted((order[key], d._replace(queue=names[order[key]]))
                     for key, d in read_reply(reply))
        for _, extra in got[1:]:        # several queues had one at once: keep the first
            self.queue(extra.queue).give_back(extra.entry)
        return [d for _, d in got[:1]]

    def waiting(self) -> int:
        """Jobs queued and not yet delivered to any process, in every queue."""
        return sum(self.queue(name).waiting() for name in self.names())

    def gone_workers(self, lapse_secs: float) -> List[str]:
        """The workers with a queue of their own none of whose processes was heard of for
        ``lapse_secs`` (their ``worker:<name>`` key expired). None while Redis itself has
        been up for less than that: its keys may have expired while it was down, before
        the live processes could renew them."""
        prefix = worker_queue("")
        workers = [n[len(prefix):] for n in self.names() if n.startswith(prefix)]
        if not workers or _uptime_secs(self.client) < lapse_secs:
            return []
        seen = self.client.pipeline([("EXISTS", self.client.key(WORKER_SEEN + w))
                                     for w in workers])
        return [w for w, there in zip(workers, seen) if there == 0]

    def move(self, entry: str, source: str, job_id: str, backends: Iterable[str]) -> str:
        """Hand the job of ``entry`` (held by this process, in queue ``source``) to the
        processes with all of ``backends``, in one step; the name of its new queue."""
        name = backends_queue(backends)
        self.client.run_script(_MOVE, [self._registry, self.client.key(source),
                                       self.client.key(name)], [GROUP, entry, name, job_id])
        return name

    def drop_if_empty(self, name: str) -> bool:
        """Remove queue ``name`` and its name from the registry if nothing is queued or
        pending in it; whether it was removed."""
        dropped = self.client.run_script(_DROP_IF_EMPTY, [self._registry, self.client.key(name)],
                                         [GROUP, name])
        if dropped:
            self._queues.pop(name, None)
        return bool(dropped)


def _uptime_secs(client: Client) -> float:
    """How long Redis has been up (INFO server)."""
    info = client.execute("INFO", "server")
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    found = re.search(r"uptime_in_seconds:(\d+)", text)
    return float(found.group(1)) if found else 0.0
