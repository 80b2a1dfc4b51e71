"""The real Claude Code (the pinned 2.1.197, or 2.1.332 with ``CCCI_CLAUDE_VERSION=2.1.332``;
where 2.1.332 differs the test says so) in a real tmux pane, offline, against the scripted model
server: checks that :class:`ccci.backends.claude.ClaudeBackend` launches it correctly and
reads its screens right (``analyse()``), and that a scripted model can make the real CLI
run shell commands (commit and push to git).

Everything runs in a network namespace with only loopback (``conftest.netns``); the CLI is
installed once under ``<repo>/.cache/npm`` (``conftest.claude_bin``). With
``CCCI_E2E_RECORD=1`` the screens asserted on are saved to
``tests/golden/claude-2.1.197-recorded/`` (read by ``tests/test_claude_patterns.py``) when
2.1.197 runs; the screens of 2.1.332 and later are recorded by ``test_claude_screens.py``.
"""
from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timezone

import psutil
import pytest
from real_cli import CLAUDE_VERSION

from ccci.backends.claude import ClaudeBackend
from ccci.model import AgentState
from ccci.testing.model_server import Fail, Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

BANNER = f"Claude Code v{CLAUDE_VERSION}"  # the version the e2e run selected (conftest)
RECORD_VERSIONS = ("2.1.197",)  # the capture names below are claude-2.1.197-recorded/'s
#: the screens of Claude Code 2.1.332 and later (issue 12) where they differ from 2.1.197
NEWER_UI = tuple(int(x) for x in CLAUDE_VERSION.split(".")[:3]) >= (2, 1, 332)


def _ready(screen: str, an) -> bool:
    """Idle with the input box drawn and the start-up banner on screen."""
    return an.state == AgentState.IDLE and an.input_present and BANNER in screen


def test_starts_idle_then_answers_a_typed_prompt(claude_session):
    reply = "E2E-REPLY-ONE: hello from the scripted model."
    s = claude_session([Text(reply, delay=0.12, chunk=3)])
    screen, an = s.wait_until(_ready, 45, "the CLI to start idle")
    s.record("01_fresh_home_startup_idle.txt", screen)
    pane = s.pane()
    assert pane.current_command == "claude"
    # `ip netns exec` and `env` exec in place: the pane pid is the claude process itself
    assert psutil.Process(pane.pid).name() == "claude"
    assert ClaudeBackend().is_agent_process(psutil.Process(pane.pid).name(), [])
    assert an.input_text == ""

    s.type_and_enter("say hello")
    screen, an = s.wait_state("busy", 15)
    s.record("02_streaming_reply_busy.txt", screen)
    screen, an = s.wait_state("idle", 30, also=lambda sc: reply in sc)
    s.record("03_reply_finished_idle.txt", screen)
    assert an.input_text == ""

    main = s.main_requests()
    assert len(main) == 1, [r["step"] for r in s.requests()]
    req = main[0]
    assert req["path"].startswith("/v1/messages")
    assert req["json"]["stream"] is True and req["json"]["tools"]
    # --session-id from ClaudeBackend.launch is the id the CLI uses
    assert req["headers"].get("x-claude-code-session-id") == s.session_id
    assert "x-api-key" not in req["headers"] and "authorization" not in req["headers"]
    assert "say hello" in str(req["json"]["messages"])


def test_scripted_tool_use_makes_the_cli_commit_and_push(claude_session):
    command = ("printf 'made by the agent\\n' > agent.txt && git add agent.txt && "
               "git commit -q -m 'e2e: agent commit' && git push -q origin HEAD:main && echo pushed-ok")
    s = claude_session([ToolUse("Bash", {"command": command, "description": "Commit and push"}),
                        Text("Committed and pushed.")])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("commit a file and push it")
    screen, an = s.wait_state("idle", 45, also=lambda sc: "Committed and pushed." in sc)
    s.record("04_after_bash_tool_idle.txt", screen)

    assert (s.project / "agent.txt").read_text() == "made by the agent\n"
    log = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=s.project, capture_output=True, text=True).stdout
    assert log.strip() == "e2e: agent commit"
    origin = subprocess.run(["git", "--git-dir", str(s.origin), "log", "-1", "--format=%s", "main"],
                            capture_output=True, text=True).stdout
    assert origin.strip() == "e2e: agent commit"

    main = s.main_requests()
    assert [r["step"] for r in main] == ["tool_use:Bash", "text"]
    # the CLI sent the tool's result back with the id of the scripted tool_use block
    results = [c for m in main[1]["json"]["messages"] if isinstance(m.get("content"), list)
               for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result"]
    assert results and "pushed-ok" in str(results[-1].get("content"))
    assert "Bash(" in screen


def test_thinking_block_400_reads_fatal_error(claude_session):
    s = claude_session([Text("first answer"), Fail.thinking_400()])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("one")
    s.wait_state("idle", 30, also=lambda sc: "first answer" in sc)
    s.type_and_enter("two")
    screen, an = s.wait_state("fatal_error", 30)
    s.record("05_thinking_400_fatal.txt", screen)
    assert "`thinking` or `redacted_thinking` blocks" in screen
    assert an.first(AgentState.FATAL_ERROR).rule == "claude.fatal.thinking_block"
    pane = s.pane()
    assert not pane.dead and pane.current_command == "claude"  # the process stays alive
    assert [r["status"] for r in s.main_requests()] == [200, 400]  # a 400 is not retried


def test_usage_limit_reads_usage_limit_with_reset_time(claude_session):
    reset = (int(time.time()) // 60 + 150) * 60  # 2.5 h from now, on a minute
    retries = 3
    s = claude_session([Fail.usage_limit(reset, repeat=retries + 1)],
                       env={"CLAUDE_CODE_MAX_RETRIES": str(retries)})
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("do some work")
    seen_retrying: list[str] = []

    retry_resets: list = []

    def final(screen: str, an) -> bool:
        m = an.first(AgentState.USAGE_LIMIT)
        if m is not None and m.rule == "claude.usage_limit.retrying" and not seen_retrying:
            seen_retrying.append(screen)
            retry_resets.append(an.reset_at)
        return any(m.rule == "claude.usage_limit.final" for m in an.matches)

    screen, an = s.wait_until(final, 60, "the final usage-limit error", interval=0.05)
    s.record("07_usage_limit_final.txt", screen)
    assert an.reset_at == datetime.fromtimestamp(reset, timezone.utc)
    assert an.first(AgentState.USAGE_LIMIT).rule == "claude.usage_limit.final"
    assert f"usage limit reached|{reset}" in screen
    # while the CLI retries by itself the screen also reads usage_limit ("Session limit
    # reached · Retrying in Ns (<local time>)"); the local clock time is the reset, in the
    # CLI's zone, which is ccci's (this host's)
    assert seen_retrying, "never saw the 'Session limit reached · Retrying' screen"
    assert retry_resets[0] == datetime.fromtimestamp(reset, timezone.utc)
    s.record("06_usage_limit_retrying.txt", seen_retrying[0])
    # 2.1.197: "Session limit reached · Retrying in 1s"; 2.1.332: "5-hour limit reached · retrying in 1s"
    assert re.search(r"(?:Session|5-hour) limit reached · [Rr]etrying in \d+s", seen_retrying[0])
    main = s.main_requests()
    assert len(main) == retries + 1 and {r["status"] for r in main} == {429}
    assert not s.pane().dead


def test_prompt_too_long_reads_context_limit(claude_session):
    s = claude_session([Text("first answer"), Fail.prompt_too_long(repeat=None)])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("one")
    s.wait_state("idle", 30, also=lambda sc: "first answer" in sc)
    s.type_and_enter("two")
    screen, an = s.wait_state("context_limit", 30)
    s.record("10_prompt_too_long_context_limit.txt", screen)
    assert "Context limit reached · /compact or /clear to continue" in screen
    assert not s.pane().dead


def test_prompt_too_long_on_the_first_exchange_then_compact_fails(claude_session):
    """Too long from the first exchange (as a real launch's system prompt and tools can
    be): a different message than 'Context limit reached', and '/compact' cannot help."""
    s = claude_session([Fail.prompt_too_long(repeat=None)])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("one")
    screen, an = s.wait_state("context_limit", 30)
    s.record("14_prompt_too_long_first_exchange.txt", screen)
    assert "Prompt is too long ·" in screen and an.first(AgentState.CONTEXT_LIMIT).rule == \
        "claude.context_limit.prompt_too_long"
    s.type_and_enter("/compact")
    screen, an = s.wait_until(lambda sc, a: "Not enough messages to compact" in sc and a.input_present, 30,
                              "/compact to fail")
    s.record("15_compact_failed.txt", screen)
    assert an.state == AgentState.CONTEXT_LIMIT
    assert an.first(AgentState.CONTEXT_LIMIT).rule == "claude.context_limit.compact_failed"
    assert len(s.main_requests()) == 1  # /compact did not even call the model
    assert not s.pane().dead


def test_hung_server_reads_busy_until_the_cli_times_out(claude_session):
    # API_TIMEOUT_MS makes the CLI give up on the hung request and retry (docs/agent-clis.md#claude-code-api-failures)
    s = claude_session([Fail.hang(60), Text("Answer after the retry.")],
                       env={"API_TIMEOUT_MS": "4000", "CLAUDE_CODE_MAX_RETRIES": "1"})
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("are you there")
    screen, an = s.wait_state("busy", 15)
    time.sleep(2)  # well inside the hang: still busy, no error on screen
    screen, title, an = s.read()
    s.record("11_hung_server_busy.txt", screen)
    assert an.state == AgentState.BUSY and "API Error" not in screen
    screen, an = s.wait_state("idle", 30, also=lambda sc: "Answer after the retry." in sc)
    main = s.main_requests()
    assert [r["step"] for r in main] == ["fail:hang", "text"]
    assert main[1]["time"] - main[0]["time"] >= 3.5


def _claude_clock(when: datetime) -> str:
    """A time as Claude Code 2.1.197 and 2.1.332 print a reset: '7:15am', but '8am' on the hour
    (a CI run whose reset fell on 08:00 printed 'Continuing automatically at 8am')."""
    return when.strftime("%-I%p" if when.minute == 0 else "%-I:%M%p").lower()


def test_subscriber_usage_limit_shows_a_dialog_not_an_api_error(claude_session):
    """With a claude.ai login (OAuth token) instead of an API key, the same 429 is NOT
    retried and NOT shown as 'API Error': the CLI prints "You've hit your session limit ·
    resets <time> (<zone>)" and opens its /rate-limit-options dialog by itself; both read
    usage_limit with the reset placed on the right day (rules
    claude.usage_limit.subscriber*)."""
    reset = (int(time.time()) // 60 + 150) * 60
    s = claude_session([Fail.usage_limit(reset, repeat=None)],
                       env={"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-e2e-fake-token"})
    s.wait_until(lambda sc, a: a.state == AgentState.IDLE and a.input_present and BANNER in sc,
                 45, "the CLI to start idle")
    s.type_and_enter("do some work")
    local = _claude_clock(datetime.fromtimestamp(reset, timezone.utc))
    if NEWER_UI:
        # 2.1.332 opens no dialog: it says it continues by itself at the reset
        # (tests/golden/claude-2.1.332-recorded/24_subscriber_usage_limit_auto_continue.txt)
        screen, an = s.wait_until(lambda sc, a: "Continuing automatically at" in sc, 30, "the limit notice")
        assert f"You've hit your 5-hour limit · resets {local} (UTC)" in screen
        assert "API Error" not in screen and "What do you want to do?" not in screen
        assert an.state == AgentState.USAGE_LIMIT
        assert an.reset_at == datetime.fromtimestamp(reset, timezone.utc)
        main = s.main_requests()
        assert len(main) == 1 and main[0]["status"] == 429  # no retries for a subscriber
        assert main[0]["headers"].get("authorization") is None
        return
    screen, an = s.wait_until(lambda sc, a: "What do you want to do?" in sc, 30, "the rate-limit dialog")
    s.record("12_subscriber_usage_limit_dialog.txt", screen)
    assert f"You've hit your session limit · resets {local} (UTC)" in screen
    assert "Stop and wait for limit to reset" in screen
    assert "API Error" not in screen
    assert an.state == AgentState.USAGE_LIMIT
    assert an.matches[0].rule == "claude.usage_limit.subscriber_dialog"
    assert an.reset_at == datetime.fromtimestamp(reset, timezone.utc)
    main = s.main_requests()
    assert len(main) == 1 and main[0]["status"] == 429  # no retries for a subscriber
    assert main[0]["headers"].get("authorization") is None  # recorded without credentials

    s.tmux.send_key(s.pane_id, "Escape")
    screen, an = s.wait_until(lambda sc, a: "What do you want to do?" not in sc and a.input_present,
                              15, "the dialog to close")
    s.record("13_subscriber_usage_limit_after_escape.txt", screen)
    assert "You've hit your session limit" in screen
    assert an.state == AgentState.USAGE_LIMIT and an.reset_at == datetime.fromtimestamp(reset, timezone.utc)
    assert len(s.main_requests()) == 1


def test_exit_then_resume_restores_the_conversation(claude_session):
    s = claude_session([Text("The secret word is PELICAN.")])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("tell me the word")
    s.wait_state("idle", 30, also=lambda sc: "PELICAN." in sc)
    s.type_and_enter("/exit")
    screen, an = s.wait_state("exited", 30)
    s.record("08_after_exit.txt", screen)
    assert an.first(AgentState.EXITED).groups.get("session_id") == s.session_id
    s.stop_server()
    # under load the transcript can reach the disk after the exit; resuming before that
    # gives "No conversation found" (captures/16_resume_no_conversation.txt)
    s.wait_until(lambda sc, a: any("PELICAN." in p.read_text(errors="replace") for p in
                                   s.home.glob(f".claude/projects/*/{s.session_id}.jsonl")), 30, "the transcript")

    r = claude_session([Text("Resumed fine.")], resume_of=s, name=s.name + "-resumed")
    screen, an = r.wait_until(lambda sc, a: a.state == AgentState.IDLE and a.input_present
                              and "PELICAN." in sc, 45, "the resumed CLI to show the old turn")
    s.record("09_resumed_idle.txt", screen)
    r.type_and_enter("and again")
    r.wait_state("idle", 30, also=lambda sc: "Resumed fine." in sc)
    req = r.main_requests()[0]
    assert req["headers"].get("x-claude-code-session-id") == s.session_id
    assert "PELICAN." in str(req["json"]["messages"])  # the history was restored
