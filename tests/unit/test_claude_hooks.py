"""Claude Code lifecycle hooks as a state source: the relay (ccci.backends.claude.hookrelay), the fold
of recorded hook events (tests/golden/claude-2.1.197/hooks/*.jsonl, recorded offline from
the real 2.1.197), the merge with the pane, and the whole path through a supervisor."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ccci.backends.claude import hookrelay
from ccci.backends.claude import HOOK_EVENTS, RELAY, hook_paths, write_hook_settings
from ccci.model import AgentState, ScreenAnalysis
from ccci.backends.claude import claude_hooks
from ccci.backends.claude.claude_hooks import HookState, classify, fold, merge, read_new_lines, session_file_state

HOOKS = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.197" / "hooks"


def recorded(name: str) -> list[dict]:
    """The hook inputs of a recorded file (each line: {"ev", "t_ms", "input": <stdin JSON>})."""
    return [json.loads(ln) for ln in (HOOKS / name).read_text().splitlines() if ln.strip()]


def relay_records(name: str) -> list[dict]:
    """What the relay makes of each recorded hook input, at the recorded time."""
    return [hookrelay.record(json.dumps(r["input"]).encode(), r["t_ms"] / 1000, 4242) for r in recorded(name)]


def states(records: list[dict]) -> list[str]:
    st, out = HookState(), []
    for rec in records:
        st = fold(st, rec)
        out.append(st.state)
    return out


# ------------------------------------------------------------------------ relay


def test_relay_keeps_only_the_needed_fields_never_the_prompt():
    for name in ("api_errors.hooks.jsonl", "basic_turn_with_tool.hooks.jsonl", "permission_dialog.hooks.jsonl"):
        for raw, rec in zip(recorded(name), relay_records(name)):
            inp = raw["input"]
            assert rec["ev"] == inp["hook_event_name"] and rec["sid"] == inp["session_id"]
            assert rec["t"] == raw["t_ms"] / 1000 and rec["pid"] == 4242
            assert set(rec) <= {"ev", "t", "pid", "sid", "source", "reason", "error", "msg", "ntype", "tool", "trigger",
                                "agent_id", "error_details"}
            assert "agent_id" not in rec and "error_details" not in rec  # the recorded main session has neither
            text = json.dumps(rec)
            if "prompt" in inp:
                assert inp["prompt"] not in text
            assert inp["transcript_path"] not in text and inp["cwd"] not in text
            if inp["hook_event_name"] == "Stop":
                assert "msg" not in rec  # a successful reply is not copied
            if inp["hook_event_name"] == "StopFailure":
                assert rec["error"] == inp["error"] and rec["msg"] == inp["last_assistant_message"][:hookrelay.MSG_CHARS]


def test_relay_keeps_agent_id_notification_type_and_error_details():
    base = {"session_id": "s", "transcript_path": "/t", "cwd": "/c"}
    sub = hookrelay.record(json.dumps({**base, "hook_event_name": "StopFailure", "agent_id": "a1b2", "error": "unknown",
                                       "last_assistant_message": "API Error: 400",
                                       "error_details": {"type": "invalid_request_error", "message": "x" * 900}}).encode(),
                           5.0, 1)
    assert sub["agent_id"] == "a1b2" and sub["error"] == "unknown"
    assert sub["error_details"].startswith('{"type": "invalid_request_error"')  # an object is kept as JSON text
    assert len(sub["error_details"]) == hookrelay.MSG_CHARS
    note = hookrelay.record(json.dumps({**base, "hook_event_name": "Notification",
                                        "notification_type": "agent_needs_input", "message": "Claude needs input"}).encode(),
                            6.0, 1)
    assert note == {"ev": "Notification", "t": 6.0, "pid": 1, "sid": "s", "ntype": "agent_needs_input"}
    plain = hookrelay.record(json.dumps({**base, "hook_event_name": "StopFailure", "error": "server_error",
                                         "error_details": "529 Overloaded", "agent_id": ""}).encode(), 7.0, 1)
    assert plain["error_details"] == "529 Overloaded" and "agent_id" not in plain


def test_relay_process_appends_one_line_0600_and_always_exits_0(tmp_path):
    spool = tmp_path / "a.jsonl"
    inp = recorded("api_errors.hooks.jsonl")[2]["input"]  # StopFailure, thinking 400
    for _ in range(2):
        res = subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(),
                             capture_output=True, env={"PATH": os.environ.get("PATH", "")}, timeout=30)
        assert res.returncode == 0 and res.stderr == b""
    lines = spool.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["error"] == "unknown"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    # garbage input, a missing argument, an unwritable spool: still exit 0, nothing on stderr
    for argv, data in (([str(spool)], b"\xff not json"), ([], b"{}"), ([str(tmp_path / "no" / "dir.jsonl")], b"{}")):
        res = subprocess.run([sys.executable, str(RELAY), *argv], input=data, capture_output=True, timeout=30)
        assert res.returncode == 0 and res.stderr == b""
    assert json.loads(spool.read_text().splitlines()[2])["ev"] == "?"


# ------------------------------------------------------------------------ fold


def test_fold_recorded_turn_with_tool():
    # SessionStart, UserPromptSubmit, Stop, UserPromptSubmit, PreToolUse, PostToolUse, Stop, SessionEnd
    assert states(relay_records("basic_turn_with_tool.hooks.jsonl")) == [
        "idle", "busy", "idle", "busy", "busy", "busy", "idle", "exited"]


def test_fold_recorded_api_errors():
    recs = relay_records("api_errors.hooks.jsonl")
    assert states(recs) == ["idle", "busy", "fatal_error", "busy", "api_error", "exited"]
    st = HookState()
    for rec in recs[:3]:
        st = fold(st, rec)
    assert st.event == "StopFailure" and st.error == "unknown" and "`thinking`" in st.evidence


def test_fold_recorded_permission_dialog():
    recs = relay_records("permission_dialog.hooks.jsonl")
    assert states(recs) == ["idle", "busy", "busy", "waiting_input", "waiting_input", "waiting_input", "idle", "exited"]


def test_classify_stop_failures():
    assert classify("rate_limit", "API Error: Request rejected (429) · Claude AI usage limit reached|1795335840") == (
        AgentState.USAGE_LIMIT, "2026-11-22T08:24:00Z")
    assert classify("rate_limit", "API Error: Request rejected (429) · This request would exceed your account's "
                    "rate limit. Please try again later.") == (AgentState.API_ERROR, "")
    assert classify("server_error", "API Error: 529 Overloaded")[0] == AgentState.API_ERROR
    assert classify("invalid_request", "API Error: 400 prompt is too long: 250000 tokens > 200000 maximum")[0] == \
        AgentState.CONTEXT_LIMIT
    assert classify("unknown", "API Error: 400 messages.1.content.0: `thinking` or `redacted_thinking` blocks in "
                    "the latest assistant message cannot be modified.")[0] == AgentState.FATAL_ERROR


def test_idle_prompt_notification_never_hides_an_error():
    st = fold(HookState(), {"ev": "StopFailure", "t": 10, "error": "unknown", "msg": "API Error: 400 `thinking` blocks"})
    assert fold(st, {"ev": "Notification", "t": 70, "ntype": "idle_prompt"}).state == "fatal_error"
    assert fold(st, {"ev": "SomethingNew", "t": 80}) is st


def test_notification_agent_needs_input_and_permission_prompt_wait_for_a_person():
    busy = fold(HookState(), {"ev": "UserPromptSubmit", "t": 1, "sid": "s"})
    for ntype in ("agent_needs_input", "permission_prompt"):
        st = fold(busy, {"ev": "Notification", "t": 2, "sid": "s", "ntype": ntype})
        assert st.agent_state == AgentState.WAITING_INPUT and st.evidence == f"Notification {ntype}" and st.at == 2
    assert fold(busy, {"ev": "Notification", "t": 2, "ntype": "auth_success"}) is busy  # says nothing about the state


def test_a_subagents_hooks_never_change_the_main_sessions_state():
    busy = fold(HookState(), {"ev": "UserPromptSubmit", "t": 1, "sid": "s"})
    # the compaction subagent fails, stops, ends, asks: the main session is still busy
    for rec in ({"ev": "StopFailure", "t": 2, "error": "unknown", "msg": "API Error: 400 `thinking` blocks",
                 "agent_id": "compact-1"},
                {"ev": "Stop", "t": 3, "agent_id": "compact-1"},
                {"ev": "SessionEnd", "t": 4, "reason": "other", "agent_id": "compact-1"},
                {"ev": "Notification", "t": 5, "ntype": "agent_needs_input", "agent_id": "task-2"}):
        assert fold(busy, rec) is busy
    # the same StopFailure from the main session does count; its error_details are read too
    st = fold(busy, {"ev": "StopFailure", "t": 6, "error": "invalid_request",
                     "error_details": "prompt is too long: 250000 tokens > 200000 maximum"})
    assert st.agent_state == AgentState.CONTEXT_LIMIT and "prompt is too long" in st.evidence


def test_a_subagent_stop_failure_through_the_relay_changes_nothing(tmp_path):
    spool = tmp_path / "a.jsonl"
    base = {"session_id": "s", "transcript_path": "/t", "cwd": "/c"}
    for inp in ({**base, "hook_event_name": "UserPromptSubmit", "prompt": "go"},
                {**base, "hook_event_name": "StopFailure", "agent_id": "compact-1", "error": "unknown",
                 "last_assistant_message": "API Error: 400 `thinking` blocks cannot be modified"}):
        subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(), check=True, timeout=30)
    recs, _ = read_new_lines(spool, 0)
    assert recs[1]["agent_id"] == "compact-1"
    assert states(recs) == ["busy", "busy"]


def test_read_new_lines_keeps_partial_lines_and_restarts_after_truncation(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"ev": "Stop", "t": 1}\n{"ev": "Sto')
    recs, off = read_new_lines(p, 0)
    assert [r["ev"] for r in recs] == ["Stop"] and off == 23
    with open(p, "ab") as f:
        f.write(b'p", "t": 2}\nnot json\n')
    recs, off2 = read_new_lines(p, off)
    assert [r["t"] for r in recs] == [2] and off2 == p.stat().st_size
    p.write_bytes(b'{"ev": "SessionStart", "t": 3}\n')  # replaced: shorter than the offset
    recs, _ = read_new_lines(p, off2)
    assert [r["ev"] for r in recs] == ["SessionStart"]


# ------------------------------------------------------------------------ merge


def _pane(state: AgentState, **kw) -> ScreenAnalysis:
    return ScreenAnalysis(state=state, input_present=True, fingerprint="f", **kw)


def test_merge_hook_fresher_than_the_pane_wins():
    # StopFailure at 100.0; the pane redrew at 100.05 (the error line, which no rule
    # reads): the hook wins
    an, who = merge(_pane(AgentState.IDLE), AgentState.FATAL_ERROR, 100.0, "hook StopFailure", "claude.hook.StopFailure",
                    content_changed_mono=100.05, mono=101.0)
    assert who == "source" and an.state == AgentState.FATAL_ERROR
    assert an.matches[0].rule == "claude.hook.StopFailure" and an.fingerprint == "f"


def test_merge_agreement_keeps_the_panes_evidence_and_notes_the_hook():
    pane = _pane(AgentState.FATAL_ERROR)
    an, who = merge(pane, AgentState.FATAL_ERROR, 100.0, "hook StopFailure", "claude.hook.StopFailure",
                    content_changed_mono=100.05, mono=101.0)
    assert who == "source" and an.state == AgentState.FATAL_ERROR
    assert [m.rule for m in an.matches] == ["claude.hook.StopFailure"]  # the pane had none here


def test_merge_an_error_report_is_over_once_ccci_typed_after_it():
    # StopFailure (prompt too long) at 100.0; ccci typed /compact at 100.4 and the pane
    # (compacting: busy) changed at 100.6, within the hook's lag: the pane decides
    for typed in (100.4, 100.0001):
        an, who = merge(_pane(AgentState.BUSY), AgentState.CONTEXT_LIMIT, 100.0, "hook StopFailure",
                        "claude.hook.StopFailure", content_changed_mono=100.6, mono=100.9, typed_mono=typed)
        assert who == "pane" and an.state == AgentState.BUSY and not an.matches
    # typed before the report (the message that started the failed turn): the report stands
    an, who = merge(_pane(AgentState.BUSY), AgentState.CONTEXT_LIMIT, 100.0, "hook StopFailure",
                    "claude.hook.StopFailure", content_changed_mono=100.6, mono=100.9, typed_mono=95.0)
    assert who == "source" and an.state == AgentState.CONTEXT_LIMIT
    # a busy or idle report is not an error report: the CLI's next hook decides, as before
    for src in (AgentState.BUSY, AgentState.IDLE):
        an, who = merge(_pane(AgentState.UNKNOWN), src, 100.0, "hook", "r", content_changed_mono=100.6, mono=100.9,
                        typed_mono=100.4)
        assert who == "source" and an.state == src


def test_merge_pane_changed_after_the_hook_wins():
    # hook says busy (UserPromptSubmit at 100); the pane changed and reads idle at 130: Stop was lost
    an, who = merge(_pane(AgentState.IDLE), AgentState.BUSY, 100.0, "hook", "r", content_changed_mono=130.0, mono=131.0)
    assert who == "pane" and an.state == AgentState.IDLE


def test_merge_stale_busy_hook_loses_to_a_quiet_pane():
    for pane_state in (AgentState.IDLE, AgentState.CONTEXT_LIMIT):
        an, who = merge(_pane(pane_state), AgentState.BUSY, 100.0, "hook", "r", content_changed_mono=100.1, mono=110.0)
        assert who == "source" and an.state == AgentState.BUSY  # 10 s: the hook still wins
        an, who = merge(_pane(pane_state), AgentState.BUSY, 100.0, "hook", "r", content_changed_mono=100.1, mono=131.0)
        assert who == "stale" and an.state == pane_state


def test_merge_idle_hook_keeps_a_draft_or_dialog_from_the_pane():
    for pane_state in (AgentState.UNSENT_INPUT, AgentState.WAITING_INPUT):
        an, who = merge(_pane(pane_state), AgentState.IDLE, 100.0, "hook", "r", content_changed_mono=50.0, mono=101.0)
        assert who == "pane" and an.state == pane_state


def test_merge_usage_limit_carries_the_reset_time():
    reset = datetime(2026, 11, 22, 8, 24, tzinfo=timezone.utc)
    an, _ = merge(_pane(AgentState.API_ERROR), AgentState.USAGE_LIMIT, 100.0, "hook", "r", content_changed_mono=100.05,
                  mono=101.0, reset_at=reset)
    assert an.state == AgentState.USAGE_LIMIT and an.reset_at == reset


def test_manual_precompact_changes_nothing_automatic_is_busy():
    st = fold(HookState(), {"ev": "StopFailure", "t": 1, "error": "invalid_request", "msg": "Prompt is too long"})
    assert st.state == "context_limit"
    assert fold(st, {"ev": "PreCompact", "t": 2, "trigger": "manual"}) is st
    assert fold(st, {"ev": "PreCompact", "t": 2, "trigger": "auto"}).state == "busy"


def test_session_file_read_only_for_a_live_process(tmp_path):
    d = tmp_path / ".claude" / "sessions"
    d.mkdir(parents=True)
    (d / "123.json").write_text(json.dumps({"pid": 123, "sessionId": "x", "status": "busy"}))
    assert session_file_state(tmp_path, 123, True)[0] == AgentState.BUSY
    assert session_file_state(tmp_path, 123, False) is None  # kill -9 leaves it behind
    assert session_file_state(tmp_path, 124, True) is None
    (d / "123.json").write_text(json.dumps({"pid": 123, "sessionId": "x", "status": "waiting"}))  # 2.1.332, a dialog
    assert session_file_state(tmp_path, 123, True)[0] == AgentState.WAITING_INPUT
    (d / "123.json").write_text(json.dumps({"pid": 123, "sessionId": "x", "status": "compacting?"}))
    assert session_file_state(tmp_path, 123, True) is None  # an unknown status says nothing


# ------------------------------------------------------------------------ settings file


def test_settings_file_is_private_and_merges_the_users_hooks(tmp_path):
    user = {"model": "x", "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "true"}]}]}}
    path = write_hook_settings(tmp_path / "state", "a", json.dumps(user))
    _, spool = hook_paths(tmp_path / "state", "a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(spool.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["model"] == "x" and set(data["hooks"]) == set(HOOK_EVENTS)
    assert data["hooks"]["Stop"][0]["hooks"][0]["command"] == "true"  # theirs first, then ours
    ours = data["hooks"]["Stop"][1]["hooks"][0]["command"]
    assert str(RELAY) in ours and str(spool) in ours
    with pytest.raises(ValueError, match="agents.a.options.settings"):
        write_hook_settings(tmp_path / "state", "a", "{not json")


# ------------------------------------------------------------------------ through a supervisor




IDLE_SCREEN = "❯ hello\n● hi\n\n" + "─" * 20


def test_supervisor_launches_with_hooks_and_a_stop_failure_hook_makes_a_fresh_session(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "failure_threshold": 1})
    first = fake_tmux.launches("a")[-1]
    i = first.argv.index("--settings")
    settings_file, spool = hook_paths(sup.config.state_dir, "a")
    assert first.argv[i + 1] == str(settings_file) and settings_file.exists()
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.IDLE
    # the real relay, fed the recorded thinking-block StopFailure, stamped now
    for raw in recorded("api_errors.hooks.jsonl")[:3]:
        inp = json.dumps(raw["input"]).encode()
        subprocess.run([sys.executable, str(RELAY), str(spool)], input=inp, check=True, timeout=30)
    fake_clock.advance(1)
    findings = sup.tick()
    assert [f.check for f in findings] == ["fatal_error"]
    assert findings[0].data["rule"] == "claude.hook.StopFailure" and "`thinking`" in findings[0].evidence
    kinds = [e["kind"] for e in sup.store.events()]
    assert "hook_state" in kinds and "agent_restarted_fresh" in kinds
    relaunch = fake_tmux.launches("a")[-1]
    assert "--session-id" in relaunch.argv and "--resume" not in relaunch.argv  # never a resume
    assert int(sup.store.get("claude_hooks.offset.a")) == spool.stat().st_size


def _append(spool: Path, **rec) -> None:
    with open(spool, "a") as f:
        f.write(json.dumps(rec) + "\n")


def test_supervisor_state_follows_hooks_and_a_stale_busy_hook_yields_to_the_pane(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "stall_idle": 10**6})
    _, spool = hook_paths(sup.config.state_dir, "a")
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    sup.tick()
    rt = sup.agents["a"]
    assert rt.analysis.state == AgentState.IDLE
    t = fake_clock.now().timestamp()
    _append(spool, ev="PermissionRequest", t=t, sid="s", tool="Bash")
    fake_clock.advance(1)
    sup.tick()
    assert rt.analysis.state == AgentState.WAITING_INPUT  # only the hook knows (the fake pane shows no dialog)
    assert rt.analysis.matches[0].rule == "claude.hook.PermissionRequest"
    _append(spool, ev="UserPromptSubmit", t=fake_clock.now().timestamp(), sid="s")
    fake_clock.advance(1)
    sup.tick()
    assert rt.analysis.state == AgentState.BUSY
    assert not sup.backends["claude"].is_ready_for_input(rt.analysis)  # no message is typed into a busy agent
    for _ in range(31):
        fake_clock.advance(1)
        sup.tick()
    assert rt.analysis.state == AgentState.IDLE  # no Stop came and the pane never changed: stale
    stale = [e for e in sup.store.events() if e["kind"] == "hook_stale"]
    assert len(stale) == 1 and "reads idle" in stale[0]["message"]
    # a new watcher on the same state: the offset is kept, nothing is re-read
    before = int(sup.store.get("claude_hooks.offset.a"))
    sup2 = make_supervisor(sup.config)
    fake_clock.advance(1)
    sup2.tick()
    assert int(sup2.store.get("claude_hooks.offset.a")) == before


NO_CONVERSATION = (HOOKS.parent.parent / "claude-2.1.197-recorded" / "16_resume_no_conversation.txt").read_text()


def test_a_resume_that_finds_no_conversation_is_followed_by_a_fresh_start(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "backoff_initial": 0})
    fake_clock.advance(1)
    sup.tick()
    old = sup.agents["a"].conversation_id
    fake_tmux.pane("a").kill(status=None, signal=9)  # kill -9
    fake_clock.advance(1)
    sup.tick()
    resumed = fake_tmux.launches("a")[-1]
    assert resumed.argv[1:3] == ["--resume", old]
    fake_clock.advance(1)
    sup.tick()  # back
    # the real CLI's answer when the transcript was not on disk, then exit 1
    resumed.set_screen(NO_CONVERSATION, input_box=None)
    resumed.kill(status=1)
    for _ in range(3):
        fake_clock.advance(1)
        sup.tick()
    fresh = fake_tmux.launches("a")[-1]
    assert fresh is not resumed and "--session-id" in fresh.argv and old not in fresh.argv
    ev = [e for e in sup.store.events() if e["kind"] == "agent_restarted_fresh"]
    assert len(ev) == 1


# ------------------------------------------------------------------------ rules drift


def test_disagreement_leaves_out_what_the_merge_explains():
    d = claude_hooks.disagreement
    assert d(AgentState.BUSY, AgentState.BUSY, 100.0, 200.0) is False
    for refined in (AgentState.UNSENT_INPUT, AgentState.WAITING_INPUT):
        assert d(refined, AgentState.IDLE, 100.0, 200.0) is False  # idle, refined by the pane
    assert d(AgentState.IDLE, AgentState.BUSY, 100.0, 101.5) is None  # the pane may still be redrawing
    assert d(AgentState.IDLE, AgentState.BUSY, 100.0, 102.5) is True
    dr, fired = claude_hooks._Drift(), []
    for verdict in [True] * 3 + [None] + [True] * 6 + [False] + [True] * 5:
        fired.append(claude_hooks.track_drift(dr, verdict))
    # one event when the fifth disagreeing tick comes (a transient tick neither counts nor ends
    # the episode), none after it; agreement ends the episode and a new one reports again
    assert [i for i, f in enumerate(fired) if f] == [5, 15]


def test_screen_evidence_quotes_the_matched_rules_else_the_last_lines():
    from ccci.model import Match
    m = Match(rule="claude.busy.spinner", state=AgentState.BUSY, line="✻ Working… (3s)", groups={}, source="x")
    assert claude_hooks.screen_evidence(_pane(AgentState.BUSY, matches=[m]), "a\nb") == (
        ["claude.busy.spinner"], ["✻ Working… (3s)"])
    screen = "\n".join(f"line {i}" for i in range(9)) + "\n\n   \n"
    assert claude_hooks.screen_evidence(_pane(AgentState.IDLE), screen) == (
        [], [f"line {i}" for i in range(9 - claude_hooks.DRIFT_LINES, 9)])


def _drift_events(sup) -> list[dict]:
    return [e for e in sup.store.events() if e["kind"] == "rules_drift"]


def test_a_lasting_disagreement_is_one_rules_drift_event_and_agreement_none(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "stall_idle": 10**6})
    _, spool = hook_paths(sup.config.state_dir, "a")
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    # agreement: the hook says idle, the screen rules read idle
    _append(spool, ev="SessionStart", t=fake_clock.now().timestamp(), sid="s", source="startup")
    for _ in range(12):
        fake_clock.advance(1)
        sup.tick()
    assert sup.agents["a"].analysis.state == AgentState.IDLE
    assert _drift_events(sup) == []
    # forced disagreement: the hook reports a permission prompt the screen never shows
    _append(spool, ev="PermissionRequest", t=fake_clock.now().timestamp(), sid="s", tool="Bash")
    # ticks 1 and 2 after it are within PANE_LAG_S + one tick (the pane may lag): not counted
    lag_ticks = 2
    for i in range(1, lag_ticks + claude_hooks.DRIFT_TICKS + 1):
        fake_clock.advance(1)
        sup.tick()
        assert len(_drift_events(sup)) == (1 if i == lag_ticks + claude_hooks.DRIFT_TICKS else 0), i
    for _ in range(20):
        fake_clock.advance(1)
        sup.tick()
    drift = _drift_events(sup)
    assert len(drift) == 1  # one per episode, however long it lasts
    ev = drift[0]
    assert ev["agent"] == "a"
    assert ev["data"]["cli"] == "claude" and ev["data"]["version"] == sup.backends["claude"].patterns.version
    assert ev["data"]["source"] == "hook" and ev["data"]["source_state"] == "waiting_input"
    assert ev["data"]["screen_state"] == "idle" and ev["data"]["ticks"] == claude_hooks.DRIFT_TICKS
    assert ev["message"].startswith(f"claude {ev['data']['version']}: the screen rules read idle but the hook says "
                                    "waiting_input")
    # no rule matched this screen (idle is the layout's default): its last non-blank lines
    assert ev["data"]["rules"] == [] and ev["data"]["lines"][0] == "● hi"
    assert len(ev["data"]["lines"]) == claude_hooks.DRIFT_LINES
    # agreement again ends the episode without a new event
    _append(spool, ev="Stop", t=fake_clock.now().timestamp(), sid="s")
    for _ in range(10):
        fake_clock.advance(1)
        sup.tick()
    assert len(_drift_events(sup)) == 1
    assert sup.stashes.get("claude_hooks")[claude_hooks.DRIFT]["a"].ticks == 0


def test_merge_agreeing_on_a_usage_limit_takes_the_sources_exact_reset():
    """The CI failure (issue 16): the pane already read 'resets 1:58am' when the hook's
    exact reset (from the transcript) was folded; the screen only cross-checks."""
    exact = datetime(2026, 12, 7, 1, 58, 37, tzinfo=timezone.utc)
    minute = datetime(2026, 12, 7, 1, 58, tzinfo=timezone.utc)
    pane = _pane(AgentState.USAGE_LIMIT, reset_at=minute)
    for changed in (100.05, 105.0):  # however late the pane redrew the same limit
        an, who = merge(pane, AgentState.USAGE_LIMIT, 100.0, "hook", "claude.hook.StopFailure",
                        content_changed_mono=changed, mono=106.0, reset_at=exact)
        assert who == "source" and an.reset_at == exact
    an, _ = merge(pane, AgentState.USAGE_LIMIT, 100.0, "hook", "r", content_changed_mono=100.05, mono=101.0)
    assert an.reset_at == minute  # a source without a reset: the pane's
    # a pane that changed after the hook and shows another limit's reset keeps its own
    later = datetime(2026, 12, 7, 6, 58, tzinfo=timezone.utc)
    an, _ = merge(_pane(AgentState.USAGE_LIMIT, reset_at=later), AgentState.USAGE_LIMIT, 100.0, "hook", "r",
                  content_changed_mono=105.0, mono=106.0, reset_at=exact)
    assert an.reset_at == later
