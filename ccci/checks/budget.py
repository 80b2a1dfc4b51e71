"""Daily budgets: an ordinary builtin plugin (``budget``), off unless ``ccci.toml`` has
a ``[budget]`` table (:func:`ccci.cost.validate_budget`)::

    [budget]
    daily_usd = 50.0        # the whole fleet, USD per UTC day
    agent_daily_usd = 20.0  # every agent
    [budget.agents]
    builder = 30.0          # this agent instead

Cost is the usage the CLIs recorded (``services.usage_rows``) for the current UTC day,
priced by :func:`ccci.cost.price_table` (unpriced models cost nothing here; ``ccci
report`` lists them). At most every :data:`EVERY_S` seconds ``ccci_check_fleet``
compares each agent's spend with its limit and the fleet's with ``daily_usd``; an agent
over either limit is a ``budget`` finding, once per agent and UTC day.

What happens then (never a kill in the middle of a turn):

* the remedy ``budget_hold`` runs the ordinary ``escalate`` remedy with ``not_before``
  the next UTC midnight: an ``escalation`` event (``check`` ``budget``) pages a person,
  the agent is given up (its process is left alone: a running turn finishes, nothing is
  typed into it, it is not restarted or resumed), and its automatic retry is planned at
  the next UTC day at the earliest;
* ``ccci_before_launch`` refuses any (re)start of an agent over budget for the day (a
  restart remedy of another plugin, a job's schedule, an automatic retry), with the
  reason ``daily budget exceeded``, unless a person said so: ``ccci start AGENT`` after
  the escalation (the agent is no longer given up on the day it was escalated) or
  ``ccci budget reset [AGENT]`` (:data:`OVERRIDE_KEY` set to the day);
* the first relaunch after the hold's day ended (the automatic retry) of an agent that
  is busy is refused too ("a turn is running"): the turn goes on and the agent is
  supervised again as before.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from ccci.cost import budget, price_table, utc_day
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Finding, Remedy, RemedyResult
from ccci.stash import StashKey

CHECK = "budget"
EVERY_S = 5.0  #: seconds between two looks at the usage table (one query; a spend is noticed within this)
#: UTC day (``YYYY-MM-DD``) on which this agent's budget was escalated (persisted)
ESCALATED = StashKey[str]("escalated_day", persist=True)
LAST_LOOK = StashKey[float]("last_look")  #: monotonic seconds of the last look (fleet stash)
#: kv key: the UTC day a person lifted ``agent``'s budget for (``ccci budget reset``)
OVERRIDE_KEY = "budget.override.{agent}"


def next_midnight(now: datetime) -> datetime:
    """The next UTC midnight after ``now``."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def spend(services, config, now: datetime) -> dict[str, float]:
    """``{agent: USD on the UTC day of now}`` for every agent (0 when nothing recorded)."""
    day = utc_day(now)
    table = price_table(config)
    out = {a: 0.0 for a in services.agents()}
    for r in services.usage_rows(since_day=day):
        if r["day"] == day:
            out[r["agent"]] = out.get(r["agent"], 0.0) + (table.cost(r) or 0.0)
    return out


def over_budget(services, config, agent: str, now: datetime) -> str | None:
    """Why ``agent`` may not spend more today (one line), or ``None``."""
    b = budget(config)
    if not b.enabled:
        return None
    costs = spend(services, config, now)
    day = utc_day(now)
    own = b.for_agent(agent)
    if own is not None and costs.get(agent, 0.0) >= own:
        return f"daily budget exceeded: {agent} spent ${costs.get(agent, 0.0):.2f} of ${own:.2f} on {day} (UTC)"
    total = sum(costs.values())
    if b.daily_usd is not None and total >= b.daily_usd:
        return f"daily budget exceeded: the fleet spent ${total:.2f} of ${b.daily_usd:.2f} on {day} (UTC)"
    return None


def lifted(services, agent: str, now: datetime) -> bool:
    """A person lifted the agent's budget for today: ``ccci budget reset``, or
    ``ccci start`` after today's escalation (the agent is no longer given up)."""
    day = utc_day(now)
    if services.state.get(OVERRIDE_KEY.format(agent=agent)) == day:
        return True
    return services.stash(agent).get(ESCALATED) == day and not services.agent(agent).given_up


@hookimpl
def ccci_check_fleet(config, now, mono, services):
    if not budget(config).enabled:
        return None
    fleet_stash = services.stash()
    last = fleet_stash.get(LAST_LOOK)
    if last is not None and mono - last < EVERY_S:
        return None
    fleet_stash[LAST_LOOK] = mono
    day = utc_day(now)
    out = []
    for agent in services.agents():
        if services.stash(agent).get(ESCALATED) == day or lifted(services, agent, now):
            continue
        why = over_budget(services, config, agent, now)
        if why:
            out.append(Finding(CHECK, agent, why, evidence=f"budget {day}", immediate=True, data={"day": day}))
    return out or None


@hookimpl
def ccci_choose_remedy(finding, agent):
    if finding.check != CHECK or agent is None:
        return None
    return Remedy("budget_hold", agent.name, finding)


@hookimpl
def ccci_run_remedy(remedy, services, now):
    if remedy.action != "budget_hold" or remedy.agent is None:
        return None
    services.stash(remedy.agent)[ESCALATED] = utc_day(now)
    services.run_remedy(Remedy("escalate", remedy.agent, remedy.reason, not_before=next_midnight(now)))
    return RemedyResult(True, f"{remedy.agent} held until the next UTC day or 'ccci budget reset' / 'ccci start'",
                        pending=False)


@hookimpl
def ccci_before_launch(agent, mode, config, services):
    if not budget(config).enabled:
        return None
    now = services.now()
    stash = services.stash(agent.name)
    held = stash.get(ESCALATED)
    if held is not None and held != utc_day(now):
        del stash[ESCALATED]  # the first launch after a hold's day ended: the automatic retry
        if agent.pid and getattr(agent.analysis, "state", None) == AgentState.BUSY:
            return "a turn is running: not interrupted after the budget hold ended"
    if lifted(services, agent.name, now):
        return None
    return over_budget(services, config, agent.name, now)
