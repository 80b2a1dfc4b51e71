"""The hook spool wakes the runner (inotify, ccci.backends.claude.spool_watch), and a
finding the CLI reported itself (a StopFailure hook) acts on its first tick while a
screen-only one keeps the one-tick hysteresis (ccci.guards.assess)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ccci import guards
from ccci.backends.claude import RELAY, hook_paths
from ccci.backends.claude import claude_hooks
from ccci.backends.claude.spool_watch import SpoolWatcher
from ccci.model import AgentState, Finding
from ccci.testing.fakes import events
from ccci.testing.fleet import poll_until

HOOKS = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.197" / "hooks"
IDLE_SCREEN = "❯ hello\n● hi\n\n" + "─" * 20
SETTINGS = {"failure_threshold": 2, "startup_grace": 15, "backoff_reset": 600}


def _wait(pred, timeout: float = 10.0):
    """:func:`poll_until`, then one last try."""
    return poll_until(pred, timeout, 0.01) or pred()


def _stop_failure() -> bytes:
    rec = [json.loads(ln) for ln in (HOOKS / "api_errors.hooks.jsonl").read_text().splitlines() if ln.strip()]
    return json.dumps(next(r["input"] for r in rec if r["input"]["hook_event_name"] == "StopFailure")).encode()


def test_a_relay_write_calls_on_write_with_the_agent(tmp_path):
    seen: list[str] = []
    woke = threading.Event()
    w = SpoolWatcher(tmp_path / "hooks", lambda a: (seen.append(a), woke.set()))
    try:
        assert w.available, w.error
        (tmp_path / "hooks" / "a.settings.json").write_text("{}")  # not a spool: ignored
        subprocess.run([sys.executable, str(RELAY), str(tmp_path / "hooks" / "builder.jsonl")],
                       input=_stop_failure(), check=True, timeout=30)
        assert woke.wait(10), "no wake within 10 s"
        assert seen[0] == "builder" and "a.settings" not in seen
    finally:
        w.close()
    assert not w.available and w._thread is not None and not w._thread.is_alive()


def test_without_inotify_it_says_why_and_the_tick_reads_the_spool(tmp_path, monkeypatch):
    import inotify_simple

    def refuse(*a, **k):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(inotify_simple, "INotify", refuse)
    w = SpoolWatcher(tmp_path / "hooks", lambda a: None)
    assert not w.available and "Too many open files" in w.error
    w.close()


def test_structured_findings_skip_the_second_tick_screen_findings_keep_it():
    def assess(f: Finding, failing: dict, mono: float, hold: float = 0.0):
        return guards.assess([f], failing=failing, mono=mono, started_mono=0.0, hold_until_mono=hold,
                             healthy_since_mono=0.0, backoff_s=0.0, settings=SETTINGS)

    screen = Finding("fatal_error", "a", "s", evidence="● API Error: 400 ...")
    first = assess(screen, {}, 100.0)
    assert first.actionable == []  # one tick is not enough for the screen
    assert assess(screen, first.failing, 101.0).actionable == [screen]
    hooked = Finding("fatal_error", "a", "s", evidence="hook StopFailure ...", structured=True)
    assert assess(hooked, {}, 100.0).actionable == [hooked]
    assert assess(hooked, {}, 3.0).actionable == [hooked]  # within startup_grace too
    assert assess(hooked, {}, 100.0, hold=200.0).actionable == []  # a wait's hold still holds it


def test_a_stop_failure_hook_acts_on_the_first_tick_and_wakes_the_runner(
        make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude")  # default hysteresis: 2 ticks, 15 s grace
    assert sup.config.checks["failure_threshold"] == 2
    _settings, spool = hook_paths(sup.config.state_dir, "a")
    watcher = sup.stashes.get("claude_hooks", None).get(claude_hooks.SPOOL_WATCH)
    assert watcher is not None and watcher.available, watcher and watcher.error
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    sup.tick()
    sup._wake.clear()
    subprocess.run([sys.executable, str(RELAY), str(spool)], input=_stop_failure(), check=True, timeout=30)
    assert _wait(lambda: sup._wake.is_set()), "the spool write did not wake the runner"
    assert sup.last_wake_reason == "claude_hooks: hook spool a"
    fake_clock.advance(0.05)  # the woken tick comes at once, not a tick later
    findings = sup.tick()
    assert [f.check for f in findings] == ["fatal_error"] and findings[0].structured
    assert findings[0].data["source"] == "structured"
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["fresh"]


def test_a_screen_only_fatal_error_still_needs_two_ticks(make_supervisor, fake_tmux, fake_clock, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0})
    pane = fake_tmux.pane("a")
    fatal = ("❯ hello\n● API Error: 400 {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
             "\"messages.1.content.0: `thinking` or `redacted_thinking` blocks in the latest assistant message "
             "cannot be modified. These blocks must remain as they were in the original response.\"}}\n\n" + "─" * 20)
    pane.set_screen(fatal, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    f1 = sup.tick()
    assert [f.check for f in f1] == ["fatal_error"] and not f1[0].structured
    assert not events(sup, "remedy", "a")
    fake_clock.advance(1)
    sup.tick()
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["fresh"]


def test_unconfigure_stops_the_thread(make_supervisor, claude_on_path):
    sup = make_supervisor(agents=["a"], backend="claude")
    w = sup.stashes.get("claude_hooks", None).get(claude_hooks.SPOOL_WATCH)
    sup.calls.call_all("ccci_unconfigure", {"config": sup.config})
    assert not w.available and not w._thread.is_alive()


def test_no_watcher_for_a_fleet_without_claude_agents(make_supervisor):
    sup = make_supervisor(agents=["a"])
    assert sup.stashes.get("claude_hooks", None).get(claude_hooks.SPOOL_WATCH) is None


def test_an_auth_stop_failure_escalates_at_once_never_a_continue(make_supervisor, fake_tmux, fake_clock,
                                                                  claude_on_path):
    """docs/errors.md: an authentication error (StopFailure ``error=authentication_failed``)
    cannot be fixed by ``continue``: one escalation on the first tick, no wait."""
    sup = make_supervisor(agents=["a"], backend="claude")
    _settings, spool = hook_paths(sup.config.state_dir, "a")
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    sup.tick()
    inp = {"session_id": "s", "transcript_path": "/t", "cwd": "/c", "hook_event_name": "StopFailure",
           "error": "authentication_failed", "last_assistant_message": "Invalid API key · Please run /login"}
    subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(), check=True, timeout=30)
    fake_clock.advance(0.05)
    findings = sup.tick()
    assert [(f.check, f.data.get("kind")) for f in findings] == [("api_error", "auth")]
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["escalate"]
    assert sup.agents["a"].given_up and not events(sup, "scheduled", "a")


def test_a_fresh_session_does_not_inherit_the_old_sessions_stop_failure(make_supervisor, fake_tmux, fake_clock,
                                                                         claude_on_path):
    """Found on the real CLI: the fresh session started 0.3 s after the 400's StopFailure;
    the saved hook state (within the 1 s slack of a watcher restart) was taken for the new
    session's, and its structured finding restarted the new session at once, again."""
    sup = make_supervisor(agents=["a"], backend="claude", checks={"failure_threshold": 1, "startup_grace": 1})
    _settings, spool = hook_paths(sup.config.state_dir, "a")
    pane = fake_tmux.pane("a")
    pane.set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts", input="")
    fake_clock.advance(1)
    sup.tick()
    inp = json.loads(_stop_failure())
    inp["session_id"] = sup.agents["a"].conversation_id
    subprocess.run([sys.executable, str(RELAY), str(spool)], input=json.dumps(inp).encode(), check=True, timeout=30)
    fake_clock.advance(0.3)
    sup.tick()
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["fresh"]
    for _ in range(6):
        fake_clock.advance(0.5)
        fake_tmux.pane("a").set_screen(IDLE_SCREEN, input_box="❯\xa0{input}\n" + "─" * 20 + "\n  ? for shortcuts",
                                       input="")
        sup.tick()
    assert [e["data"]["action"] for e in events(sup, "remedy", "a")] == ["fresh"], "restarted the fresh session again"
