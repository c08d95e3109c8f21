"""The jobs index (clinvk_lib/job_index.py): a page of jobs is listed by reading that page's
records only; the index follows every write, removal and other process, is built from the
records when it is missing, catches up with them after a crash, and is compacted."""

from __future__ import annotations

import os
import time

import pytest

from clinvk_lib.job_store import (FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore,
                                  new_job_id)
from clinvk_lib.jsontext import dumps_compact
from clinvk_lib.sessions import Access


@pytest.fixture
def store(tmp_path):
    return JobStore(str(tmp_path))


def make(store, n=1, **fields):
    jobs = []
    for _ in range(n):
        job = Job(new_job_id(), fields.pop("kind", "prompt"), {"prompt": "x"}, **fields)
        store.create(job)
        jobs.append(job)
    return jobs


def counting_reads(store, monkeypatch):
    reads = []
    real = store.read
    monkeypatch.setattr(store, "read", lambda job_id: reads.append(job_id) or real(job_id))
    return reads


def test_a_page_of_many_jobs_reads_only_that_pages_records(store, monkeypatch):
    made = make(store, 300)
    reads = counting_reads(store, monkeypatch)
    page, total = store.list(limit=10, offset=20)
    assert total == 300 and len(reads) == 10
    assert [j.id for j in page] == [j.id for j in reversed(made)][20:30]


def test_filters_by_owner_status_and_kind_come_from_the_index(store, monkeypatch):
    make(store, 3, owner="alice")
    (bobs,) = make(store, owner="bob")
    (chain,) = make(store, owner="alice", kind="chain")
    store.finish(bobs.id, FAILED)
    reads = counting_reads(store, monkeypatch)
    assert store.list(Access("alice", everything=False), limit=1)[1] == 4
    assert [j.id for j in store.list(status=FAILED)[0]] == [bobs.id]
    assert [j.id for j in store.list(kind="chain")[0]] == [chain.id]
    assert len(reads) == 3                  # the three one-job pages


def test_a_removed_job_leaves_the_listing(store):
    first, second = make(store, 2)
    store.delete(first.id)
    assert [j.id for j in store.list()[0]] == [second.id]


def test_another_processes_writes_are_seen_by_a_store_that_listed_before(tmp_path):
    mine, theirs = JobStore(str(tmp_path)), JobStore(str(tmp_path))
    make(mine)
    assert mine.list()[1] == 1
    (job,) = make(theirs)
    theirs.finish(job.id, SUCCEEDED)
    assert mine.list(status=SUCCEEDED)[1] == 1 and mine.list()[1] == 2


def test_a_directory_older_than_the_index_is_indexed_from_its_records(store, tmp_path):
    made = make(store, 5)
    os.unlink(store.index.path)
    older = JobStore(str(tmp_path))
    assert [j.id for j in older.list()[0]] == [j.id for j in reversed(made)]
    assert os.path.exists(older.index.path)


def test_a_first_write_to_an_older_directory_indexes_every_record(store, tmp_path):
    made = make(store, 3)
    os.unlink(store.index.path)
    make(JobStore(str(tmp_path)))
    assert JobStore(str(tmp_path)).list()[1] == len(made) + 1


def test_a_rebuild_catches_up_with_a_record_whose_index_line_a_crash_lost(store, tmp_path):
    (job,) = make(store)
    job.status = RUNNING                    # written as a crash would leave it: no line
    with open(os.path.join(store.dir, job.id + ".json"), "w") as f:
        f.write(dumps_compact(job.to_dict()))
    assert store.list(status=RUNNING)[1] == 0
    store.rebuild_index()
    assert store.list(status=RUNNING)[1] == 1 and store.list(status=QUEUED)[1] == 0


def test_compaction_leaves_one_line_per_job_and_the_same_listing(store, monkeypatch):
    monkeypatch.setattr("clinvk_lib.job_index.MIN_LINES", 10)
    jobs = make(store, 4)
    for _ in range(5):
        for job in jobs:
            store.update(job.id, lambda j: True)
    before = store.summaries()
    assert store.index.needs_rewrite()
    store.compact_index()
    with open(store.index.path, "rb") as f:
        assert len(f.read().splitlines()) == 4
    assert store.summaries() == before


def test_a_line_that_is_not_json_is_skipped(store):
    (job,) = make(store)
    with open(store.index.path, "ab") as f:
        f.write(b"garbage\n")
    (second,) = make(store)
    assert [j.id for j in store.list()[0]] == [second.id, job.id]


def test_an_older_directory_whose_index_cannot_be_written_is_listed_from_its_records(
        store, tmp_path, monkeypatch):
    made = make(store, 3)
    os.unlink(store.index.path)
    older = JobStore(str(tmp_path))

    def refuse(summaries):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(older.index, "rewrite", refuse)
    assert [j.id for j in older.list()[0]] == [j.id for j in reversed(made)]
    assert not os.path.exists(older.index.path)


def test_prune_sweeps_a_temporary_index_file_a_crash_left(store):
    make(store)
    stray = os.path.join(store.dir, ".index.tmp-0123456789abcdef")
    with open(stray, "w") as f:
        f.write("half")
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    store.prune(86400)
    assert not os.path.exists(stray)
