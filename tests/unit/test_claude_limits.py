"""Usage-limit resets from Claude Code 2.1.332's own records: the transcript's
``apiErrorParams.rate_limit_info.resetsAt`` (recorded), the hook text's epoch, and its
clock time as the last structured fallback."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ccci.backends.claude.claude_hooks import HookState, classify, fold
from ccci.backends.claude.limits import reset_from_entry, transcript_usage_reset
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
