"""Scenario 1: ``kill -9`` of an agent 100 times. Each kill is followed by exactly one
restart (resuming the same conversation), and never a second session, pane or process
for the agent. The two agents are killed in parallel (50 kills each) to halve the time."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ccci.state import StateStore

from ccci.testing.fleet import agent_processes, exactly_one_instance

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]

KILLS = 100


def _restart_events(store, agent):
    return [e for e in store.events(limit=10**6, agent=agent) if e["kind"] in ("agent_resumed", "agent_restarted_fresh")]


def _kill_loop(fleet, agent: str, n: int, errors: list[str], done: list[int]) -> None:
    store = StateStore(fleet.cfg.state_dir)
    try:
        conv = store.agent(agent).conversation_id
        for i in range(1, n + 1):
            pid = fleet.wait(lambda: store.agent(agent).state == "running" and fleet.live_pid(agent), 20, poll=0.05)
            if not pid:
                errors.append(f"{agent} trial {i}: not running before the kill")
                return
            os.kill(pid, signal.SIGKILL)
            new = fleet.wait(lambda: (p := fleet.live_pid(agent)) and p != pid and store.agent(agent).state == "running"
                             and len(_restart_events(store, agent)) >= i and p, 20, poll=0.05)
            if not new:
                errors.append(f"{agent} trial {i}: not restarted within 20 s after kill -9 of {pid}")
                return
            evs = _restart_events(store, agent)
            if len(evs) != i:
                errors.append(f"{agent} trial {i}: {len(evs)} restarts for {i} kills")
                return
            if evs[-1]["data"]["pid"] != new or evs[-1]["data"]["mode"] != "resume" or evs[-1]["data"]["conversation_id"] != conv:
                errors.append(f"{agent} trial {i}: restart event {evs[-1]['data']} does not match pid {new} / resume of {conv}")
                return
            wrong = exactly_one_instance(fleet, agent)
            if wrong:
                errors.append(f"trial {i}: {wrong}")
                return
            done.append(1)
    finally:
        store.close()


@pytest.mark.timeout(300)  # 100 kills: about 80 s on 2 cores, idle
def test_kill_9_of_an_agent_100_times(make_fleet, trials):
    t = trials("1", "Agent deaths (kill -9)")
    fleet = make_fleet(checks={"restart_intensity": 1000, "backoff_initial": 0, "max_resumes": 1000},
                       agents={"handoff_role": "other"})
    fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 30)
    errors: list[str] = []
    done: list[int] = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=_kill_loop, args=(fleet, a, KILLS // 2, errors, done)) for a in fleet.AGENTS]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.monotonic() - t0
    t.trial(len(done))
    assert errors == []
    assert len(done) == KILLS
    t.check("each kill -9 restarted exactly once (event count == kill count after every kill)")
    t.check("the restart resumed the same conversation, in the new pid")
    t.check("exactly one tmux session, one pane and one agent process per agent after every kill")
    # nothing more happens afterwards: no late second restart
    time.sleep(2)
    for a in fleet.AGENTS:
        assert len(fleet.restarts(a)) == KILLS // 2
        rows = fleet.store.db.execute("SELECT COUNT(*) AS n FROM restarts WHERE agent=? AND kind='resume'", (a,)).fetchone()
        assert rows["n"] == KILLS // 2, "the restarts table disagrees with the event log"
        assert len(agent_processes(fleet, a)) == 1
    assert not fleet.events("escalation") and not fleet.events("breaker_open")
    t.check("restarts table agrees with the event log; no escalation, no breaker")
    t.note(f"{KILLS} kills in {took:.0f} s ({took / (KILLS / 2):.2f} s per kill and restart, two agents in parallel)")
