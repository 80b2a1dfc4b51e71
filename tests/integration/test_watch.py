"""``ccci watch`` on a real tmux fleet with a real git origin."""
from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def _pid_alive(fleet, agent):
    p = fleet.pane(agent)
    return p.pid if p is not None and not p.dead else None


def test_kill_9_of_an_agent_is_restarted_within_3_seconds(fleet):
    fleet.watch("--quiet")
    first = fleet.wait(lambda: _pid_alive(fleet, "builder"), 20)
    assert first
    assert fleet.wait(lambda: fleet.settled(), 40), "fleet did not settle"
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    new = fleet.wait(lambda: (p := _pid_alive(fleet, "builder")) and p != first and p, 10, poll=0.05)
    took = time.monotonic() - killed_at
    assert new, "builder was not restarted"
    assert took <= 3.0, f"restart took {took:.2f}s"
    # exactly one restart for the one death, and only one session for the agent
    time.sleep(3)
    restarts = [e for e in fleet.events(agent="builder") if e["kind"] in ("agent_resumed", "agent_restarted_fresh")]
    assert len(restarts) == 1, restarts
    sessions = [s for s in fleet.tmux.list_panes() if s == fleet.cfg.session_name("builder")]
    assert len(sessions) == 1
    # it resumed the same conversation
    assert restarts[0]["data"]["mode"] == "resume"


def test_second_watcher_exits_and_standby_takes_over(fleet):
    w1 = fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("watcher_started"), 20)
    r = fleet.ccci("watch", "--quiet", timeout=30)
    assert r.returncode == 3
    assert "another ccci watch" in r.stderr and str(w1.pid) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    standby = fleet.watch("--quiet", "--standby")
    time.sleep(2)
    assert len(fleet.events("watcher_started")) == 1, "the standby must not act while the lock is held"
    assert fleet.wait(lambda: fleet.settled(), 40)
    pids = {a: fleet.pane(a).pid for a in ("builder", "adversary")}
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    assert fleet.wait(lambda: len(fleet.events("watcher_started")) == 2, 15), "standby did not take over"
    started = fleet.events("watcher_started")[-1]
    assert started["data"]["pid"] == standby.pid
    assert fleet.wait(lambda: len(fleet.events("agent_adopted")) >= 2, 10)
    # took over by adopting, not restarting
    assert {a: fleet.pane(a).pid for a in pids} == pids
    # and it supervises: kill an agent, the standby restarts it
    os.kill(pids["adversary"], signal.SIGKILL)
    assert fleet.wait(lambda: (p := _pid_alive(fleet, "adversary")) and p != pids["adversary"], 10)


def test_kill_9_of_the_watcher_no_second_session_no_repeated_ping(fleet):
    w1 = fleet.watch("--quiet")
    # wait for a full handoff round: claim pinged to the adversary, review to the builder
    assert fleet.wait(lambda: any("review(" in e["message"] for e in fleet.events("message_delivered", "builder")), 40)
    assert fleet.wait(lambda: fleet.settled(), 40)
    pids = {a: fleet.pane(a).pid for a in ("builder", "adversary")}
    pings = {r["dedup_key"] for r in fleet.store.db.execute("SELECT dedup_key FROM messages WHERE dedup_key LIKE 'ping:%'")}
    assert pings
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    n_started = len(fleet.events("agent_started") + fleet.events("agent_resumed") + fleet.events("agent_restarted_fresh"))
    fleet.watch("--quiet")
    assert fleet.wait(lambda: len(fleet.events("agent_adopted")) >= 2, 15)
    time.sleep(4)  # several ticks and git checks
    assert {a: fleet.pane(a).pid for a in pids} == pids
    assert len(fleet.events("agent_started") + fleet.events("agent_resumed") + fleet.events("agent_restarted_fresh")) == n_started
    rows = list(fleet.store.db.execute("SELECT dedup_key, COUNT(*) AS n FROM messages WHERE dedup_key LIKE 'ping:%' GROUP BY dedup_key"))
    assert all(r["n"] == 1 for r in rows)
    after = [e for e in fleet.events("ping_queued") if f"ping:{e['data']['sha']}:{e['agent']}" in pings]
    assert len(after) == len(pings), "an old commit was pinged again after the restart"


def test_start_is_idempotent_starts_a_watcher_and_stop_is_respected(fleet):
    from ccci.lock import FleetLock

    r = fleet.ccci("start")
    assert r.returncode == 0, r.stderr
    pids = {a: fleet.pane(a).pid for a in ("builder", "adversary")}
    lock = FleetLock(fleet.cfg.state_dir)
    assert lock.is_held(), "ccci start left the agents unsupervised"
    watcher = lock.holder()
    r = fleet.ccci("start")
    assert r.returncode == 0 and "it will start" in r.stdout
    assert {a: fleet.pane(a).pid for a in pids} == pids
    assert lock.holder() == watcher, "a second watcher was started"
    assert fleet.wait(lambda: len(fleet.events("agent_adopted")) >= 2, 15)
    r = fleet.ccci("stop", "adversary")
    assert r.returncode == 0, r.stderr
    time.sleep(3)
    assert fleet.pane("adversary") is None, "the watcher restarted a stopped agent"
    st = fleet.ccci("status", "--json")
    import json

    rows = {r["name"]: r for r in json.loads(st.stdout)}
    assert rows["adversary"]["state"] == "stopped" and rows["adversary"]["pid"] is None
    assert rows["builder"]["pid"] == pids["builder"]
    assert fleet.ccci("start", "adversary").returncode == 0
    assert fleet.wait(lambda: fleet.pane("adversary") is not None, 10)


def test_send_is_delivered_and_logged(fleet):
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.settled(), 40)
    r = fleet.ccci("send", "adversary", "please look at claim(step 1) again;", timeout=60)
    assert r.returncode == 0, r.stderr
    assert fleet.wait(lambda: "» please look at claim(step 1) again;" in fleet.screen("adversary"), 10)
    log = (fleet.cfg.state_dir / "logs" / "adversary.log").read_text(errors="replace")
    assert "please look at claim(step 1) again;" in log
    ev = fleet.ccci("events", "--json", "--agent", "adversary")
    assert '"message_delivered"' in ev.stdout


# the tmux server killed: tests/faults/test_watchers_and_tmux.py (scenario 4, three kills)


def test_diagnose_agent_reads_the_live_pane_and_shows_the_structured_readings(fleet):
    """``ccci diagnose --agent``: the screen reading of the running agent's pane now, next to
    what the structured sources last said (here a rules_drift event put in the log, as the
    Claude Code hooks plugin writes it)."""
    import json

    from ccci.model import Event

    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.settled(), 40)
    fleet.store.append_event(Event("rules_drift", "claude 2.1.332: the screen rules read unknown but the hook "
                                   "says busy for 5 ticks", agent="builder",
                                   data={"screen_state": "unknown", "source_state": "busy"}))
    fleet.store.append_event(Event("rules_drift", "not this agent", agent="adversary"))
    def read() -> dict:
        r = fleet.ccci("diagnose", "--agent", "builder", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    # the scripted agent may still be finishing a turn under load: its pane reads idle soon
    assert fleet.wait(lambda: read()["state"] == "idle", 30)
    out = read()
    assert out["backend"] == "scripted" and out["state"] == "idle" and out["input_text"] == ""
    assert [(e["kind"], e["data"]["source_state"]) for e in out["structured"]] == [("rules_drift", "busy")]
    text = fleet.ccci("diagnose", "--agent", "builder")
    assert text.returncode == 0 and "agent builder (live pane): " in text.stdout
    assert "rules_drift: claude 2.1.332: the screen rules read unknown but the hook says busy" in text.stdout
    bad = fleet.ccci("diagnose", "--agent", "nobody")
    assert bad.returncode != 0 and "no agent 'nobody'" in (bad.stderr + bad.stdout)
    both = fleet.ccci("diagnose")
    assert both.returncode != 0 and "give a capture FILE or --agent NAME" in (both.stderr + both.stdout)


def test_send_says_in_words_why_a_message_is_still_queued(fleet):
    """Issue 14: `ccci send` spoke in internals (`log_offset=18124`). With the agent stopped
    it exits 1 and says what the user can do; the message stays queued, and the watcher
    delivers it once the agent runs again."""
    assert fleet.ccci("start").returncode == 0
    assert fleet.wait(lambda: fleet.settled(), 40)
    assert fleet.ccci("stop", "adversary").returncode == 0
    r = fleet.ccci("send", "adversary", "are you there", "--timeout", "2")
    out = r.stderr + r.stdout
    assert r.returncode == 1, out
    assert "still queued after 2s: adversary is stopped (ccci start adversary to run it again)" in out
    assert "log_offset" not in out
    def ours():
        return [m["status"] for m in fleet.store.messages() if m["text"] == "are you there"]

    assert ours() == ["queued"]
    assert fleet.ccci("start", "adversary").returncode == 0
    assert fleet.wait(lambda: ours() == ["delivered"], 40)
