"""A real ``ccci watch`` supervising real Claude Code agents (pinned 2.1.197; 2.1.332 with ``CCCI_CLAUDE_VERSION``) (backend
``claude``, ccci's hooks installed), offline against scripted model servers that inject
each failure. For every signal: the real CLI produces it, ccci detects it and carries out
the right remedy. Detection latency (fault injected -> ccci's ``finding`` event) is
printed with ``-s`` (summarised in docs/backends.md); nothing here asserts a duration.

The fault time is when the model server answered the failing request (its request log),
when the test sent ``kill -9``, or when the builder's push updated origin's ref (its mtime).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import time
from datetime import datetime, timezone

import pytest

from ccci.clock import parse_utc
from ccci.testing.model_server import Fail, Text, ToolUse
from real_cli import CLAUDE_VERSION, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

LATENCY: dict[str, list[float]] = {}


def _at(event: dict) -> float:
    return parse_utc(event["at"]).timestamp()


def _finding(fleet, check: str, agent: str = "a", after: float = 0.0):
    evs = [e for e in fleet.events("finding", agent) if e["data"].get("check") == check and _at(e) >= after]
    return evs[0] if evs else None


def _record(signal_name: str, fault_t: float, event: dict) -> float:
    lat = _at(event) - fault_t
    LATENCY.setdefault(signal_name, []).append(lat)
    print(f"\ndetection latency {signal_name}: {lat * 1000:.0f} ms (rule {event['data'].get('rule', '-')})")
    return lat


def _sid(req: dict) -> str:
    return req["headers"].get("x-claude-code-session-id", "")


def _last_user_text(req: dict) -> str:
    msgs = req["json"].get("messages") or []
    for m in reversed(msgs):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            texts = [b.get("text", "") for b in c if isinstance(b, dict) and b.get("type") == "text"]
            return texts[-1] if texts else ""  # the typed text; the CLI puts <system-reminder> blocks first
    return ""


def teardown_module(module) -> None:
    if LATENCY:
        print("\ndetection latency p50 per signal: " + ", ".join(
            f"{k} {statistics.median(v) * 1000:.0f} ms (n={len(v)})" for k, v in sorted(LATENCY.items())))


def test_thinking_block_400_gets_a_fresh_session_never_a_resume(claude_fleet):
    f = claude_fleet({"a": {"script": [Fail.thinking_400(), Text("Fresh session works.")]}})
    f.watch()
    first = f.wait(lambda: f.events("agent_started", "a"), 60, "the agent to start")[0]
    sid0 = first["data"]["conversation_id"]
    fresh = f.wait(lambda: f.events("agent_restarted_fresh", "a"), 90, "a fresh restart")[0]
    fault = f.main_requests("a")[0]
    assert fault["status"] == 400 and _sid(fault) == sid0
    found = _finding(f, "fatal_error")
    assert found is not None and found["data"]["rule"].startswith("claude.")
    _record("fatal_error (thinking 400)", fault["time"], found)
    sid1 = fresh["data"]["conversation_id"]
    assert sid1 != sid0 and fresh["data"]["mode"] == "fresh"
    assert not f.events("agent_resumed", "a")
    # the new session talks to the model with its new id
    req = f.wait(lambda: [r for r in f.main_requests("a") if _sid(r) == sid1], 60, "a request of the fresh session")[0]
    assert req["status"] == 200
    f.wait(lambda: "Fresh session works." in f.screen("a"), 30, "the fresh session's reply")
    assert f.agent("a").conversation_id == sid1


def test_kill_9_is_resumed_with_the_persisted_session_id(claude_fleet):
    f = claude_fleet({"a": {"script": [Text("First turn done. WORD=HERON")]}})
    f.watch()
    f.wait(lambda: "WORD=HERON" in f.screen("a"), 60, "the first turn")
    sid0 = f.agent("a").conversation_id
    # the CLI writes its transcript a little after the turn; a kill -9 before that leaves
    # nothing to resume ("No conversation found", handled by a fresh start: unit test
    # test_a_resume_that_finds_no_conversation_is_followed_by_a_fresh_start). Here: the resume.
    home = f.root / "homes" / "a"
    f.wait(lambda: any("WORD=HERON" in p.read_text(errors="replace")
                       for p in home.glob(f".claude/projects/*/{sid0}.jsonl")), 30, "the transcript on disk")
    pid = f.pane("a").pid
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    resumed = f.wait(lambda: f.events("agent_resumed", "a"), 60, "the resume")[0]
    found = _finding(f, "process_death", after=t_kill - 1)
    _record("process_death (kill -9)", t_kill, found)
    assert resumed["data"]["conversation_id"] == sid0 and resumed["data"]["mode"] == "resume"
    # the resumed CLI sends ccci's resume prompt in the same session, with the old history
    req = f.wait(lambda: [r for r in f.main_requests("a")[1:] if _sid(r) == sid0], 60, "the resumed request")[0]
    assert "WORD=HERON" in str(req["json"]["messages"]) and "ccci restarted this session" in _last_user_text(req)
    assert not f.events("agent_restarted_fresh", "a")


def test_usage_limit_waits_for_the_reset_then_continues_without_restarting(claude_fleet):
    reset = int(time.time()) + 25
    f = claude_fleet({"a": {"script": [Fail.usage_limit(reset), Text("Back after the reset.")],
                            "env": {"CLAUDE_CODE_MAX_RETRIES": "0"}}})
    f.watch()
    found = f.wait(lambda: _finding(f, "usage_limit"), 60, "the usage-limit finding")
    fault = f.main_requests("a")[0]
    assert fault["status"] == 429
    _record("usage_limit (429 + reset)", fault["time"], found)
    assert found["data"]["reset_at"] == datetime.fromtimestamp(reset, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sched = f.wait(lambda: f.events("scheduled", "a"), 10, "the scheduled continue")[0]
    assert parse_utc(sched["data"]["at"]).timestamp() >= reset
    # nothing is sent before the reset; then 'continue', and the limit is lifted
    req = f.wait(lambda: f.main_requests("a")[1:], 90, "the continue after the reset")[0]
    assert req["time"] >= reset and _last_user_text(req).strip() == "continue"
    f.wait(lambda: "Back after the reset." in f.screen("a"), 30, "the reply after the reset")
    time.sleep(2)
    assert len([e for e in f.events("finding", "a") if e["data"].get("check") == "usage_limit"]) == 1
    assert not [e for e in f.events(agent="a") if e["kind"].startswith("agent_") and e["kind"] != "agent_started"]


def test_529_after_the_clis_retries_backs_off_then_continues(claude_fleet):
    f = claude_fleet({"a": {"script": [Fail.overloaded_529(repeat=2), Text("Recovered after 529.")],
                            "env": {"CLAUDE_CODE_MAX_RETRIES": "1"}}})
    f.watch()
    found = f.wait(lambda: _finding(f, "api_error"), 90, "the api_error finding")
    fails = f.main_requests("a")[:2]
    assert [r["status"] for r in fails] == [529, 529]  # the CLI retried once by itself
    _record("api_error (529 after retries)", fails[-1]["time"], found)
    req = f.wait(lambda: f.main_requests("a")[2:], 60, "the continue after the back-off")[0]
    assert _last_user_text(req).strip() == "continue"
    assert req["time"] - _at(found) >= 2.5  # api_error_backoff = 3 s (an ordering fact, not a speed)
    f.wait(lambda: "Recovered after 529." in f.screen("a"), 30, "the reply")
    assert not f.events("agent_restarted_fresh", "a") and not f.events("agent_resumed", "a")


def test_prompt_too_long_compacts_once_then_starts_fresh(claude_fleet):
    f = claude_fleet({"a": {"script": [Fail.prompt_too_long(repeat=None)]}})
    f.watch()
    found = f.wait(lambda: _finding(f, "context_limit"), 60, "the context_limit finding")
    fault = f.main_requests("a")[0]
    _record("context_limit (prompt too long)", fault["time"], found)
    fresh = f.wait(lambda: f.events("agent_restarted_fresh", "a"), 90, "the fresh session after /compact")[0]
    remedies = [(e["data"].get("action"), e["data"].get("check")) for e in f.events("remedy", "a")]
    assert remedies[:2] == [("send", "context_limit"), ("fresh", "context_limit")], remedies
    sent = [e for e in f.events("remedy", "a") if e["data"].get("action") == "send"][0]
    assert "'/compact'" in sent["message"]
    assert fresh["data"]["conversation_id"] != f.events("agent_started", "a")[0]["data"]["conversation_id"]


def test_builder_claim_commit_pings_the_adversarys_real_tui(claude_fleet):
    push = ("git commit --allow-empty -q -m 'claim(e2e): parser handles empty input' "
            "&& git push -q origin HEAD:main && echo pushed-ok")
    f = claude_fleet({
        "builder": {"handoff_role": "builder",
                    "script": [ToolUse("Bash", {"command": push, "description": "commit and push the claim"}),
                               Text("Claim pushed.")]},
        "adversary": {"handoff_role": "adversary", "script": [Text("Adversary ready.")]},
    })
    f.watch()
    f.wait(lambda: "Adversary ready." in f.screen("adversary"), 60, "the adversary's first turn")
    f.wait(lambda: "Claim pushed." in f.screen("builder"), 60, "the builder's push")
    pushed_at = (f.origin / "refs" / "heads" / "main").stat().st_mtime  # the push updated origin's ref
    queued = f.wait(lambda: f.events("ping_queued", "adversary"), 30, "the ping")[0]
    assert queued["data"]["subject"] == "claim(e2e): parser handles empty input"
    _record("handoff (claim pushed -> ping queued)", pushed_at, queued)
    req = f.wait(lambda: [r for r in f.main_requests("adversary") if "claim(e2e)" in _last_user_text(r)], 60,
                 "the ping in the adversary's model request")
    assert len(req) == 1
    delivered = f.wait(lambda: f.events("message_delivered", "adversary"), 20, "the delivery record")
    assert "claim(e2e)" in delivered[0]["message"]
    print(f"ping: pushed -> adversary's model request {(req[0]['time'] - pushed_at) * 1000:.0f} ms")


def test_a_message_whose_turn_opens_a_permission_dialog_reaches_the_model_once(claude_fleet):
    """Issue 14: with permission prompts on, the message's first tool call opens a dialog
    right after Enter. `ccci send` must report it delivered, and the model must get it once:
    not again while the dialog shows, nor after a person answers it."""
    import subprocess
    import sys

    msg = "MSG-PERM-14 please clean the build directory"
    f = claude_fleet({"a": {"script": [Text("Ready for work."),
                                       ToolUse("Bash", {"command": "rm -rf build && echo cleaned", "description": "Clean"}),
                                       Text("Cleaned the build dir.")],
                            "options": {"skip_permissions": False},
                            "home_settings": {"permissions": {"defaultMode": "default"}}}})
    f.watch()
    # 2.1.332 in this mode offers, after the first turn, to make auto mode the default
    # (since about 08:28Z on 2026-12-02 in every run; not before): a dialog, which ccci
    # leaves to a person; the person declines it ("No, keep manual mode")
    offer = "Make auto mode your default permission mode?"
    f.wait(lambda: "Ready for work." in f.screen("a"), 90, "the first reply")
    if _appears(f, "a", offer, 8):
        f.tmux.cmd("send-keys", "-t", f.pane("a").pane_id, "Down")
        time.sleep(0.3)
        f.tmux.cmd("send-keys", "-t", f.pane("a").pane_id, "Enter")
        f.wait(lambda: offer not in f.screen("a"), 20, "the offer to close")
    time.sleep(2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.root), "send", "a", msg, "--timeout", "60"],
                       capture_output=True, text=True, env=env, timeout=90)
    assert r.returncode == 0 and "delivered" in r.stdout, (r.stdout, r.stderr, f.tail(), f.screen("a"))
    f.wait(lambda: "Do you want to proceed" in f.screen("a"), 30, "the permission dialog")
    time.sleep(6)  # the dialog stays: nothing may be typed again meanwhile

    def carrying() -> list[dict]:
        return [q for q in f.main_requests("a") if msg in _last_user_text(q)]

    assert len(carrying()) == 1, [(_last_user_text(q)[:60]) for q in f.main_requests("a")]
    pane = f.pane("a")
    f.tmux.cmd("send-keys", "-t", pane.pane_id, "Enter")  # a person answers: Yes
    f.wait(lambda: "Cleaned the build dir." in f.screen("a"), 60, "the reply after the tool ran")
    time.sleep(4)
    assert len(carrying()) == 1
    last = f.main_requests("a")[-1]
    users = [m for m in last["json"]["messages"] if m.get("role") == "user" and msg in json.dumps(m)]
    assert len(users) == 1  # the conversation holds the message once
    delivered = [e for e in f.events("message_delivered", "a") if msg[:20] in e["message"]]
    assert len(delivered) == 1 and not f.events("message_retry", "a")


def _appears(f, agent: str, text: str, seconds: float) -> bool:
    """Whether ``text`` shows on the agent's screen within ``seconds`` (no failure if not)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if text in f.screen(agent):
            return True
        time.sleep(0.2)
    return False


def _ccci_send(f, agent: str, text: str) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.root), "send", agent, text, "--timeout", "60"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=90)


def test_after_a_successful_compact_the_interrupted_request_is_answered(claude_fleet):
    """Issue 14: /compact succeeded and then nothing happened until the stall check (300 s).
    Now the request the context limit cut off is typed again once the compaction is over
    (stall_idle is 3600 s here, so only that can answer it)."""
    req = "REQ-14-COMPACT please summarise the design notes"
    # main calls that fail before the CLI shows the limit: 2.1.197 shows it after the
    # request itself; 2.1.332 first tries to compact by itself 4 times (measured 2026-12-02)
    fails = {"2.1.197": 1}.get(CLAUDE_VERSION, 5)
    f = claude_fleet({"a": {"script": [Text("Ready for work."), Fail.prompt_too_long(repeat=fails)]}})  # then Echo
    f.watch()
    f.wait(lambda: "Ready for work." in f.screen("a"), 90, "the first reply")
    time.sleep(2)
    r = _ccci_send(f, "a", req)
    assert r.returncode == 0, (r.stdout, r.stderr)
    f.wait(lambda: _finding(f, "context_limit"), 60, "the context_limit finding")
    def carrying() -> list[dict]:
        return [q for q in f.main_requests("a") if _last_user_text(q).strip() == req]

    f.wait(lambda: [q for q in carrying() if q["status"] == 200], 90, "the request sent again after /compact")
    time.sleep(3)
    carrying = carrying()
    assert [q["status"] for q in carrying] == [400, 200]  # the failed one, and the one sent again once
    [ev] = f.events("work_resubmitted", "a")
    assert ev["data"]["what"] == "request" and ev["data"]["cause"] == "context_limit"
    assert not f.events("agent_restarted_fresh", "a") and not _finding(f, "stall"), _timeline(f, "a")


def _timeline(f, agent: str) -> str:
    """The agent's events and its model calls in time order, one line each (what a
    failing assertion shows)."""
    rows = [(parse_utc(e["at"]).timestamp(), f"{e['kind']}: {e['message'][:160]} {e['data'].get('rule') or ''}")
            for e in f.events(agent=agent)]
    rows += [(q["time"], f"model call ({q['kind']}) {q['status']}: {_last_user_text(q)[:80]!r}") for q in f.requests(agent)]
    rows.sort()
    return "\n" + "\n".join(f"{t - rows[0][0]:7.2f} s  {line}" for t, line in rows)


def test_after_a_fresh_restart_for_the_400_the_message_that_started_the_turn_is_delivered_once(claude_fleet):
    """Issue 14: the fatal 400 needs a fresh session, which knows nothing of the message
    whose turn failed; it is delivered again, once, to the new session."""
    msg = "PING-14-FATAL new claim pushed: please verify step 2"
    f = claude_fleet({"a": {"script": [Text("Ready for work."), Fail.thinking_400(), Text("Fresh session up."),
                                       Text("Verified PING-14.")]}})
    f.watch()
    f.wait(lambda: "Ready for work." in f.screen("a"), 90, "the first reply")
    time.sleep(2)
    r = _ccci_send(f, "a", msg)
    assert r.returncode == 0, (r.stdout, r.stderr)
    f.wait(lambda: f.events("agent_restarted_fresh", "a"), 90, "a fresh restart")
    f.wait(lambda: "Verified PING-14." in f.screen("a"), 120, "the message delivered to the fresh session")
    time.sleep(3)
    carrying = [q for q in f.main_requests("a") if msg in _last_user_text(q)]
    assert [q["status"] for q in carrying] == [400, 200]
    assert _sid(carrying[0]) != _sid(carrying[1])  # the second reached the new session
    [ev] = f.events("work_resubmitted", "a")
    assert ev["data"]["cause"] == "fatal_error"
