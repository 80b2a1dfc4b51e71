"""Reliable send (ccci.send) and the literal typing of ccci.tmux.Tmux."""
from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from ccci.backends.scripted import ScriptedBackend
from ccci.send import deliver, sanitize
from ccci.testing.fakes import ScreenSequence
from ccci.tmux import MAX_LITERAL, Tmux

SETTINGS = {"send_enter_delay": 0.2, "send_retries": 3}
MSG = "ccci: new claim pushed to origin/main: 0123456789 claim(step 1): parser. Verify it."


# --------------------------------------------------------------------------- sanitize


@pytest.mark.parametrize("raw,clean", [
    ("\x1b[31mred\x1b[0m text", "red text"),  # CSI colours
    ("\x1b[2J\x1b[Hcleared", "cleared"),  # screen clear + cursor home
    ("\x1b]0;evil title\x07after", "after"),  # OSC (title) ended by BEL
    ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink ended by ST
    ("a\x00b\x07c\x08d\x7fe", "abcde"),  # NUL, BEL, backspace, DEL
    ("c1\x9bcontrol\x85", "c1control"),  # C1 controls
    ("\x03\x04^C", "^C"),  # Ctrl-C / Ctrl-D bytes are never sent as keys
    ("line one\nline two\r\nthree\rfour", "line one line two three four"),
    ("tab\there", "tab here"),
    ("  padded  ", "padded"),
    ("bad surrogate \udc80 ok", "bad surrogate ? ok"),
    ("ünïcødé ✓ stays", "ünïcødé ✓ stays"),
])
def test_sanitize_strips_escapes_and_control_characters(raw, clean):
    assert sanitize(raw) == clean


def test_sanitize_keep_newlines_for_pastes():
    assert sanitize("\x1b[1mone\x1b[0m\r\ntwo\x07\n", keep_newlines=True) == "one\ntwo"


# --------------------------------------------------------------------------- Tmux.send_literal


@pytest.fixture
def tmux_cmd():
    """A Tmux whose libtmux ``server.cmd`` is a mock (no tmux runs)."""
    t = Tmux(socket_name="ccci-unit-never-started")
    t.server = mock.Mock()
    t.server.cmd.return_value = SimpleNamespace(stdout=[], stderr=[])
    return t, t.server.cmd


@pytest.mark.parametrize("text,sent", [
    ("ls;", "ls\\;"),  # tmux would take a trailing ';' as a command separator
    (";", "\\;"),
    ("a\\;", "a\\\\;"),  # tmux turns '\;' back into ';': the backslash survives
    ("a; b", "a; b"),  # only a trailing ';' matters
    ("plain text", "plain text"),
    ("-t looks like a flag", "-t looks like a flag"),  # after '--'
    ("Enter", "Enter"),  # -l: never a key name
])
def test_send_literal_escapes_a_trailing_semicolon(tmux_cmd, text, sent):
    t, cmd = tmux_cmd
    t.send_literal("%3", text)
    cmd.assert_called_once_with("send-keys", "-t", "%3", "-l", "--", sent)
    assert t.calls == 1


@pytest.mark.parametrize("text", ["two\nlines", "cr\r", "x" * (MAX_LITERAL + 1)])
def test_send_literal_refuses_newlines_and_long_text(tmux_cmd, text):
    t, cmd = tmux_cmd
    with pytest.raises(ValueError):
        t.send_literal("%3", text)
    cmd.assert_not_called()


def test_send_key_is_a_separate_call(tmux_cmd):
    t, cmd = tmux_cmd
    t.send_key("%3", "Enter")
    cmd.assert_called_once_with("send-keys", "-t", "%3", "Enter")


# --------------------------------------------------------------------------- deliver


@pytest.fixture
def pane(fake_tmux):
    """An idle scripted agent's pane (empty ``> `` input line)."""
    return fake_tmux.add_pane("ccci-test-a", screen="scripted-agent 1.0 · a (loop) · conversation c")


def send(fake_tmux, fake_clock, tmp_path, pane, text=MSG, **settings):
    return deliver(fake_tmux, pane.pane_id, ScriptedBackend(), text, {**SETTINGS, **settings}, fake_clock, tmp_path)


def test_deliver_types_then_enter_in_a_separate_call(fake_tmux, fake_clock, tmp_path, pane):
    start = fake_clock.monotonic()
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert res.delivered and res.attempts == 1
    assert pane.submitted == [MSG]
    writes = [c for c in fake_tmux.log if c[0] in ("send_literal", "send_key", "paste")]
    assert writes == [("send_literal", pane.pane_id, MSG), ("send_key", pane.pane_id, "Enter")]
    assert fake_clock.monotonic() - start >= 0.2  # the Enter came after send_enter_delay


def test_deliver_sanitizes_what_it_types(fake_tmux, fake_clock, tmp_path, pane):
    res = send(fake_tmux, fake_clock, tmp_path, pane, text="\x1b[31mhi\x1b[0m\x03 there\x07")
    assert res.delivered and pane.submitted == ["hi there"]
    assert pane.keys == ["Enter"]


def test_deliver_refuses_to_type_over_someone_elses_draft(fake_tmux, fake_clock, tmp_path, pane):
    pane.input = "half-written note from a person"
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert not res.delivered and res.retry_later and res.attempts == 0
    assert "someone else's draft" in res.detail
    assert pane.input == "half-written note from a person"
    assert pane.typed == [] and pane.keys == [] and pane.submitted == []


def test_deliver_resends_enter_while_our_draft_is_in_the_box(fake_tmux, fake_clock, tmp_path, pane):
    pane.swallow_enter = 2  # the TUI drops two Enters while redrawing
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert res.delivered and res.attempts == 3
    assert pane.keys == ["Enter"] * 3
    assert pane.typed == [MSG]  # typed once, only Enter repeated
    assert pane.submitted == [MSG]


def test_deliver_gives_up_after_send_retries(fake_tmux, fake_clock, tmp_path, pane):
    pane.swallow_enter = 99
    res = send(fake_tmux, fake_clock, tmp_path, pane, send_retries=2)
    assert not res.delivered and res.attempts == 3
    assert pane.keys == ["Enter"] * 3 and "still in the input box" in res.detail


def test_deliver_stops_pressing_enter_when_the_draft_is_not_ours(fake_tmux, fake_clock, tmp_path, pane):
    def person_takes_over(p, key):
        if key == "Enter" and p.keys.count("Enter") == 1:
            p.input = "a person typed this instead"  # our text was replaced; Enter lost
            return True

    pane.on_key = person_takes_over
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert not res.delivered and res.attempts == 1
    assert pane.keys == ["Enter"], "must not submit a draft that is not ours"
    assert pane.submitted == [] and pane.input == "a person typed this instead"


def test_deliver_finishes_our_own_leftover_draft(fake_tmux, fake_clock, tmp_path, pane):
    pane.input = MSG  # typed by an earlier attempt, Enter lost: do not type it twice
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert res.delivered and pane.typed == [] and pane.submitted == [MSG]


def test_deliver_counts_going_busy_as_accepted(fake_tmux, fake_clock, tmp_path, pane):
    pane.echo = None
    pane.on_submit = lambda p, text: p.busy(0)
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert res.delivered and pane.keys == ["Enter"]


def test_deliver_does_not_press_enter_into_a_dialog(fake_tmux, fake_clock, tmp_path, pane):
    def dialog(p, key):
        p.set_screen("Do you want to proceed?\n❯ 1. Yes\n  2. No", input_box=None)
        return True

    pane.on_key = dialog
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert not res.delivered and pane.keys == ["Enter"] and "no input box" in res.detail


def test_deliver_pastes_multi_line_text(fake_tmux, fake_clock, tmp_path, pane):
    res = send(fake_tmux, fake_clock, tmp_path, pane, text="first line\nsecond line")
    assert [c[0] for c in fake_tmux.log if c[0] in ("send_literal", "paste")] == ["paste"]
    assert res.delivered and pane.submitted == ["first line\nsecond line"]


def test_supervisor_delivers_queued_messages_only_when_idle(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"])
    fake_clock.advance(1)
    sup.tick()
    pane = fake_tmux.pane("a")
    pane.append("» working on it")
    pane.busy(1)
    sup.queue_message("a", "hello from a test")
    for _ in range(3):
        pane.tick_timer()
        fake_clock.advance(1)
        sup.tick()
    assert pane.submitted == []
    pane.idle()
    fake_clock.advance(1)
    sup.tick()  # the tick the turn ended: the CLI's records of it settle first (Outbox.ready_since)
    assert pane.submitted == []
    fake_clock.advance(1)
    sup.tick()
    assert pane.submitted == ["hello from a test"]
    assert [m["status"] for m in sup.store.messages()] == ["delivered"]


def test_deliver_counts_an_error_that_replaces_the_box_right_after_enter_as_taken(fake_tmux, fake_clock, tmp_path, pane):
    # Gemini CLI 0.61.0: a quota 429 answers the message and its dialog replaces the input
    # box before the first check (tests/golden/gemini-0.61.0/10_usage_limit_dialog.txt)
    def quota(p, key):
        p.set_screen("API Error: usage limit reached|1795323116", input_box=None)
        return True

    pane.on_key = quota
    res = send(fake_tmux, fake_clock, tmp_path, pane)
    assert res.delivered and pane.keys == ["Enter"] and "ended in usage_limit" in res.detail


def test_deliver_pastes_text_longer_than_the_backends_paste_over(fake_tmux, fake_clock, tmp_path, pane):
    class Pasting(ScriptedBackend):
        paste_over = 20  # e.g. Codex/Gemini CLI: 200

    res = deliver(fake_tmux, pane.pane_id, Pasting(), "twenty-one characters", SETTINGS, fake_clock, tmp_path)
    assert [c[0] for c in fake_tmux.log if c[0] in ("send_literal", "paste")] == ["paste"]
    assert res.delivered and pane.submitted == ["twenty-one characters"]
    fake_tmux.log.clear()
    deliver(fake_tmux, pane.pane_id, Pasting(), "twenty characters..", SETTINGS, fake_clock, tmp_path)
    assert [c[0] for c in fake_tmux.log if c[0] in ("send_literal", "paste")] == ["send_literal"]


def test_collapsed_paste_placeholders_are_our_draft():
    from ccci.send import _ours
    assert _ours("[Pasted Content 1001 chars]", "x" * 1000)  # Codex CLI 0.169.0
    assert _ours("[Pasted Text: 3000 chars]", "x" * 3000)  # Gemini CLI 0.61.0
    assert not _ours("someone else's words", "x" * 3000)


# ------------------------------------------------------------ issue 14: judged by what happened
GOLDEN_332 = __import__("pathlib").Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded"


def test_deliver_counts_a_dialog_its_turn_opened_as_taken(fake_clock, tmp_path):
    """Issue 14: the message's first tool call opened a permission dialog right after Enter;
    that was read as "not submitted" and the message was typed again later (the model got
    it twice). Real Claude Code 2.1.332 screens: the idle box, then the dialog."""
    from ccci.backends.claude import ClaudeBackend

    tmux = ScreenSequence([(GOLDEN_332 / "01_startup_idle.txt").read_text(),
                           (GOLDEN_332 / "20_permission_dialog.txt").read_text()])
    res = deliver(tmux, "%1", ClaudeBackend(cli_version="2.1.332"), "clean the build dir", dict(SETTINGS), fake_clock,
                  tmp_path)
    assert res.delivered and res.typed and "opened a dialog" in res.detail, res.detail
    assert tmux.typed == ["clean the build dir"] and tmux.keys == ["Enter"]  # nothing typed into the dialog


def test_deliver_trusts_the_clis_own_report_over_the_screen(fake_tmux, fake_clock, tmp_path, pane):
    pane.swallow_enter = 99  # the screen never shows the box emptied
    asked: list[float] = []

    def accepted(since):
        asked.append(since)
        return True  # e.g. Claude Code's UserPromptSubmit hook fired

    res = deliver(fake_tmux, pane.pane_id, ScriptedBackend(), MSG, dict(SETTINGS), fake_clock, tmp_path,
                  accepted=accepted)
    assert res.delivered and res.attempts == 1 and "the CLI reported the prompt" in res.detail
    assert asked == [pytest.approx(fake_clock.now().timestamp() - 0.2 - 0.4)]  # since: when typing began


def test_deliver_keeps_pressing_enter_while_the_cli_says_not_yet(fake_tmux, fake_clock, tmp_path, pane):
    pane.swallow_enter = 1
    res = deliver(fake_tmux, pane.pane_id, ScriptedBackend(), MSG, dict(SETTINGS), fake_clock, tmp_path,
                  accepted=lambda since: False)
    assert res.delivered and res.attempts == 2 and pane.submitted == [MSG]


def test_a_draft_left_in_the_box_is_said_so(fake_tmux, fake_clock, tmp_path, pane):
    pane.swallow_enter = 99
    res = send(fake_tmux, fake_clock, tmp_path, pane, send_retries=1)
    assert not res.delivered and res.typed and res.draft_left


def test_outbox_never_types_a_message_twice_once_its_draft_left_the_box(make_supervisor, fake_tmux, fake_clock):
    """Typed, Enter pressed, the box gone and no proof either way: counted delivered (with a
    message_unconfirmed event), never typed again on a later tick."""
    from ccci.testing.fakes import events

    sup = make_supervisor(agents=["a"])
    fake_clock.advance(1)
    sup.tick()
    pane = fake_tmux.pane("a")
    pane.busy(0)  # the launch prompt's turn (the outbox waits for it)
    fake_clock.advance(1)
    sup.tick()
    pane.idle()
    fake_clock.advance(1)
    sup.tick()  # the turn-end tick (nothing is typed in it: Outbox.ready_since)

    def box_vanishes(p, key):
        if key == "Enter":
            p.set_screen("something the rules do not know", input_box=None)
            return True

    pane.on_key = box_vanishes
    sup.queue_message("a", "hello once")
    fake_clock.advance(1)
    sup.tick()
    pane.on_key = None
    pane.idle()
    for _ in range(5):
        fake_clock.advance(1)
        sup.tick()
    assert pane.typed == ["hello once"]
    [row] = sup.store.messages()
    assert row["status"] == "delivered" and "not confirmed" in row["detail"]
    assert len(events(sup, "message_unconfirmed", "a")) == 1


def test_claude_reads_userpromptsubmit_from_its_hook_spool(tmp_path):
    import json

    from ccci.backends.claude import ClaudeBackend, hook_paths
    from ccci.model import AgentSpec, Role

    cfg = SimpleNamespace(state_dir=tmp_path)
    spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path)
    b = ClaudeBackend(cli_version="2.1.332")
    assert b.prompt_accepted_since(spec, cfg, 100.0) is None  # no spool yet: cannot tell
    _settings, spool = hook_paths(tmp_path, "a")
    spool.parent.mkdir(parents=True)
    recs = [{"ev": "UserPromptSubmit", "t": 90.0, "pid": 1}, {"ev": "Stop", "t": 95.0, "pid": 1},
            {"ev": "UserPromptSubmit", "t": 101.0, "pid": 1, "agent_id": "sub"}, "not json"]
    spool.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in recs) + "\n")
    assert b.prompt_accepted_since(spec, cfg, 100.0) is False  # older one, and a subagent's
    with open(spool, "a") as fh:
        fh.write(json.dumps({"ev": "UserPromptSubmit", "t": 102.5, "pid": 1}) + "\n")
    assert b.prompt_accepted_since(spec, cfg, 100.0) is True
    off = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path, options={"hooks": False})
    assert b.prompt_accepted_since(off, cfg, 100.0) is None


def test_outbox_waits_for_a_fresh_agents_first_turn(make_supervisor, fake_tmux, fake_clock):
    """A CLI launched with its prompt shows an idle box before it submits that prompt; a
    message typed then was lost (Claude Code 2.1.332, issue 14 e2e). For such a backend
    (``launch_prompt_after_box``) the outbox waits until the first turn was seen busy, or
    FIRST_TURN_WAIT_S (60 s) passed."""
    from ccci.outbox import FIRST_TURN_WAIT_S

    sup = make_supervisor(agents=["a", "b"])
    sup.agents["a"].backend.launch_prompt_after_box = True  # as ClaudeBackend (one instance for both)
    sup.queue_message("a", "for a")
    sup.queue_message("b", "for b")
    for _ in range(5):
        fake_clock.advance(1)
        sup.tick()
    a, b = fake_tmux.pane("a"), fake_tmux.pane("b")
    assert a.submitted == [] and b.submitted == []
    a.busy(0)
    fake_clock.advance(1)
    sup.tick()
    a.idle()
    fake_clock.advance(1)
    sup.tick()
    assert a.submitted == []  # the turn-end tick: the CLI's records of the turn settle first
    fake_clock.advance(1)
    sup.tick()
    assert a.submitted == ["for a"] and b.submitted == []
    fake_clock.advance(FIRST_TURN_WAIT_S)
    sup.tick()
    assert b.submitted == ["for b"]  # never seen busy: typed once the wait is over
