"""The real Gemini CLI 0.61.0 in a real tmux pane, offline, against the scripted model
server's Gemini API: :class:`ccci.backends.gemini.GeminiBackend` launches it with the
session id ccci chose, ccci's send path (:func:`ccci.send.deliver`) delivers messages, a
scripted ``run_shell_command`` call commits and pushes, a 429 quota error reads as
``usage_limit``, ``/quit`` prints the same id, and ``gemini --resume <id>`` restores it.

Runs in the loopback-only namespace of ``conftest.netns``; the CLI is installed once
under ``<repo>/.cache/npm`` (``codexgemini_fixtures.gemini_bin``).
"""
from __future__ import annotations

import time

import pytest
from codexgemini_fixtures import gemini_bin, gemini_session, git  # noqa: F401 (fixtures)

from ccci.clock import Clock
from ccci.send import deliver
from ccci.testing.model_server import Fail, Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

SEND = {"send_enter_delay": 0.2, "send_retries": 3}


def test_gemini_launch_send_tool_usage_limit_exit_resume(gemini_session, tmp_path):
    t0 = time.monotonic()
    s = gemini_session([
        Text("Ready. I read your message.", delay=0.05),
        ToolUse("run_shell_command", {"command": "git commit -q --allow-empty -m 'claim(e2e): gemini' && "
                                                 "git push -q origin HEAD:main && echo pushed-ok",
                                      "description": "commit and push"}),
        Text("Committed and pushed."),
        Fail.usage_limit(int(time.time()) + 3600, repeat=None),
    ])
    # the first frame has the input box but not yet the banner; wait for both
    screen, an = s.wait_state("idle", timeout=60, also=lambda sc: "Gemini CLI v0.61.0" in sc)
    assert an.input_present and an.input_text == ""

    msg = "Please start: read README.md and report; this message is about two hundred characters long " * 2
    res = deliver(s.tmux, s.pane_id, s.backend, msg.strip(), SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    s.wait_state("idle", timeout=60, also=lambda sc: "Ready. I read your message." in sc)
    users = [c for c in s.main_requests()[-1]["json"]["contents"] if c["role"] == "user"]
    assert users[-1]["parts"][-1]["text"] == msg.strip()

    res = deliver(s.tmux, s.pane_id, s.backend, "commit and push your work", SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    s.wait_state("idle", timeout=60, also=lambda sc: "Committed and pushed." in sc)
    assert "claim(e2e): gemini" in git(s.origin, "log", "--format=%s", "-1", "main")

    # a per-day quota 429: the CLI's dialog replaces the input box -> usage_limit
    res = deliver(s.tmux, s.pane_id, s.backend, "continue", SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    screen, an = s.wait_state("usage_limit", timeout=90)
    assert an.matches[0].rule == "gemini.usage_limit.dialog" and not an.input_present
    # what the usage-limit remedy does after its wait: send "continue". The letters go to
    # the dialog; the Enter picks the highlighted "1. Keep trying", which retries the
    # request (the limit is still on here, so the dialog comes back)
    calls = len(s.main_requests())
    res = deliver(s.tmux, s.pane_id, s.backend, "continue", SEND, Clock(), tmp_path)
    assert not res.delivered and "no input box" in res.detail
    s.wait_until(lambda sc, a: len(s.main_requests()) > calls and a.state.value == "usage_limit"
                 and not a.input_present, 60, "a retried request and the dialog again")
    s.tmux.send_key(s.pane_id, "Down")  # "2. Stop"
    time.sleep(0.3)
    s.tmux.send_key(s.pane_id, "Enter")
    screen, an = s.wait_until(lambda sc, a: a.state.value == "usage_limit" and a.input_present, 30,
                              "usage_limit with the input box back")
    assert an.matches[0].rule == "gemini.usage_limit.final"

    # the session file carries the id ccci chose with --session-id
    files = s.backend.sessions(s.home / ".gemini")
    assert [f.id for f in files] == [s.conversation_id]

    s.tmux.send_literal(s.pane_id, "/quit")
    time.sleep(0.3)
    s.tmux.send_key(s.pane_id, "Enter")
    screen, an = s.wait_state("exited", timeout=30)
    assert an.matches[0].groups["session_id"] == s.conversation_id

    argv = s.launch(resume=True)
    assert argv[:3] == ["gemini", "--resume", s.conversation_id]
    s.wait_until(lambda sc, a: a.input_present and "Committed and pushed." in sc, 60, "resumed history")
    assert time.monotonic() - t0 < 180


def test_gemini_twenty_long_messages_each_delivered_exactly_once(gemini_session, tmp_path):
    """20 messages of 600-3000 characters through ccci's send path (pasted: the backend's
    paste_over is 200): every one submitted, each reaching the model exactly once."""
    import random

    rnd = random.Random(5)
    s = gemini_session([])  # the server echoes every message
    s.wait_settled("idle", timeout=60, also=lambda sc: "Gemini CLI v0.61.0" in sc)
    sent = []
    for n in range(20):
        size = rnd.randint(600, 3000)
        msg = f"message {n:02d}: " + " ".join(f"w{rnd.randint(0, 99999):05d}" for _ in range(size // 7))
        msg = msg[:size].strip()
        before = len(s.main_requests())
        res = deliver(s.tmux, s.pane_id, s.backend, msg, SEND, Clock(), tmp_path)
        assert res.delivered and res.attempts == 1, (n, res)
        s.wait_until(lambda sc, a: len(s.main_requests()) > before and a.state.value == "idle", 60,
                     f"message {n} answered")
        sent.append(msg)
    # the last user turn of each request; the first also carries the session context part
    got = [[c for c in r["json"]["contents"] if c["role"] == "user"][-1]["parts"][-1]["text"]
           for r in s.main_requests()]
    assert got == sent
