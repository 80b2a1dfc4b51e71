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
  need this): after a failure at most ``max_resumes`` times, after a clean turn end
  within ``max_turns_per_hour``.
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
from ccci.stash import StashKey

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
    store.delete(RESULT_KEY.format(name=name))
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


BUSY_SEEN = StashKey[bool]("busy_seen")  #: the job's run was seen busy (so idle now means finished)


@hookimpl
def ccci_agent_active(spec, state):
    if spec.role == Role.JOB and not is_active(state, spec.name):
        return False  # a job starts only through 'ccci job start' or its schedule; finished, it stays idle
    return None


@hookimpl
def ccci_check_agent(agent, spec, analysis, snapshot, stash):
    if spec.role != Role.JOB:
        return None
    # active (the runner skips inactive jobs): its turn ended -> the job is finished
    if analysis.state == AgentState.IDLE and agent.pending_since_mono is None:
        if snapshot.mono - agent.started_mono >= 2.0 and stash.get(BUSY_SEEN):
            return Finding("job_finished", agent.name, "the job's turn ended; it stays idle and viewable", immediate=True)
    if analysis.state == AgentState.BUSY:
        stash[BUSY_SEEN] = True
    return None


@hookimpl
def ccci_choose_remedy(finding):
    if finding.check == "job_request":
        return Remedy("job_start", finding.agent, finding, data=finding.data)
    if finding.check == "job_finished":
        return Remedy("job_done", finding.agent, finding)
    return None


@hookimpl
def ccci_run_remedy(remedy, services, stash):
    if remedy.action not in ("job_start", "job_done") or not remedy.agent:
        return None
    state, name = services.state, remedy.agent
    if remedy.action == "job_done":
        state.put(ACTIVE_KEY.format(name=name), "0")
        services.emit("job_finished", "job finished; left idle and viewable", agent=name)
        return RemedyResult(True, "job finished", pending=False)
    data = remedy.data
    state.delete(REQUEST_KEY.format(name=name))
    if data.get("scheduled"):
        state.put(LAST_RUN_KEY.format(name=name), iso(services.now()))
    pane = services.pane(name)
    alive = pane is not None and not pane.dead
    if (data.get("mode") == "start" and alive and is_active(state, name)
            and services.agent(name).analysis.state == AgentState.BUSY):
        state.put(RESULT_KEY.format(name=name), "busy: left alone")
        return RemedyResult(True, "job is busy: left alone", pending=False)
    prompt = services.initial_prompt(name)
    if data.get("args"):
        prompt = f"{prompt}\n\n{' '.join(data['args'])}"
    stash[BUSY_SEEN] = False
    state.put(ACTIVE_KEY.format(name=name), "1")
    res = services.launch(name, "fresh", reason=f"job {data.get('mode', 'start')}", prompt=prompt)
    state.put(RESULT_KEY.format(name=name), "started fresh" if res.ok else f"failed: {res.detail}")
    if not res.ok:
        state.put(ACTIVE_KEY.format(name=name), "0")
    return res
