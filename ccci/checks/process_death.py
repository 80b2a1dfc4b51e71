"""Process death: the agent's tmux session is gone, its pane is dead, or its process
is not alive. Detected directly each tick (tmux ``pane_dead`` + psutil), not from a log's
mtime, which freezes when a process dies (the fleet ccci replaces needed 15 min).

Remedy: a restart that resumes the conversation where the backend can; a fresh start
when the dead pane says the conversation cannot be resumed (a ``resume_failed`` pattern
group, e.g. Claude Code's "No conversation found with session ID: <id>").

Essential: cannot be disabled with ``CCCI_DISABLE_PLUGINS``.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import Finding

CHECK = "process_death"


@hookimpl
def ccci_check_agent(agent, pane, process, snapshot):
    if snapshot.facts.get("external", {}).get(agent.name):
        return None  # a hand-launched instance runs this agent's role (ccci.external)
    if pane is None:
        return Finding(CHECK, agent.name, "tmux session is gone", evidence=f"no session {agent.session}", immediate=True,
                       data={"mode": "restart"})
    if pane.dead:
        # tmux can report the pane dead before it has reaped the process: neither known yet
        how = (f"signal {pane.dead_signal}" if pane.dead_signal else
               f"exit status {pane.dead_status}" if pane.dead_status is not None else "exit status not known yet")
        return Finding(CHECK, agent.name, f"agent process exited ({how})", evidence=f"pane {pane.pane_id} dead: {how}",
                       immediate=True, data={"exit_status": pane.dead_status, "signal": pane.dead_signal})
    if not process.alive:
        return Finding(CHECK, agent.name, "agent process is not alive", evidence=f"pid {process.pid} gone or zombie",
                       immediate=True)
    return None


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
    return Remedy("restart", agent.name, finding)
