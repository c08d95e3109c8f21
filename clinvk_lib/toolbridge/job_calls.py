"""The tool calls of bridged runs that run as jobs (an API node hands them to a worker), routed
through the shared store, so that the request carrying a call's result may reach any API node.

Keys, under the store's key prefix, each expiring a minute after the worker would stop the run
(``server.tool_result_timeout_secs``; it deletes them itself when the run ends):

- ``tool-call-job:<call id>``: ``{"job", "owner"}``, the job whose run made the call and the
  API key that owns it (another key's request is told the call does not exist);
- ``tool-round:<job id>``: ``{"seq", "calls", "backend", "session_id"}``, the round the run is
  parked on: the seq of its ``tool_calls`` job event, the ids of its calls, and the run's
  backend and session (what the next round's answer names). Taking the results deletes it, atomically
  with handing them over, so one request only continues a round;
- ``tool-results:<job id>``: the list the worker waits on (BLPOP) for the round's results.

A worker records its calls (``park``) before it tells anyone about them, waits for their
results (``wait_results``), and forgets them all when the run ends (``forget``). An API node
finds a call's job (``find``), reads the round (``round_of``) and hands the results over
(``hand_over``).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from ..redisclient import Client, Script

CALL_PREFIX = "tool-call-job:"
ROUND_PREFIX = "tool-round:"
RESULTS_PREFIX = "tool-results:"

# The round's record deleted and the results pushed at once, only while the record is the one
# the caller read (its calls checked): else nil, another request took the round.
_HAND_OVER = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return nil end
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
""")

Results = Dict[str, Tuple[str, bool]]


class CallOwner(NamedTuple):
    """Which job made a call, and the API key id that owns the job ("" without keys)."""

    job: str
    owner: str


class Round(NamedTuple):
    """The round a job's run is parked on: the seq of its ``tool_calls`` event, its call ids,
    the run's backend and session, and the record as stored (``hand_over`` takes the round
    only while it is unchanged)."""

    seq: int
    calls: List[str]
    backend: str
    session_id: str
    raw: bytes


class JobCalls:
    """The routing of job runs' tool calls on one Redis ``client``; every method may raise
    ``redisclient.RedisError``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    # -- the worker ------------------------------------------------------------------------

    def park(self, job: str, owner: str, seq: int, calls: List[str], ttl: float,
             backend: str, session_id: str) -> None:
        """Record that ``job`` (owned by ``owner``; its run's ``backend`` and ``session_id``)
        waits for the results of ``calls``, the round its job event ``seq`` tells, for
        ``ttl`` seconds."""
        millis = max(1, int(ttl * 1000))
        owned = json.dumps({"job": job, "owner": owner})
        commands = [("SET", self.client.key(CALL_PREFIX + c), owned, "PX", millis)
                    for c in calls]
        commands.append(("SET", self.client.key(ROUND_PREFIX + job),
                         json.dumps({"seq": seq, "calls": calls, "backend": backend,
                                     "session_id": session_id}), "PX", millis))
        self._all(commands)

    def wait_results(self, job: str, seconds: float) -> Optional[Results]:
        """The results handed over for ``job``'s round, waiting up to ``seconds`` (at least
        one); None when none came."""
        reply = self.client.execute("BLPOP", self.client.key(RESULTS_PREFIX + job),
                                    max(1, int(seconds)), timeout=seconds + 5)
        if not reply:
            return None
        data = json.loads(reply[1])
        return {call_id: (text, bool(is_error)) for call_id, (text, is_error) in data.items()}

    def unpark(self, job: str) -> bool:
        """The round is over without its results (stopped): no request may take it now.
        False when a request took it first (it follows the job)."""
        return self.client.execute("DEL", self.client.key(ROUND_PREFIX + job)) == 1

    def forget(self, job: str, calls: Iterable[str]) -> None:
        """The run has ended: its calls, round and results are gone."""
        self._all([("DEL", self.client.key(CALL_PREFIX + c)) for c in calls] + [
            ("DEL", self.client.key(ROUND_PREFIX + job)),
            ("DEL", self.client.key(RESULTS_PREFIX + job))])

    # -- an API node -----------------------------------------------------------------------

    def find(self, call_id: str) -> Optional[CallOwner]:
        """The job that made ``call_id`` while its run is parked or running, else None."""
        value = self.client.execute("GET", self.client.key(CALL_PREFIX + call_id))
        try:
            data = json.loads(value) if value else None
            return CallOwner(str(data["job"]), str(data["owner"])) if data else None
        except (ValueError, KeyError, TypeError):
            return None

    def round_of(self, job: str) -> Optional[Round]:
        """The round ``job``'s run is parked on; None while no round waits (the run is
        answering one, or has ended)."""
        raw = self.client.execute("GET", self.client.key(ROUND_PREFIX + job))
        if not raw:
            return None
        data = json.loads(raw)
        return Round(int(data["seq"]), [str(c) for c in data["calls"]], str(data["backend"]),
                     str(data["session_id"]), raw)

    def hand_over(self, job: str, parked: Round, results: Results, ttl: float) -> bool:
        """Take ``parked`` and hand the worker ``results``; False when another request took
        the round first."""
        payload = json.dumps({i: [text, is_error] for i, (text, is_error) in results.items()},
                             ensure_ascii=False)
        return self.client.run_script(_HAND_OVER, [
            self.client.key(ROUND_PREFIX + job), self.client.key(RESULTS_PREFIX + job)],
            [parked.raw, payload, max(1, int(ttl * 1000))]) is not None

    def _all(self, commands: List[Any]) -> None:
        for reply in self.client.pipeline(commands):
            if isinstance(reply, Exception):
                raise reply
