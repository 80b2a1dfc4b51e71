"""Loops that run for days (issue 13), with a fake clock and fake panes: clean turn ends
are not failures (``max_resumes``) but are capped by ``max_turns_per_hour``; declared
waits, the turn count and escalations survive a watcher restart; stale nudges are never
a prompt; given-up agents are retried automatically, capped and backed off; ``ccci
status`` shows a declared wait. The backend is ccci's scripted stand-in, made to exit at
every turn end as ``opencode run`` does."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from ccci import config as config_mod
from ccci.clock import iso, parse_utc
from ccci.commands.cli import _clear_escalation, status_rows
from ccci.lifecycle import DECLARED_WAIT_KEY
from ccci.model import Finding, Remedy
from ccci.remedies import ESCALATION_KEY, escalation_record, note_escalation
from ccci.config import DEFAULT_CHECKS
from ccci.testing.fakes import events


@pytest.fixture
def loop_sup(make_supervisor, fleet_config):
    """Factory ``(**checks) -> Supervisor``; calling it again makes a new watcher on the
    same fleet state (a watcher restart)."""
    cfg: list = []

    def make(**checks):
        if not cfg:
            cfg.append(fleet_config(checks={"startup_grace": 0, **checks}))
        sup = make_supervisor(cfg[0], start=False)
        for rt in sup.agents.values():
            rt.backend = copy.copy(rt.backend)
            rt.backend.exits_at_turn_end = True
        sup.configure()
        sup.adopt()
        return sup
    return make


def settle(sup, clock, n=2, step=1.0):
    for _ in range(n):
        clock.advance(step)
        sup.tick()


def turn_end(sup, tmux, clock, text="done"):
    tmux.pane("a").set_screen(text)
    settle(sup, clock)
    tmux.pane("a").kill(status=0)
    settle(sup, clock)


def kinds(sup):
    return [e["kind"] for e in events(sup)]


def test_clean_turn_ends_are_resumed_past_max_resumes(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_resumes=1)
    settle(sup, fake_clock)
    for _ in range(5):
        turn_end(sup, fake_tmux, fake_clock)
    assert len(fake_tmux.launches("a")) == 6
    assert "escalation" not in kinds(sup) and "backoff" not in kinds(sup)
    assert sup.store.agent("a").resumes == 0 and sup.store.restart_count("a", "turn_end") == 5
    assert len(sup.agents["a"].turn_marks) == 5


def test_a_failure_resume_still_counts_toward_max_resumes(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_resumes=1)
    settle(sup, fake_clock)
    fake_tmux.pane("a").kill(status=1)  # a crash, not a turn end
    settle(sup, fake_clock, 5, 5.0)
    assert sup.store.agent("a").resumes == 1
    fake_tmux.pane("a").kill(status=1)
    settle(sup, fake_clock, 5, 5.0)
    esc = events(sup, "escalation")
    assert len(esc) == 1 and "max_resumes (1) reached after failures" in esc[0]["message"]


def test_a_send_that_resumes_an_exited_agent_after_an_error_counts_toward_max_resumes(loop_sup, fake_tmux, fake_clock):
    # the follow-up of a wait after an API error or a usage limit ('continue'): a failure
    sup = loop_sup(max_resumes=1)
    settle(sup, fake_clock)
    fake_tmux.pane("a").kill(status=0)
    finding = Finding("api_error", "a", "API error after the CLI's retries", evidence="500")
    assert sup.run_remedy(Remedy("send", "a", finding, text="continue", data={"now": True})).ok
    assert fake_tmux.launches("a")[-1].argv[-1] == "continue" and sup.store.agent("a").resumes == 1
    fake_tmux.pane("a").kill(status=0)
    res = sup.run_remedy(Remedy("send", "a", finding, text="continue", data={"now": True}))
    assert not res.ok and "max_resumes (1) reached after failures" in res.detail
    assert sup.agents["a"].given_up and len(events(sup, "escalation")) == 1


def test_turn_rate_cap_counts_turns_from_before_a_watcher_restart(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_turns_per_hour=3)
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    sup2 = loop_sup()  # a new watcher: reads the two turn ends of the last hour back
    assert len(sup2.agents["a"].turn_marks) == 2
    turn_end(sup2, fake_tmux, fake_clock)
    turn_end(sup2, fake_tmux, fake_clock)
    esc = events(sup2, "escalation")
    assert len(esc) == 1 and "max_turns_per_hour (3) reached: 3 turn ends" in esc[0]["message"]
    assert len(fake_tmux.launches("a")) == 4


def test_turns_older_than_an_hour_do_not_count(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_turns_per_hour=2)
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    fake_clock.advance(3600)
    turn_end(sup, fake_tmux, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    assert "escalation" not in kinds(sup) and len(fake_tmux.launches("a")) == 4


def test_a_new_watcher_resumes_nothing_before_a_declared_deadline(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup()
    settle(sup, fake_clock)
    deadline = (fake_clock.now() + timedelta(minutes=10)).replace(microsecond=0)
    turn_end(sup, fake_tmux, fake_clock, text=f"Nothing to do. WAITING-UNTIL: {iso(deadline)}")
    assert len(fake_tmux.launches("a")) == 1
    assert sup.store.get(DECLARED_WAIT_KEY.format(agent="a")) == iso(deadline)
    before = len(events(sup))
    sup2 = loop_sup()  # the watcher restarts
    assert len(fake_tmux.launches("a")) == 1  # adopted as it is, not resumed "not running at watcher start"
    assert [e for e in events(sup2, "agent_adopted") if e["data"].get("exited")]
    fake_tmux.pane("a").set_screen("")  # even with the screen gone, the persisted deadline holds
    while fake_clock.now() < deadline - timedelta(seconds=2):
        settle(sup2, fake_clock, 1, min(20.0, (deadline - fake_clock.now()).total_seconds() - 1.5))
    assert len(fake_tmux.launches("a")) == 1, [e["message"] for e in events(sup2)]
    settle(sup2, fake_clock, 3, 1.0)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2 and launches[-1].argv[-1] == "Continue."
    assert sup2.store.get(DECLARED_WAIT_KEY.format(agent="a")) is None  # cleared at the launch
    assert not [e for e in events(sup2)[before:] if "not running at watcher start" in e["message"]]


def test_a_queued_message_still_wakes_a_declared_wait_after_a_watcher_restart(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup()
    settle(sup, fake_clock)
    deadline = fake_clock.now() + timedelta(hours=2)
    turn_end(sup, fake_tmux, fake_clock, text=f"WAITING-UNTIL: {iso(deadline)}")
    sup2 = loop_sup()
    sup2.queue_message("a", "ping: review(x) pushed")
    settle(sup2, fake_clock)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2 and launches[-1].argv[-1] == "ping: review(x) pushed"


def test_status_shows_waiting_with_the_deadline(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup()
    settle(sup, fake_clock)
    fake_tmux.pane("a").kill(status=0)
    # status_rows reads the wall clock (a person's 'ccci status'), not the fake one
    future = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    sup.store.put(DECLARED_WAIT_KEY.format(agent="a"), iso(future))
    row = status_rows(sup)[0]
    assert row["state"] == "waiting" and row["waiting_until"] == iso(future)
    sup.store.put(DECLARED_WAIT_KEY.format(agent="a"), iso(future - timedelta(hours=2)))
    row = status_rows(sup)[0]
    assert row["state"] == "exited" and row["waiting_until"] is None


def test_a_stale_queued_nudge_is_dropped_at_the_resume(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup()
    settle(sup, fake_clock)
    nudge = sup.agents["a"].backend.nudge_text
    sup.queue_message("a", nudge)  # e.g. left by an older ccci, or queued before an escalation
    sup.queue_message("a", "ping: claim(y) pushed")
    fake_tmux.pane("a").kill(status=0)
    settle(sup, fake_clock)
    assert fake_tmux.launches("a")[-1].argv[-1] == "ping: claim(y) pushed"
    dropped = events(sup, "message_dropped")
    assert len(dropped) == 1 and "stale nudge" in dropped[0]["message"]
    assert sup.store.pending_messages("a") == []


def test_a_nudge_while_a_turn_runs_is_not_queued(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup()
    settle(sup, fake_clock)
    finding = Finding("stall", "a", "no progress", evidence="screen unchanged")
    res = sup.run_remedy(Remedy("send", "a", finding, text=sup.agents["a"].backend.nudge_text,
                                data={"now": True, "nudge": True}))
    assert res.ok and "nudge dropped" in res.detail
    assert sup.store.pending_messages("a") == [] and events(sup, "nudge_dropped")
    assert sup.agents["a"].nudges == 1  # counted: the stall check's next step is a restart


def test_a_given_up_agent_is_retried_backed_off_and_capped(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_turns_per_hour=1, escalation_retries=2, escalation_retry_initial=100,
                   escalation_retry_max=150)
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)  # the 2nd turn end within the hour: escalated
    assert sup.agents["a"].given_up and len(events(sup, "escalation")) == 1
    rec = escalation_record(sup.store, "a")
    assert rec["retries"] == 0 and not rec["final"]
    assert parse_utc(rec["retry_at"]) - parse_utc(rec["at"]) == timedelta(seconds=100)
    n = len(fake_tmux.launches("a"))
    settle(sup, fake_clock, 1, 90.0)
    assert len(fake_tmux.launches("a")) == n and sup.agents["a"].given_up
    # the escalation survives a watcher restart, and so does its retry plan
    sup = loop_sup()
    assert sup.agents["a"].given_up
    settle(sup, fake_clock, 1, 15.0)
    assert len(fake_tmux.launches("a")) == n + 1 and not sup.agents["a"].given_up
    retry = events(sup, "escalation_retry")
    assert len(retry) == 1 and "automatic retry 1 of 2" in retry[0]["message"]
    assert sup.store.agent("a").resumes == 1  # the retry's resume: counters were reset before it
    # the condition is still there (turn marks within the hour are not forgotten): escalated again,
    # not paged, with the doubled (and capped) delay
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    assert sup.agents["a"].given_up
    rep = events(sup, "escalation_repeated")
    assert len(rep) == 1 and len(events(sup, "escalation")) == 1
    rec = escalation_record(sup.store, "a")
    assert rec["retries"] == 1  # the delay doubled (200 s) and was capped at escalation_retry_max (150 s)
    assert parse_utc(rec["retry_at"]) - parse_utc(rec["at"]) == timedelta(seconds=150)
    settle(sup, fake_clock, 1, 151.0)
    assert len(events(sup, "escalation_retry")) == 2
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    esc = events(sup, "escalation")
    assert len(esc) == 2 and "automatic retries used up (2)" in esc[-1]["message"]  # paged again: final
    n = len(fake_tmux.launches("a"))
    settle(sup, fake_clock, 3, 3600.0)
    assert len(fake_tmux.launches("a")) == n and sup.agents["a"].given_up  # stays given up
    # a person's 'ccci start' clears it all
    _clear_escalation(sup, "a")
    assert escalation_record(sup.store, "a") is None and not sup.store.agent("a").given_up


def test_a_retry_that_holds_ends_the_escalation(loop_sup, fake_tmux, fake_clock):
    sup = loop_sup(max_turns_per_hour=1, escalation_retry_initial=60, escalation_retry_max=600)
    settle(sup, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    turn_end(sup, fake_tmux, fake_clock)
    assert sup.agents["a"].given_up
    settle(sup, fake_clock, 1, 61.0)
    assert not sup.agents["a"].given_up
    settle(sup, fake_clock, 2, 299.0)
    assert escalation_record(sup.store, "a") is not None
    settle(sup, fake_clock, 1, 2.0)
    assert escalation_record(sup.store, "a") is None and events(sup, "escalation_recovered")


def test_note_escalation_plans_retries_and_honours_not_before(fake_clock):
    kv: dict = {}

    class KV:
        get = staticmethod(kv.get)

        @staticmethod
        def put(k, v):
            kv[k] = v
    s = {**DEFAULT_CHECKS, "escalation_retries": 1, "escalation_retry_initial": 60, "escalation_retry_max": 90}
    now = fake_clock.now()
    reset = now + timedelta(hours=3)
    rec = note_escalation(KV, "a", "usage limit", now, s, not_before=reset)
    assert rec["page"] and not rec["final"] and rec["retry_at"] == iso(reset)
    # a second escalation with no retry in between is the same chain's first (no retry happened)
    rec = note_escalation(KV, "a", "again", now, s)
    assert rec["retries"] == 0 and rec["page"] and rec["retry_at"] == iso(now + timedelta(seconds=60))
    json_rec = json.loads(kv[ESCALATION_KEY.format(agent="a")])
    kv[ESCALATION_KEY.format(agent="a")] = json.dumps({**json_rec, "retries": 1, "retried_at": iso(now)})
    rec = note_escalation(KV, "a", "still failing", now, s)
    assert rec["final"] and rec["page"] and rec["retry_at"] is None
    s0 = {**s, "escalation_retries": 0}
    assert note_escalation(KV, "b", "x", now, s0)["final"]


@pytest.mark.parametrize("value, why", [(0, "is not allowed; use a whole number of turn ends per hour"),
                                        (2.5, "is not allowed; use a whole number of turn ends per hour"),
                                        ("many", "expected a number")])
def test_max_turns_per_hour_is_validated_with_a_one_line_error(tmp_path, value, why):
    p = tmp_path / "ccci.toml"
    v = json.dumps(value)
    p.write_text(f'[fleet]\nname = "f"\n\n[checks]\nmax_turns_per_hour = {v}\n\n[[agents]]\nname = "a"\n')
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: checks.max_turns_per_hour: ") and why in msg
