"""The ``escalate`` remedy: hand the problem to a person.

The agent is marked given up (persisted; ``ccci start AGENT`` clears it) and an
``escalation`` event is emitted; notifier plugins (``ccci_report_event``) carry it to
people. Used when restarts cannot help: restart intensity exceeded, ``max_resumes``
reached, the fleet breaker opened, or a failure a restart cannot fix.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import RemedyResult


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action != "escalate":
        return None
    if remedy.agent:
        services.give_up(remedy.agent)
    services.emit("escalation", remedy.reason.summary, agent=remedy.agent, check=remedy.reason.check,
                  evidence=remedy.reason.evidence)
    return RemedyResult(True, "handed to a person" + (f"; {remedy.agent} given up" if remedy.agent else ""), pending=False)
