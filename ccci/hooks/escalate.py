"""The ``escalate`` remedy: hand the problem to a person.

The agent is marked given up (persisted; ``ccci start AGENT`` clears it) and its
escalation is recorded (:func:`ccci.remedies.note_escalation`): it is retried
automatically, capped and backed off (docs/reliability.md#escalation-and-automatic-retries).
An ``escalation`` event (notifier plugins, ``ccci_report_event``, carry it to people) is
emitted at the first escalation and when the automatic retries are used up; an
escalation after an automatic retry that still has retries left is an
``escalation_repeated`` event. Used when restarts cannot help: restart intensity
exceeded, ``max_resumes`` or ``max_turns_per_hour`` reached, the fleet breaker opened, or
a failure a restart cannot fix. ``remedy.not_before`` (UTC), when set, is the earliest
automatic retry (e.g. a usage limit's reset).

``remedy.data["give_up"] = False`` (the ``needs_input`` check: a dialog waits for a
person): the ``escalation`` event only, with ``given_up: false``; the agent is neither
given up nor retried (an automatic retry is a restart), and stays supervised.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import RemedyResult
from ccci.remedies import note_escalation


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action != "escalate":
        return None
    kind, detail = "escalation", ""
    if remedy.agent and remedy.data.get("give_up", True) is False:
        services.emit(kind, remedy.reason.summary + "; the agent keeps running (nothing restarts it)", agent=remedy.agent,
                      check=remedy.reason.check, evidence=remedy.reason.evidence, given_up=False,
                      since=remedy.reason.data.get("since"))
        return RemedyResult(True, f"handed to a person; {remedy.agent} keeps running", pending=False)
    if remedy.agent:
        services.give_up(remedy.agent)
        rec = note_escalation(services.state, remedy.agent, remedy.reason.summary, services.now(),
                              services.config.settings_for(remedy.agent), not_before=remedy.not_before)
        if rec["final"]:
            detail = (f"; automatic retries used up ({rec['retries']}): stays given up until "
                      f"'ccci start {remedy.agent}'")
        else:
            detail = f"; automatic retry {rec['retries'] + 1} at {rec['retry_at']}"
        if not rec["page"]:
            kind = "escalation_repeated"
        services.emit(kind, remedy.reason.summary + detail, agent=remedy.agent, check=remedy.reason.check,
                      evidence=remedy.reason.evidence, retry_at=rec["retry_at"], retries=rec["retries"],
                      final=rec["final"])
    else:
        services.emit(kind, remedy.reason.summary, agent=remedy.agent, check=remedy.reason.check,
                      evidence=remedy.reason.evidence)
    return RemedyResult(True, "handed to a person" + (f"; {remedy.agent} given up{detail}" if remedy.agent else ""),
                        pending=False)
