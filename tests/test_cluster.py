"""clinvk across nodes on one machine, as issue 21 deploys it: a real redis-server, Debian's
nginx (deploy/nginx.conf, its plain-HTTP variant, as tests/test_nginx.py runs it) in front of
two `clinvk serve` API nodes (server.role: api), and `clinvk worker` processes that run the
jobs with the fake CLIs; every process has a home (CLINVK_HOME and the fake CLIs' state) of
its own, as separate hosts would, and all of them append their runs to one record file.

    cluster = make_cluster(workers=2, job_retries=1)   # keyword arguments: server.* settings
    cluster.nodes[0].post(...); cluster.front.get(...)  # a node directly, or through nginx
    cluster.add_worker(env={"FAKE_CLI_MODE": "hang"}); cluster.runs()

Sessions live in Redis: a session's later turns, through either node, run on the worker
whose fake CLI holds its transcript (each worker has a ``worker_name`` of its own), and
FAKE_CLI_RECALL=1 (``RECALL``) makes the fake say what it remembers of earlier turns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from typing import Any, Dict, List, Optional

import pytest

from clinvk_lib.redisclient import Client
from tests.redisutil import RedisServer, WorkerProcess, free_port, require_redis_server
from tests.serveproc import ServeProcess, started_by
from tests.serverutil import HttpClient, Reply, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
VISIBILITY_SECS = 3                 # the least server.job_visibility_timeout_secs allows

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(NGINX, os.X_OK),
                                 reason="nginx is not installed (Debian package nginx; "
                                        "test.sh installs it)")]


class Front(HttpClient):
    """nginx on 127.0.0.1 in front of the API nodes: deploy/nginx.conf as tests/test_nginx.py
    runs it, plain HTTP."""

    def __init__(self, tmp: str, node_ports: List[int]) -> None:
        from tests.test_nginx import main_config, site_config
        os.makedirs(tmp, exist_ok=True)
        self.tmp = tmp
        self.port = free_port()
        site = os.path.join(tmp, "clinvk.conf")
        with open(site, "w") as f:
            f.write(site_config(node_ports, self.port, free_port(), None, None,
                                os.path.join(tmp, "access.log")))
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(main_config(tmp, site))
        self.proc = subprocess.Popen([NGINX, "-p", tmp, "-c", conf, "-e",
                                      os.path.join(tmp, "error.log")], stdin=subprocess.DEVNULL)
        assert wait_for(self._listening, 10), "nginx did not start"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Redis, two API nodes, nginx, and the workers added so far (``add_worker``)."""

    def __init__(self, tmp: str, workers: int, node_env: Optional[Dict[str, str]],
                 worker_env: Optional[Dict[str, str]], **server: Any) -> None:
        self.tmp = tmp
        self.record = os.path.join(tmp, "runs.jsonl")
        self.workers: List[WorkerProcess] = []
        self.nodes: List[ServeProcess] = []
        self.front: Optional[Front] = None
        self.redis = RedisServer(os.path.join(tmp, "redis"))
        self.server = dict({"store": self.redis.url,
                            "job_visibility_timeout_secs": VISIBILITY_SECS,
                            "trusted_proxies": ["127.0.0.1"], "max_queued_jobs": 1000,
                            "shutdown_grace_secs": 5}, **server)
        self.worker_env = dict({"FAKE_CLI_RECORD": self.record}, **(worker_env or {}))
        try:
            env = dict({"FAKE_CLI_RECORD": self.record}, **(node_env or {}))
            self.nodes = [ServeProcess(os.path.join(tmp, name), env=env,
                                       config={"server": dict(self.server, role="api")})
                          for name in ("node-a", "node-b")]
            self.front = Front(os.path.join(tmp, "nginx"), [n.port for n in self.nodes])
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.stop()
            raise

    def add_worker(self, env: Optional[Dict[str, str]] = None) -> WorkerProcess:
        name = "worker-%d" % (len(self.workers) + 1)      # as separate hosts' names differ
        worker = WorkerProcess(os.path.join(self.tmp, name),
                               {"server": dict(self.server, worker_name=name)},
                               dict(self.worker_env, **(env or {})))
        self.workers.append(worker)
        return worker

    def runs(self) -> List[str]:
        """The prompt of every backend run so far, on any process, in order."""
        try:
            with open(self.record) as f:
                return [json.loads(line)["stdin"] for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.front is not None:
            self.front.stop()
        for node in self.nodes:
            node.stop()
        self.redis.stop()


@pytest.fixture
def make_cluster(tmp_path):
    require_redis_server()
    made: List[Cluster] = []

    def make(workers: int = 2, node_env: Optional[Dict[str, str]] = None,
             worker_env: Optional[Dict[str, str]] = None, **server: Any) -> Cluster:
        made.append(Cluster(str(tmp_path / ("cluster-%d" % len(made))), workers, node_env,
                            worker_env, **server))
        return made[-1]
    yield make
    for cluster in made:
        cluster.stop()


def submit(srv: HttpClient, prompt: str, key: str = "") -> Reply:
    headers = {"Idempotency-Key": key} if key else None
    return srv.post("/api/v1/jobs", {"kind": "prompt", "request": {"backend": "claude",
                                                                   "prompt": prompt}},
                    headers=headers)


def job(srv: HttpClient, job_id: str) -> Dict[str, Any]:
    reply = srv.get("/api/v1/jobs/" + job_id)
    assert reply.status == 200, reply
    return reply.json()


def all_final(srv: HttpClient, ids: List[str]) -> bool:
    return all(job(srv, i)["status"] in FINAL for i in ids)


def ended_on(cluster: Cluster, job_id: str) -> List[int]:
    """The workers (by index) whose log says the job ended there."""
    return [n for n, w in enumerate(cluster.workers)
            if any(job_id in line and "ended" in line for line in list(w.log_lines))]


# -- the tests ----------------------------------------------------------------------------------


def test_100_jobs_over_both_nodes_each_run_exactly_once_on_some_worker(make_cluster):
    cluster = make_cluster(workers=2)
    a, b = cluster.nodes
    ids = []
    for n in range(100):
        reply = submit((a, b, cluster.front)[n % 3], "job number %d" % n)
        assert reply.status == 202, reply
        ids.append(reply.json()["id"])
    assert len(set(ids)) == 100
    assert wait_for(lambda: all_final(b, ids), 120, 0.5), \
        [job(a, i)["status"] for i in ids].count("succeeded")
    assert [job(a, i)["status"] for i in ids] == ["succeeded"] * 100
    runs = cluster.runs()
    assert sorted(runs) == sorted("job number %d" % n for n in range(100))
    assert all(len(ended_on(cluster, i)) == 1 for i in ids)
    listed = a.get("/api/v1/jobs?status=succeeded&limit=100").json()
    assert listed["total"] == 100


def test_two_nodes_and_nginx_together_admit_one_rate_not_twice_it(make_cluster):
    cluster = make_cluster(workers=0, rate_limit_enabled=True, rate_limit_rps=0.01,
                           rate_limit_burst=6)
    a, b = cluster.nodes
    statuses = [srv.get("/health").status for _ in range(6) for srv in (a, b, cluster.front)]
    assert statuses.count(200) == 6 and statuses.count(429) == 12, statuses
    assert statuses[:6] == [200] * 6


@pytest.mark.parametrize("retries", [0, 1])
def test_a_worker_killed_mid_job_loses_it_in_the_visibility_timeout_the_other_goes_on(
        make_cluster, retries):
    cluster = make_cluster(workers=0, job_retries=retries)
    a, b = cluster.nodes
    doomed = cluster.add_worker(env={"FAKE_CLI_MODE": "hang"})
    stuck = submit(a, "the stuck one").json()["id"]
    assert wait_for(lambda: job(b, stuck)["status"] == "running", 30)
    cluster.add_worker()
    doomed.kill()
    after = submit(b, "after the kill").json()["id"]
    # Reclaimed once its entry has been idle a visibility timeout, by a pull that comes at
    # most a poll later.
    assert wait_for(lambda: all_final(a, [stuck, after]), 3 * VISIBILITY_SECS + 10, 0.2)
    assert job(a, after)["status"] == "succeeded" and ended_on(cluster, after) == [1]
    ended = job(a, stuck)
    events = [json.loads(line) for line in
              a.get("/api/v1/jobs/%s/events" % stuck).body.decode().splitlines() if line]
    statuses = [e["content"] for e in events if e["type"] == "job"]
    if retries:
        assert ended["status"] == "succeeded" and ended["attempt"] == 2, ended
        requeued = [s for s in statuses if s.get("attempt") == 2]
        assert requeued and requeued[0]["status"] == "queued", statuses
        assert cluster.runs().count("the stuck one") == 2      # one run per attempt
    else:
        assert ended["status"] == "interrupted" and ended["attempt"] == 1, ended
        assert "job_visibility_timeout_secs" in ended["error"]["message"]
        assert cluster.runs().count("the stuck one") == 1      # never run again


def test_redis_restarting_mid_run_gives_clear_503s_and_everything_recovers(make_cluster):
    cluster = make_cluster(workers=2, worker_env={"FAKE_CLI_MODE": "slow",
                                                  "FAKE_CLI_DELAY": "0.3"})
    a, b = cluster.nodes
    ids = [submit((a, b)[n % 2], "before the restart %d" % n).json()["id"] for n in range(6)]
    assert wait_for(lambda: any(job(a, i)["status"] == "running" for i in ids), 30)
    Client(cluster.redis.url).execute("SAVE")       # what Redis' persistence would keep
    cluster.redis.stop()
    for srv in (a, b, cluster.front):
        down = submit(srv, "while Redis is down")
        # The first store the request needs says so: the session's (a new session) or the
        # job's.
        assert down.status == 503 and down.json()["error"] in (
            "session_store_unavailable", "job_store_unavailable"), down
        assert "Redis" in down.json()["message"] or "cannot be reached" in \
            down.json()["message"], down
    health = a.get("/health").json()
    assert health["status"] == "degraded" and not health["shared_store"]["available"]
    cluster.redis.start()
    assert wait_for(lambda: submit(a, "after the restart").status == 202, 15, 0.5)
    # No job stays queued or running: each ends, and the lost runs within the visibility
    # timeout.
    assert wait_for(lambda: all_final(b, ids), 6 * VISIBILITY_SECS + 30, 0.5), \
        [job(b, i)["status"] for i in ids]
    later = submit(b, "well after the restart").json()["id"]
    assert wait_for(lambda: all_final(a, [later]), 30, 0.2)
    assert job(a, later)["status"] == "succeeded"
    assert a.get("/health").json()["status"] == "ok"


def test_one_idempotency_key_sent_to_both_nodes_at_once_starts_one_run(make_cluster):
    cluster = make_cluster(workers=1)
    replies: List[Any] = [None, None, None]

    def send(i: int) -> None:
        replies[i] = submit((cluster.nodes[0], cluster.nodes[1], cluster.front)[i],
                            "only once", key="one-key")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in replies] == [202] * 3, replies
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    assert wait_for(lambda: all_final(cluster.nodes[0], list(ids)), 30, 0.2)
    assert cluster.runs().count("only once") == 1
    assert len(cluster.nodes[0].get("/api/v1/jobs").json()["jobs"]) == 1


# -- sessions across the nodes ------------------------------------------------------------------

RECALL = {"FAKE_CLI_RECALL": "1"}


def prompt(srv: HttpClient, text: str, session_id: str = "", **fields: Any) -> Reply:
    body = dict({"backend": "claude", "prompt": text}, **fields)
    if session_id:
        body["session_id"] = session_id
    return srv.post("/api/v1/prompt", body, timeout=60)


def chat(srv: HttpClient, text: str, session_id: str = "", model: str = "claude") -> Reply:
    headers = {"X-Clinvk-Session-Id": session_id} if session_id else None
    return srv.post("/openai/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": text}]},
        headers=headers, timeout=60)


def turns(srv: HttpClient, session_id: str) -> int:
    reply = srv.get("/api/v1/sessions/" + session_id)
    assert reply.status == 200, reply
    return reply.json()["turn_count"]


def test_a_session_started_through_node_a_is_resumed_through_node_b(make_cluster):
    cluster = make_cluster(workers=2, worker_env=RECALL)
    a, b = cluster.nodes
    first = prompt(a, "the code is 7")
    assert first.status == 200, first
    sid = first.json()["session_id"]
    for n, srv in enumerate((b, cluster.front, a)):     # whichever worker each node reaches
        later = prompt(srv, "which code? %d" % n, sid)
        assert later.status == 200, later
        assert later.json()["session_id"] == sid
        assert "[recalled: the code is 7" in later.json()["output"], later
    assert turns(b, sid) == turns(a, sid) == 4
    # Only one worker's CLI ever saw the session: the one holding its transcript.
    holders = [n for n, w in enumerate(cluster.workers)
               if any("ended succeeded" in line for line in list(w.log_lines))]
    assert len(holders) == 1, [w.log_lines for w in cluster.workers]

    # The OpenAI route: the X-Clinvk-Session-Id its reply carries continues the session.
    opened = chat(a, "the colour is teal")
    assert opened.status == 200, opened
    chat_sid = opened.headers["X-Clinvk-Session-Id"]
    assert chat_sid and chat_sid != sid
    again = chat(b, "which colour?", chat_sid)
    assert again.status == 200, again
    assert again.headers["X-Clinvk-Session-Id"] == chat_sid
    assert "[recalled: the colour is teal" in \
        again.json()["choices"][0]["message"]["content"], again
    assert turns(a, chat_sid) == 2


def test_a_chat_profile_request_through_an_api_node_runs_the_cli_with_the_chat_flags(
        make_cluster):
    from tests.conftest import records
    cluster = make_cluster(workers=1)
    a, b = cluster.nodes
    assert chat(a, "plain hello", model="claude-chat").status == 200
    assert b.post("/api/v1/prompt", {"backend": "claude", "prompt": "header hello"},
                  headers={"X-Clinvk-Profile": "chat"}).status == 200
    assert b.post("/api/v1/prompt", {"backend": "claude", "prompt": "agent hello"}
                  ).status == 200
    argv = {r["stdin"].strip(): r["argv"] for r in records(cluster.record)}
    assert sorted(argv) == ["agent hello", "header hello", "plain hello"], argv
    for chat_run in ("plain hello", "header hello"):
        assert "--tools=" in argv[chat_run] and "--strict-mcp-config" in argv[chat_run] \
            and "--max-turns=1" in argv[chat_run], argv[chat_run]
    assert "--tools=" not in argv["agent hello"]        # the agent profile stays the default


def test_the_header_profile_of_a_job_and_a_fan_out_reaches_the_worker_that_runs_them(
        make_cluster):
    from tests.conftest import records
    cluster = make_cluster(workers=1)
    a, b = cluster.nodes
    chat_header = {"X-Clinvk-Profile": "chat"}
    made = a.post("/api/v1/jobs", {"kind": "prompt", "request": {
        "backend": "claude", "prompt": "job hello"}}, headers=chat_header)
    assert made.status == 202 and made.json()["profile"] == "chat", made
    assert wait_for(lambda: all_final(b, [made.json()["id"]]), 30, 0.05)
    assert job(b, made.json()["id"])["status"] == "succeeded"
    assert b.post("/api/v1/parallel", {"tasks": [{"backend": "claude", "prompt": "task hello"}]},
                  headers=chat_header, timeout=60).status == 200
    argv = {r["stdin"].strip(): r["argv"] for r in records(cluster.record)}
    assert sorted(argv) == ["job hello", "task hello"], argv
    for run in argv.values():
        assert "--tools=" in run and "--max-turns=1" in run, run


def test_a_node_running_prompts_itself_refuses_a_session_held_by_another_worker(
        make_cluster, tmp_path):
    cluster = make_cluster(workers=1, worker_env=RECALL)
    a, _ = cluster.nodes
    first = prompt(a, "the code is 8")
    assert first.status == 200, first
    sid = first.json()["session_id"]
    both = ServeProcess(str(tmp_path / "node-all"), env=RECALL,
                        config={"server": dict(cluster.server, role="all",
                                               worker_name="node-all")})
    try:
        refused = prompt(both, "which code?", sid)
        assert refused.status == 409, refused
        error = refused.json()
        assert error["error"] == "session_worker_elsewhere" and "'worker-1'" in \
            error["message"], error
        assert both.children() == []                    # nothing ran
        # Its own sessions it continues itself; the refused turn left the session as it was.
        own = prompt(both, "the colour is red")
        assert own.status == 200, own
        assert "[recalled: the colour is red" in prompt(
            both, "which colour?", own.json()["session_id"]).json()["output"]
    finally:
        both.stop()
    assert turns(a, sid) == 1
    later = prompt(a, "which code?", sid)               # through the API node: its worker
    assert later.status == 200 and "[recalled: the code is 8" in later.json()["output"]


def test_redis_restarting_with_sessions_in_flight_loses_no_turn_and_leaves_no_job_running(
        make_cluster):
    # A visibility timeout well above the outage: the runs in flight are not taken back.
    cluster = make_cluster(workers=2, worker_env=dict(RECALL, FAKE_CLI_MODE="slow",
                                                      FAKE_CLI_DELAY="0.2"),
                           job_visibility_timeout_secs=10)
    a, b = cluster.nodes
    nodes = (a, b, cluster.front)
    replies: Dict[str, Reply] = {}

    def turn(n: int, text: str, sid: str = "") -> None:
        replies[text] = prompt(nodes[n % 3], text, sid)

    def all_at_once(texts: List[str], sids: List[str]) -> None:
        threads = [threading.Thread(target=turn, args=(n, text, sid))
                   for n, (text, sid) in enumerate(zip(texts, sids))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    facts = ["the code is %d" % n for n in range(4)]
    all_at_once(facts, [""] * 4)
    assert all(replies[f].status == 200 for f in facts), replies
    sids = [replies[f].json()["session_id"] for f in facts]

    # Turn 2 of each session is running on a worker when Redis goes away.
    second = ["second turn %d" % n for n in range(4)]
    flight = threading.Thread(target=all_at_once, args=(second, sids))
    flight.start()
    assert wait_for(lambda: sum("running" == j["status"] for j in a.get(
        "/api/v1/jobs?kind=run").json()["jobs"]) >= 2, 30, 0.1)
    Client(cluster.redis.url).execute("SAVE")       # what Redis' persistence would keep
    cluster.redis.stop()
    for srv in nodes:
        down = prompt(srv, "while Redis is down", sids[0])
        assert down.status == 503 and down.json()["error"] in (
            "session_store_unavailable", "job_store_unavailable"), down
        assert "Redis" in down.json()["message"], down
    # The runs in flight end while Redis is down: their workers must keep what to record.
    assert wait_for(lambda: not any(started_by(w.proc.pid) for w in cluster.workers), 30, 0.1)
    cluster.redis.start()
    flight.join()
    # The requests in flight followed their runs through the outage; each turn counted once.
    # (One whose run was taken back after all, on a machine too slow to renew in time, is a
    # clear 503 and counted at most once.)
    for sid, text in zip(sids, second):
        reply = replies[text]
        assert reply.status in (200, 503), "\n".join(a.log_lines + b.log_lines)
        if reply.status == 200:
            assert "[recalled: the code is" in reply.json()["output"], reply
            assert turns(a, sid) == 2, reply
        else:
            assert reply.json()["error"] in ("interrupted", "job_store_unavailable") and \
                turns(a, sid) in (1, 2), reply
    # Nothing stays queued or running.
    assert wait_for(lambda: all(j["status"] in FINAL for j in a.get(
        "/api/v1/jobs?kind=run").json()["jobs"]), 30, 0.5)
    # Every session goes on, with its first turn remembered, and counts the new turn once.
    before = [turns(b, sid) for sid in sids]
    all_at_once(["third turn %d" % n for n in range(4)], sids)
    for n, sid in enumerate(sids):
        reply = replies["third turn %d" % n]
        assert reply.status == 200, reply   # 409 session_busy: a lock Redis restored
        assert "[recalled: the code is %d" % n in reply.json()["output"], reply
        assert turns(a, sid) == before[n] + 1


def test_client_tool_rounds_through_nginx_reach_the_run_on_its_worker(make_cluster):
    """Each request of a bridged run goes to whichever node nginx picks: a round trip of
    three rounds, the results of each sent through nginx again, reaches the one worker
    running it, and the API nodes start no process."""
    cluster = make_cluster(workers=2)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": 'CALL-TOOL: get_weather {"city": "Paris"}'}]
    for result in ('CALL-TOOL: get_weather {"city": "Lyon"}',
                   'CALL-TOOL: get_weather {"city": "Nice"}', "sunny"):
        reply = cluster.front.post("/openai/v1/chat/completions", {
            "model": "claude", "messages": messages, "tools": tools}, timeout=60)
        assert reply.status == 200, reply
        message = reply.json()["choices"][0]["message"]
        call, = message["tool_calls"]
        messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": result}]
    done = cluster.front.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": messages, "tools": tools}, timeout=60)
    assert done.status == 200, done
    assert done.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: sunny"
    assert len(cluster.runs()) == 1                 # one CLI run, all rounds in it
    assert all(node.children() == [] for node in cluster.nodes)
