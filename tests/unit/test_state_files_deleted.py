"""State files deleted under a running watcher: state.db is written back from the open
connection, and the watcher's lock file is re-taken (or lost to a watcher that took the
new file first)."""
from __future__ import annotations

import os
import shutil

from ccci.lock import FleetLock
from ccci.state import StateStore


def test_deleted_state_db_is_written_back(tmp_path):
    store = StateStore(tmp_path / "state")
    store.put("k", "v")
    assert store.db.reattach_if_missing() is False
    shutil.rmtree(tmp_path / "state")
    assert store.db.reattach_if_missing() is True
    assert oct(os.stat(tmp_path / "state" / "state.db").st_mode & 0o777) == "0o600"
    other = StateStore(tmp_path / "state")  # what 'ccci status' opens
    assert other.get("k") == "v"
    store.put("k2", "v2")  # and the watcher writes to the new file from now on
    assert other.get("k2") == "v2"


def test_lock_file_deleted_is_retaken(tmp_path):
    lock = FleetLock(tmp_path)
    lock.acquire()
    assert lock.verify()
    (tmp_path / "watch.lock").unlink()
    assert not FleetLock(tmp_path).is_held()
    assert lock.verify()
    assert FleetLock(tmp_path).is_held() and FleetLock(tmp_path).holder() == os.getpid()
    lock.release()


def test_lock_file_taken_by_another_first_is_lost(tmp_path):
    lock = FleetLock(tmp_path)
    lock.acquire()
    (tmp_path / "watch.lock").unlink()
    rival = FleetLock(tmp_path)
    rival.acquire()  # a new watcher locked the new file before we noticed
    assert lock.verify() is False
    rival.release()
    lock.release()
