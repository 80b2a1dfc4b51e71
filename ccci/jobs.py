"""One-shot jobs (``role = "job"``), e.g. a weekly upgrade run.

* ``ccci job start NAME [ARGS...]`` is use-or-create: a job that is busy is left alone;
  one that finished, sits idle, is wedged (fatal error, stall) or is gone is cleared and
  started fresh. ``ccci job fresh NAME [ARGS...]`` always starts fresh. ``ARGS`` are
  appended to the job's prompt.
* Both ask the watcher (the fleet's one writer) through the state store; the watcher
  carries the request out on its next tick (a watcher is started in the background when
  none runs).
* A job is *active* from its start until its turn ends: then it stays idle and viewable
  in its pane, and nothing (stall, nudge, restart) touches it. A job whose process dies
  while active is resumed (backends that exit at every turn end, like ``opencode run``,
  need this), at most ``max_resumes`` times.
* ``schedule = "0 3 * * 1"`` on a job agent (cron, UTC) makes the watcher run
  ``job start`` when it is due (croniter); the last run is persisted, so a restarted
  watcher does not run a missed slot twice.
"""
from __future__ import annotations

import json
from datetime import datetime

from ccci.clock import iso, parse_utc
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Finding, Remedy, RemedyResult, Role

REQUEST_KEY = "job.{name}.request"
ACTIVE_KEY = "job.{name}.active"
LAST_RUN_KEY = "job.{name}.last_run"
RESULT_KEY = "job.{name}.result"


def is_active(store, name: str) -> bool:
    """True while the job runs (from its start until its turn ended)."""
    return store.get(ACTIVE_KEY.format(name=name)) == "1"


def request(store, name: str, mode: str, args: list[str]) -> None:
    """Ask the watcher to start job ``name`` (``mode``: ``start`` = use-or-create,
    ``fresh`` = always restart) with ``args`` appended to its prompt."""
    store.db.execute("DELETE FROM kv WHERE key=?", (RESULT_KEY.format(name=name),))
    store.put(REQUEST_KEY.format(name=name), json.dumps({"mode": mode, "args": list(args)}))


def _due(spec, store, now: datetime) -> bool:
    from croniter import croniter

    last = store.get(LAST_RUN_KEY.format(name=spec.name))
    if last is None:
        # first sight of the schedule: start counting from now (never a burst of old slots)
        store.put(LAST_RUN_KEY.format(name=spec.name), iso(now))
        return False
    nxt = croniter(spec.schedule, parse_utc(last)).get_next(datetime)
    return nxt <= now


@hookimpl
def ccci_check_fleet(config, state, now):
    out = []
    for spec in config.agents:
        if spec.role != Role.JOB:
            continue
        raw = state.get(REQUEST_KEY.format(name=spec.name))
        if raw:
            req = json.loads(raw)
            out.append(Finding("job_request", spec.name, f"job {req['mode']} requested", evidence=raw, immediate=True,
                               data=req))
        elif spec.schedule and _due(spec, state, now):
            out.append(Finding("job_request", spec.name, f"schedule {spec.schedule!r} is due", evidence=spec.schedule,
                               immediate=True, data={"mode": "start", "args": [], "scheduled": True}))
    return out


@hookimpl
def ccci_check_agent(agent, spec, analysis, snapshot):
    if spec.role != Role.JOB:
        return None
    # active (the runner skips inactive jobs): its turn ended -> the job is finished
    if analysis.state == AgentState.IDLE and agent.pending_since_mono is None:
        if snapshot.mono - agent.started_mono >= 2.0 and agent.job_was_busy:
            return Finding("job_finished", agent.name, "the job's turn ended; it stays idle and viewable", immediate=True)
    if analysis.state == AgentState.BUSY:
        agent.job_was_busy = True
    return None


@hookimpl
def ccci_choose_remedy(finding):
    if finding.check == "job_request":
        return Remedy("job_start", finding.agent, finding, data=finding.data)
    if finding.check == "job_finished":
        return Remedy("job_done", finding.agent, finding)
    return None


@hookimpl
def ccci_run_remedy(remedy, supervisor):
    if remedy.action not in ("job_start", "job_done") or not remedy.agent:
        return None
    store, name = supervisor.store, remedy.agent
    rt = supervisor.agents[name]
    if remedy.action == "job_done":
        store.put(ACTIVE_KEY.format(name=name), "0")
        supervisor.emit("job_finished", "job finished; left idle and viewable", agent=name)
        return RemedyResult(True, "job finished", pending=False)
    data = remedy.data
    store.db.execute("DELETE FROM kv WHERE key=?", (REQUEST_KEY.format(name=name),))
    if data.get("scheduled"):
        store.put(LAST_RUN_KEY.format(name=name), iso(supervisor.clock.now()))
    pane = (supervisor.last_snapshot.panes.get(name) if supervisor.last_snapshot else None)
    alive = pane is not None and not pane.dead
    if data.get("mode") == "start" and alive and is_active(store, name) and rt.analysis.state == AgentState.BUSY:
        store.put(RESULT_KEY.format(name=name), "busy: left alone")
        return RemedyResult(True, "job is busy: left alone", pending=False)
    prompt = supervisor.initial_prompt(name)
    if data.get("args"):
        prompt = f"{prompt}\n\n{' '.join(data['args'])}"
    rt.job_was_busy = False
    store.put(ACTIVE_KEY.format(name=name), "1")
    res = supervisor.launch_agent(name, "fresh", reason=f"job {data.get('mode', 'start')}", prompt=prompt)
    store.put(RESULT_KEY.format(name=name), "started fresh" if res.ok else f"failed: {res.detail}")
    if not res.ok:
        store.put(ACTIVE_KEY.format(name=name), "0")
    return res
