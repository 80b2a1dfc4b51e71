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
