"""Append one tick-only run of ``bench/run.py`` to ``bench/tick_cpu.json`` (the
before/after record of issue 16's tick-CPU work), keeping the runs already there.

    python bench/tick_cpu_record.py bench/out/after/results.json --label "after: ..." \
        [--commit SHA] [--record bench/tick_cpu.json]

Per size: the tick's CPU p50/p95 (ms), wall p50, the floor (one forked ``tmux
list-panes -a``, same run) and the ratios to it, captures per tick, the phase split,
the processes on the machine, and a real ``ccci watch``'s CPU share of one core on the
busy stand-ins (``watch_*``) and, where the run has it, on an idle fleet
(``idle_watch_*``: stand-ins silent at their prompt, a tmux server of their own).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def entry(res: dict, label: str, commit: str | None) -> dict:
    sizes = {}
    for n, v in res["details"]["tick"]["sizes"].items():
        c, fl = v["ccci"], v["floor"]
        row = {
            "cpu_p50_ms": c["cpu_p50"], "cpu_p95_ms": c["cpu_p95"], "wall_p50_ms": c["wall_p50"],
            "floor_cpu_p50_ms": fl["cpu_p50"],
            "cpu_x_floor_p50": round(c["cpu_p50"] / fl["cpu_p50"], 2),
            "cpu_p95_x_floor_p50": round(c["cpu_p95"] / fl["cpu_p50"], 2),
            "captures_per_tick": c["captures_per_tick"],
            "phases_cpu_ms": {k: p["cpu_ms"] for k, p in v.get("phases", {}).items()},
            "processes_on_machine": v.get("processes_on_machine"),
        }
        w = v.get("watch")
        if w:
            row.update(watch_cpu_pct_of_core=w["watcher_cpu_pct_of_core"], watch_seconds=w["seconds"],
                       watch_rss_mb_max=w["rss_mb_max"], tmux_server_cpu_pct_of_core=w["tmux_server_cpu_pct_of_core"])
        wi = v.get("watch_idle_fleet")
        if wi:
            row.update(idle_watch_cpu_pct_of_core=wi["watcher_cpu_pct_of_core"], idle_watch_seconds=wi["seconds"],
                       idle_tmux_server_cpu_pct_of_core=wi["tmux_server_cpu_pct_of_core"],
                       idle_watch_events=wi.get("events_by_kind"))
        sizes[n] = row
    return {"label": label, "commit": commit or (res.get("commit") or {}).get("commit", "")[:12],
            "date": res.get("date"), "date_end": res.get("date_end"), "command": res.get("command"),
            "machine": res.get("machine"), "sizes": sizes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--label", required=True)
    ap.add_argument("--commit")
    ap.add_argument("--record", default=str(Path(__file__).resolve().parent / "tick_cpu.json"))
    a = ap.parse_args()
    res = json.loads(Path(a.results).read_text())
    rec_path = Path(a.record)
    rec = json.loads(rec_path.read_text())
    rec["runs"].append(entry(res, a.label, a.commit))
    tmp = rec_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, rec_path)
    print(f"{rec_path}: {len(rec['runs'])} runs")


if __name__ == "__main__":
    main()
