"""Stall: the agent makes no progress and has not declared a wait.

* With a declared wait (the turn ended with ``WAITING-UNTIL: <ISO-8601 UTC>``): act only
  when that time is past by more than ``stall_grace`` (default 180 s: a healthy loop's
  self-wake was seen 37 s late). The deadline is tracked on both clocks (wall and
  monotonic from when it was first seen); it counts as passed only when both agree, so a
  wall-clock jump forward or back triggers nothing.
* Without one: no screen change for ``stall_idle`` seconds (default 300). While the
  agent is busy any change counts (a ticking timer is life; a frozen screen is a wedged
  process); while idle only a real change counts (timers normalised away).

Remedy: a nudge message (``nudges_before_restart`` times), then a restart that resumes
the conversation. Each nudge gets its own wait: the restart (or the next nudge) comes
``stall_idle`` seconds after it at the earliest, also when the nudge changes nothing on
screen (a CLI that exits at turn end queues it for its next turn). The finding's evidence
names when the quiet began (or the missed deadline), not how long it has lasted, so one
stall is one occurrence (:meth:`ccci.model.Finding.fingerprint`) until it ends.
"""
from __future__ import annotations

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Finding, Remedy
from ccci.stash import StashKey

CHECK = "stall"
QUIET_STATES = (AgentState.IDLE, AgentState.UNKNOWN, AgentState.UNSENT_INPUT)
OTHER_CHECKS_STATES = (
    AgentState.FATAL_ERROR, AgentState.CONTEXT_LIMIT, AgentState.USAGE_LIMIT, AgentState.API_ERROR,
    AgentState.WAITING_INPUT, AgentState.EXITED,
)

#: (declared deadline, wall time first seen, mono first seen) of the agent's newest wait
SEEN = StashKey[tuple]("declared_wait")


@hookimpl
def ccci_check_agent(agent, pane, analysis, settings, now, mono, stash):
    if pane is None or pane.dead or analysis.state in OTHER_CHECKS_STATES:
        return None  # not running: process death's business
    grace = float(settings["stall_grace"])
    idle_limit = float(settings["stall_idle"])
    deadline = analysis.waiting_until
    if deadline is not None and analysis.state in QUIET_STATES:
        prev = stash.get(SEEN)
        if prev is None or prev[0] != deadline:
            prev = (deadline, now, mono)
            stash[SEEN] = prev
        _, seen_wall, seen_mono = prev
        by_wall = (now - deadline).total_seconds()
        by_mono = mono - (seen_mono + (deadline - seen_wall).total_seconds())
        overdue = min(by_wall, by_mono)
        if overdue > grace:
            return Finding(CHECK, agent.name,
                           f"declared WAITING-UNTIL {iso(deadline)} passed {overdue:.0f}s ago (grace {grace:.0f}s)",
                           evidence=f"WAITING-UNTIL: {iso(deadline)} passed",
                           data={"kind": "missed_wait", "overdue_s": round(overdue, 1)})
        return None
    if analysis.state in QUIET_STATES:
        since = max(agent.content_changed_mono, agent.started_mono)
    else:
        since = max(agent.screen_changed_mono, agent.started_mono)
    quiet = mono - since
    if quiet >= idle_limit:
        return Finding(CHECK, agent.name,
                       f"no progress for {quiet:.0f}s and no declared wait (stall_idle {idle_limit:.0f}s)",
                       evidence=f"state {analysis.state.value}; screen unchanged since monotonic {since:.1f}s",
                       data={"kind": "no_progress", "quiet_s": round(quiet, 1)})
    return None


@hookimpl
def ccci_choose_remedy(finding, agent, settings):
    if finding.check != CHECK or agent is None:
        return None
    if agent.nudges < int(settings["nudges_before_restart"]):
        # the nudge's own wait: acted on again (the restart) only stall_idle s later
        return Remedy("send", agent.name, finding, text=agent.backend.nudge_text, data={"now": True, "nudge": True},
                      retry_after_s=float(settings["stall_idle"]))
    return Remedy("restart", agent.name, finding)
