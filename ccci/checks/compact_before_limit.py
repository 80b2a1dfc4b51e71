"""Compact before the wall: an idle agent whose context use is above ``compact_at`` (a
fraction of its model's window; ``[checks]`` or the agent's ``checks``, default 0.8,
0 = never) is sent the backend's compact command (``/compact``) before its next queued
message.

Why: the fleet ccci replaces told its loops to run ``/compact`` at about 80 % of the
window, because a builder wedged at the limit with garbled output that no check
recognised (issue 16). The context use is what the CLI itself recorded
(``snapshot.facts["context"]``, from :mod:`ccci.usage_watch`).

Once per crossing: after ``/compact`` was sent for a crossing, nothing more is sent until
the context use was seen below ``compact_at`` again (the compaction worked, or a fresh
session began); the crossing is kept in the plugin's stash (persisted, so a watcher
restart does not compact twice). The finding is ``immediate`` (the use is what the CLI
wrote down, not a screen flicker), so the command goes out in the tick that sees it,
before the outbox types a queued message that tick. A compaction that fails (the CLI
says "Not enough messages to compact") is not retried for that crossing.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import Finding, Remedy
from ccci.stash import StashKey

CHECK = "compact_before_limit"
#: the context-use record (``at``) for which /compact was sent, while use stays above compact_at
SENT_FOR = StashKey[str]("sent_for_crossing", persist=True)
FACT = "context"


@hookimpl
def ccci_check_agent(agent, analysis, backend, settings, snapshot, stash):
    threshold = float(settings.get("compact_at", 0.8) or 0)
    rec = (snapshot.facts.get(FACT) or {}).get(agent.name)
    if threshold <= 0 or not rec or rec.get("fraction") is None or not backend.compact_command:
        return None
    if rec["fraction"] < threshold:
        if stash.get(SENT_FOR) is not None:
            del stash[SENT_FOR]  # the crossing is over: the next one compacts again
        return None
    if stash.get(SENT_FOR) is not None or not backend.is_ready_for_input(analysis):
        return None
    pct = round(100 * rec["fraction"])
    return Finding(CHECK, agent.name, f"context {pct}% of the window (compact_at {threshold:g}); compacting while idle",
                   evidence=f"{rec['tokens']} of {rec['window']} tokens ({rec.get('model') or 'model unknown'})",
                   immediate=True, data={"tokens": rec["tokens"], "window": rec["window"],
                                         "fraction": rec["fraction"], "compact_at": threshold})


@hookimpl
def ccci_choose_remedy(finding, agent, stash):
    if finding.check != CHECK or agent is None:
        return None
    stash[SENT_FOR] = f"{finding.data.get('tokens')}/{finding.data.get('window')}"
    return Remedy("send", agent.name, finding, text=agent.backend.compact_command, data={"now": True})
