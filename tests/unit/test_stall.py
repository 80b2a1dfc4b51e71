"""The stall check (ccci.checks.stall) through the runner, on a fake pane and clock:
declared waits tracked on both clocks, idle and busy screens."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ccci.clock import iso
from ccci.testing.fakes import events, run_ticks, tick

GRACE, IDLE = 180, 300
CHECKS = {"stall_grace": GRACE, "stall_idle": IDLE, "startup_grace": 0, "failure_threshold": 2}


def stalls(findings):
    return [f for f in findings if f.check == "stall"]


@pytest.fixture
def agent(make_supervisor, fake_tmux):
    """A supervised agent ``a`` back from its start; returns ``(sup, pane)``."""
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    tick(sup)
    return sup, fake_tmux.pane("a")


def declare_wait(pane, deadline):
    pane.append("» next backlog item", "● claim(step 1): parser", "✓ turn done in 3s", f"WAITING-UNTIL: {iso(deadline)}")


def test_no_stall_while_a_declared_wait_is_in_the_future(agent, fake_clock):
    sup, pane = agent
    deadline = fake_clock.now() + timedelta(hours=1)  # far longer than stall_idle
    declare_wait(pane, deadline)
    findings = run_ticks(sup, 3600 + GRACE - 30, step=30)
    assert stalls(findings) == []
    assert sup.agents["a"].analysis.waiting_until == deadline
    assert pane.submitted == []  # no nudge


def test_stall_after_stall_grace_past_the_declared_wait(agent, fake_clock):
    sup, pane = agent
    deadline = fake_clock.now() + timedelta(seconds=600)
    declare_wait(pane, deadline)
    assert stalls(run_ticks(sup, 600 + GRACE, step=2)) == []  # up to exactly stall_grace past it
    [f] = stalls(tick(sup))
    assert f.data["kind"] == "missed_wait" and f.data["overdue_s"] > GRACE
    assert iso(deadline) in f.evidence
    # the remedy is a nudge typed into the agent (the 2nd failing tick)
    tick(sup)
    assert pane.submitted == [sup.agents["a"].backend.nudge_text]


@pytest.mark.parametrize("jump", [3600, -3600])
def test_wall_clock_jump_alone_gives_no_finding(agent, fake_clock, jump):
    sup, pane = agent
    deadline = fake_clock.now() + timedelta(seconds=600)
    declare_wait(pane, deadline)
    run_ticks(sup, 10)
    fake_clock.jump_wall(jump)  # NTP step or a person setting the clock
    findings = run_ticks(sup, 600 + GRACE - 20, step=5)  # still inside the wait by the monotonic clock
    assert stalls(findings) == []
    assert pane.submitted == []


def test_after_a_forward_jump_the_monotonic_deadline_still_counts(agent, fake_clock):
    sup, pane = agent
    deadline = fake_clock.now() + timedelta(seconds=600)
    declare_wait(pane, deadline)
    tick(sup)
    fake_clock.jump_wall(3600)
    assert stalls(run_ticks(sup, 600 + GRACE - 10, step=10)) == []
    assert stalls(run_ticks(sup, 20, step=10)), "once both clocks agree the wait is missed, it is a stall"


def test_idle_without_a_declared_wait_stalls_after_stall_idle(agent):
    sup, pane = agent
    pane.append("» next backlog item", "✓ turn done in 3s")  # no WAITING-UNTIL
    tick(sup)  # the screen changed now
    assert stalls(run_ticks(sup, IDLE - 10, step=10)) == []
    [f] = stalls(run_ticks(sup, 10, step=10))
    assert f.data["kind"] == "no_progress" and f.data["quiet_s"] >= IDLE


def test_idle_screen_with_only_a_ticking_timer_is_no_progress(agent):
    sup, pane = agent
    findings = []
    for s in range(0, IDLE + 20, 10):
        pane.set_screen(f"» next\n✓ turn done in 3s\n{'⠋⠙'[s // 10 % 2]} idle ({s}s)")  # a redrawn clock, nothing else
        findings += tick(sup, 10)
    assert sup.agents["a"].analysis.state.value == "idle"
    assert stalls(findings), "a clock ticking on an idle screen is not progress"


def test_busy_screen_whose_timer_ticks_is_not_a_stall(agent):
    sup, pane = agent
    pane.append("» long task")
    pane.busy(0)
    findings = []
    for _ in range(3 * IDLE // 10):
        pane.tick_timer(10)
        findings += tick(sup, 10)
    assert sup.agents["a"].analysis.state.value == "busy"
    assert stalls(findings) == []


def test_frozen_busy_screen_is_a_stall(agent):
    sup, pane = agent
    pane.append("» long task")
    pane.busy(0)
    tick(sup)
    assert stalls(run_ticks(sup, IDLE - 10, step=10)) == []
    [f] = stalls(run_ticks(sup, 10, step=10))
    assert "busy" in f.evidence


def test_stall_nudges_then_restarts_resuming(agent, fake_clock):
    sup, pane = agent
    pane.append("» next backlog item", "✓ turn done in 3s")
    run_ticks(sup, IDLE + 30, step=10)
    assert pane.submitted == [sup.agents["a"].backend.nudge_text]
    assert events(sup, "agent_resumed") == []
    # the nudge's echo is a change; nothing happens after it: restart (resume)
    run_ticks(sup, IDLE + 30, step=10)
    [ev] = events(sup, "agent_resumed", "a")
    assert "stall" in ev["data"]["reason"]


def test_a_nudge_that_changes_nothing_gets_its_own_wait_before_the_restart(agent):
    """A nudge that changes nothing on screen (opencode queues it for its next turn): one
    stall is one occurrence (the evidence names when the quiet began, not how long it
    has lasted), so the restart comes stall_idle after the nudge, not on the next tick
    (issue 13: the nudge and the restart were 1 s apart)."""
    sup, pane = agent
    pane.append("» long task")
    pane.busy(0)
    pane.echo = None  # the nudge leaves no trace on screen
    tick(sup)
    findings = run_ticks(sup, IDLE + 10, step=1)
    assert stalls(findings), "the frozen busy screen is a stall"
    assert len({f.fingerprint() for f in stalls(findings)}) == 1, "one stall, one occurrence"
    assert pane.submitted == [sup.agents["a"].backend.nudge_text]
    assert events(sup, "agent_resumed") == []
    run_ticks(sup, IDLE - 20, step=1)
    assert events(sup, "agent_resumed") == [], "no restart before the nudge's own wait (stall_idle) is over"
    run_ticks(sup, 40, step=1)
    [ev] = events(sup, "agent_resumed", "a")
    assert "stall" in ev["data"]["reason"]
