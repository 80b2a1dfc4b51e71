"""Part 3: the watcher's memory with 100 agents over a long run.

A real ``ccci watch`` process (``python -m ccci watch --quiet``) on a fleet of 100
agents: the stand-ins of the tick benchmark, already running in the same private tmux
server, which the watcher adopts. Git is on (a local bare origin, the default 10 s
``fetch_interval``), and a ``claim(...)`` commit is pushed to origin every 60 s from a
scratch clone, so the watcher's git path (ls-remote, fetch into its mirror, listing)
runs too; no agent has a handoff role, so these commits ping nobody.

The watcher's RSS is sampled every second (psutil); the peak is the larger of the
sampled maximum and the kernel's high-water mark (``VmHWM`` in /proc/PID/status).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from _common import Cleanup, log

from ccci.commands.init import create_origin
from ccci.state import StateStore

PUSH_EVERY_S = 60.0


def _hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_memory(tick_bench, cleanup: Cleanup, work: Path, n_agents: int, seconds: float) -> dict:
    tick_bench.grow(n_agents)
    root = work / "memory-fleet"
    root.mkdir(parents=True, exist_ok=True)
    origin = create_origin(root / "origin.git")
    cfg = tick_bench.write_config(root, n_agents, origin=str(origin), fetch_interval=10)
    scratch = root / "scratch"
    genv = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@ccci.invalid", *args],
                       cwd=scratch if scratch.exists() else root, capture_output=True, check=True, env=genv, timeout=60)

    git("clone", "--quiet", str(origin), str(scratch))
    env = {k: v for k, v in os.environ.items() if k not in ("CCCI_BACKEND", "CCCI_FLEET", "CCCI_DISABLE_PLUGINS")}
    out = open(root / "watcher.out", "ab")
    w = cleanup.proc(subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(root), "watch", "--quiet"],
                                      stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True))
    proc = psutil.Process(w.pid)
    store = StateStore(cfg.state_dir)
    t0 = time.monotonic()
    # wait until all agents are adopted (the watcher's start-up), then sample
    while time.monotonic() - t0 < 60:
        if w.poll() is not None:
            raise RuntimeError(f"memory: ccci watch exited ({w.returncode}): {(root / 'watcher.out').read_text()[-800:]}")
        n = store.event_counts().get("agent_adopted", 0)
        if n >= n_agents:
            break
        time.sleep(0.2)
    adopted_after = time.monotonic() - t0
    log(f"memory: watcher pid {w.pid} adopted {n_agents} agents in {adopted_after:.1f}s; sampling RSS for {seconds:.0f}s")
    samples: list[tuple[float, float]] = []
    fds: list[tuple[float, int]] = []
    cpu0 = proc.cpu_times()
    start = time.monotonic()
    next_push = start + PUSH_EVERY_S / 2
    pushes = 0
    next_log = start + 60
    while True:
        el = time.monotonic() - start
        if w.poll() is not None:
            raise RuntimeError(f"memory: ccci watch exited ({w.returncode}) after {el:.0f}s")
        rss = proc.memory_info().rss / 2**20
        samples.append((round(el, 1), round(rss, 2)))
        fds.append((round(el, 1), proc.num_fds()))
        if el >= seconds:
            break
        if time.monotonic() >= next_push:
            pushes += 1
            (scratch / f"mem-{pushes}.txt").write_text(f"{pushes}\n")
            git("add", f"mem-{pushes}.txt")
            git("commit", "--quiet", "-m", f"claim(mem {pushes}): memory benchmark commit {pushes}")
            git("push", "--quiet", "origin", "HEAD:main")
            next_push += PUSH_EVERY_S
        if time.monotonic() >= next_log:
            log(f"memory: {el:.0f}s, RSS {rss:.1f} MB")
            next_log += 60
        time.sleep(max(0.0, start + len(samples) - time.monotonic()))
    cpu1 = proc.cpu_times()
    hwm = _hwm_kb(w.pid)
    elapsed = time.monotonic() - start
    kinds = store.event_counts()
    Cleanup.stop_proc(w)
    store.close()
    rss_vals = [s[1] for s in samples]
    peak_sampled = max(rss_vals)
    peak = max(peak_sampled, (hwm or 0) / 1024)
    # the slope after the first half (start-up caches, the first fetches and commit
    # listings are done by then): what a week-long watcher would keep growing by
    late = [(t, r) for t, r in samples if t >= elapsed / 2]
    try:
        late_slope = round(statistics.linear_regression([t for t, _ in late], [r for _, r in late]).slope * 3600, 3)
    except (statistics.StatisticsError, ValueError):  # too short a run
        late_slope = None
    own_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    kid_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    return {
        "agents": n_agents,
        "duration_s": round(elapsed, 1),
        "peak_rss_mb": round(peak, 2),
        "peak_rss_sampled_mb": round(peak_sampled, 2),
        "vm_hwm_mb": round(hwm / 1024, 2) if hwm else None,
        "rss_start_mb": rss_vals[0],
        "rss_end_mb": rss_vals[-1],
        "rss_last_minute_max_mb": max(r for t, r in samples if t >= elapsed - 60),
        "rss_slope_second_half_mb_per_h": late_slope,
        "fds_start": fds[0][1], "fds_end": fds[-1][1], "fds_max": max(v for _, v in fds),
        "adopt_s": round(adopted_after, 2),
        "watcher_cpu_ms_per_s": round(own_cpu * 1000 / elapsed, 2),
        "watcher_children_cpu_ms_per_s": round(kid_cpu * 1000 / elapsed, 2),
        "pushes": pushes,
        "events_by_kind": kinds,
        "samples": samples,
        "fd_samples": fds,
    }
