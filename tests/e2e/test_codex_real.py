"""The real Codex CLI (pinned 0.171.0; 0.169.0 with ``CCCI_CODEX_VERSION=0.169.0``) in a
real tmux pane, offline, against the scripted model
server's Responses API: :class:`ccci.backends.codex.CodexBackend` launches it, ccci's send
path (:func:`ccci.send.deliver`) delivers messages, a scripted ``exec_command`` call
commits and pushes, a 400 reads as ``fatal_error``, the running session's id is learned
from ccci's ``SessionStart`` hook (and the rollout file the CLI keeps open), and
``codex resume <id>`` restores it.

Runs in the loopback-only namespace of ``conftest.netns``; the CLI is installed once
under ``<repo>/.cache/npm`` (another version under ``.cache/npm-codex-<version>``,
``codexgemini_fixtures.codex_bin``), and its screens are read with that version's rules.
"""
from __future__ import annotations

import time

import pytest
from codexgemini_fixtures import codex_bin, codex_session, git  # noqa: F401 (fixtures)
from real_cli import CODEX_VERSION

from ccci.clock import Clock
from ccci.model import AgentState
from ccci.send import deliver
from ccci.testing.model_server import Fail, Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

SEND = {"send_enter_delay": 0.2, "send_retries": 3}


def test_codex_launch_send_tool_fatal_exit_resume(codex_session, tmp_path):
    t0 = time.monotonic()
    s = codex_session([
        Text("Ready. I read your message.", delay=0.05),
        ToolUse("exec_command", {"cmd": "git commit -q --allow-empty -m 'claim(e2e): codex' && "
                                        "git push -q origin HEAD:main && echo pushed-ok"}),
        Text("Committed and pushed."),
        Fail.thinking_400(),
    ])
    screen, an = s.wait_state("idle", timeout=60)
    assert f"OpenAI Codex (v{CODEX_VERSION})" in screen and an.input_present and an.input_text == ""
    assert s.backend.patterns.version == CODEX_VERSION  # this version's own rule file

    # ccci's send path: typed literally, Enter in a separate call, verified
    msg = "Please start: read README.md and report; this message is about two hundred characters long " * 2
    res = deliver(s.tmux, s.pane_id, s.backend, msg.strip(), SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    screen, _ = s.wait_state("idle", timeout=60, also=lambda sc: "Ready. I read your message." in sc)
    sent = [r for r in s.main_requests() if r["json"]["input"][-1].get("role") == "user"]
    assert sent and sent[-1]["json"]["input"][-1]["content"][0]["text"] == msg.strip()

    # a scripted tool call: the real CLI commits and pushes in the project
    res = deliver(s.tmux, s.pane_id, s.backend, "commit and push your work", SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    s.wait_state("idle", timeout=60, also=lambda sc: "Committed and pushed." in sc)
    assert "claim(e2e): codex" in git(s.origin, "log", "--format=%s", "-1", "main")

    # a thinking-block 400: detected as fatal (the remedy is a fresh session)
    res = deliver(s.tmux, s.pane_id, s.backend, "continue", SEND, Clock(), tmp_path)
    assert res.delivered, res.detail
    screen, an = s.wait_state("fatal_error", timeout=60)
    assert an.matches[0].rule == "codex.fatal.thinking_block"

    # the id Codex chose: from ccci's SessionStart hook, and from the rollout file the
    # running CLI keeps open
    pane = s.pane()
    session_id = s.backend.session_id_of_pid(pane.pid)
    assert session_id and s.backend.known_session(s.spec(), session_id)
    assert s.backend.hooked_session_id(s.config, s.spec().name) == session_id
    assert [x.id for x in s.backend.sessions(s.home / ".codex", s.project)] == [session_id]
    # the session file names the version that wrote it (``ccci status --json``'s cli_version)
    assert s.backend.running_version(s.spec(), s.config, session_id) == CODEX_VERSION

    s.tmux.send_literal(s.pane_id, "/quit")
    time.sleep(0.3)
    s.tmux.send_key(s.pane_id, "Enter")
    screen, an = s.wait_state("exited", timeout=30)
    assert an.matches[0].groups["session_id"] == session_id

    # ccci persisted its own handle at the fresh start; resume finds Codex's id via the hook
    assert s.conversation_id != session_id
    argv = s.launch(resume=True)
    assert argv[:2] == ["codex", "resume"] and session_id in argv and "--last" not in argv
    screen, an = s.wait_state("fatal_error", timeout=60, also=lambda sc: "Committed and pushed." in sc)
    assert an.input_present  # the resumed TUI is up, history (and its last error) redrawn
    assert time.monotonic() - t0 < 180


def last_user_text(request: dict) -> str:
    """The text of the last user message of a Responses API request."""
    for item in reversed(request["json"]["input"]):
        if item.get("role") == "user":
            return "".join(c.get("text", "") for c in item["content"])
    return ""


def test_codex_twenty_long_messages_each_delivered_exactly_once(codex_session, tmp_path):
    """20 messages of 600-3000 characters through ccci's send path (pasted: the backend's
    paste_over is 200): every one submitted, each reaching the model exactly once."""
    import random

    rnd = random.Random(5)
    s = codex_session([])  # the server echoes every message
    s.wait_settled("idle", timeout=60)
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
    got = [last_user_text(r) for r in s.main_requests()]
    assert got == sent
