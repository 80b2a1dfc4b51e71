"""Issue 14: after a context-limit remedy or a fresh restart for the fatal 400, the work
in hand is not lost: the request of ccci's that started the failed turn is delivered
again exactly once (or the agent is told to continue), as soon as the agent is ready."""
from __future__ import annotations

from ccci.backends.scripted.scripted_agent import FATAL_TEXT
from ccci.testing.fakes import events

CONTEXT = "Context limit reached · /compact or /clear to continue"
CHECKS = {"failure_threshold": 1, "startup_grace": 0}


def _settle(sup, clock, n=3):
    for _ in range(n):
        clock.advance(1)
        sup.tick()


def _first_turn(sup, clock, pane):
    """What a launched CLI does first: a turn for its launch prompt (busy, then idle);
    the outbox types queued messages only after it (ccci.outbox.FIRST_TURN_WAIT_S)."""
    pane.busy(0)
    _settle(sup, clock, 1)
    pane.idle()
    _settle(sup, clock, 1)


def test_after_compact_the_interrupted_request_is_sent_again_once(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    _settle(sup, fake_clock)
    pane = fake_tmux.pane("a")
    _first_turn(sup, fake_clock, pane)
    sup.queue_message("a", "please review claim(step 3) now")
    _settle(sup, fake_clock, 1)
    assert pane.submitted == ["please review claim(step 3) now"]
    pane.append(CONTEXT)  # the turn that message started hit the limit
    _settle(sup, fake_clock, 6)
    # /compact typed at once; the request delivered again once the compaction is over
    assert pane.submitted == ["please review claim(step 3) now", "/compact", "please review claim(step 3) now"]
    _settle(sup, fake_clock, 10)
    assert pane.submitted.count("please review claim(step 3) now") == 2  # never a third time
    [ev] = events(sup, "work_resubmitted", "a")
    assert ev["data"]["what"] == "request" and ev["data"]["cause"] == "context_limit"


def test_after_compact_an_own_turn_gets_continue(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    _settle(sup, fake_clock)
    pane = fake_tmux.pane("a")
    _first_turn(sup, fake_clock, pane)
    pane.append("» my own loop turn", CONTEXT)  # not started by a message of ccci's
    _settle(sup, fake_clock, 8)
    assert pane.submitted == ["/compact", "continue"]
    [ev] = events(sup, "work_resubmitted", "a")
    assert ev["data"]["what"] == "continue"


def test_a_fresh_session_after_a_failed_compact_gets_no_stale_continue(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    _settle(sup, fake_clock)
    pane = fake_tmux.pane("a")
    _first_turn(sup, fake_clock, pane)
    pane.append("» my own loop turn", CONTEXT)
    pane.on_submit = lambda p, text: p.append(CONTEXT) if text == "/compact" else None  # compaction fails
    _settle(sup, fake_clock, 70)  # the compact command gets COMPACT_WAIT_S (60 s), then a fresh session
    assert pane.submitted == ["/compact"]
    [fresh] = fake_tmux.launches("a")[1:]
    _settle(sup, fake_clock, 8)
    assert "continue" not in fresh.submitted  # dropped: the new session starts from its own prompt
    assert [m["status"] for m in sup.store.messages() if m["text"] == "continue"] == ["failed"]


def test_the_ping_that_started_a_fatal_turn_reaches_the_fresh_session_once(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    _settle(sup, fake_clock)
    pane = fake_tmux.pane("a")
    _first_turn(sup, fake_clock, pane)
    ping = "ccci: new claim pushed to origin/main: 0123456789 claim(step 1): parser. Verify it."
    sup.queue_message("a", ping, dedup_key="ping:0123456789:a")
    _settle(sup, fake_clock, 1)
    assert pane.submitted == [ping]
    pane.append(FATAL_TEXT)
    _settle(sup, fake_clock, 3)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2 and pane.dead, "a fresh session"
    fresh = launches[1]
    _first_turn(sup, fake_clock, fresh)
    _settle(sup, fake_clock, 3)
    assert fresh.submitted == [ping]
    _settle(sup, fake_clock, 10)
    assert fresh.submitted == [ping] and pane.submitted == [ping]
    [ev] = events(sup, "work_resubmitted", "a")
    assert ev["data"]["cause"] == "fatal_error"
