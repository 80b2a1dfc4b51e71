"""Needs input: a permission or question dialog nobody answers.

The backend reads a dialog as ``waiting_input`` (Claude Code's ``Do you want to
proceed?``, its ``PermissionRequest`` hook or ``permission_prompt`` notification, the
other CLIs' approval menus). ccci never answers a dialog: nothing is typed into it
(the stall check leaves ``waiting_input`` alone; :mod:`ccci.checks.api_error` and the
outbox send only to an agent ready for input). A dialog still open ``needs_input_wait``
seconds (default 300, as ``stall_idle``: the patience given a silent agent) after it was
first seen is a ``needs_input`` finding, and its remedy is one escalation per dialog (the
``escalate`` remedy with ``data={"give_up": False}``: a person is told, with the dialog's
text and the lines that answer it). The agent is not given up: nothing restarts it for
a dialog (a restart would throw the question away, and the automatic retry of a given-up
agent is a restart), and once a person answers, the agent is supervised as before. The
runner acts once per occurrence of the finding (:class:`ccci.occurrences.Occurrences`:
the evidence names the dialog), so a dialog left open for days is escalated once; a
new dialog after an answered one is escalated again.

The time is measured on the monotonic clock from the first tick that read the dialog,
per process generation; any other reading in between starts it again. The finding's
``data``: ``rule`` (the pattern that read the dialog), ``waited_s`` (seconds) and
``since`` (ISO UTC: when the dialog was first seen; it tells one dialog from the next).
"""
from __future__ import annotations

from datetime import timedelta

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Finding, Remedy
from ccci.stash import StashKey

CHECK = "needs_input"
#: ``(process generation, monotonic seconds)``: when the open dialog was first seen
SINCE = StashKey[tuple]("dialog_since")


@hookimpl
def ccci_check_agent(agent, pane, analysis, settings, now, mono, stash):
    if pane is None or pane.dead or analysis.state != AgentState.WAITING_INPUT:
        stash.pop(SINCE, None)
        return None
    since = stash.get(SINCE)
    if since is None or since[0] != agent.generation:
        since = (agent.generation, mono)
        stash[SINCE] = since
    waited = mono - since[1]
    limit = float(settings["needs_input_wait"])
    if waited < limit:
        return None
    m = analysis.first(AgentState.WAITING_INPUT)
    # the evidence names the dialog, not the time: one occurrence per dialog
    return Finding(CHECK, agent.name, f"a dialog has waited {waited:.0f}s for an answer (needs_input_wait {limit:.0f}s)",
                   evidence=m.line if m else "waiting_input", data={"rule": m.rule if m else "", "waited_s": round(waited, 1),
                         "since": iso(now - timedelta(seconds=waited))},
                   immediate=True)


@hookimpl
def ccci_choose_remedy(finding, agent):
    if finding.check != CHECK or agent is None:
        return None
    return Remedy("escalate", agent.name, finding, data={"give_up": False})
