"""Scenario 8: quiet but healthy agents get zero remedies.

On the fake clock (``ccci.testing`` fixtures, the default thresholds of
``ccci.config.DEFAULT_CHECKS``): an idle agent whose ``WAITING-UNTIL`` lies 55 minutes
ahead and whose screen does not change; a tool that runs 20 minutes (only its timer
moves); the wall clock jumped an hour forward and back during a declared wait.
On a real fleet (short thresholds): a turn three times longer than ``stall_idle``, then
a declared wait longer than ``stall_idle``."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ccci.clock import iso
from ccci.testing.fakes import events, run_ticks, tick

pytestmark = [pytest.mark.faults]

ACTING = ("finding", "remedy", "agent_resumed", "agent_restarted_fresh", "scheduled", "escalation", "message_delivered")


def _no_remedies(sup, pane, fake_tmux):
    acted = [e for e in events(sup) if e["kind"] in ACTING]
    assert acted == [], acted
    assert pane.submitted == [], "something was typed into a healthy agent"
    assert len(fake_tmux.launches("a")) == 1, "a healthy agent was restarted"


@pytest.fixture
def quiet(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"])  # default thresholds: stall_idle 300 s, stall_grace 180 s
    run_ticks(sup, 20)  # past startup_grace
    return sup, fake_tmux.pane("a")


def test_unchanged_screen_while_waiting_until_lies_in_the_future(quiet, fake_clock, fake_tmux, trials):
    t = trials("8", "Quiet but healthy")
    sup, pane = quiet
    pane.append("» next item", "● claim(step 1): parser", "✓ turn done in 40s",
                f"WAITING-UNTIL: {iso(fake_clock.now() + timedelta(minutes=55))}")
    run_ticks(sup, 55 * 60, step=5)  # 11 x stall_idle with not one byte changing
    _no_remedies(sup, pane, fake_tmux)
    t.trial()
    t.check("fake clock: screen unchanged for 55 min under a WAITING-UNTIL 55 min ahead: zero remedies")


def test_a_tool_that_runs_20_minutes(quiet, fake_clock, fake_tmux, trials):
    t = trials("8", "Quiet but healthy")
    sup, pane = quiet
    pane.append("» run the full test suite", "● Bash(pytest -q)")
    pane.busy(0)
    for _ in range(20 * 60 // 5):
        pane.tick_timer(5)  # only the busy timer moves
        tick(sup, 5)
    assert sup.agents["a"].analysis.state.value == "busy"
    _no_remedies(sup, pane, fake_tmux)
    t.trial()
    t.check("fake clock: a 20-minute tool call (only the busy timer moves): zero remedies")


@pytest.mark.parametrize("jump", [3600, -3600])
def test_wall_clock_jumps_an_hour(quiet, fake_clock, fake_tmux, trials, jump):
    t = trials("8", "Quiet but healthy")
    sup, pane = quiet
    pane.append("» next item", "✓ turn done in 4s", f"WAITING-UNTIL: {iso(fake_clock.now() + timedelta(minutes=20))}")
    run_ticks(sup, 60, step=5)
    fake_clock.jump_wall(jump)  # NTP step, suspend/resume, a person setting the clock
    run_ticks(sup, 60, step=5)
    fake_clock.jump_wall(-jump)  # and back
    run_ticks(sup, 15 * 60, step=5)  # still inside the declared wait
    _no_remedies(sup, pane, fake_tmux)
    t.trial()
    t.check("fake clock: wall clock jumped an hour forward / back (and returned) during a declared wait: zero remedies")


@pytest.mark.tmux
@pytest.mark.slow
def test_real_long_turn_and_long_wait(make_fleet, trials):
    t = trials("8", "Quiet but healthy")
    stall_idle = 3
    fleet = make_fleet(checks={"stall_idle": stall_idle, "stall_grace": 10},
                       options={"turn_seconds": 3 * stall_idle, "wait_seconds": 2 * stall_idle},
                       agents={"handoff_role": "other"})
    fleet.watch("--quiet")
    # the first turn (9 s busy), then the declared wait (6 s idle, unchanged) until the self-wake
    assert fleet.wait(lambda: "self-wake" in fleet.screen("builder"), 60), fleet.screen("builder")
    fleet.wait(lambda: False, 1.0)
    acted = [e for e in fleet.events() if e["kind"] in ACTING and e["agent"]]  # (not the git baseline)
    assert acted == [], acted
    assert len(fleet.events("agent_started")) == 2 and not fleet.restarts()
    t.trial(2)
    t.check(f"real tmux: a turn of {3 * stall_idle} s and a declared wait of {2 * stall_idle} s with stall_idle "
            f"{stall_idle} s: zero remedies")
