"""The queue of jobs waiting for a worker, in Redis: a Stream (``jobs:queue``) read by one
consumer group (``workers``), so each queued job is delivered to one worker, and stays
pending (owned by that worker) until the worker acknowledges it.

A worker keeps the entries it holds fresh (``keep``: every few seconds, well within the
visibility timeout); an entry left idle longer than the visibility timeout belongs to a
worker that stopped (killed, frozen, cut off), and the next ``pull`` of any worker reclaims
it (XAUTOCLAIM) with ``reclaimed`` set: that worker then decides what becomes of the job (a
queued one is run, a running one is marked interrupted). ``keep`` tells a worker which of its
entries were reclaimed from it meanwhile, so that it stops those runs: a job is never run by
two workers at once for longer than one ``keep`` interval.

``RunnerHeartbeat`` is the liveness of one process: a key that exists while it renews it,
holding what the process advertises (its worker name, backends, capacity, busy runs).

Which queue a job goes to, and the order a process pulls them in: ``job_routes_redis``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .job_events import job_event
from .job_store import INTERRUPTED, QUEUED, RUNNING, Job, interrupted_error
from .redisclient import Client, RedisError, ReplyError, Script

GROUP = "workers"
# The queue of jobs any process may run; the names of the others start with it.
SHARED = "jobs:queue"
# ``worker:<name>``: present while a process of worker <name> that runs jobs is alive, and
# for one more heartbeat lifetime after the last of them stopped.
WORKER_SEEN = "worker:"
# The idle time (ms) an entry given back is marked with: past any visibility timeout, so the
# next pull of any process reclaims it.
GIVEN_BACK_IDLE_MS = 30 * 86400 * 1000

# KEYS[1] the queue; ARGV group, consumer, then entry ids. Claims again (resetting the idle
# time) each entry still pending for this consumer; returns the ids that are not.
_KEEP = Script("""
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
""")


class Delivery(NamedTuple):
    """One queued job handed to this worker: its queue entry, its id, and whether it was
    reclaimed from a worker that stopped (rather than delivered for the first time)."""

    entry: str
    job_id: str
    reclaimed: bool
    queue: str = SHARED


class JobQueue:
    """The queue as one worker (``consumer``) sees it. ``push`` is for any node."""

    def __init__(self, client: Client, consumer: str, visibility_secs: float,
                 name: str = SHARED) -> None:
        self.client = client
        self.consumer = consumer
        self.visibility_ms = int(visibility_secs * 1000)
        self.name = name
        self.key = client.key(name)
        self._group_made = False

    def push(self, job_id: str) -> str:
        """Queue ``job_id`` behind the others; its entry id."""
        return self.client.execute("XADD", self.key, "*", "job", job_id).decode()

    def pull(self, count: int, block_secs: float) -> List[Delivery]:
        """Up to ``count`` jobs for this worker: reclaimed ones first, then new ones, waiting
        up to ``block_secs`` for a new one when there is none."""
        self._make_group()
        try:
            found = self._reclaim(count)
            if len(found) < count:
                found += self._read_new(count - len(found), block_secs)
        except ReplyError as exc:
            if exc.code == "NOGROUP":       # Redis restarted empty: make the group again
                self._group_made = False
            raise
        return found

    def keep(self, entries: Sequence[str]) -> List[str]:
        """Renew this worker's hold on ``entries``; the ones another worker reclaimed."""
        if not entries:
            return []
        lost = self.client.run_script(_KEEP, [self.key], [GROUP, self.consumer] + list(entries))
        return [e.decode() if isinstance(e, bytes) else e for e in lost]

    def done(self, entry: str) -> None:
        """The job of ``entry`` has ended (or is no longer this queue's business)."""
        self.client.pipeline([("XACK", self.key, GROUP, entry), ("XDEL", self.key, entry)])

    def waiting(self) -> int:
        """Jobs queued and not yet delivered to any worker (0 before the first)."""
        self._make_group()
        groups = self.client.execute("XINFO", "GROUPS", self.key)
        for group in groups:
            info = group if isinstance(group, dict) else dict(zip(group[::2], group[1::2]))
            name = info.get("name", info.get(b"name"))
            if name in (GROUP, GROUP.encode()):
                return int(info.get("lag", info.get(b"lag")) or 0)
        return 0

    def _make_group(self) -> None:
        if self._group_made:
            return
        try:
            self.client.execute("XGROUP", "CREATE", self.key, GROUP, "0", "MKSTREAM")
        except ReplyError as exc:
            if exc.code != "BUSYGROUP":
                raise
        self._group_made = True

    def _reclaim(self, count: int) -> List[Delivery]:
        reply = self.client.execute("XAUTOCLAIM", self.key, GROUP, self.consumer,
                                    self.visibility_ms, "0-0", "COUNT", count)
        return [d for d in map(lambda e: delivery_of(e, True), reply[1]) if d is not None]

    def give_back(self, entry: str) -> None:
        """Hand ``entry``, delivered to this worker and not started, to whichever process
        pulls next (itself included): it stays pending, marked idle for long."""
        self.client.execute("XCLAIM", self.key, GROUP, self.consumer, 0, entry,
                            "IDLE", GIVEN_BACK_IDLE_MS, "JUSTID")

    def _read_new(self, count: int, block_secs: float) -> List[Delivery]:
        block = ("BLOCK", int(block_secs * 1000)) if block_secs > 0 else ()
        reply = self.client.execute("XREADGROUP", "GROUP", GROUP, self.consumer,
                                    "COUNT", count, *block, "STREAMS", self.key, ">",
                                    timeout=block_secs + self.client.read_timeout)
        return [d for _, d in read_reply(reply)]


def read_reply(reply: Any) -> List[Tuple[bytes, Delivery]]:
    """(stream key, delivery) of each entry of an XREADGROUP reply, in order."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else [(s[0], s[1]) for s in reply]
    return [(key, d) for key, entries in streams
            for d in map(lambda e: delivery_of(e, False), entries) if d is not None]


def delivery_of(entry: Any, reclaimed: bool) -> Any:
    """A Delivery of an XAUTOCLAIM / XREADGROUP entry; None for one deleted meanwhile."""
    if not entry or entry[1] is None:
        return None
    entry_id, fields = entry
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2]))
    return Delivery(entry_id.decode(), fields.get(b"job", b"").decode(), reclaimed)


class RunnerHeartbeat:
    """The liveness of one process: the hash ``runner:<id>``, set by ``take``, renewed every
    ``ttl_secs / 3`` by a daemon thread, removed by ``release`` (``job_lease.RunnerLease``'s
    interface). If the process dies the key expires after ``ttl_secs`` and
    ``RedisJobStore.runner_alive`` says False. Each renewal also writes what ``describe()``
    returns (a flat dict of text: the backends it can run, its capacity, how busy it is)."""

    def __init__(self, client: Client, ttl_secs: float,
                 describe: Callable[[], Dict[str, str]] = dict) -> None:
        self.client = client
        self.id = os.urandom(8).hex()
        self.ttl_ms = int(ttl_secs * 1000)
        self.key = client.key("runner:" + self.id)
        self.describe = describe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name="clinvk-heartbeat")

    def take(self) -> None:
        """Set the key now and keep it from now on. OSError when Redis cannot be reached
        now: the key is set by the first renewal that reaches it."""
        self._thread.start()
        try:
            self._renew()
        except RedisError as exc:
            raise OSError("the job store cannot be reached: %s" % exc) from None

    def _renew(self) -> None:
        fields = dict(self.describe(), seen=str(int(time.time())))
        flat = [item for pair in sorted(fields.items()) for item in pair]
        commands: List[Tuple[Any, ...]] = [("HSET", self.key) + tuple(flat),
                                           ("PEXPIRE", self.key, self.ttl_ms)]
        if fields.get("worker") and int(fields.get("capacity") or 0) > 0:
            commands.append(("SET", self.client.key(WORKER_SEEN + fields["worker"]), self.id,
                             "PX", 2 * self.ttl_ms))
        self.client.pipeline(commands)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000.0):
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - Redis down: the next beat tries again
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.client.execute("DEL", self.key)
        except RedisError:
            pass                        # it expires anyway


def list_runners(client: Client) -> List[Dict[str, Any]]:
    """Every live process on the store, by id, with what it advertises: ``worker`` (the
    name of its machine's CLI homes), ``backends`` (a list), ``capacity`` and ``busy``
    (runs), ``seen`` (seconds since the epoch of its last heartbeat)."""
    keys, cursor = [], b"0"
    while True:
        cursor, found = client.execute("SCAN", cursor, "MATCH", client.key("runner:*"),
                                       "COUNT", 1000)
        keys += found
        if cursor in (b"0", 0):
            break
    replies = client.pipeline([("HGETALL", key) for key in sorted(set(keys))])
    return [_runner(key, reply) for key, reply in zip(sorted(set(keys)), replies)
            if reply and not isinstance(reply, ReplyError)]


def _runner(key: bytes, reply: Any) -> Dict[str, Any]:
    fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return {"id": key.decode().rsplit(":", 1)[-1], "worker": text.get("worker", ""),
            "backends": [b for b in text.get("backends", "").split(",") if b],
            "capacity": int(text.get("capacity") or 0), "busy": int(text.get("busy") or 0),
            "seen": int(text.get("seen") or 0)}


def settle(store: Any, queue: JobQueue, delivery: Delivery, runner: str,
           retries: int = 0) -> Any:
    """What worker ``runner`` does with ``delivery``: the job to run (it was queued, and is
    now ``runner``'s), or None when there is nothing to run — the job is gone or has ended
    (its entry is acknowledged), or another worker claimed it. A job that was running on a
    worker that stopped answering is run again when it has had at most ``retries`` attempts
    more than its first (``server.job_retries``; its ``attempt`` goes up by one, and a ``job``
    event says so); else it ends ``interrupted`` (and its entry is acknowledged)."""
    job = store.read(delivery.job_id)
    if job is not None and not job.final and job.status == RUNNING:
        job = _requeue(store, job, retries + 1) or _interrupt(store, job, retries)
    if job is None or job.final:
        queue.done(delivery.entry)
        return None
    return store.claim(job.id, job.runner, runner)


def _requeue(store: Any, job: Job, attempts: int) -> Optional[Job]:
    """``job`` (running on a worker that stopped) queued again for its next attempt, when
    that is at most ``attempts``; None otherwise."""
    dead = job.runner

    def change(current: Job) -> bool:
        if current.status != RUNNING or current.runner != dead or current.attempt >= attempts:
            return False
        event = job_event(QUEUED)
        event["content"].update(attempt=current.attempt + 1, reason=_WORKER_LOST)
        log = store.writer(current.id)
        try:
            log.append(event)
        finally:
            log.close()
        current.status, current.attempt = QUEUED, current.attempt + 1
        current.event_count = log.count
        return True
    requeued = store.update(job.id, change)
    return requeued if requeued is not None and requeued.status == QUEUED else None


def _interrupt(store: Any, job: Job, retries: int) -> Optional[Job]:
    why = _WORKER_LOST
    if retries:
        why += " (attempt %d of %d, server.job_retries)" % (job.attempt, retries + 1)
    store.finish(job.id, INTERRUPTED, None, interrupted_error(why))
    return store.read(job.id)


_WORKER_LOST = ("its worker stopped answering for longer than "
                "server.job_visibility_timeout_secs")

# KEYS[1] the queue; ARGV group, then consumers. Deletes each consumer that holds no entry
# (so deleting it loses nothing); returns those deleted.
_FORGET = Script("""
local gone = {}
for i = 2, #ARGV do
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[i])
  if #held == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])
    table.insert(gone, ARGV[i])
  end
end
return gone
""")


def forget_dead_consumers(queue: JobQueue, idle_secs: float) -> List[str]:
    """Delete from the consumer group the consumers of workers long gone: idle over
    ``idle_secs``, holding no entry, and with no heartbeat (``runner:<name>``). A worker that
    pulls again is added back by Redis, so a wrong guess costs nothing. Their names."""
    reply = queue.client.execute("XINFO", "CONSUMERS", queue.key, GROUP)
    idle = []
    for consumer in reply:
        info = consumer if isinstance(consumer, dict) else dict(zip(consumer[::2], consumer[1::2]))
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if int(info.get("pending") or 0) == 0 and int(info.get("idle") or 0) > idle_secs * 1000:
            idle.append(name)
    if not idle:
        return []
    beats = queue.client.pipeline([("EXISTS", queue.client.key("runner:" + n)) for n in idle])
    dead = [n for n, alive in zip(idle, beats) if alive == 0]
    if not dead:
        return []
    gone = queue.client.run_script(_FORGET, [queue.key], [GROUP] + dead)
    return [g.decode() if isinstance(g, bytes) else g for g in gone]
