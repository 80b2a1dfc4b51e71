"""The per-tick process scan on real processes: what it reports (alive, name, CPU,
children), that the psutil.Process it keeps between ticks gives the same answers as a
fresh scan, and that a process that dies or turns zombie reads as dead."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from ccci.processes import ProcessScanner, child_counts, scan_processes

# a parent with two sleeping children; prints its pid once both run
PARENT = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _spawn_parent() -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _kill(p: subprocess.Popen) -> None:
    for c in psutil.Process(p.pid).children(recursive=True):
        c.kill()
    p.kill()
    p.wait()


def test_child_counts_match_psutil_children():
    p = _spawn_parent()
    try:
        counts = child_counts()
        assert counts.get(p.pid) == 2 == len(psutil.Process(p.pid).children())
        assert counts.get(os.getpid(), 0) >= 1  # the parent above is our child
    finally:
        _kill(p)


def test_scan_reports_alive_name_cpu_and_children():
    p = _spawn_parent()
    try:
        info = scan_processes([p.pid])[p.pid]
        assert info.alive and info.pid == p.pid
        assert info.name == psutil.Process(p.pid).name()
        assert info.children == 2
        assert info.cpu_seconds > 0  # the interpreter started and spawned two children
    finally:
        _kill(p)


def test_kept_processes_answer_like_a_fresh_scan_and_dead_pids_read_dead():
    scanner = ProcessScanner()
    a, b = _spawn_parent(), _spawn_parent()
    try:
        first = scanner([a.pid, b.pid])
        assert set(scanner._procs) == {a.pid, b.pid}
        kept = scanner._procs[a.pid]
        again = scanner([a.pid, b.pid])
        assert scanner._procs[a.pid] is kept  # not rebuilt
        fresh = scan_processes([a.pid, b.pid])
        for pid in (a.pid, b.pid):
            assert again[pid].alive and fresh[pid].alive and first[pid].alive
            assert again[pid].name == fresh[pid].name
            assert again[pid].children == fresh[pid].children == 2
            assert again[pid].cpu_seconds >= first[pid].cpu_seconds
        # b's children die; a child that is not reaped yet is a zombie: dead
        for c in psutil.Process(b.pid).children():
            c.kill()
        kid = psutil.Process(a.pid).children()[0]
        kid.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(kid.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        zombie = scanner([kid.pid])[kid.pid]
        assert not zombie.alive
        # a pid no longer asked for is dropped; a killed and reaped process reads dead
        # through the kept psutil.Process as through a fresh one
        scanner([a.pid, b.pid])
        assert set(scanner._procs) == {a.pid, b.pid}
        _kill(b)
        gone = scanner([a.pid, b.pid])
        assert gone[a.pid].alive and gone[a.pid].children == 2  # the zombie child still counts
        assert not gone[b.pid].alive and not scan_processes([b.pid])[b.pid].alive
        assert set(scanner._procs) == {a.pid}
    finally:
        _kill(a)
        if b.poll() is None:
            _kill(b)


def test_empty_scan():
    assert ProcessScanner()([]) == {} == scan_processes([])


def test_children_are_counted_only_when_read_once_per_scan_and_match_psutil():
    scanner = ProcessScanner()
    a, b = _spawn_parent(), _spawn_parent()
    try:
        got = scanner([a.pid, b.pid])
        assert scanner.last_counts.builds == 0  # nothing read children: no pass over /proc
        assert got[a.pid].alive and got[a.pid].cpu_seconds > 0
        assert scanner.last_counts.builds == 0
        assert got[a.pid].children == 2 == len(psutil.Process(a.pid).children())
        assert scanner.last_counts.builds == 1
        assert got[b.pid].children == 2  # same scan: the map is shared, not rebuilt
        assert scanner.last_counts.builds == 1
        # the next scan counts afresh (a killed child counts until its parent reaps it,
        # as in psutil's own children())
        kid = psutil.Process(b.pid).children()[0]
        kid.kill()
        deadline = time.monotonic() + 10
        while kid.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        again = scanner([a.pid, b.pid])
        assert scanner.last_counts.builds == 0
        assert again[b.pid].children == len(psutil.Process(b.pid).children()) == 2
        assert scanner.last_counts.builds == 1
        # a count once read stays fixed for that ProcessInfo
        assert got[b.pid].children == 2
    finally:
        _kill(a)
        _kill(b)


def test_scanned_info_compares_and_replaces_like_a_process_info():
    import dataclasses

    from ccci.model import ProcessInfo
    p = _spawn_parent()
    try:
        info = scan_processes([p.pid])[p.pid]
        plain = ProcessInfo(pid=info.pid, alive=info.alive, name=info.name, cpu_seconds=info.cpu_seconds, children=2)
        assert info == plain and plain == info
        assert info != dataclasses.replace(plain, children=3)
        moved = dataclasses.replace(info, children=5)
        assert moved.children == 5 and moved.name == info.name and info.children == 2
        info.children = 7  # a plugin may set it, like any dataclass field
        assert info.children == 7
        assert "children=7" in repr(info)
    finally:
        _kill(p)


def test_pidfd_liveness_reads_proc_only_for_new_or_exited_pids():
    """A live pid seen before is known alive from its pidfd (no /proc read), its name
    and CPU are read when asked; a kill -9 is seen at the next call, with or without the
    parent reaping it, and a scanner without pidfds gives the same answers."""
    scanner, plain = ProcessScanner(), ProcessScanner(pidfds=False)
    if scanner._epoll is None:  # pragma: no cover - no pidfd_open on this platform
        import pytest
        pytest.skip("no pidfds")
    a, b = _spawn_parent(), _spawn_parent()
    try:
        first = scanner([a.pid, b.pid])
        assert scanner.reads == 2 and set(scanner._fds) == {a.pid, b.pid}
        for _ in range(3):
            again = scanner([a.pid, b.pid])
        assert scanner.reads == 2  # nothing read from /proc for known live pids
        ref = plain([a.pid, b.pid])
        for pid in (a.pid, b.pid):
            assert again[pid].alive and first[pid].alive and ref[pid].alive
            assert again[pid].name == ref[pid].name == psutil.Process(pid).name()
            assert again[pid].cpu_seconds >= first[pid].cpu_seconds > 0
            assert again[pid].children == ref[pid].children == 2
        # a child killed and left unreaped (a zombie): its own pidfd fires
        kid = psutil.Process(a.pid).children()[0]
        assert scanner([kid.pid])[kid.pid].alive
        kid.kill()
        deadline = time.monotonic() + 10
        while scanner([kid.pid])[kid.pid].alive:
            assert time.monotonic() < deadline, "a killed child never read dead"
            time.sleep(0.01)
        assert not plain([kid.pid])[kid.pid].alive and kid.pid not in scanner._fds
        # kill -9 of a watched process, reaped: dead at the next call after the exit
        scanner([a.pid, b.pid])  # (a and b were dropped while only the child was asked for)
        reads = scanner.reads
        _kill(b)
        got = scanner([a.pid, b.pid])
        assert not got[b.pid].alive and got[a.pid].alive
        assert scanner.reads == reads + 1  # only b was read
        assert set(scanner._fds) == {a.pid}
        assert not plain([b.pid])[b.pid].alive
        scanner.close()
        assert scanner([a.pid])[a.pid].alive  # closed: reads every pid, still right
    finally:
        _kill(a)
        if b.poll() is None:
            _kill(b)
