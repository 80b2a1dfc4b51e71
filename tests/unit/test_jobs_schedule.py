"""A job's cron schedule: first sight starts counting (no burst of missed slots), a due
slot runs once, and the last run is persisted across watchers."""
from __future__ import annotations

from datetime import datetime, timezone

from ccci import jobs
from ccci.model import AgentSpec, Role
from ccci.state import StateStore

UTC = timezone.utc


def test_schedule_is_due_once_per_slot(tmp_path):
    spec = AgentSpec(name="upgrade", role=Role.JOB, backend="scripted", workdir=tmp_path, schedule="0 3 * * 1")
    store = StateStore(tmp_path / "state")
    monday_0250 = datetime(2026, 11, 23, 2, 50, tzinfo=UTC)  # 2026-11-23 is a Monday
    assert not jobs._due(spec, store, monday_0250), "first sight must not run a slot"
    assert not jobs._due(spec, store, datetime(2026, 11, 23, 2, 59, tzinfo=UTC))
    assert jobs._due(spec, store, datetime(2026, 11, 23, 3, 0, 5, tzinfo=UTC))
    store.put(jobs.LAST_RUN_KEY.format(name="upgrade"), "2026-11-23T03:00:05Z")  # what the remedy records
    again = StateStore(tmp_path / "state")  # a restarted watcher
    assert not jobs._due(spec, again, datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    assert jobs._due(spec, again, datetime(2026, 11, 30, 3, 0, 1, tzinfo=UTC))


def test_job_request_round_trip(tmp_path):
    store = StateStore(tmp_path / "state")
    jobs.request(store, "upgrade", "fresh", ["--", "bump"])
    assert store.get(jobs.REQUEST_KEY.format(name="upgrade")) == '{"mode": "fresh", "args": ["--", "bump"]}'
    assert not jobs.is_active(store, "upgrade")
