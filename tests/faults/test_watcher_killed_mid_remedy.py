"""Scenario 3: the watcher dies in the middle of a remedy, at a named fault point
(``CCCI_FAULT_POINT``, :mod:`ccci.faultpoint`: ``os._exit`` at that line, like a
``kill -9`` there without racing a signal). After a new watcher starts, the agent runs
exactly once and every ping is delivered exactly once (state DB, pane log)."""
from __future__ import annotations

import os
import signal

import pytest

from ccci.faultpoint import FAULT_EXIT_STATUS

from ccci.testing.fleet import agent_processes, exactly_one_instance, push_commit, typed_turns

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]


def _kill_watcher(w):
    w.send_signal(signal.SIGKILL)
    w.wait(10)


def test_watcher_dies_between_stopping_and_starting_an_agent(make_fleet, trials):
    t = trials("3", "Watcher killed mid-remedy")
    fleet = make_fleet(agents={"handoff_role": "other"})
    w1 = fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 30)
    conv = fleet.store.agent("builder").conversation_id
    adversary_pid = fleet.live_pid("adversary")
    _kill_watcher(w1)
    w2 = fleet.watch("--quiet", env={"CCCI_FAULT_POINT": "after_stop"})
    assert fleet.wait(lambda: len(fleet.events("agent_adopted")) == 2, 20)
    os.kill(fleet.live_pid("builder"), signal.SIGKILL)
    assert w2.wait(20) == FAULT_EXIT_STATUS, "the watcher did not stop at the fault point"
    assert fleet.pane("builder") is None and agent_processes(fleet, "builder") == [], \
        "the fault point is after the stop: nothing of the builder may run"
    assert fleet.restarts("builder") == []
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.store.agent("builder").state == "running" and fleet.live_pid("builder"), 20)
    fleet.wait(lambda: False, 2)  # a few more ticks: no second start may follow
    t.trial()
    assert exactly_one_instance(fleet, "builder") is None, exactly_one_instance(fleet, "builder")
    [ev] = fleet.restarts("builder")
    assert ev["data"]["mode"] == "resume" and ev["data"]["conversation_id"] == conv, ev
    assert "previous watcher" in ev["data"]["reason"]
    assert not fleet.events("agent_started", "builder")[1:], "a fresh start was added"
    assert fleet.live_pid("adversary") == adversary_pid, "the other agent was disturbed"
    t.check("agent killed while the watcher dies between stop and start: restarted exactly once "
            "by the next watcher, one session/pane/process")
    t.check("the interrupted restart resumes the same conversation (not a fresh one)")


@pytest.mark.parametrize("point", ["after_fetch", "after_ping_queued", "after_type"])
def test_watcher_dies_between_fetching_a_commit_and_pinging(make_fleet, trials, tmp_path, point):
    t = trials("3", "Watcher killed mid-remedy")
    fleet = make_fleet()
    w1 = fleet.watch("--quiet")
    # the first claim/review round, so the baseline is set and both agents are idle
    assert fleet.wait(lambda: fleet.events("message_delivered", "builder"), 40)
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    _kill_watcher(w1)
    sha = push_commit(fleet, tmp_path, f"claim(step 90): injected before a {point} fault")
    key = f"ping:{sha}:adversary"
    w2 = fleet.watch("--quiet", env={"CCCI_FAULT_POINT": point})
    assert w2.wait(30) == FAULT_EXIT_STATUS, f"the watcher did not stop at {point}: {fleet.watcher_output(1)}"
    rows = fleet.store.db.execute("SELECT status FROM messages WHERE dedup_key=?", (key,)).fetchall()
    expect = {"after_fetch": [], "after_ping_queued": ["queued"], "after_type": ["sending"]}[point]
    assert [r["status"] for r in rows] == expect, "the fault point is not where its name says"
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.store.db.execute(
        "SELECT 1 FROM messages WHERE dedup_key=? AND status='delivered'", (key,)).fetchone(), 30), "the ping was lost"
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    t.trial()
    rows = fleet.store.db.execute("SELECT status FROM messages WHERE dedup_key=?", (key,)).fetchall()
    assert [r["status"] for r in rows] == ["delivered"]
    assert typed_turns(fleet, "adversary", sha[:10]) == 1, "the ping was typed into the agent more than once (or never)"
    assert len([e for e in fleet.events("ping_queued") if e["data"].get("sha") == sha]) == 1
    for a in fleet.AGENTS:
        assert exactly_one_instance(fleet, a) is None
    t.check("watcher exits after fetching a commit / after queueing its ping / after typing it: "
            "the ping is delivered exactly once (state DB row, one turn in the pane log)")
