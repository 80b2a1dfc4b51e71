"""Scenario 2: three watchers on one fleet (one active, two ``--standby``) while agents
are killed: one restart per kill, never by two watchers; killing the active watcher
hands over to a standby, twice.

Scenario 4: the tmux server is killed (three times): the watcher survives and restores
every agent, once each."""
from __future__ import annotations

import signal

import pytest

from ccci.testing.fleet import exactly_one_instance

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]


def _kill_agents_once_each(fleet, t):
    for agent in fleet.AGENTS:
        n = len(fleet.restarts(agent))
        assert fleet.wait(lambda: fleet.store.agent(agent).state == "running" and fleet.live_pid(agent), 15)
        assert fleet.kill_and_wait_restart(agent, 15)
        fleet.wait(lambda: False, 1.0)  # a second watcher acting would show by now
        assert len(fleet.restarts(agent)) == n + 1, f"{agent}: {len(fleet.restarts(agent)) - n} restarts for one kill"
        assert exactly_one_instance(fleet, agent) is None, exactly_one_instance(fleet, agent)
        t.trial()


def test_three_watchers_one_acts_and_hands_over(make_fleet, trials):
    t = trials("2", "Concurrent watchers")
    fleet = make_fleet(checks={"backoff_initial": 0}, agents={"handoff_role": "other"})
    active = fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 30)
    standbys = [fleet.watch("--quiet", "--standby") for _ in range(2)]
    fleet.wait(lambda: False, 1.5)
    assert len(fleet.events("watcher_started")) == 1 and all(s.poll() is None for s in standbys)
    _kill_agents_once_each(fleet, t)
    live = {active.pid: active, **{s.pid: s for s in standbys}}
    for handover in (1, 2):
        pids = {a: fleet.live_pid(a) for a in fleet.AGENTS}
        starts = len(fleet.restarts()) + len(fleet.events("agent_started"))
        current = live.pop(fleet.events("watcher_started")[-1]["data"]["pid"])
        current.send_signal(signal.SIGKILL)
        current.wait(10)
        assert fleet.wait(lambda: len(fleet.events("watcher_started")) == handover + 1, 15), "no standby took over"
        assert fleet.events("watcher_started")[-1]["data"]["pid"] in live
        assert fleet.wait(lambda: len(fleet.events("agent_adopted")) >= 2 * handover, 10)
        fleet.wait(lambda: False, 1.0)
        assert {a: fleet.live_pid(a) for a in fleet.AGENTS} == pids, "the new watcher restarted healthy agents"
        assert len(fleet.restarts()) + len(fleet.events("agent_started")) == starts
        t.trial()
        _kill_agents_once_each(fleet, t)
    t.check("with one active and two standby watchers, each kill -9 is restarted exactly once")
    t.check("killing the active watcher hands over to a standby (twice), which adopts the agents without restarting them")


def test_tmux_server_killed_three_times(make_fleet, trials):
    t = trials("4", "tmux server killed")
    fleet = make_fleet(checks={"backoff_initial": 0}, agents={"handoff_role": "other"})
    w = fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 30)
    for n in range(1, 4):
        old = {a: fleet.live_pid(a) for a in fleet.AGENTS}
        fleet.tmux.kill_server()
        assert fleet.wait(lambda: all((p := fleet.live_pid(a)) and p != old[a] and fleet.store.agent(a).state == "running"
                                      for a in old), 20), "the fleet was not restored"
        fleet.wait(lambda: False, 1.0)
        assert w.poll() is None, "the watcher died with the tmux server"
        assert len(fleet.events("tmux_server_lost")) == n
        for a in fleet.AGENTS:
            assert len(fleet.restarts(a)) == n
            assert exactly_one_instance(fleet, a) is None
        t.trial()
    assert not fleet.events("breaker_open") and not fleet.events("escalation")
    t.check("the watcher survives, reports tmux_server_lost once per kill, restores each agent exactly once "
            "(one session/pane/process), no breaker")
