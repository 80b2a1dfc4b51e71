"""The ``wait`` remedy: hold the agent's checks until ``remedy.not_before`` (UTC), then
run the follow-up (``data["then"]``, e.g. ``send`` ``continue``). Used for usage limits
(never restart: wait for the reset) and API errors (back off, then continue).

``data["verify_s"]`` (seconds, default 0) keeps the checks paused that long after the
follow-up, so the screen that caused the wait (still on screen when the follow-up is
typed) is not acted on again before the agent answered: if the condition is still there
afterwards, the check fires again and a new wait (with its back-off) starts: the result
asks the runner to act on the same occurrence again once the wait and the verification
are over (``retry_after_s``).
"""
from __future__ import annotations

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.model import Remedy, RemedyResult


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action != "wait" or remedy.agent is None:
        return None
    now = services.now()
    at = remedy.not_before or now
    verify = float(remedy.data.get("verify_s", 0.0))
    held = max(0.0, (at - now).total_seconds()) + verify
    services.hold(remedy.agent, held)
    then = remedy.data.get("then")
    if then:
        services.schedule(Remedy(then, remedy.agent, remedy.reason, text=remedy.data.get("text", ""),
                                 not_before=at, data={"now": True}))
    return RemedyResult(True, f"waiting until {iso(at)}, then {then or 'nothing'}", pending=False,
                        retry_after_s=held)
