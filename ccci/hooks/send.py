"""Message remedies.

* ``send``: type ``remedy.text`` into the agent. With ``data["now"]`` (nudges,
  ``/compact``) it is delivered at once and not persisted (a stale nudge must not
  reach a restarted agent); otherwise it is queued and delivered when the agent is idle.
* ``ping``: the handoff remedy: queue every ping of the finding with a per-commit dedup
  key, advance the git baseline and log ``ping_queued``, in one SQLite transaction
  (exactly once, even if the watcher is killed right after).

A backend whose CLI exits at every turn end (``exits_at_turn_end``, e.g. opencode) has
no input box: a ``send`` to it while its process has exited resumes it with the text as
the prompt; while a turn runs, the text is queued and becomes the prompt of the resume
at the turn's end.
"""
from __future__ import annotations

from ccci.faultpoint import fault_point
from ccci.gitwatch import BASELINE_KEY
from ccci.hookspecs import hookimpl
from ccci.model import Remedy, RemedyResult


@hookimpl
def ccci_run_remedy(remedy, supervisor):
    if remedy.action == "send" and remedy.agent:
        return _send(remedy, supervisor)
    if remedy.action == "ping":
        return _ping(remedy, supervisor)
    return None


def _send(remedy, supervisor) -> RemedyResult:
    from ccci.send import deliver

    rt = supervisor.agents[remedy.agent]
    if remedy.data.get("nudge"):
        rt.nudges += 1
    if rt.backend.exits_at_turn_end:
        pane = supervisor.tmux.list_panes().get(rt.session)
        if pane is None or pane.dead:
            cap = int(supervisor.config.settings_for(rt.name)["max_resumes"])
            if rt.resumes >= cap:
                supervisor.run_remedy(Remedy("escalate", rt.name, remedy.reason))
                return RemedyResult(False, f"max_resumes ({cap}) reached; not resuming to send", pending=False)
            return supervisor.launch_agent(rt.name, "resume", f"{remedy.reason.check}: send", prompt=remedy.text,
                                           turn_end=True)
        mid = supervisor.queue_message(rt.name, remedy.text)
        return RemedyResult(True, f"queued message {mid} for the next turn", pending=False)
    if not remedy.data.get("now"):
        mid = supervisor.queue_message(rt.name, remedy.text)
        return RemedyResult(True, f"queued message {mid}", pending=False)
    if not rt.pane_id:
        return RemedyResult(False, "no pane", pending=False)
    res = deliver(supervisor.tmux, rt.pane_id, rt.backend, remedy.text, supervisor.config.settings_for(rt.name),
                  supervisor.clock, tmpdir=supervisor.config.state_dir / "tmp")
    rt.last_change_key = None
    return RemedyResult(res.delivered, f"{'sent' if res.delivered else 'NOT delivered'} {remedy.text[:40]!r}: {res.detail}",
                        pending=False)


def _ping(remedy, supervisor) -> RemedyResult:
    data = remedy.reason.data
    branch = supervisor.config.git.branch
    queued = []
    with supervisor.store.transaction():
        for p in data.get("pings", []):
            mid = supervisor.store.queue_message(p["agent"], p["text"], supervisor.clock.now(), dedup_key=p["key"])
            if mid is not None:
                queued.append(p)
        supervisor.store.put(BASELINE_KEY.format(branch=branch), data["head"])
        # logged in the same transaction: a watcher killed right after it leaves no
        # queued ping without its event
        for p in queued:
            supervisor.emit("ping_queued", f"{p['sha'][:10]} {p['subject'][:80]} -> {p['agent']}", agent=p["agent"],
                            sha=p["sha"], subject=p["subject"])
    fault_point("after_ping_queued")
    if data.get("first_sight"):
        return RemedyResult(True, f"baseline set to {data['head'][:10]} (no pings for existing commits)", pending=False)
    return RemedyResult(True, f"{len(queued)} ping(s) queued; baseline {data['head'][:10]}", pending=False)
