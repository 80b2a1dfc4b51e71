"""Usage limit: the plan's usage limit is reached. Never restart (it cannot help): wait
until the reset time the screen (or the StopFailure hook) gives (Claude Code 2.1.197:
``Claude AI usage limit reached|<unix seconds>``; a subscription: ``resets 8:34am (UTC)``),
then send ``continue`` and keep the checks paused :data:`VERIFY_S` while it is answered.
If the limit shows again after that (it did not lift), back off: ``api_error_backoff``
doubled for each wait of the same session that found the limit still there (at most
x32), or until a later reset time when one is given. Without a reset time, the same
back-off. A later reset that arrives while the wait runs (the CLI's exact record after
a clock time) moves the ``continue`` to it (``usage_limit_rescheduled``, :func:`later_reset`).
"""
from __future__ import annotations

from datetime import timedelta

from ccci.clock import iso
from ccci.checks import screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy
from ccci.stash import StashKey

CHECK = "usage_limit"
#: {"gen": process generation, "tries": waits of that session already done}
WAITS = StashKey[dict]("waits", persist=True)
RESET_SLACK_S = 5  # resume a little after the announced reset
VERIFY_S = 20.0  #: checks stay paused this long after 'continue', so the old screen is not acted on again


def _finding(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.USAGE_LIMIT,
                          f"usage limit reached; resets {iso(analysis.reset_at) or 'at an unknown time'}",
                          reset_at=iso(analysis.reset_at))


@hookimpl
def ccci_check_agent(agent, analysis):
    return _finding(agent, analysis)


@hookimpl
def ccci_observe(agents, now, services):
    """Move a running wait to a later reset learned after it began (:func:`later_reset`):
    here, not in the check, because the agent's checks are held during the wait."""
    for name, rt in agents.items():
        if rt.analysis.state == AgentState.USAGE_LIMIT and rt.analysis.reset_at is not None:
            later_reset(rt, now, services.stash(name), services)


def later_reset(agent, now, stash, services) -> None:
    """The CLI's structured record of a limit's reset (Claude Code's transcript
    ``resetsAt``) can arrive after the wait was chosen from a clock time ('resets 1:58am',
    to the minute): the wait's ``continue`` is scheduled again at the later reset
    (+ :data:`RESET_SLACK_S`; a new one replaces the old one per agent and action, kept in
    the state store), the hold extended, and one ``usage_limit_rescheduled`` event says so.
    Never earlier: a reset read less exactly does not pull a wait forward; nothing once
    the ``continue`` went out."""
    from ccci.clock import parse_utc

    analysis = agent.analysis
    waits = stash.get(WAITS) or {}
    if analysis.reset_at is None or waits.get("gen") != agent.generation or not waits.get("until"):
        return
    finding = _finding(agent, analysis)
    if finding is None:
        return
    planned = parse_utc(waits["until"])
    new_at = analysis.reset_at + timedelta(seconds=RESET_SLACK_S)
    if planned <= now or new_at <= planned:
        return  # the continue went out already, or the reset is not later
    services.schedule(Remedy("send", agent.name, finding, text="continue", not_before=new_at, data={"now": True}))
    services.hold(agent.name, (new_at - now).total_seconds() + VERIFY_S)
    stash[WAITS] = {**waits, "until": iso(new_at)}
    services.emit("usage_limit_rescheduled", f"the reset is {iso(analysis.reset_at)} ({finding.data.get('rule')}): "
                  f"'continue' moved from {iso(planned)} to {iso(new_at)}", agent=agent.name,
                  reset_at=iso(analysis.reset_at), was=iso(planned), at=iso(new_at), rule=finding.data.get("rule"))


@hookimpl
def ccci_choose_remedy(finding, agent, settings, now, stash):
    if finding.check != CHECK or agent is None:
        return None
    from ccci.clock import parse_utc

    reset = finding.data.get("reset_at")
    waits = stash.get(WAITS) or {}
    tries = waits.get("tries", 0) if waits.get("gen") == agent.generation else 0  # waits of this session
    backoff = timedelta(seconds=float(settings["api_error_backoff"]) * 2 ** min(tries, 5))
    at = parse_utc(reset) + timedelta(seconds=RESET_SLACK_S) if reset else now + backoff
    if at <= now:
        # the reset is past: first time, continue now; the limit still there after a
        # continue means it did not lift: back off
        at = now + (backoff if tries else timedelta(seconds=RESET_SLACK_S))
    # "until": when the continue goes out (a later exact reset moves it: _later_reset)
    stash[WAITS] = {"gen": agent.generation, "tries": tries + 1, "until": iso(at)}
    return Remedy("wait", agent.name, finding, not_before=at,
                  data={"then": "send", "text": "continue", "verify_s": VERIFY_S, "wait_no": tries + 1})
