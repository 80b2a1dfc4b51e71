"""Guard rails: pure functions over an agent's record (or the fleet's) and the settings.

Nothing here touches tmux, the state store or the clock: each function takes the
numbers it needs and returns a decision, so every rule has its own unit test
(``tests/unit/test_guards.py``). Times are monotonic seconds; ``settings`` is the
thresholds dict of :meth:`ccci.config.FleetConfig.settings_for`.

* :func:`assess`: hysteresis (``failure_threshold`` consecutive ticks, ``immediate``
  findings at once, ``structured`` ones (the CLI's own report) on their first tick, ``startup_grace`` after a start, holds) and the backoff reset after
  ``backoff_reset`` seconds healthy.
* :func:`restart_decision`: restart intensity (``restart_intensity`` restarts per
  ``restart_period``), ``max_resumes`` (resumes after *failures*), exponential backoff
  (``backoff_initial`` doubling to ``backoff_max``; Kubernetes' CrashLoopBackOff caps at
  300 s too).
* :func:`turn_end_decision`: a backend that exits at every turn end is resumed after each
  clean turn end, not counted by ``max_resumes``; ``max_turns_per_hour`` catches a loop
  that ends turns without doing anything.
* :func:`breaker_update`: the fleet-wide breaker (``breaker_min_agents`` and
  ``breaker_fraction`` of the fleet failing within ``breaker_window``) pauses automatic
  action for ``breaker_cooldown``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ccci.model import Finding, Remedy


@dataclass
class Assessment:
    """What :func:`assess` decided for one agent this tick.

    Attributes:
        actionable: findings that passed hysteresis, in input order.
        failing: the new per-check ``(consecutive failing ticks, first failing mono)``.
        healthy_since_mono: since when nothing failed.
        backoff_s: the restart backoff after this tick (0 after ``backoff_reset`` healthy).
    """

    actionable: list[Finding]
    failing: dict[str, tuple[int, float]]
    healthy_since_mono: float
    backoff_s: float


def assess(findings: Iterable[Finding], *, failing: dict[str, tuple[int, float]], mono: float, started_mono: float,
           hold_until_mono: float, healthy_since_mono: float, backoff_s: float, settings: dict) -> Assessment:
    """Hysteresis for one agent's findings of one tick.

    A ``fail`` finding is actionable when it is ``immediate``; when it is ``structured``
    (the CLI reported it itself: a hook payload, a server API answer, which does not
    flicker as a half-drawn screen can), on its first tick, in the ``startup_grace``
    too; otherwise when its check failed ``failure_threshold`` ticks in a row outside
    the ``startup_grace`` after a start. While the agent is held (``mono <
    hold_until_mono``) only immediate findings count. ``info`` findings never act.
    """
    threshold = int(settings["failure_threshold"])
    in_grace = mono - started_mono < float(settings["startup_grace"])
    work = dict(failing)
    seen: set[str] = set()
    out: list[Finding] = []
    for f in findings:
        if f.severity == "info" or (mono < hold_until_mono and not f.immediate):
            continue
        seen.add(f.check)
        count, first = work.get(f.check, (0, mono))
        work[f.check] = (count + 1, first)
        if f.immediate or f.structured or (not in_grace and count + 1 >= threshold):
            out.append(f)
    new_failing = {k: v for k, v in work.items() if k in seen}
    if new_failing:
        healthy_since_mono = mono
    elif backoff_s and mono - healthy_since_mono >= float(settings["backoff_reset"]):
        backoff_s = 0.0
    return Assessment(out, new_failing, healthy_since_mono, backoff_s)


@dataclass
class RestartDecision:
    """What :func:`restart_decision` allows.

    Attributes:
        allowed: run the restart now.
        escalate: non-empty: a person is needed (why, one line); nothing restarts.
        deferred_s: seconds of backoff left (``allowed`` is ``False``).
        backoff_s, next_restart_mono: the bookkeeping after an allowed restart.
    """

    allowed: bool
    escalate: str = ""
    deferred_s: float = 0.0
    backoff_s: float = 0.0
    next_restart_mono: float = 0.0


TURN_WINDOW_S = 3600.0  #: s: the window of ``max_turns_per_hour``


def turn_end_decision(turn_marks: Iterable[float], *, mono: float, settings: dict) -> RestartDecision:
    """May a backend that exits at every turn end be resumed after a clean turn end?

    A clean turn end is the loop working, not a failure: ``max_resumes``, restart
    intensity and backoff do not apply (a healthy loop ending a turn every 3 min would
    otherwise be stopped after 20 turns, issue 13). One guard remains:
    ``max_turns_per_hour`` (default 240, one turn per 15 s sustained for an hour). A
    turn that does work takes tens of seconds; an empty one is quick (the real opencode
    1.18.33 against an instant scripted model: 60 turns in 187 s, 3.1 s per turn with
    ccci's resume, tests/e2e/opencode/test_opencode_days.py, so a loop that only says
    "Continue." runs ~1150 turns an hour); 240 leaves a loop of short real turns 4x room
    while catching an empty spin within about 15 min.

    :param turn_marks: monotonic seconds of the agent's earlier turn-end resumes (only
        those within the last :data:`TURN_WINDOW_S` count).
    :param mono: now, monotonic seconds.
    :param settings: thresholds; reads ``max_turns_per_hour`` (int >= 1).
    :returns: ``allowed`` or ``escalate`` (one line: why).
    """
    cap = int(settings["max_turns_per_hour"])
    recent = [t for t in turn_marks if mono - t < TURN_WINDOW_S]
    if len(recent) >= cap:
        return RestartDecision(False, escalate=(
            f"max_turns_per_hour ({cap}) reached: {len(recent)} turn ends in the last "
            f"{TURN_WINDOW_S / 60:.0f} min; the loop ends turns without doing anything; not resuming"))
    return RestartDecision(True)


def restart_decision(remedy: Remedy, *, restart_marks: Iterable[float], resumes: int, resuming: bool,
                     backoff_s: float, next_restart_mono: float, mono: float, settings: dict,
                     turn_marks: Iterable[float] = ()) -> RestartDecision:
    """May ``remedy`` (a restart action) run now?

    :param restart_marks: monotonic times of the agent's earlier restarts after failures.
    :param resumes: resumes of the current conversation after failures so far.
    :param resuming: the restart continues the conversation (counts toward ``max_resumes``).
    :param backoff_s: the current backoff; ``next_restart_mono``: no restart before then.
    :param turn_marks: monotonic times of earlier turn-end resumes (:func:`turn_end_decision`).

    A routine resume of a backend that exits at every turn end (``remedy.data["turn_end"]``)
    is no failure: intensity, backoff and ``max_resumes`` do not apply,
    :func:`turn_end_decision` does. ``max_resumes`` limits resumes after failures
    (deaths, stalls, errors) of one conversation.
    """
    if remedy.data.get("turn_end"):
        d = turn_end_decision(turn_marks, mono=mono, settings=settings)
        d.backoff_s, d.next_restart_mono = backoff_s, next_restart_mono
        return d
    cap = int(settings["max_resumes"])
    period = float(settings["restart_period"])
    recent = [t for t in restart_marks if mono - t <= period]
    if len(recent) >= int(settings["restart_intensity"]):
        return RestartDecision(False, escalate=(
            f"restart intensity exceeded: {len(recent)} restarts in {period:.0f}s "
            f"(last: {remedy.reason.check}: {remedy.reason.evidence[:120]})"))
    if resuming and resumes >= cap:
        return RestartDecision(False, escalate=f"max_resumes ({cap}) reached after failures; not resuming again")
    if mono < next_restart_mono:
        return RestartDecision(False, deferred_s=next_restart_mono - mono, backoff_s=backoff_s,
                               next_restart_mono=next_restart_mono)
    # the delay before the NEXT restart doubles with each restart: backoff_initial after
    # the 1st, twice that after the 2nd, ... up to backoff_max (reset by assess())
    new_backoff = min(float(settings["backoff_max"]), backoff_s * 2 if backoff_s else float(settings["backoff_initial"]))
    return RestartDecision(True, backoff_s=new_backoff, next_restart_mono=mono + new_backoff)


@dataclass
class BreakerState:
    """The fleet breaker's memory.

    Attributes:
        open_until: monotonic time until which automatic action is paused.
        outage: the agents whose failures opened it (they get one round of remedies
            after the cooldown before their failures count again).
        marks: ``(mono, agent)`` failures within the window.
    """

    open_until: float = 0.0
    outage: set[str] = field(default_factory=set)
    marks: list[tuple[float, str]] = field(default_factory=list)


def breaker_update(state: BreakerState, failing_agents: Iterable[str], *, mono: float, fleet_size: int,
                   settings: dict) -> tuple[BreakerState, set[str]]:
    """Count this tick's failing agents.

    :param failing_agents: agents with an actionable failure this tick (routine turn
        ends excluded by the caller).
    :returns: ``(new state, agents)``: ``agents`` is non-empty when the breaker opened
        this tick (the caller reports it and escalates).
    """
    if mono < state.open_until:
        return state, set()  # open: failures now belong to the outage that opened it
    outage = state.outage
    window = float(settings["breaker_window"])
    marks = [*state.marks, *((mono, a) for a in failing_agents if a not in outage)]
    marks = [(t, a) for t, a in marks if mono - t <= window]
    failing = {a for _, a in marks}
    need = max(int(settings["breaker_min_agents"]), int(fleet_size * float(settings["breaker_fraction"]) + 0.999))
    if len(failing) >= need:
        return BreakerState(open_until=mono + float(settings["breaker_cooldown"]), outage=failing, marks=[]), failing
    return BreakerState(open_until=state.open_until, outage=set(), marks=marks), set()
