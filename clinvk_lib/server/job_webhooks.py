"""The webhook of each finished job: sent once per job by this process (a delivery under way
is not started twice), its state kept in the job's record after every attempt, and a delivery
a dead server left pending continued under the same delivery id (``webhooks`` sends them)."""

from __future__ import annotations

import threading
from typing import Any, Dict, Set

from ..job_store import Job, JobStore
from . import webhooks


class JobWebhooks:
    """``deliver(job)`` once a job has ended; ``close(timeout)`` at shutdown."""

    def __init__(self, app: Any, store: JobStore) -> None:
        self.store = store
        self.deliveries = webhooks.Deliveries(app.cfg, app.log, self.record, app.metrics)
        self._lock = threading.Lock()
        self._delivering: Set[str] = set()

    def deliver(self, job: Job, resume: bool = False) -> None:
        """Send the finished job to its webhook if that is still pending (``resume``: continue
        the delivery a dead server left pending)."""
        if not job.webhook_url or (job.webhook or {}).get("status") != "pending":
            return
        with self._lock:
            if job.id in self._delivering:
                return
            self._delivering.add(job.id)
        hook = job.webhook or {}
        attempts = max([a.get("attempt", 0) for a in hook.get("attempts", [])] or [0])
        if resume and hook.get("delivery_id"):
            self.deliveries.resume(job.id, job.public(), job.webhook_url, hook["delivery_id"],
                                   attempts)
        else:
            self.deliveries.send(job.id, job.public(), job.webhook_url)

    def record(self, job_id: str, state: Dict[str, Any]) -> None:
        """Keep a delivery's state in its job (``webhooks.Deliveries`` calls this after
        queuing and after each attempt)."""
        def change(job: Job) -> bool:
            hook = dict(job.webhook or {})
            hook["delivery_id"] = state.get("delivery_id", "")
            hook["status"] = state.get("state", "pending")
            if state.get("attempt"):
                hook["attempts"] = [a for a in hook.get("attempts", [])
                                    if a.get("attempt") != state["attempt"]] + [state]
            job.webhook = hook
            return True
        self.store.update(job_id, change)
        if state.get("state") != "pending":
            with self._lock:
                self._delivering.discard(job_id)

    def close(self, timeout: float) -> None:
        """Give the attempts under way up to ``timeout`` seconds; the rest stay pending."""
        self.deliveries.close(timeout)
