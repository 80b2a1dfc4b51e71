"""How long ``ccci report`` takes on a week of a busy fleet's event log.

``python bench/report_bench.py [--agents 4] [--days 7]`` builds a state database in a
temporary directory with what a fleet logs: per agent a busy/idle pair of
``state_changed`` events every 4 minutes (a turn), a handoff ping with its delivery
every 20 minutes, a kill -9 with its restart and remedy every 6 hours, a stall finding
every 12 hours, and a day of usage rows; then times :func:`ccci.report.build_report` for
the whole period and the last 12 hours, and the PNG timeline. It writes
``bench/REPORT_RESULTS.md``. Not part of the test run.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from ccci.commands.report import render_png
from ccci.model import Event
from ccci.report import build_report
from ccci.state import StateStore


def populate(st: StateStore, agents: list[str], start: datetime, days: int) -> int:
    n = 0
    end = start + timedelta(days=days)
    with st.transaction():
        for i, a in enumerate(agents):
            t = start + timedelta(seconds=7 * i)
            k = 0
            while t < end:
                st.append_event(Event("state_changed", "idle -> busy", a, t, {"state": "busy", "previous": "idle"}))
                st.append_event(Event("state_changed", "busy -> idle", a, t + timedelta(seconds=170),
                                      {"state": "idle", "previous": "busy"}))
                n += 2
                if k % 5 == 0:
                    sha = f"{k:040x}"
                    mid = st.queue_message(a, "ping", t, dedup_key=f"ping:{sha}:{a}")
                    st.append_event(Event("ping_queued", sha[:10], a, t, {"sha": sha, "subject": f"claim(step {k})"}))
                    st.append_event(Event("message_delivered", "delivered", a, t + timedelta(seconds=2),
                                          {"message_id": mid}))
                    n += 2
                if k % 90 == 0:
                    st.append_event(Event("agent_resumed", "resumed", a, t + timedelta(seconds=200),
                                          {"reason": "process_death: agent process exited (signal 9)"}))
                    st.append_event(Event("remedy", "restart", a, t + timedelta(seconds=200),
                                          {"action": "restart", "check": "process_death", "ok": True}))
                    n += 2
                if k % 180 == 0:
                    st.append_event(Event("finding", "stall", a, t + timedelta(seconds=100),
                                          {"check": "stall", "quiet_s": 300.0}))
                    n += 1
                t += timedelta(minutes=4)
                k += 1
            for d in range(days):
                day = (start + timedelta(days=d)).strftime("%Y-%m-%d")
                st.set_usage(a, day, "conv", "claude-sonnet-4-5", {"input_tokens": 2_000_000, "output_tokens": 300_000,
                                                                   "cache_read_tokens": 40_000_000}, start)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "REPORT_RESULTS.md")
    args = ap.parse_args()
    agents = [f"agent{i}" for i in range(args.agents)]
    end = datetime.now(timezone.utc).replace(microsecond=0)
    start = end - timedelta(days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        st = StateStore(Path(tmp))
        t0 = time.perf_counter()
        n = populate(st, agents, start, args.days)
        fill_s = time.perf_counter() - t0
        cfg = SimpleNamespace(name="bench", agents=[SimpleNamespace(name=a) for a in agents], raw={},
                              path=Path(tmp) / "ccci.toml")
        rows = []
        for label, since in ((f"{args.days} days", start), ("12 hours", end - timedelta(hours=12))):
            t0 = time.perf_counter()
            rep = build_report(st, cfg, since, end)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            png = render_png(rep)
            png_s = time.perf_counter() - t0
            rows.append((label, sum(rep["event_counts"].values()), build_s, png_s, len(png)))
    lines = [
        "# ccci report: time to build and draw",
        "",
        f"Written by `python bench/report_bench.py --agents {args.agents} --days {args.days}` on "
        f"{end.strftime('%Y-%m-%d')} ({platform.machine()}, {platform.python_version()}); the event log: "
        f"{n} events over {args.days} days for {args.agents} agents (filled in {fill_s:.1f} s).",
        "",
        "| period | events in it | build_report (s) | PNG timeline (s) | PNG bytes |",
        "|---|---|---|---|---|",
    ] + [f"| {lb} | {ev} | {b:.2f} | {p:.2f} | {size} |" for lb, ev, b, p, size in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
