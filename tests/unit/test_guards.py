"""Guard rails as pure functions (ccci.guards): hysteresis, restart intensity, max_resumes,
backoff and the fleet breaker, each rule on its own numbers."""
from __future__ import annotations

from ccci import guards
from ccci.config import DEFAULT_CHECKS
from ccci.model import Finding, Remedy

S = {**DEFAULT_CHECKS, "failure_threshold": 2, "startup_grace": 10, "backoff_initial": 2, "backoff_max": 8,
     "backoff_reset": 60, "restart_intensity": 3, "restart_period": 100, "max_resumes": 4,
     "breaker_min_agents": 2, "breaker_fraction": 0.5, "breaker_window": 30, "breaker_cooldown": 60}


def f(check="stall", immediate=False, severity="fail"):
    return Finding(check, "a", "x", immediate=immediate, severity=severity)


def assess(findings, failing=None, mono=100.0, started=0.0, hold=0.0, healthy=0.0, backoff=0.0):
    return guards.assess(findings, failing=failing or {}, mono=mono, started_mono=started, hold_until_mono=hold,
                         healthy_since_mono=healthy, backoff_s=backoff, settings=S)


def test_a_finding_acts_after_failure_threshold_consecutive_ticks():
    a1 = assess([f()])
    assert a1.actionable == [] and a1.failing == {"stall": (1, 100.0)}
    a2 = assess([f()], failing=a1.failing, mono=101.0)
    assert [x.check for x in a2.actionable] == ["stall"] and a2.failing == {"stall": (2, 100.0)}
    a3 = assess([], failing=a2.failing, mono=102.0)
    assert a3.failing == {}  # one healthy tick clears the count


def test_immediate_findings_act_at_once_even_in_startup_grace_and_while_held():
    a = assess([f("process_death", immediate=True)], started=95.0, hold=200.0)
    assert [x.check for x in a.actionable] == ["process_death"]


def test_startup_grace_and_holds_keep_other_findings_quiet():
    assert assess([f()], failing={"stall": (5, 0.0)}, started=95.0).actionable == []  # in grace
    held = assess([f()], failing={"stall": (5, 0.0)}, hold=200.0)
    assert held.actionable == [] and held.failing == {}


def test_info_findings_never_act():
    assert assess([f(severity="info")], failing={"stall": (9, 0.0)}).actionable == []


def test_backoff_resets_after_backoff_reset_seconds_healthy():
    assert assess([], healthy=0.0, mono=100.0, backoff=8.0).backoff_s == 0.0
    assert assess([], healthy=50.0, mono=100.0, backoff=8.0).backoff_s == 8.0
    failing = assess([f()], healthy=0.0, mono=100.0, backoff=8.0)
    assert failing.backoff_s == 8.0 and failing.healthy_since_mono == 100.0


def restart(**kw):
    args = dict(restart_marks=[], resumes=0, resuming=True, backoff_s=0.0, next_restart_mono=0.0, mono=100.0,
                settings=S)
    args.update(kw)
    remedy = Remedy("restart", "a", Finding("process_death", "a", "dead", evidence="pid 1 gone"),
                    data=args.pop("data", {}))
    return guards.restart_decision(remedy, **args)


def test_backoff_doubles_up_to_backoff_max():
    d = restart()
    assert d.allowed and d.backoff_s == 2 and d.next_restart_mono == 102
    assert restart(backoff_s=2).backoff_s == 4
    assert restart(backoff_s=8).backoff_s == 8


def test_a_restart_inside_the_backoff_is_deferred():
    d = restart(next_restart_mono=104.0, backoff_s=4)
    assert not d.allowed and not d.escalate and d.deferred_s == 4.0


def test_restart_intensity_escalates():
    d = restart(restart_marks=[10.0, 50.0, 90.0])
    assert not d.allowed and "restart intensity exceeded: 3 restarts in 100s" in d.escalate
    assert restart(restart_marks=[-10.0, 50.0, 90.0]).allowed  # one is outside the period


def test_max_resumes_escalates_only_a_resume():
    assert "max_resumes (4) reached after failures" in restart(resumes=4).escalate
    assert restart(resumes=4, resuming=False).allowed


def test_a_routine_turn_end_resume_skips_intensity_backoff_and_max_resumes():
    # rewritten for issue 13: max_resumes used to cap turn ends too (a healthy loop was
    # escalated after 20 turns); it now counts resumes after failures only
    d = restart(data={"turn_end": True}, restart_marks=[10.0, 50.0, 90.0], next_restart_mono=500.0, backoff_s=4)
    assert d.allowed and d.backoff_s == 4 and d.next_restart_mono == 500.0
    d = restart(data={"turn_end": True}, resumes=4)  # max_resumes (4) reached by failures
    assert d.allowed and not d.escalate
    assert "max_resumes (4) reached after failures" in restart(resumes=4).escalate


def test_turn_ends_are_capped_by_max_turns_per_hour_within_the_last_hour():
    s = {**S, "max_turns_per_hour": 3}
    assert guards.turn_end_decision([10.0, 50.0], mono=100.0, settings=s).allowed
    d = guards.turn_end_decision([10.0, 50.0, 90.0], mono=100.0, settings=s)
    assert not d.allowed and "max_turns_per_hour (3) reached: 3 turn ends in the last 60 min" in d.escalate
    # a mark an hour old no longer counts
    assert guards.turn_end_decision([10.0, 50.0, 90.0], mono=10.0 + guards.TURN_WINDOW_S, settings=s).allowed
    d = restart(data={"turn_end": True}, turn_marks=[10.0, 50.0, 90.0], settings=s)
    assert not d.allowed and "max_turns_per_hour" in d.escalate


def test_sixty_quick_turn_ends_stay_under_the_default_turn_rate():
    marks = [float(i * 3) for i in range(60)]  # a turn every 3 s for 3 minutes
    assert guards.turn_end_decision(marks, mono=180.0, settings=DEFAULT_CHECKS).allowed
    spin = [float(i * 3) for i in range(int(DEFAULT_CHECKS["max_turns_per_hour"]))]
    assert guards.turn_end_decision(spin, mono=spin[-1] + 3, settings=DEFAULT_CHECKS).escalate


def test_breaker_opens_when_enough_agents_fail_within_the_window_then_cools_down():
    st, opened = guards.breaker_update(guards.BreakerState(), ["a"], mono=0.0, fleet_size=4, settings=S)
    assert not opened and st.marks == [(0.0, "a")]
    st, opened = guards.breaker_update(st, ["b"], mono=10.0, fleet_size=4, settings=S)
    assert opened == {"a", "b"} and st.open_until == 70.0 and st.marks == []
    st2, opened = guards.breaker_update(st, ["c", "d"], mono=20.0, fleet_size=4, settings=S)
    assert not opened and st2 is st  # open: failures belong to the outage
    # after the cooldown the outage's agents get a round before they count again
    st3, opened = guards.breaker_update(st, ["a", "b"], mono=80.0, fleet_size=4, settings=S)
    assert not opened and st3.marks == [] and st3.outage == set()


def test_breaker_marks_older_than_the_window_do_not_count():
    st, _ = guards.breaker_update(guards.BreakerState(), ["a"], mono=0.0, fleet_size=4, settings=S)
    st, opened = guards.breaker_update(st, ["b"], mono=31.0, fleet_size=4, settings=S)
    assert not opened and st.marks == [(31.0, "b")]


def test_breaker_needs_the_larger_of_min_agents_and_the_fraction():
    st, opened = guards.breaker_update(guards.BreakerState(), ["a", "b", "c"], mono=0.0, fleet_size=10, settings=S)
    assert not opened  # 50 % of 10 = 5 agents needed
    _, opened = guards.breaker_update(st, ["d", "e"], mono=1.0, fleet_size=10, settings=S)
    assert opened == {"a", "b", "c", "d", "e"}
