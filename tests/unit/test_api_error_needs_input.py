"""API errors (ccci/checks/api_error.py) and unanswered dialogs (ccci/checks/needs_input.py)
through the runner, on Claude Code screens in a fake pane and a fake clock: a long 529
outage backs off exponentially, keeps at most one 'continue' outstanding and escalates
once; a dialog left open escalates once and nothing is typed into it."""
from __future__ import annotations

from pathlib import Path

import pytest

from ccci.checks import api_error
from ccci.config import DEFAULT_CHECKS
from ccci.testing.fakes import events, tick

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded"
RULE = "─" * 20
IDLE_BOX = RULE + "\n❯\xa0{input}\n" + RULE + "\n  ? for shortcuts"
BUSY_BOX = RULE + "\n❯\xa0{input}\n" + RULE + "\n  esc to interrupt"
#: Claude Code 2.1.332's 529 after its own retries (recorded 11_overloaded_529_final_placeholder.txt)
E529 = ("● API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. "
        "If it persists, check your inference gateway (127.0.0.1:8765).")
RETRYING = "✻ API error · retrying in 4s · attempt 1/10"  # the CLI's own retries: busy
BUSY_S = 30  #: how long the fake CLI retries after each 'continue' before the error shows again




def show_error(pane, prompt="next backlog item"):
    pane.echo = "❯ {text}"
    pane.set_screen(f"❯ {prompt}\n{E529}\n", input_box=IDLE_BOX)


def show_busy(pane):
    pane.set_screen(f"❯ continue\n{RETRYING}\n", input_box=BUSY_BOX)


def test_backoff_policy_numbers():
    s = dict(DEFAULT_CHECKS)
    assert [api_error.backoff_s(n, s) for n in range(7)] == [60, 120, 240, 480, 900, 900, 900]


def test_a_30_minute_529_outage_backs_off_keeps_one_continue_outstanding_and_escalates_once(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    """Before issue 14: 'continue' every api_error_backoff seconds, no growth, no limit, no
    escalation, and continues typed while the agent was busy were joined into one message."""
    sup = make_supervisor(agents=["a"], backend="claude",
                          checks={"startup_grace": 0, "failure_threshold": 2, "stall_idle": 10**6})
    pane = fake_tmux.pane("a")
    show_error(pane)
    start = fake_clock.monotonic()
    shown_at = [start]  # when the error (re)appeared
    sent_at: list[float] = []
    busy_until = None
    state = {"error_on_screen": True}

    def on_submit(p, text):
        # at most one outstanding: a continue only ever reaches an agent showing the error
        assert state["error_on_screen"], "continue typed while the previous one was not answered"
        sent_at.append(fake_clock.monotonic())

    pane.on_submit = on_submit
    escalated_at = None
    while fake_clock.monotonic() - start < 45 * 60:
        tick(sup)
        now = fake_clock.monotonic()
        if len(sent_at) > len(shown_at) - 1 and busy_until is None and state["error_on_screen"]:
            state["error_on_screen"] = False
            show_busy(pane)  # the CLI takes the continue and retries on its own...
            busy_until = now + BUSY_S
        elif busy_until is not None and now >= busy_until:
            show_error(pane, "continue")  # ... and fails again: the outage goes on
            state["error_on_screen"], busy_until = True, None
            shown_at.append(now)
        if escalated_at is None and events(sup, "escalation"):
            escalated_at = now
    # the waits between the error showing again and the next continue grow: 60, 120,
    # 240, 480, 900 s (api_error_backoff doubled, capped at api_error_backoff_max), each
    # after the tick that first reads the new screen and the failure_threshold tick
    # that confirms it (+2 s; the Enter delay adds 0.2 s)
    waits = [round(s - e) for s, e in zip(sent_at, shown_at)]
    assert waits == [62, 122, 242, 482, 902], (waits, sent_at, shown_at, "\n".join(
        f'{e["at"]} {e["kind"]} {e["message"][:150]}' for e in events(sup)))
    assert pane.submitted == ["continue"] * 5 and pane.typed == ["continue"] * 5  # never stacked
    # the outage passed api_error_escalate_after (1800 s) at the decision after the 5th
    # continue: exactly one escalation, and no continue after it
    [esc] = events(sup, "escalation")
    assert esc["data"]["check"] == "api_error" and "5 continue(s) answered by the error again" in esc["message"]
    assert escalated_at is not None and escalated_at - start >= 1800
    assert all(s < escalated_at for s in sent_at)
    assert sup.agents["a"].given_up
    restarts = [e for e in events(sup) if e["kind"] in ("agent_resumed", "agent_restarted_fresh", "agent_restarted")]
    assert restarts == []


def test_a_continue_is_never_typed_while_the_agent_is_busy_or_the_last_one_is_unanswered(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude",
                          checks={"startup_grace": 0, "failure_threshold": 2, "stall_idle": 10**6,
                                  "api_error_backoff": 10})
    pane = fake_tmux.pane("a")
    show_error(pane)
    for _ in range(15):
        tick(sup)
    assert pane.submitted == ["continue"]
    # the CLI swallowed it: it never went busy, the same error stays: no second continue
    show_error(pane, "continue")
    for _ in range(600):
        tick(sup)
    assert pane.submitted == ["continue"]
    # it answers (busy, then the error again): the next continue comes 20 s (10 doubled)
    # after the error is confirmed
    show_busy(pane)
    tick(sup)
    show_error(pane, "continue")
    t0 = fake_clock.monotonic()
    while len(pane.submitted) < 2:
        tick(sup)
        assert fake_clock.monotonic() - t0 < 120
    assert 22 <= fake_clock.monotonic() - t0 <= 23  # read, confirmed (+2 s), Enter delays
    # the scheduled continue finds the agent busy (a person typed): not sent
    show_busy(pane)
    tick(sup)
    show_error(pane, "continue")
    waits = len([e for e in events(sup, "remedy") if e["data"]["action"] == "wait"])
    while len([e for e in events(sup, "remedy") if e["data"]["action"] == "wait"]) == waits:
        tick(sup)  # decided: a continue in 40 s
        assert fake_clock.monotonic() - t0 < 200
    show_busy(pane)
    for _ in range(60):
        tick(sup)
    assert pane.submitted == ["continue", "continue"]
    assert any("not sent: the agent is busy" in e["message"] for e in events(sup, "remedy"))


def test_a_healthy_turn_resets_the_backoff(make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude",
                          checks={"startup_grace": 0, "failure_threshold": 2, "stall_idle": 10**6,
                                  "api_error_backoff": 10})

    def next_gap(pane):
        show_error(pane, "continue")
        t0, n = fake_clock.monotonic(), len(pane.submitted)
        while len(pane.submitted) == n:
            tick(sup)
        gap = fake_clock.monotonic() - t0 - 2  # the tick that reads it, the one that confirms it
        show_busy(pane)
        for _ in range(25):
            tick(sup)
        return gap

    pane = fake_tmux.pane("a")
    assert [int(next_gap(pane)), int(next_gap(pane))] == [10, 20]
    pane.set_screen("❯ continue\n● done\n", input_box=IDLE_BOX)  # the turn ended well
    tick(sup)
    assert int(next_gap(pane)) == 10


def test_a_dialog_nobody_answers_escalates_once_and_nothing_is_typed(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0})
    pane = fake_tmux.pane("a")
    pane.set_screen((GOLDEN / "20_permission_dialog.txt").read_text(), input_box=None)
    sup.queue_message("a", "a message waiting for the agent")  # must not be typed into the dialog either
    wait = DEFAULT_CHECKS["needs_input_wait"]
    for _ in range(int(wait) - 5):
        tick(sup)
    assert sup.agents["a"].analysis.state.value == "waiting_input"
    assert not events(sup, "escalation") and not [f for f in events(sup, "finding")]
    for _ in range(600):
        tick(sup)
    [finding] = [e for e in events(sup, "finding") if e["data"].get("check") == "needs_input"]
    assert "Do you want to proceed?" in finding["data"]["evidence"] or finding["data"]["evidence"]
    [esc] = events(sup, "escalation")
    assert esc["data"]["check"] == "needs_input"
    assert pane.typed == [] and pane.keys == [] and pane.submitted == []  # zero keystrokes into the dialog


def test_a_dialog_is_escalated_without_giving_the_agent_up_so_nothing_ever_restarts_it(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    """Issue 15: a restart would throw the question away, and the automatic retry of a
    given-up agent is a restart (escalation_retry_initial, 1800 s): the agent stays
    supervised, is escalated once per dialog, and a new dialog after an answer is escalated
    again."""
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "needs_input_wait": 30})
    pane = fake_tmux.pane("a")
    dialog = (GOLDEN / "20_permission_dialog.txt").read_text()
    pane.set_screen(dialog, input_box=None)
    for _ in range(40):
        tick(sup)
    [esc] = events(sup, "escalation")
    assert esc["data"]["check"] == "needs_input" and esc["data"]["given_up"] is False and esc["data"]["since"]
    assert not sup.agents["a"].given_up and not sup.store.agent("a").given_up
    retry_s = float(sup.config.settings_for("a")["escalation_retry_initial"])
    for _ in range(int(retry_s / 60) + 5):  # past the automatic retry of an escalation
        tick(sup, 60)
    assert len(events(sup, "escalation")) == 1
    assert not events(sup, "escalation_retry") and not events(sup, "remedy_failed")
    assert [e["data"]["action"] for e in events(sup, "remedy")] == ["escalate"]
    assert not [e for e in events(sup) if e["kind"].startswith("agent_") and e["kind"] != "agent_started"]
    assert pane.typed == [] and pane.keys == [] and pane.submitted == []
    # a person answers; later the agent asks again: a second escalation, for the new dialog
    pane.set_screen("❯ yes\n● done\n", input_box=IDLE_BOX)
    for _ in range(5):
        tick(sup)
    pane.set_screen(dialog, input_box=None)
    for _ in range(40):
        tick(sup)
    first, second = events(sup, "escalation")
    assert second["data"]["check"] == "needs_input" and second["data"]["since"] != first["data"]["since"]
    assert not sup.agents["a"].given_up


@pytest.mark.parametrize("checks, key, words", [
    ("api_error_max_attempts = 0", "checks.api_error_max_attempts", "whole number >= 1"),
    ("api_error_max_attempts = 2.5", "checks.api_error_max_attempts", "whole number >= 1"),
    ("api_error_backoff_max = 30", "checks.api_error_backoff_max", "raise api_error_backoff_max"),
    ("needs_input_wait = -1", "checks.needs_input_wait", "must be >= 0"),
])
def test_new_thresholds_are_validated_with_one_line_errors(tmp_path, checks, key, words):
    from ccci.config import ConfigError, load

    cfg = tmp_path / "ccci.toml"
    cfg.write_text(f'[fleet]\nname = "f"\n[checks]\n{checks}\n[[agents]]\nname = "a"\nrole = "loop"\n')
    with pytest.raises(ConfigError) as err:
        load(cfg, environ={})
    msg = str(err.value)
    assert "\n" not in msg and str(cfg) in msg and key in msg and words in msg
