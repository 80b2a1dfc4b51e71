"""Claude Code's own turn reports decide when a queued message may be typed, and when a
turn is over (issue 16): the hook spool's ``UserPromptSubmit``/``Stop`` (not a busy
screen) and the transcript's record of the turn's answer (not a fixed settle)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from ccci.backends.claude import ClaudeBackend, hook_paths
from ccci.backends.claude.limits import last_turn
from ccci.model import AgentSpec, AgentState, Role
from ccci.testing.fakes import events

BOX = "❯\xa0{input}\n" + "─" * 20
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded"


def _spool_append(path, *recs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in recs:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_turn_activity_counts_the_main_sessions_turns_since_a_time(tmp_path):
    cfg = SimpleNamespace(state_dir=tmp_path)
    spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path)
    b = ClaudeBackend(cli_version="2.1.332")
    assert b.turn_activity(spec, cfg, 100.0) is None  # no spool yet: cannot tell
    _settings, spool = hook_paths(tmp_path, "a")
    _spool_append(spool, {"ev": "UserPromptSubmit", "t": 90.0}, {"ev": "Stop", "t": 95.0},  # an older process
                  {"ev": "SessionStart", "t": 100.2}, "not json")
    act = b.turn_activity(spec, cfg, 100.0)
    assert (act.started, act.ended, act.running) == (0, 0, False)
    _spool_append(spool, {"ev": "UserPromptSubmit", "t": 102.0},
                  {"ev": "UserPromptSubmit", "t": 103.0},  # a message typed during the turn joins it
                  {"ev": "Stop", "t": 103.5, "agent_id": "sub"})  # a subagent's end is not the turn's
    act = b.turn_activity(spec, cfg, 100.0)
    assert (act.started, act.ended, act.running, act.at) == (2, 0, True, 103.0)
    _spool_append(spool, {"ev": "Stop", "t": 104.0})
    act = b.turn_activity(spec, cfg, 100.0)
    assert (act.started, act.ended, act.running) == (2, 1, False)
    _spool_append(spool, {"ev": "UserPromptSubmit", "t": 105.0}, {"ev": "StopFailure", "t": 106.0, "error": "x"})
    assert b.turn_activity(spec, cfg, 100.0).ended == 2
    _spool_append(spool, {"ev": "PreCompact", "t": 107.0, "trigger": "manual"})  # ccci's /compact
    assert b.turn_activity(spec, cfg, 100.0).running is True
    _spool_append(spool, {"ev": "SessionStart", "t": 108.0, "source": "compact"})
    act = b.turn_activity(spec, cfg, 100.0)
    assert (act.started, act.ended, act.running, act.at) == (3, 2, False, 108.0)
    _spool_append(spool, {"ev": "UserPromptSubmit", "t": 109.0}, {"ev": "PreCompact", "t": 110.0, "trigger": "auto"},
                  {"ev": "SessionStart", "t": 111.0, "source": "compact"})
    assert b.turn_activity(spec, cfg, 100.0).running is True  # compacted mid-turn: the turn goes on
    off = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path, options={"hooks": False})
    assert b.turn_activity(off, cfg, 100.0) is None


def test_a_fresh_session_does_not_take_the_old_ones_end_for_its_launch_turn(tmp_path):
    """e2e (issue 16 work): the fatal 400's StopFailure came 0.2 s before the fresh
    session was launched; counted as that session's launch turn end, the resubmitted
    message was typed before the new CLI took its prompt and was lost."""
    cfg = SimpleNamespace(state_dir=tmp_path)
    spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path)
    b = ClaudeBackend(cli_version="2.1.332")
    _settings, spool = hook_paths(tmp_path, "a")
    _spool_append(spool, {"ev": "UserPromptSubmit", "t": 99.5, "sid": "old"},
                  {"ev": "StopFailure", "t": 99.8, "sid": "old", "error": "unknown"},
                  {"ev": "StopFailure", "t": 100.2, "sid": "old", "error": "unknown"},  # clocks: late, but not ours
                  {"ev": "SessionStart", "t": 104.0, "sid": "new", "source": "startup"})
    act = b.turn_activity(spec, cfg, 100.0, "new")
    assert (act.started, act.ended, act.running) == (0, 0, False)
    assert b.turn_activity(spec, cfg, 100.0).ended == 1  # without the session id, only the time tells


def _tx(kind: str, **kw) -> str:
    return json.dumps({"type": kind, "isSidechain": False, **kw})


def test_last_turn_is_ended_only_when_its_answer_is_recorded(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(_tx("user", message={"content": "go"}) + "\n")
    assert last_turn(p).ended is False  # the prompt, no answer yet
    with open(p, "a") as fh:
        fh.write(_tx("assistant", message={"stop_reason": "tool_use", "usage": {"output_tokens": 5}}) + "\n")
    assert last_turn(p).ended is False  # a tool call: the turn goes on
    with open(p, "a") as fh:
        fh.write(_tx("user", message={"content": [{"type": "tool_result"}]}) + "\n")
        fh.write(_tx("assistant", isSidechain=True, message={"stop_reason": "end_turn"}) + "\n")
    assert last_turn(p).ended is False  # a subagent's answer is not the turn's
    with open(p, "a") as fh:
        fh.write(_tx("assistant", message={"stop_reason": "end_turn", "usage": {"output_tokens": 9}}) + "\n")
    assert last_turn(p).ended is True and last_turn(p).reset is None
    p.write_text(_tx("user", message={"content": "/status"}) + "\n" + _tx("system", subtype="turn_duration") + "\n")
    assert last_turn(p).ended is True  # 2.1.332's turn_duration entry closes a turn too
    assert last_turn(tmp_path / "missing.jsonl") is None


def _claude_fleet(make_supervisor, fake_tmux, fake_clock, tmp_path):
    home = tmp_path / "home"
    sup = make_supervisor(agents=({"name": "a", "backend": "claude", "env": {"HOME": str(home)}},),
                          checks={"startup_grace": 0})
    pane = fake_tmux.pane("a")
    pane.set_screen("\n" + "─" * 20, input_box=BOX, input="")
    spool = hook_paths(sup.config.state_dir, "a")[1]
    return sup, pane, spool, home


def _hook(sup, spool, ev: str, dt: float = 0.0, **kw) -> None:
    _spool_append(spool, {"ev": ev, "t": sup.clock.now().timestamp() + dt, "sid": sup.agents["a"].conversation_id,
                          **kw})


def test_a_message_queued_at_launch_waits_for_the_launch_turns_stop(make_supervisor, fake_tmux, fake_clock,
                                                                      claude_on_path, tmp_path):
    """The e2e race of issue 16: the screen read busy (and idle again) before Claude Code
    had even taken its launch prompt, and the queued message, typed then, joined the
    launch turn. The hook spool decides: typed only after that turn's Stop."""
    sup, pane, spool, _home = _claude_fleet(make_supervisor, fake_tmux, fake_clock, tmp_path)
    sup.queue_message("a", "SECOND-TASK")
    fake_clock.advance(1)
    sup.tick()
    _hook(sup, spool, "SessionStart", source="startup")
    pane.set_screen((GOLDEN / "14_hung_server_busy.txt").read_text(), input_box=None)
    fake_clock.advance(1)
    sup.tick()
    assert not sup.agents["a"].first_turn_pending  # the screen read busy: the old rule's "launch turn seen"
    pane.set_screen("\n" + "─" * 20, input_box=BOX, input="")
    for _ in range(4):
        fake_clock.advance(1)
        sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.IDLE
    assert pane.submitted == []  # idle on screen, but the CLI has not taken its launch prompt yet
    _hook(sup, spool, "UserPromptSubmit")
    for _ in range(3):
        fake_clock.advance(1)
        sup.tick()
    assert pane.submitted == []  # the launch turn runs (whatever the screen says)
    _hook(sup, spool, "Stop")
    fake_clock.advance(1)
    sup.tick()
    assert pane.submitted == ["SECOND-TASK"]  # its end reported: typed at once, no fixed settle
    assert len(events(sup, "message_delivered", "a")) == 1


def test_a_running_turn_reported_by_the_hooks_holds_the_queue_until_the_pane_is_stale(
        make_supervisor, fake_tmux, fake_clock, claude_on_path, tmp_path):
    from ccci.outbox import RUNNING_STALE_S

    sup, pane, spool, _home = _claude_fleet(make_supervisor, fake_tmux, fake_clock, tmp_path)
    fake_clock.advance(1)
    sup.tick()
    _hook(sup, spool, "SessionStart", source="startup")
    _hook(sup, spool, "UserPromptSubmit")
    _hook(sup, spool, "Stop")  # the launch turn is over
    _hook(sup, spool, "UserPromptSubmit", dt=0.5)  # the next turn: its Stop gets lost
    sup.queue_message("a", "later")
    for _ in range(5):
        fake_clock.advance(1)
        sup.tick()
    assert pane.submitted == []
    fake_clock.advance(RUNNING_STALE_S)
    sup.tick()
    fake_clock.advance(1)
    sup.tick()
    assert pane.submitted == ["later"]  # an unchanged ready pane that long: the Stop was lost


def test_after_a_stop_the_agent_is_busy_until_the_transcript_records_the_answer(
        make_supervisor, fake_tmux, fake_clock, claude_on_path, tmp_path):
    from ccci.backends.claude.claude_hooks import RECORD_WAIT_S

    sup, pane, spool, home = _claude_fleet(make_supervisor, fake_tmux, fake_clock, tmp_path)
    fake_clock.advance(1)
    sup.tick()
    sid = sup.agents["a"].conversation_id
    tx = home / ".claude" / "projects" / "-w" / f"{sid}.jsonl"
    tx.parent.mkdir(parents=True)
    tx.write_text(_tx("user", message={"content": "go"}) + "\n")
    _hook(sup, spool, "SessionStart", source="startup")
    _hook(sup, spool, "UserPromptSubmit")
    _hook(sup, spool, "Stop", dt=0.5)
    sup.queue_message("a", "next")
    for _ in range(3):
        fake_clock.advance(1)
        sup.tick()
        assert sup.agents["a"].analysis.state == AgentState.BUSY  # the answer is not in the transcript yet
    assert pane.submitted == []
    with open(tx, "a") as fh:
        fh.write(_tx("assistant", message={"stop_reason": "end_turn", "usage": {"input_tokens": 7}}) + "\n")
    fake_clock.advance(1)
    sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.IDLE and pane.submitted == ["next"]
    # a transcript that never records the turn holds the agent busy RECORD_WAIT_S at most
    _hook(sup, spool, "UserPromptSubmit")
    with open(tx, "a") as fh:
        fh.write(_tx("user", message={"content": "next"}) + "\n")
    _hook(sup, spool, "Stop", dt=0.5)
    fake_clock.advance(1)
    sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.BUSY
    fake_clock.advance(RECORD_WAIT_S)
    sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.IDLE
    assert not events(sup, "rules_drift", "a")  # waiting for the record is no disagreement
