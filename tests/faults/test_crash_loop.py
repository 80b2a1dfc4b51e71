"""Scenario 7: both agents exit 2 s after every start (``exit_after``). The watcher
restarts each a bounded number of times (``restart_intensity``) with a growing backoff,
then escalates and leaves it alone; its CPU use over the run stays low (a spin
detector, not a timing test: the bound is generous)."""
from __future__ import annotations

import time

import psutil
import pytest

from ccci.clock import parse_utc

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]

INTENSITY, BACKOFF0 = 5, 0.5
CPU_LIMIT = 0.25  # fraction of one core, averaged over the run


def test_crash_loop_is_bounded_backed_off_and_escalated(make_fleet, trials):
    t = trials("7", "Crash loop")
    fleet = make_fleet(checks={"restart_intensity": INTENSITY, "restart_period": 600, "backoff_initial": BACKOFF0,
                               "backoff_max": 300},
                       options={"exit_after": 2}, agents={"handoff_role": "other"})
    w = fleet.watch("--quiet")
    proc = psutil.Process(w.pid)
    assert fleet.wait(lambda: fleet.events("watcher_started"), 20)
    cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
    assert fleet.wait(lambda: len(fleet.events("escalation")) == 2, 90), \
        [e["message"] for e in fleet.events() if e["kind"] in ("escalation", "agent_resumed", "backoff")]
    fleet.wait(lambda: False, 5)  # nothing happens after the escalation
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    wall = time.monotonic() - wall0
    assert w.poll() is None
    for agent in fleet.AGENTS:
        t.trial()
        restarts = fleet.restarts(agent)
        assert len(restarts) == INTENSITY, f"{agent}: {len(restarts)} restarts, restart_intensity is {INTENSITY}"
        at = [parse_utc(e["at"]) for e in restarts]
        gaps = [(b - a).total_seconds() for a, b in zip(at, at[1:])]
        # each gap is at least the backoff set by the restart before it: 0.5, 1, 2, 4 s
        for k, gap in enumerate(gaps):
            assert gap >= BACKOFF0 * 2 ** k - 0.3, f"{agent}: restart {k + 2} came {gap:.2f}s after the previous one"
        assert fleet.events("backoff", agent), "a restart due before its backoff ran out was not deferred"
        [esc] = fleet.events("escalation", agent)
        assert "restart intensity exceeded" in esc["message"]
        assert fleet.store.agent(agent).given_up
        assert parse_utc(esc["at"]) >= at[-1]
        t.note(f"{agent}: gaps between restarts {', '.join(f'{g:.1f}' for g in gaps)} s")
    assert fleet.pane("builder") is None or fleet.pane("builder").dead, "a given-up agent was restarted"
    t.check(f"at most restart_intensity ({INTENSITY}) restarts, each after a doubling backoff "
            f"({BACKOFF0}, {BACKOFF0 * 2:g}, {BACKOFF0 * 4:g}, {BACKOFF0 * 8:g} s)")
    t.check("then one escalation per agent, the agent given up and left alone")
    share = cpu / wall
    t.note(f"watcher CPU {cpu:.2f} s over {wall:.0f} s = {share:.1%} of one core (bound {CPU_LIMIT:.0%})")
    assert share < CPU_LIMIT, f"the watcher used {share:.0%} of a core: something spins"
    t.check(f"watcher CPU below {CPU_LIMIT:.0%} of one core over the run (nothing spins)")
