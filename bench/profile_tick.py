"""cProfile of ``Supervisor.tick()`` at N stand-in agents (development aid, not part of
``run.py``): the tick bench's fleet and supervisor (``_tick.py``: one tmux server of
stand-ins, one control-mode client), then ``--ticks`` profiled ticks at 1 s.

    python bench/profile_tick.py --agents 50 --ticks 20 [--sort tottime] [--top 40]

Prints the tick's CPU (ms, p50/p95, unprofiled ticks first) and the pstats table.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Cleanup, pct  # noqa: E402
from _tick import TickBench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--sort", default="cumulative")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--callers", default="", help="also print the callers of functions matching this regex")
    a = ap.parse_args()
    cleanup = Cleanup()
    work = cleanup.dir(Path(tempfile.mkdtemp(prefix="ccci-prof-")))
    tb = TickBench(work, cleanup, [a.agents], a.ticks, 1, 1, [])
    tb.grow(a.agents)
    time.sleep(2.0)
    tb._idle = tb.idle_rate(1.0)
    sup = tb.build(a.agents, "prof", control=True)
    m = tb.measure_ccci(sup, a.ticks)
    print(f"{a.agents} agents, {a.ticks} ticks: CPU p50 {pct(m['cpu'], 50):.2f} ms, p95 {pct(m['cpu'], 95):.2f} ms, "
          f"captures/tick {m['captures_per_tick']:.1f}")
    timer = tb.instrument(sup)
    tb.measure_ccci(sup, a.ticks)
    for k, v in sorted(tb.phases(timer, a.ticks).items(), key=lambda kv: -kv[1]["cpu_ms"]):
        print(f"  {k:34s} {v['cpu_ms']:7.2f} ms CPU/tick  {v['calls_per_tick']:6.1f} calls/tick")
    pr = cProfile.Profile()
    for _ in range(a.ticks):
        pr.enable()
        sup.tick()
        pr.disable()
        time.sleep(1.0)
    sup.tmux.stop_control()
    sup.store.close()
    st = pstats.Stats(pr).sort_stats(a.sort)
    st.print_stats(a.top)
    if a.callers:
        st.print_callers(a.callers)


if __name__ == "__main__":
    main()
