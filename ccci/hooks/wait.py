"""The ``wait`` remedy: hold the agent's checks until ``remedy.not_before`` (UTC), then
run the follow-up (``data["then"]``, e.g. ``send`` ``continue``). Used for usage limits
(never restart: wait for the reset) and API errors (back off, then continue).
"""
from __future__ import annotations

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.model import Remedy, RemedyResult


@hookimpl
def ccci_run_remedy(remedy, supervisor):
    if remedy.action != "wait" or remedy.agent is None:
        return None
    rt = supervisor.agents[remedy.agent]
    now, mono = supervisor.clock.now(), supervisor.clock.monotonic()
    at = remedy.not_before or now
    rt.hold_until_mono = mono + max(0.0, (at - now).total_seconds())
    then = remedy.data.get("then")
    if then:
        supervisor.schedule(Remedy(then, rt.name, remedy.reason, text=remedy.data.get("text", ""),
                                   not_before=at, data={"now": True}))
    return RemedyResult(True, f"waiting until {iso(at)}, then {then or 'nothing'}", pending=False)
