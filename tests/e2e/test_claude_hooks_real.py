"""The real Claude Code (pinned 2.1.197; 2.1.332 with ``CCCI_CLAUDE_VERSION``) with the hooks ccci installs (``--settings`` file written
by :func:`ccci.backends.claude.write_hook_settings`): the relay's spool receives the
lifecycle events, they fold into the right states (including the error kind of every API
failure the model server injects), and they arrive before the pane changes.

The lead times (hook event -> first capture showing the change, polled every ~10 ms) are
printed with ``-s`` and summarised in docs/backends.md; nothing here is a timed assert.
"""
from __future__ import annotations

import statistics
import time

import pytest
from real_cli import CLAUDE_VERSION

from ccci.model import AgentState
from ccci.backends.claude.claude_hooks import HookState, fold, session_file_state
from ccci.testing.model_server import Fail, Text

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

BANNER = f"Claude Code v{CLAUDE_VERSION}"  # the version the e2e run selected (conftest)


def _ready(screen, an) -> bool:
    return an.state == AgentState.IDLE and an.input_present and BANNER in screen


def _first_seen(s, pred, timeout: float) -> float:
    """Wall time of the first capture for which ``pred(screen, analysis)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen, _title, an = s.read()
        if pred(screen, an):
            return time.time()
        time.sleep(0.01)
    pytest.fail(f"pane never showed the change; screen:\n{s.screen()}")


def _wait_event(s, name: str, count: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the main session's events only: a subagent (e.g. the compaction agent after a
        # prompt too long) sends its own, with agent_id set, which fold() ignores
        evs = [e for e in s.hook_events() if e["ev"] == name and not e.get("agent_id")]
        if len(evs) >= count:
            return evs[count - 1]
        time.sleep(0.05)
    pytest.fail(f"hook {name} #{count} never arrived; spool: {s.hook_events()}")


def test_hooks_arrive_before_the_pane_and_carry_each_api_error_kind(claude_session):
    reset = (int(time.time()) // 60 + 150) * 60
    reply = "HOOKS-E2E reply streamed slowly so the turn stays busy a while."
    s = claude_session([Text(reply, delay=0.08, chunk=4), Fail.thinking_400(), Fail.usage_limit(reset),
                        Fail.overloaded_529(), Fail.prompt_too_long(repeat=None)],
                       env={"CLAUDE_CODE_MAX_RETRIES": "0"}, hooks=True)
    s.wait_until(_ready, 45, "the CLI to start idle")
    start = _wait_event(s, "SessionStart", 1)
    assert start.get("source") == "startup" and start["sid"] == s.session_id
    pid = s.pane().pid
    leads: dict[str, list[float]] = {"UserPromptSubmit": [], "Stop": [], "StopFailure": []}

    # a normal turn: UserPromptSubmit before the pane reads busy, Stop before the reply is drawn
    s.type_and_enter("say something")
    busy_at = _first_seen(s, lambda sc, a: a.state == AgentState.BUSY, 15)
    # ~/.claude/sessions/<pid>.json follows too (written a little after the pane)
    file_busy = _first_seen(s, lambda sc, a: (session_file_state(s.home, pid, True) or (None,))[0]
                            == AgentState.BUSY, 5)
    idle_at = _first_seen(s, lambda sc, a: a.state == AgentState.IDLE and reply in sc, 30)
    leads["UserPromptSubmit"].append(busy_at - _wait_event(s, "UserPromptSubmit", 1)["t"])
    leads["Stop"].append(idle_at - _wait_event(s, "Stop", 1)["t"])
    leads["session file busy (hook lead over the file)"] = [file_busy - _wait_event(s, "UserPromptSubmit", 1)["t"]]
    file_idle = _first_seen(s, lambda sc, a: (session_file_state(s.home, pid, True) or (None,))[0]
                            == AgentState.IDLE, 5)
    leads["session file idle (hook lead over the file)"] = [file_idle - _wait_event(s, "Stop", 1)["t"]]

    # every injected failure ends its turn with StopFailure; the fold names the state
    expected = [("thinking", AgentState.FATAL_ERROR, "unknown"),
                ("usage", AgentState.USAGE_LIMIT, "rate_limit"),
                ("overloaded", AgentState.API_ERROR, None),
                ("too long", AgentState.CONTEXT_LIMIT, None)]
    kinds = {}
    prev_state = [None]
    for n, (word, state, error) in enumerate(expected, start=1):
        s.type_and_enter(f"trigger {word}")
        shown = _first_seen(s, lambda sc, a: a.state not in (AgentState.BUSY, AgentState.IDLE)
                            and sc.count("trigger") >= n and a.state != prev_state[0], 30)
        ev = _wait_event(s, "StopFailure", n)
        leads["StopFailure"].append(shown - ev["t"])
        folded = fold(HookState(), ev)
        kinds[word] = (ev.get("error"), folded.state)
        prev_state[0] = s.read()[2].state
        assert folded.state == state.value, (word, ev)
        if error:
            assert ev.get("error") == error, ev
        if state == AgentState.USAGE_LIMIT:
            assert folded.reset_at == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
    # what the relay kept: never the prompts
    text = str(s.hook_events())
    assert "say something" not in text and "trigger thinking" not in text

    s.type_and_enter("/exit")
    end = _wait_event(s, "SessionEnd", 1)
    assert fold(HookState(), end).state == "exited" and end.get("reason") == "prompt_input_exit"
    order = [e["ev"] for e in s.hook_events()]
    assert order[0] == "SessionStart" and order[-1] == "SessionEnd"
    print(f"\nStopFailure error kinds: {kinds}\nhook order: {order}")
    for name, values in leads.items():
        print(f"hook lead (positive: the hook came first), {name}: " + ", ".join(f"{v * 1000:.0f} ms" for v in values)
              + f" (median {statistics.median(values) * 1000:.0f} ms)")
