"""Scenario 9: the state directory's filesystem fills up (a real 8 MB tmpfs mounted on
it, filled with a file until ENOSPC). The watcher says so in one line, keeps
supervising with its state in memory (a killed agent is still restarted), and writes
every pending change to disk once space returns. Needs root (mount); skipped otherwise.
A read-only state directory is covered in tests/unit/test_state_fallback.py (root
ignores file modes, and a filesystem with open writers cannot be remounted read-only)."""
from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess

import pytest

from ccci.testing.fleet import exactly_one_instance

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]


def _mount_tmpfs(path, size="8m") -> bool:
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _fill(path) -> None:
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    with open(path, "ab", buffering=0) as fh:  # the last few bytes
        while True:
            try:
                fh.write(b"\0" * 512)
            except OSError:
                break


def _disk_rows(fleet, sql, args=()):
    con = sqlite3.connect(f"file:{fleet.cfg.state_dir / 'state.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_full_disk_supervision_continues_and_state_is_written_back(make_fleet, trials):
    t = trials("9", "Full disk / read-only state directory")
    fleet = make_fleet(agents={"handoff_role": "other"})
    state = fleet.cfg.state_dir
    if not _mount_tmpfs(state):
        pytest.skip("needs root and permission to mount a tmpfs (a real full filesystem)")
    try:
        w = fleet.watch("--quiet")
        assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 30)
        fleet.wait(lambda: False, 1.5)
        before = fleet.restarts("builder")
        # an empty write-ahead log must grow for the next write; then the disk is full
        fleet.store.db.disk.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _fill(state / "filler")
        old = fleet.live_pid("builder")
        os.kill(old, signal.SIGKILL)
        new = fleet.wait(lambda: (p := fleet.live_pid("builder")) and p != old and p, 20)
        assert new, "supervision stopped on a full disk: the killed agent was not restarted"
        out = fleet.wait(lambda: "cannot write the state database" in (o := fleet.watcher_output(0)) and o, 10)
        assert out, fleet.watcher_output(0)
        lines = [ln for ln in out.splitlines() if "state database" in ln]
        assert len(lines) == 1 and "full" in lines[0], lines
        assert w.poll() is None
        # on disk nothing new yet: the restart lives in the watcher's memory
        assert len(_disk_rows(fleet, "SELECT id FROM events WHERE kind='agent_resumed' AND agent='builder'")) == len(before)
        fleet.wait(lambda: False, 6)  # retries while still full: no second report
        assert len([ln for ln in fleet.watcher_output(0).splitlines() if "cannot write" in ln]) == 1
        t.trial()
        os.unlink(state / "filler")
        assert fleet.wait(lambda: "writable again" in fleet.watcher_output(0), 15), fleet.watcher_output(0)
        kinds = [k for (k,) in _disk_rows(fleet, "SELECT kind FROM events WHERE id > 0 ORDER BY id")]
        assert kinds.count("state_degraded") == 1 and kinds.count("state_recovered") == 1
        assert kinds.index("state_degraded") < kinds.index("state_recovered")
        resumed = _disk_rows(fleet, "SELECT data FROM events WHERE kind='agent_resumed' AND agent='builder'")
        assert len(resumed) == len(before) + 1 and f'"pid": {new}' in resumed[-1][0]
        assert _disk_rows(fleet, "SELECT pid FROM agents WHERE name='builder'") == [(new,)]
        assert _disk_rows(fleet, "SELECT COUNT(*) FROM restarts WHERE agent='builder' AND kind='resume'") == [(1,)]
        assert exactly_one_instance(fleet, "builder") is None
        t.check("full disk: one one-line error on the watcher's stderr and one state_degraded event")
        t.check("a kill -9 while the disk is full is still restarted (state kept in memory)")
        t.check("space returns: every pending write (events, agents row, restarts row) is on disk, in order")
    finally:
        fleet.close()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)

