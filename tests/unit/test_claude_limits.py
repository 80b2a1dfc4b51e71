"""Usage-limit resets from Claude Code 2.1.332's own records: the transcript's
``apiErrorParams.rate_limit_info.resetsAt`` (recorded), the hook text's epoch, and its
clock time as the last structured fallback."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ccci.backends.claude.claude_hooks import HookState, classify, fold
from ccci.backends.claude.limits import reset_from_entry, transcript_usage_reset
from ccci.clock import iso
from ccci.model import AgentState

REC = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded" / "transcripts"
SID = "ad7d7930-b7b5-4d43-bf4e-640e80783ffb"


def test_the_recorded_transcript_gives_the_exact_reset(tmp_path):
    proj = tmp_path / ".claude" / "projects" / "-tmp-work-a"
    proj.mkdir(parents=True)
    shutil.copy(REC / "usage_limit_subscriber.tail.jsonl", proj / f"{SID}.jsonl")
    assert transcript_usage_reset(tmp_path, SID) == datetime.fromtimestamp(1796604279, timezone.utc)
    assert transcript_usage_reset(tmp_path, "other") is None
    assert transcript_usage_reset(tmp_path, "../x") is None


def test_an_entry_without_a_rejected_limit_gives_nothing():
    assert reset_from_entry({"type": "assistant", "quotaLimits": {"status": "allowed", "resetsAt": 1796604279}}) is None
    assert reset_from_entry({"apiErrorParams": {"rate_limit_info": {"resetsAt": "soon"}}}) is None
    assert reset_from_entry([]) is None


def test_a_subscription_limit_hook_is_a_usage_limit_with_its_clock_time():
    # what the real 2.1.332 hook said (e2e 2026-12-06, hook at 23:44:25Z): the reset 12:44am UTC is the next day's
    at = datetime(2026, 12, 6, 23, 44, 25, tzinfo=timezone.utc).timestamp()
    state, reset = classify("rate_limit", "You've hit your 5-hour limit · resets 12:44am (UTC)", at)
    assert state == AgentState.USAGE_LIMIT and reset == "2026-12-07T00:44:00Z"
    st = fold(HookState(), {"ev": "StopFailure", "t": at, "sid": SID, "error": "rate_limit",
                            "msg": "You've hit your 5-hour limit · resets 12:44am (UTC)"})
    assert st.agent_state == AgentState.USAGE_LIMIT and st.reset_at == "2026-12-07T00:44:00Z"


def test_the_transcript_reset_replaces_the_clock_time_in_the_supervisor(make_supervisor, fake_tmux, fake_clock,
                                                                         claude_on_path, tmp_path):
    import subprocess
    import sys

    from ccci.backends.claude import RELAY, hook_paths
    from ccci.testing.fakes import events

    home = tmp_path / "home"
    sup = make_supervisor(agents=({"name": "a", "backend": "claude", "env": {"HOME": str(home)}},))
    proj = home / ".claude" / "projects" / "-w"
    proj.mkdir(parents=True)
    shutil.copy(REC / "usage_limit_subscriber.tail.jsonl", proj / f"{SID}.jsonl")
    pane = fake_tmux.pane("a")
    pane.set_screen("❯ hello\n● hi\n\n" + "─" * 20, input_box="❯\xa0{input}\n" + "─" * 20, input="")
    fake_clock.advance(1)
    sup.tick()
    _settings, spool = hook_paths(sup.config.state_dir, "a")
    inp = {"session_id": SID, "transcript_path": "/t", "cwd": "/c", "hook_event_name": "StopFailure",
           "error": "rate_limit", "last_assistant_message": "You've hit your 5-hour limit · resets 12:44am (UTC)"}
    subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(), check=True, timeout=30)
    fake_clock.advance(0.1)
    findings = sup.tick()
    assert [f.check for f in findings] == ["usage_limit"] and findings[0].structured
    assert findings[0].data["reset_at"] == "2026-12-07T00:44:39Z"  # resetsAt 1796604279, to the second
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["wait"]


def _entry(kind: str, **kw) -> str:
    return json.dumps({"type": kind, "isSidechain": False, "timestamp": "2026-12-07T02:00:00.000Z", **kw}) + "\n"


def test_only_a_limit_that_ended_the_last_turn_counts(tmp_path):
    from ccci.backends.claude.limits import last_turn_usage_reset

    limit = _entry("assistant", apiError="usage_limit_reached",
                   apiErrorParams={"rate_limit_info": {"status": "rejected", "resetsAt": 1796604279}})
    p = tmp_path / "t.jsonl"
    p.write_text(_entry("user", message={"content": "go"}) + limit
                 + _entry("system", subtype="informational", content="Usage limit reached"))
    assert last_turn_usage_reset(p) == datetime.fromtimestamp(1796604279, timezone.utc)
    # a subagent's line after it changes nothing
    p.write_text(p.read_text() + _entry("assistant", isSidechain=True, message={"content": []}))
    assert last_turn_usage_reset(p) == datetime.fromtimestamp(1796604279, timezone.utc)
    # the 'continue' typed after the wait: that limit was waited for, the new turn's is not written yet
    p.write_text(p.read_text() + _entry("user", message={"content": "continue"}))
    assert last_turn_usage_reset(p) is None
    p.write_text(p.read_text() + '{"type": "assistant", "apiError": "usage_li')  # being appended
    assert last_turn_usage_reset(p) is None
    assert last_turn_usage_reset(tmp_path / "missing.jsonl") is None


def test_a_transcript_reset_written_after_the_hook_moves_the_wait(make_supervisor, fake_tmux, fake_clock,
                                                                   claude_on_path, tmp_path, monkeypatch):
    """The hook's tick found no transcript entry (a loaded machine): the wait began at the
    hook text's clock time; the entry, written later, moves the 'continue' to its second."""
    import subprocess
    import sys

    from ccci.backends.claude import RELAY, claude_hooks, hook_paths
    from ccci.clock import parse_utc
    from ccci.testing.fakes import events

    monkeypatch.setattr(claude_hooks, "TRANSCRIPT_WAIT_S", 0.0)
    home = tmp_path / "home"
    sup = make_supervisor(agents=({"name": "a", "backend": "claude", "env": {"HOME": str(home)}},))
    pane = fake_tmux.pane("a")
    pane.set_screen("❯ hello\n● hi\n\n" + "─" * 20, input_box="❯\xa0{input}\n" + "─" * 20, input="")
    fake_clock.advance(1)
    sup.tick()
    sid = sup.agents["a"].conversation_id
    _settings, spool = hook_paths(sup.config.state_dir, "a")
    inp = {"session_id": sid, "transcript_path": "/t", "cwd": "/c", "hook_event_name": "StopFailure",
           "error": "rate_limit", "last_assistant_message": "You've hit your 5-hour limit · resets 12:44am (UTC)"}
    subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(), check=True, timeout=30)
    fake_clock.advance(0.1)
    [found] = sup.tick()
    clock_time = parse_utc(found.data["reset_at"])
    assert clock_time.second == 0 and found.structured  # the hook text's clock time: to the minute
    [sched] = events(sup, "scheduled", "a")
    assert parse_utc(sched["data"]["at"]) == clock_time + timedelta(seconds=5)
    fake_clock.advance(1)
    sup.tick()
    assert not events(sup, "usage_limit_rescheduled", "a")  # nothing new: nothing moves
    exact = clock_time + timedelta(seconds=37)
    proj = home / ".claude" / "projects" / "-w"
    proj.mkdir(parents=True)
    (proj / f"{sid}.jsonl").write_text(_entry("user", message={"content": "go"}) + _entry(
        "assistant", apiError="usage_limit_reached",
        apiErrorParams={"rate_limit_info": {"status": "rejected", "resetsAt": int(exact.timestamp())}}))
    fake_clock.advance(claude_hooks.TRANSCRIPT_LOOK_S)  # a transcript not found is searched for again this late
    found = sup.tick()
    assert found and found[0].data["reset_at"] == iso(exact) and found[0].data["rule"] == "claude.transcript.usage_limit"
    [moved] = events(sup, "usage_limit_rescheduled", "a")
    assert moved["data"]["at"] == iso(exact + timedelta(seconds=5))
    assert parse_utc(events(sup, "scheduled", "a")[-1]["data"]["at"]) == exact + timedelta(seconds=5)
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["wait"]  # one wait, moved
    # the one scheduled 'continue' (per agent and action) is the moved one, kept in the state store
    from ccci.remedies import SCHEDULED_KEY, remedy_from_json

    at, remedy = remedy_from_json(sup.store.get(SCHEDULED_KEY.format(agent="a", action="send")))
    assert at == exact + timedelta(seconds=5) and remedy.text == "continue"
    assert [t for t, r in sup.remedies.scheduled if r.agent == "a"] == [at]
    fake_clock.advance(1)
    sup.tick()
    assert len(events(sup, "usage_limit_rescheduled", "a")) == 1  # once
