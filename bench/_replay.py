"""Part 4: the same event streams replayed through the old design's polling model.

The old design (the fleet ccci replaces) looked every 30 s for handoffs and every
300 s for dead or stuck agents. For each event this run recorded (the kill, the moment
the fatal error showed, the push, the usage limit's announced reset time), the poller
notices it at its next poll ``phase + k * P`` after the event; the poller's phase is
unknown, so every event is replayed under ``PHASES`` phases spread evenly over
``[0, P)`` and all the results are pooled. The poller is then given ccci's own measured
latency for that trial on top (its remedy is no faster than ccci's): a conservative
model that favours the old design by up to ccci's own p95.

Cadence by event: handoff 30 s; agent death 300 s; the fatal error and the usage-limit
reset are not deaths, but the old design had no faster path for them (an agent stuck
on an error looks like a dead one to it), so 300 s too.
"""
from __future__ import annotations

from datetime import datetime

from _common import pct

CADENCE_S = {"kill_to_restart": 300.0, "fatal_to_fresh": 300.0, "usage_reset_to_continue": 300.0,
             "claim_push_to_ping": 30.0}
PHASES = 1000


def replay(trials: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, rows in trials.items():
        period = CADENCE_S[kind]
        lat: list[float] = []
        ccci: list[float] = []
        for r in rows:
            if r.get("latency_s") is None or not r.get("event_at"):
                continue
            t = datetime.fromisoformat(r["event_at"]).timestamp()
            ccci.append(r["latency_s"])
            for k in range(PHASES):
                phase = period * k / PHASES
                wait = (phase - t) % period  # time from the event to the next poll
                lat.append(wait + r["latency_s"])
        if not lat:
            out[kind] = None
            continue
        o50, o95, c50, c95 = pct(lat, 50), pct(lat, 95), pct(ccci, 50), pct(ccci, 95)
        out[kind] = {
            "cadence_s": period, "events": len(ccci), "replays": len(lat),
            "old_p50": round(o50, 2), "old_p95": round(o95, 2),
            "ccci_p50": round(c50, 3), "ccci_p95": round(c95, 3),
            "ratio_p50": round(o50 / c50, 1) if c50 and c50 > 0 else None,
            "ratio_p95": round(o95 / c95, 1) if c95 and c95 > 0 else None,
        }
    return out
