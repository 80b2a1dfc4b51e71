"""Message remedies.

* ``send``: type ``remedy.text`` into the agent. With ``data["now"]`` (nudges,
  ``/compact``) it is delivered at once and not persisted (a stale nudge must not
  reach a restarted agent); otherwise it is queued and delivered when the agent is idle.
* ``ping``: the handoff remedy: queue every ping of the finding with a per-commit dedup
  key, advance the git baseline and log ``ping_queued``, in one SQLite transaction
  (exactly once, even if the watcher is killed right after).

A backend whose CLI exits at every turn end (``exits_at_turn_end``, e.g. opencode) has
no input box: a ``send`` to it while its process has exited (the follow-up of a wait
after an API error or a usage limit) resumes it with the text as the prompt: a resume
after a failure, within ``max_resumes``; while a turn runs, the text is queued and
becomes the prompt of the resume at the turn's end. A stall nudge (``data["nudge"]``) is not queued there: at the
turn's end the stall no longer applies, and a restart for the stall brings its own prompt,
so a queued nudge could only ever arrive stale (issue 13: ``ccci start`` after an
escalation gave the old nudge as the prompt); it is dropped with a ``nudge_dropped``
event and counted, so the stall check's next step (a restart) follows.
"""
from __future__ import annotations

from ccci.faultpoint import fault_point
from ccci.gitwatch import BASELINE_KEY
from ccci.hookspecs import hookimpl
from ccci.model import Remedy, RemedyResult


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action == "send" and remedy.agent:
        return _send(remedy, services)
    if remedy.action == "ping":
        return _ping(remedy, services)
    return None


def _send(remedy, services) -> RemedyResult:
    name = remedy.agent
    agent = services.agent(name)
    if remedy.data.get("nudge"):
        services.count_nudge(name)
    if agent.backend.exits_at_turn_end:
        pane = services.pane(name)
        if pane is None or pane.dead:
            # the follow-up of a wait after an error (API error, usage limit): a resume
            # after a failure, so max_resumes counts it (a clean turn end is resumed by
            # the process-death check, with queued messages as the prompt)
            cap = int(services.config.settings_for(name)["max_resumes"])
            if agent.resumes >= cap:
                why = f"max_resumes ({cap}) reached after failures; not resuming to send"
                services.escalate(name, why)
                return RemedyResult(False, why, pending=False)
            return services.launch(name, "resume", f"{remedy.reason.check}: send", prompt=remedy.text)
        if remedy.data.get("nudge"):
            services.emit("nudge_dropped", "stall nudge not queued: the CLI has no input box while a turn runs, "
                          "and a queued nudge would be stale at the turn's end", agent=name, check=remedy.reason.check)
            return RemedyResult(True, "nudge dropped (no input box while a turn runs)", pending=False)
        mid = services.queue_message(name, remedy.text)
        return RemedyResult(True, f"queued message {mid} for the next turn", pending=False)
    if not remedy.data.get("now"):
        mid = services.queue_message(name, remedy.text)
        return RemedyResult(True, f"queued message {mid}", pending=False)
    if not agent.pane_id:
        return RemedyResult(False, "no pane", pending=False)
    res = services.deliver_now(name, remedy.text)
    return RemedyResult(res.delivered, f"{'sent' if res.delivered else 'NOT delivered'} {remedy.text[:40]!r}: {res.detail}",
                        pending=False)


def _ping(remedy, services) -> RemedyResult:
    data = remedy.reason.data
    branch = services.config.git.branch
    queued = []
    with services.state.transaction():
        for p in data.get("pings", []):
            mid = services.queue_message(p["agent"], p["text"], dedup_key=p["key"])
            if mid is not None:
                queued.append(p)
        services.state.put(BASELINE_KEY.format(branch=branch), data["head"])
        # logged in the same transaction: a watcher killed right after it leaves no
        # queued ping without its event
        for p in queued:
            services.emit("ping_queued", f"{p['sha'][:10]} {p['subject'][:80]} -> {p['agent']}", agent=p["agent"],
                          sha=p["sha"], subject=p["subject"])
    fault_point("after_ping_queued")
    if data.get("first_sight"):
        return RemedyResult(True, f"baseline set to {data['head'][:10]} (no pings for existing commits)", pending=False)
    return RemedyResult(True, f"{len(queued)} ping(s) queued; baseline {data['head'][:10]}", pending=False)
