"""Screen-based remedies through the runner: the usage limit waits and continues (never
restarts); the fatal thinking-block error restarts fresh (never resumes)."""
from __future__ import annotations

from datetime import timedelta

from ccci.clock import iso
from ccci.backends.scripted.scripted_agent import FATAL_TEXT
from ccci.testing.fakes import events, run_ticks, tick

CHECKS = {"startup_grace": 0, "failure_threshold": 2}
RESTARTS = ("agent_resumed", "agent_restarted_fresh", "agent_started")


def show_usage_limit(pane, reset):
    pane.append("» next backlog item",
                f"● API Error: Request rejected (429) · usage limit reached|{int(reset.timestamp())} (resets {iso(reset)})",
                "✓ turn done in 0s")


def test_usage_limit_waits_for_the_reset_then_sends_continue(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "stall_idle": 300})
    tick(sup)
    pane = fake_tmux.pane("a")
    reset = fake_clock.now() + timedelta(hours=2)
    show_usage_limit(pane, reset)
    findings = run_ticks(sup, 2)
    assert {f.check for f in findings} == {"usage_limit"}
    assert findings[0].data["reset_at"] == iso(reset)
    [wait] = [e for e in events(sup, "remedy") if e["data"]["action"] == "wait"]
    assert iso(reset + timedelta(seconds=5)) in wait["message"]
    # two hours of a limited, quiet agent: no restart, no nudge, nothing typed
    while fake_clock.now() < reset:
        tick(sup, 60)
    assert pane.submitted == []
    run_ticks(sup, 10)
    assert pane.submitted == ["continue"]
    assert [e["kind"] for e in events(sup) if e["kind"] in RESTARTS] == ["agent_started"]
    assert sup.agents["a"].pid == pane.pid
    # the limit hit again after the continue: wait again, still no restart
    later = fake_clock.now() + timedelta(minutes=30)
    show_usage_limit(pane, later)
    run_ticks(sup, 2)
    # ... not while the continue is being answered (usage_limit.VERIFY_S), only after
    assert len([e for e in events(sup, "remedy") if e["data"]["action"] == "wait"]) == 1
    tick(sup, 20)
    run_ticks(sup, 2)
    assert len([e for e in events(sup, "remedy") if e["data"]["action"] == "wait"]) == 2
    while fake_clock.now() < later + timedelta(seconds=10):
        tick(sup, 30)
    assert pane.submitted == ["continue", "continue"]
    assert [e["kind"] for e in events(sup) if e["kind"] in RESTARTS] == ["agent_started"]


def test_usage_limit_that_did_not_lift_backs_off(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "stall_idle": 10**6, "api_error_backoff": 60})
    tick(sup)
    pane = fake_tmux.pane("a")
    reset = fake_clock.now() + timedelta(seconds=30)
    gaps = []
    for _ in range(3):
        show_usage_limit(pane, reset)  # after each continue, the same (now past) reset: not lifted
        before = len(pane.submitted)
        start = fake_clock.monotonic()
        while len(pane.submitted) == before:
            tick(sup, 1)
            assert fake_clock.monotonic() - start < 3600
        gaps.append(fake_clock.monotonic() - start)
    # 1st: at the reset; then backed off 60 s, then 120 s (plus the 20 s verify pause)
    assert gaps[1] >= 60 and gaps[2] >= 120 and gaps[2] > gaps[1]
    assert [e["kind"] for e in events(sup) if e["kind"] in RESTARTS] == ["agent_started"]


def test_usage_limit_is_never_restarted_even_past_restart_guards(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "restart_intensity": 1})
    tick(sup)
    reset = fake_clock.now() + timedelta(minutes=10)
    show_usage_limit(fake_tmux.pane("a"), reset)
    run_ticks(sup, 600, step=5)
    assert [e["kind"] for e in events(sup) if e["kind"] in RESTARTS] == ["agent_started"]
    assert events(sup, "escalation") == []


def test_a_failed_fresh_launch_is_never_followed_by_a_resume(make_supervisor, fake_tmux, fake_clock):
    """Seen on the real CLI: the fresh launch after a thinking-block 400 failed (tmux was
    exiting after its last session was killed); process death then resumed the poisoned
    conversation. The old id is now forgotten before the fresh launch is tried."""
    from ccci.tmux import TmuxError

    sup = make_supervisor(agents=["a"], checks={**CHECKS, "backoff_initial": 0})
    tick(sup)
    old = sup.agents["a"].conversation_id
    real_new_session = fake_tmux.new_session
    failures = []

    def new_session_failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise TmuxError("server exited unexpectedly")
        return real_new_session(*args, **kwargs)

    fake_tmux.new_session = new_session_failing_once
    fake_tmux.pane("a").append("» next backlog item", FATAL_TEXT, "✓ turn done in 0s")
    run_ticks(sup, 2)
    assert failures and fake_tmux.panes.get(sup.agents["a"].session) is None  # the fresh launch failed
    assert sup.store.agent("a").conversation_id == ""
    run_ticks(sup, 4)  # process death restarts it: fresh, not a resume of the old id
    new = fake_tmux.pane("a")
    assert "--resume" not in new.argv and old not in new.argv
    assert not events(sup, "agent_resumed")


def test_fatal_error_restarts_fresh_never_resumes(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "backoff_initial": 0})
    tick(sup)
    convs = [sup.agents["a"].conversation_id]
    for round_ in range(3):  # the error shows again in the new session: fresh again
        pane = fake_tmux.pane("a")
        pane.append("» next backlog item", FATAL_TEXT, "✓ turn done in 0s")
        run_ticks(sup, 2)
        new = fake_tmux.pane("a")
        assert new is not pane, f"round {round_}: not restarted"
        assert "--resume" not in new.argv
        conv = new.argv[new.argv.index("--conversation") + 1]
        assert conv not in convs
        convs.append(conv)
        assert sup.agents["a"].conversation_id == conv == sup.store.agent("a").conversation_id
        tick(sup)  # back
    assert [e["kind"] for e in events(sup) if e["kind"] in RESTARTS[:2]] == ["agent_restarted_fresh"] * 3
    assert all(e["data"]["mode"] == "fresh" for e in events(sup, "agent_restarted_fresh"))
    assert sup.agents["a"].resumes == 0


def test_a_watcher_restart_during_a_usage_limit_wait_sends_continue_at_the_reset_not_a_backoff_later(
        make_supervisor, fake_tmux, fake_clock):
    """Seen in the chaos soak (CI, 2026-12-07): the watcher was killed during a usage-limit
    wait; the scheduled 'continue' lived only in memory, so the next watcher found the
    limit again once the occurrence's hold ended and waited one more back-off step
    (api_error_backoff, 30 s) before the continue. Scheduled remedies are now kept in the
    state store and the restarted watcher runs them on time."""
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "stall_idle": 10**6, "api_error_backoff": 30})
    tick(sup)
    pane = fake_tmux.pane("a")
    reset = fake_clock.now() + timedelta(seconds=40)
    show_usage_limit(pane, reset)
    run_ticks(sup, 2)
    assert [e["data"]["at"] for e in events(sup, "scheduled")] == [iso(reset + timedelta(seconds=5))]
    # the watcher dies (no shutdown: its in-memory schedule is gone); a new one adopts the agent
    sup2 = make_supervisor(sup.config)
    assert [e for e in events(sup2, "agent_adopted") if e["agent"] == "a"]
    while not pane.submitted:
        tick(sup2, 1)
        assert fake_clock.now() < reset + timedelta(seconds=10), "no continue within 5 s of the announced time"
    assert fake_clock.now() >= reset + timedelta(seconds=5)  # not before the reset (+ RESET_SLACK_S)
    run_ticks(sup2, 2)
    assert pane.submitted == ["continue"]
    # ... once, and no new wait with a back-off was started for the same limit
    tick(sup2, 60)
    run_ticks(sup2, 5)
    assert pane.submitted == ["continue"]
    assert len([e for e in events(sup2, "remedy") if e["data"]["action"] == "wait"]) == 1
    assert sup2.store.items("scheduled.") == {}
