#!/usr/bin/env python3
"""ccci's benchmark suite: one command writes bench/results.json, bench/RESULTS.md and
bench/latency.png from one run on real tmux and real git.

    python bench/run.py            # full run (~21 min: the memory part alone is 10 min)
    python bench/run.py --quick    # smoke test (~5 min): fewer trials and ticks, 45 s memory run

Parts (see each module's docstring for the method):

1. ``_latency.py``: event -> remedy latency on a real ``ccci watch`` (kill -9, fatal
   error, claim push, usage-limit reset), >= 20 trials each;
2. ``_tick.py``: ``Supervisor.tick()`` CPU and wall time at 1, 10, 50, 100 agents in one
   tmux server, against the floor (one ``list-panes -a``) and the naive design (one
   ``capture-pane`` subprocess per agent);
3. ``_memory.py``: peak RSS of ``ccci watch`` with 100 agents over 10 minutes;
4. ``_replay.py``: the recorded events replayed through the old 30 s / 300 s poller.

Everything runs on private tmux sockets (``ccci-bench-<pid>-*``) and in a temporary
directory; all of it is torn down at the end, on an error and on SIGTERM/SIGINT.
Not part of the test run (pytest's testpaths is ``tests``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH, Cleanup, ccci_commit, log, machine, now_utc  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 5 trials, 10 ticks, 45 s memory run")
    p.add_argument("--trials", type=int, help="latency trials per event (default 20; quick 5)")
    p.add_argument("--ticks", type=int, help="measured ticks per fleet size (default 60; quick 10)")
    p.add_argument("--sizes", default="1,10,50,100", help="fleet sizes for the tick benchmark")
    p.add_argument("--memory-seconds", type=float, help="length of the memory run (default 600; quick 45)")
    p.add_argument("--memory-agents", type=int, default=100)
    p.add_argument("--workers", type=int, default=5, help="worker agents that take the local faults (latency)")
    p.add_argument("--only", default="latency,tick,memory", help="parts to run (for development; a full "
                   "results.json needs all three)")
    p.add_argument("--out", default=str(BENCH), help="where results.json, RESULTS.md, latency.png go")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (fleets, logs, state.db)")
    p.add_argument("--report-only", action="store_true", help="measure nothing: re-render RESULTS.md and the plot "
                   "from the results.json in --out")
    a = p.parse_args(argv)
    if a.report_only:
        from _report import evaluate

        res = json.loads((Path(a.out) / "results.json").read_text())
        res.setdefault("previous", _previous())
        res["targets"] = evaluate(res)
        _write(res, Path(a.out), partial=False)
        return 0
    quick = a.quick
    trials = a.trials or (5 if quick else 20)
    ticks = a.ticks or (10 if quick else 60)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    mem_s = a.memory_seconds if a.memory_seconds is not None else (45.0 if quick else 600.0)
    parts = {s.strip() for s in a.only.split(",")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if shutil.which("tmux") is None or shutil.which("git") is None:
        print("bench needs tmux and git on PATH", file=sys.stderr)
        return 2

    cleanup = Cleanup()
    work = Path(tempfile.mkdtemp(prefix="ccci-bench-"))
    if not a.keep:
        cleanup.dir(work)
    t_start = time.monotonic()
    res: dict = {
        "date": now_utc().isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "command": " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])]).strip(),
        "machine": machine(),
        "commit": ccci_commit(),
        "parameters": {"trials": trials, "ticks_per_size": ticks, "sizes": sizes, "memory_seconds": mem_s,
                       "memory_agents": a.memory_agents, "workers": a.workers},
        "latency_s": None, "tick_ms": None, "floor_ms": None, "naive_tick_ms": None, "rss_mb": None,
        "old_design": None, "previous": _previous(), "details": {}, "errors": [],
    }
    log(f"work dir {work}; parts {sorted(parts)}; commit {res['commit'].get('commit', '')[:12]}")
    try:
        if "latency" in parts:
            from _latency import LatencyBench, summarise
            from _replay import replay

            lb = LatencyBench(work, cleanup, trials, a.workers)
            try:
                lat = lb.run()
            finally:
                lb.stop()
            res["latency_s"] = summarise(lat)
            res["old_design"] = replay(lat["trials"])
            res["details"]["latency"] = lat
            _write(res, out, partial=True)
        tb = None
        if "tick" in parts or "memory" in parts:
            from _tick import TickBench

            tb = TickBench(work, cleanup, sizes if "tick" in parts else [], ticks,
                           naive_reps=3 if quick else 10, floor_reps=10 if quick else 30,
                           profile_sizes=[50] if quick else [50, 100, 200],
                           watch_sizes=[n for n in sizes if n in (50, 200)], watch_seconds=20.0 if quick else 60.0)
        if "tick" in parts:
            td = tb.run()
            res["details"]["tick"] = td
            res["tick_ms"], res["floor_ms"], res["naive_tick_ms"] = {}, {}, {}
            for n, v in td["sizes"].items():
                c, fl, nv = v["ccci"], v["floor"], v["naive"]
                keys = ("cpu_p50", "cpu_p95", "wall_p50", "wall_p95")
                res["tick_ms"][n] = {**{k: c[k] for k in keys}, "n": c["n"],
                                     "tmux_calls_per_tick": c["tmux_calls_per_tick"], "captures_per_tick": c["captures_per_tick"],
                                     "cpu_x_floor": _ratio(c["cpu_p50"], fl["cpu_p50"]), "wall_x_floor": _ratio(c["wall_p50"], fl["wall_p50"]),
                                     "cpu_x_naive": _ratio(c["cpu_p50"], nv["cpu_p50"], 3), "wall_x_naive": _ratio(c["wall_p50"], nv["wall_p50"], 3)}
                res["floor_ms"][n] = {**{k: fl[k] for k in keys}, "n": fl["n"]}
                res["naive_tick_ms"][n] = {**{k: nv[k] for k in keys}, "n": nv["n"], "agents": int(n)}
                fk = v.get("ccci_forked")
                if fk:
                    res.setdefault("tick_ms_forked", {})[n] = {
                        **{k: fk[k] for k in keys}, "n": fk["n"], "tmux_calls_per_tick": fk["tmux_calls_per_tick"],
                        "cpu_x_floor": _ratio(fk["cpu_p50"], fl["cpu_p50"]), "wall_x_floor": _ratio(fk["wall_p50"], fl["wall_p50"])}
                if v.get("watch"):
                    wv = v["watch"]
                    res.setdefault("watch", {})[n] = {k: wv[k] for k in (
                        "agents", "seconds", "watcher_cpu_pct_of_core", "tmux_server_cpu_pct_of_core",
                        "control_clients", "rss_mb_max", "rss_mb_end")}
                if v.get("watch_idle_fleet"):
                    wv = v["watch_idle_fleet"]
                    res.setdefault("watch_idle", {})[n] = {k: wv[k] for k in (
                        "agents", "seconds", "watcher_cpu_pct_of_core", "tmux_server_cpu_pct_of_core",
                        "control_clients", "rss_mb_max", "rss_mb_end", "fleet")}
            _write(res, out, partial=True)
        if "memory" in parts:
            from _memory import run_memory

            m = run_memory(tb, cleanup, work, a.memory_agents, mem_s)
            res["details"]["memory"] = m
            res["rss_mb"] = {"peak": m["peak_rss_mb"], "peak_sampled": m["peak_rss_sampled_mb"], "vm_hwm": m["vm_hwm_mb"],
                             "start": m["rss_start_mb"], "end": m["rss_end_mb"], "last_minute_max": m["rss_last_minute_max_mb"],
                             "duration_s": m["duration_s"], "agents": m["agents"], "pushes": m["pushes"],
                             "watcher_cpu_ms_per_s": m["watcher_cpu_ms_per_s"],
                             "watcher_children_cpu_ms_per_s": m["watcher_children_cpu_ms_per_s"],
                             "slope_second_half_mb_per_h": m["rss_slope_second_half_mb_per_h"],
                             "fds_start": m["fds_start"], "fds_end": m["fds_end"], "fds_max": m["fds_max"]}
    except BaseException as exc:  # noqa: BLE001 - write what was measured, then fail
        res["errors"].append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}")
        log(f"FAILED: {type(exc).__name__}: {exc}")
        _finish(res, out, t_start)
        cleanup.run()
        raise
    _finish(res, out, t_start)
    cleanup.run()
    log(f"done in {(time.monotonic() - t_start) / 60:.1f} min: {out / 'results.json'}, {out / 'RESULTS.md'}, plot")
    return 0


def _previous() -> dict | None:
    """The figures of the previous recorded run (``bench/previous_2179973.json``: the full
    run of 2026-11-22 at commit 2179973, the last before the watcher's tmux access went
    through one control-mode client), shown next to this run's; ``None`` if the file is
    missing. (``previous_d94f74f.json`` is the run before that one, before the process
    scan's one-pass fix.)"""
    path = BENCH / "previous_2179973.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ratio(a, b, digits: int = 2):
    return round(a / b, digits) if a is not None and b else None


def _finish(res: dict, out: Path, t_start: float) -> None:
    from _report import evaluate

    res["date_end"] = now_utc().isoformat(timespec="seconds")
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["wall_minutes"] = round((time.monotonic() - t_start) / 60, 1)
    res["targets"] = evaluate(res)
    _write(res, out, partial=False)


def _write(res: dict, out: Path, partial: bool) -> None:
    from _report import markdown, plot

    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    os.replace(tmp, out / "results.json")
    if partial:
        return
    try:
        (out / "RESULTS.md").write_text(markdown(res))
    except Exception as exc:  # noqa: BLE001
        log(f"RESULTS.md failed: {exc}\n{traceback.format_exc()}")
    try:
        path = plot(res, out / "latency.png")
        log(f"plot: {path}")
    except Exception as exc:  # noqa: BLE001
        log(f"plot failed: {exc}\n{traceback.format_exc()}")


if __name__ == "__main__":
    sys.exit(main())
