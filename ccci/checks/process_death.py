"""Process death: the agent's tmux session is gone, its pane is dead, or its process
is not alive. Detected directly each tick (tmux ``pane_dead`` + psutil), not from a log's
mtime, which freezes when a process dies (the fleet ccci replaces needed 15 min).

Remedy: a restart that resumes the conversation where the backend can; a fresh start
when the dead pane says the conversation cannot be resumed (a ``resume_failed`` pattern
group, e.g. Claude Code's "No conversation found with session ID: <id>").

A backend that exits at every turn end (``Backend.exits_at_turn_end``, e.g. ``opencode
run``) ends with exit status 0 after each turn: that is a *turn end*, not a crash. It is
resumed promptly (the next message becomes the resume's prompt), without restart
intensity, backoff or ``max_resumes`` (which counts resumes after failures), within
``max_turns_per_hour`` (:func:`ccci.guards.turn_end_decision`). When the backend
published how the turn ended (``snapshot.facts["turn_outcome"][agent]``, an :class:`ccci.model.AgentState`; the
opencode backend reads it from its server) or the pane text shows an error, the turn
end is left to the check of that error (a fresh session for the fatal 400, a wait for a
usage limit...). While a ``wait`` remedy holds the agent, a turn end is not acted on
(the wait's follow-up resumes it). A turn that ended declaring ``WAITING-UNTIL: <UTC>``
(``snapshot.facts["turn_wait"]`` from the backend, else the pane's newest block) is
resumed at that time, or at once when a message for the agent is queued
(``snapshot.facts["pending_messages"]``): a loop waiting for a handoff is woken by the
ping, not by empty "Continue." turns. The declared deadline is persisted
(:data:`ccci.lifecycle.DECLARED_WAIT_KEY`, ISO-8601 UTC) so ``ccci status`` shows the
agent ``waiting`` and a new watcher honours the wait even before the backend or the
pane tell it again.

Essential (``CCCI_ESSENTIAL``): cannot be disabled, and for its findings another
plugin's remedy choice counts only when it is a restart or an escalation.
"""
from __future__ import annotations

from ccci.clock import iso, parse_utc
from ccci.hookspecs import hookimpl
from ccci.lifecycle import DECLARED_WAIT_KEY
from ccci.model import AgentState, Finding
from ccci.stash import StashKey

CCCI_ESSENTIAL = True
CHECK = "process_death"
EXIT_SETTLE_S = 2.0  #: s to wait for tmux's exit status of a backend that exits at turn end
#: (pid, monotonic seconds) when the agent's process was first seen gone
GONE_SINCE = StashKey[tuple]("gone_since")
#: screen states that say a turn ended in an error (their own checks decide the remedy)
ERROR_STATES = frozenset({AgentState.FATAL_ERROR, AgentState.CONTEXT_LIMIT, AgentState.USAGE_LIMIT,
                          AgentState.API_ERROR})


@hookimpl
def ccci_check_agent(agent, backend, pane, process, analysis, snapshot, now, mono, stash, services):
    if snapshot.facts.get("external", {}).get(agent.name):
        return None  # a hand-launched instance runs this agent's role (ccci.external)
    if pane is None:
        return Finding(CHECK, agent.name, "tmux session is gone", evidence=f"no session {agent.session}", immediate=True,
                       data={"mode": "restart"})
    outcome = snapshot.facts.get("turn_outcome", {}).get(agent.name)
    # tmux 3.3 sometimes reports a dead pane before its exit status (seen with opencode
    # 1.18.33 at turn ends: pane_dead=1, pane_dead_status empty); the backend's own word
    # that the turn ended (turn_outcome) then decides
    clean = pane.dead_status == 0 or (pane.dead_status is None and outcome is not None)
    if pane.dead and backend.exits_at_turn_end and not pane.dead_signal and clean:
        if outcome is not None and outcome != AgentState.IDLE:
            return None  # the turn ended in an error: that error's check acts
        if outcome is None and analysis.state in ERROR_STATES:
            return None  # no word from the CLI's API: the pane's error decides
        if mono < agent.hold_until_mono:
            return None  # a wait remedy resumes it when the wait is over
        wait = snapshot.facts.get("turn_wait", {}).get(agent.name) or analysis.waiting_until or _persisted_wait(
            services, agent.name)
        if wait is not None and wait > now and not snapshot.facts.get("pending_messages", {}).get(agent.name):
            _persist_wait(services, agent.name, wait)
            return None  # a declared wait: resumed at that time, or by the next message
        return Finding(CHECK, agent.name, "turn ended (the CLI exits at every turn end)",
                       evidence=f"pane {pane.pane_id} exited with status {pane.dead_status}", immediate=True,
                       data={"exit_status": 0, "turn_end": True})
    if pane.dead:
        # tmux can report the pane dead before it has reaped the process: neither known yet
        how = (f"signal {pane.dead_signal}" if pane.dead_signal else
               f"exit status {pane.dead_status}" if pane.dead_status is not None else "exit status not known yet")
        return Finding(CHECK, agent.name, f"agent process exited ({how})", evidence=f"pane {pane.pane_id} dead: {how}",
                       immediate=True, data={"exit_status": pane.dead_status, "signal": pane.dead_signal})
    if not process.alive:
        if backend.exits_at_turn_end:
            # at a turn end the process is gone (a zombie) a moment before tmux marks the
            # pane dead with its exit status (seen with opencode 1.18.33): give tmux up to
            # EXIT_SETTLE_S to tell a turn end from a crash
            gone = stash.get(GONE_SINCE)
            if gone is None or gone[0] != process.pid:
                gone = stash[GONE_SINCE] = (process.pid, mono)
            if mono - gone[1] < EXIT_SETTLE_S:
                return None
        return Finding(CHECK, agent.name, "agent process is not alive", evidence=f"pid {process.pid} gone or zombie",
                       immediate=True)
    return None


def _persisted_wait(services, name: str):
    raw = services.state.get(DECLARED_WAIT_KEY.format(agent=name)) if services is not None else None
    try:
        return parse_utc(raw) if raw else None
    except ValueError:
        return None


def _persist_wait(services, name: str, wait) -> None:
    key, value = DECLARED_WAIT_KEY.format(agent=name), iso(wait)
    if services is not None and services.state.get(key) != value:
        services.state.put(key, value)


@hookimpl(trylast=True)
def ccci_choose_remedy(finding, agent):
    if finding.check != CHECK or agent is None:
        return None
    from ccci.model import Remedy

    # the CLI said it cannot resume this conversation (a pattern rule with a
    # ``resume_failed`` group, e.g. Claude Code's "No conversation found with session
    # ID"): resuming again would fail the same way, so start fresh
    failed = [m for m in agent.analysis.matches if m.groups.get("resume_failed")]
    if failed:
        finding.data["resume_failed"] = failed[0].line
        return Remedy("fresh", agent.name, finding)
    # backends that exit at every turn end are resumed promptly; others are restarted
    # (continuing the conversation where the backend can)
    if finding.data.get("turn_end"):
        return Remedy("resume", agent.name, finding, data={"turn_end": True})
    return Remedy("restart", agent.name, finding)
