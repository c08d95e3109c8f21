"""The job store on disk: records, their per-key scope, status changes that never overwrite an
end, event logs (bounded, repaired after a crash, read whole lines only), pruning and the
runner leases that tell a live server from a dead one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from clinvk_lib.job_events import EventCursor, EventWriter, job_event
from clinvk_lib.job_store import (CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED,
                                  Job, JobNotFound, JobStore, is_job_id, new_job_id)
from clinvk_lib.job_lease import RunnerLease
from clinvk_lib.sessions import Access


@pytest.fixture
def store(tmp_path):
    return JobStore(str(tmp_path))


def make(store, **fields):
    job = Job(new_job_id(), "prompt", {"backend": "claude", "prompt": "x"}, **fields)
    store.create(job)
    return job


def test_ids_are_well_formed_and_sort_in_the_order_they_were_made():
    ids = [new_job_id() for _ in range(1000)]
    assert all(is_job_id(i) for i in ids) and ids == sorted(ids) and len(set(ids)) == 1000


@pytest.mark.parametrize("bad", ["../x", "job_", "job_" + "g" * 24, "JOB_" + "0" * 24])
def test_a_malformed_id_names_no_job(store, bad):
    assert store.read(bad) is None
    with pytest.raises(JobNotFound):
        store.get(bad)


def test_another_keys_job_is_not_found_and_an_admin_sees_it(store):
    job = make(store, owner="alice", owner_everything=False)
    assert store.get(job.id, Access("alice", everything=False)).id == job.id
    with pytest.raises(JobNotFound):
        store.get(job.id, Access("bob", everything=False))
    assert store.get(job.id, Access("admin", everything=True)).id == job.id
    assert store.list(Access("bob", everything=False)) == ([], 0)


def test_a_job_ends_once_a_later_end_changes_nothing(store):
    job = make(store, status=RUNNING)
    assert store.finish(job.id, SUCCEEDED, {"output": "x"}).status == SUCCEEDED
    assert store.finish(job.id, INTERRUPTED) is None
    again = store.read(job.id)
    assert again.status == SUCCEEDED and again.result == {"output": "x"}
    assert again.event_count == 1


def test_a_cancelled_queued_job_can_no_longer_start(store):
    job = make(store, runner="0123456789abcdef")
    assert store.request_cancel(job.id).status == CANCELLED
    assert store.start(job.id, "0123456789abcdef", store.writer(job.id)) is None


def test_a_cancel_of_a_running_job_flags_it_for_its_runner(store):
    job = make(store, status=RUNNING)
    flagged = store.request_cancel(job.id)
    assert flagged.status == RUNNING and flagged.cancel_requested


def test_a_queued_job_starts_only_for_its_runner(store):
    job = make(store, runner="0123456789abcdef")
    assert store.start(job.id, "fedcba9876543210", store.writer(job.id)) is None
    started = store.start(job.id, "0123456789abcdef", store.writer(job.id))
    assert started.status == RUNNING and started.started_at and started.event_count == 1


def test_the_final_event_is_written_before_the_record_says_final(store):
    job = make(store, status=RUNNING)
    store.finish(job.id, FAILED)
    events = store.cursor(job.id).read()
    assert events[-1]["type"] == "job" and events[-1]["content"] == {"status": FAILED}


def test_the_event_log_keeps_the_final_event_past_its_bound(tmp_path):
    writer = EventWriter(str(tmp_path / "e"), max_bytes=200)
    seqs = [writer.append({"type": "message", "content": {"text": "x" * 50}})
            for _ in range(10)]
    assert 0 in seqs                                          # later events were dropped
    final = writer.append(job_event(SUCCEEDED), final=True)
    events = EventCursor(str(tmp_path / "e")).read()
    assert [e["type"] for e in events][-2:] == ["events_truncated", "job"]
    assert final == len(events) == events[-1]["seq"]


def test_a_partial_last_line_left_by_a_crash_is_cut_off_before_the_next_event(tmp_path):
    path = str(tmp_path / "e")
    writer = EventWriter(path, 10000)
    writer.append({"type": "init"})
    writer.close()
    with open(path, "ab") as f:
        f.write(b'{"seq":2,"type":"mess')
    assert [e["type"] for e in EventCursor(path).read()] == ["init"]
    again = EventWriter(path, 10000)
    assert again.append(job_event(INTERRUPTED), final=True) == 2
    assert [e["seq"] for e in EventCursor(path).read()] == [1, 2]


def test_a_cursor_reads_whole_lines_only_and_then_the_rest(tmp_path):
    path = str(tmp_path / "e")
    with open(path, "wb") as f:
        f.write(b'{"seq":1}\n{"seq":')
    cursor = EventCursor(path)
    assert cursor.read() == [{"seq": 1}]
    with open(path, "ab") as f:
        f.write(b'2}\n')
    assert cursor.read() == [{"seq": 2}] and cursor.seq == 2
    cursor.close()


def test_prune_removes_jobs_finished_longer_ago_than_the_retention(store):
    old = make(store, status=SUCCEEDED, finished_at="2020-01-01T00:00:00.000Z")
    recent = make(store, status=SUCCEEDED)
    store.finish(make(store, status=RUNNING).id, FAILED)
    queued = make(store, status=QUEUED, created_at="2020-01-01T00:00:00.000Z")
    assert store.prune(86400) == [old.id]
    assert store.read(recent.id) is not None and store.read(queued.id) is not None
    assert store.prune(0) == []


def test_prune_sweeps_event_logs_without_a_record(store):
    job = make(store)
    store.writer(job.id).append({"type": "init"})
    os.unlink(os.path.join(store.dir, job.id + ".json"))
    stray = os.path.join(store.dir, job.id + ".events")
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    store.prune(86400)
    assert not os.path.exists(stray)


def test_a_lease_is_alive_while_its_process_lives_and_not_after(store, tmp_path):
    mine = RunnerLease(store.dir)
    mine.take()
    assert store.runner_alive(mine.id)
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from clinvk_lib.job_store import JobStore\n"
            "from clinvk_lib.job_lease import RunnerLease\n"
            "lease = RunnerLease(JobStore(%r).dir); lease.take(); print(lease.id, flush=True)\n"
            "time.sleep(60)\n" % (os.getcwd(), str(tmp_path)))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    other = child.stdout.readline().decode().strip()
    assert store.runner_alive(other)
    child.kill()
    child.wait()
    assert not store.runner_alive(other)
    mine.release()
    assert not store.runner_alive(mine.id)
    assert not store.runner_alive("not-a-lease")


def test_a_claim_goes_to_one_server_only(store):
    job = make(store, runner="0123456789abcdef")
    assert store.claim(job.id, "0123456789abcdef", "1111111111111111").runner == \
        "1111111111111111"
    assert store.claim(job.id, "0123456789abcdef", "2222222222222222") is None
