"""The state store on a disk that refuses writes (ccci.state.StateDB): the failing write
and everything after it go on in memory, reads see them, and the journal is written back
in order when the disk takes writes again. tests/faults/test_full_disk.py does the same
on a real full and read-only filesystem."""
from __future__ import annotations

import sqlite3

import pytest

from ccci.clock import UTC
from ccci.model import Event
from ccci.state import StateStore
from ccci.testing.fakes import events, tick


class RefusingDisk:
    """Wraps the disk connection; while ``full`` every write raises SQLITE_FULL's text."""

    def __init__(self, conn):
        self.conn, self.full = conn, False

    def execute(self, sql, params=()):
        verb = sql.split(None, 1)[0].upper()
        if self.full and verb not in ("SELECT", "ROLLBACK"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self.conn, name)


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state")
    s.db.disk = RefusingDisk(s.db.disk)
    yield s
    s.close()


def on_disk(store, sql):
    return [tuple(r) for r in store.db.disk.conn.execute(sql).fetchall()]


def test_writes_go_to_memory_and_are_flushed_in_order(store):
    from datetime import datetime

    store.put("a", "1")
    store.db.disk.full = True
    store.put("a", "2")  # fails on disk: the store switches to memory
    assert store.in_memory and "disk is full" in store.db.error
    mid = store.queue_message("x", "hello", datetime.now(UTC), dedup_key="k")
    assert store.queue_message("x", "hello", datetime.now(UTC), dedup_key="k") is None  # dedup still works
    with store.transaction():
        store.append_event(Event("remedy", "restart", agent="x"))
        store.update_agent("x", pid=42)
    assert store.get("a") == "2" and store.agent("x").pid == 42 and [m.id for m in store.pending_messages()] == [mid]
    assert on_disk(store, "SELECT value FROM kv WHERE key='a'")[0][0] == "1"
    assert store.try_flush() is None  # the disk is still full
    store.db.disk.full = False
    writes = len(store.db.journal)
    assert writes >= 5 and store.try_flush() == writes
    assert not store.in_memory
    assert on_disk(store, "SELECT value FROM kv WHERE key='a'")[0][0] == "2"
    assert on_disk(store, "SELECT id FROM messages")[0][0] == mid
    assert on_disk(store, "SELECT pid FROM agents WHERE name='x'")[0][0] == 42
    assert [r[0] for r in on_disk(store, "SELECT kind FROM events")] == ["remedy"]


def test_a_transaction_that_fails_half_way_goes_on_in_memory(store):
    with store.transaction():
        store.put("k1", "v1")
        store.db.disk.full = True
        store.put("k2", "v2")  # the transaction's first write is replayed in memory
    store.db.disk.full = False
    assert store.get("k1") == "v1" and store.get("k2") == "v2"
    store.try_flush()
    assert sorted(on_disk(store, "SELECT key, value FROM kv")) == [("k1", "v1"), ("k2", "v2")]


def test_a_rolled_back_transaction_in_memory_is_not_written_back(store):
    store.db.disk.full = True
    store.put("a", "1")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put("b", "2")
            raise RuntimeError("boom")
    store.db.disk.full = False
    store.try_flush()
    assert on_disk(store, "SELECT key FROM kv") == [("a",)]


def test_other_errors_are_not_swallowed(store):
    with pytest.raises(sqlite3.OperationalError):
        store.db.execute("INSERT INTO no_such_table VALUES (1)")
    assert not store.in_memory


def test_the_runner_reports_once_supervises_on_and_writes_back(make_supervisor, fake_tmux, fake_clock, capsys):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    disk = sup.store.db.disk = RefusingDisk(sup.store.db.disk)
    disk.full = True
    fake_tmux.pane("a").kill(signal=9)
    for _ in range(3):
        tick(sup)
    assert sup.store.in_memory
    assert len(fake_tmux.launches("a")) == 2, "the dead agent was not restarted"
    assert len(events(sup, "state_degraded")) == 1
    err = capsys.readouterr().err
    assert err.count("cannot write the state database") == 1 and len(err.strip().splitlines()) == 1
    disk.full = False
    tick(sup, 6)
    assert not sup.store.in_memory
    kinds = [r[0] for r in disk.conn.execute("SELECT kind FROM events ORDER BY id")]
    assert "agent_resumed" in kinds and kinds.index("state_degraded") < kinds.index("state_recovered")
    assert kinds.count("state_degraded") == 1


def test_a_read_only_database_falls_back_and_recovers(tmp_path):
    # PRAGMA query_only makes SQLite itself refuse writes with SQLITE_READONLY (code 8):
    # the same error a read-only state directory gives a non-root watcher
    store = StateStore(tmp_path / "state")
    store.put("a", "1")
    store.db.disk.execute("PRAGMA query_only=1")
    store.put("a", "2")
    assert store.in_memory and "readonly" in store.db.error
    assert store.try_flush() is None
    store.db.disk.execute("PRAGMA query_only=0")
    assert store.try_flush() == 1
    assert store.db.disk.execute("SELECT value FROM kv WHERE key='a'").fetchone()[0] == "2"
