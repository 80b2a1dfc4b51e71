"""Every row of docs/errors.md runs through ccci's classifier: screen rows in a recorded
capture of their CLI read with its pattern file, Claude Code hook rows folded as
``StopFailure`` records, opencode API rows classified as the server's stored error."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ccci.backends.claude.claude_hooks import HookState, fold, merge
from ccci.backends.opencode import classify_message, outcome_kind
from ccci.checks.api_error import error_kind
from ccci.model import AgentState, ScreenAnalysis
from ccci.patterns import load_for

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
#: cli -> (capture whose error line is replaced, how that line starts)
TEMPLATES = {
    "claude": ("claude-2.1.332-recorded/11_overloaded_529_final_placeholder.txt", "● API Error:"),
    "codex": ("codex-0.171.0/06_http_400.txt", "■ "),
    "gemini": ("gemini-0.61.0/06_http_400_thinking_block.txt", "✕ [API Error:"),
    "opencode": ("opencode-1.18.33/03_thinking_400_fatal_exited.txt", "Error: "),
}
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.replace("\\|", "|").strip(" ") for p in parts]


def rows() -> list[dict]:
    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    table = text[text.index("## The table"):]
    out = []
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| cli ") or line.startswith("|---"):
            continue
        c = _cells(line)
        assert len(c) == 7, line
        out.append(dict(zip(("cli", "version", "where", "message", "klass", "source", "rule"), c)))
    return out


ROWS = rows()


def test_the_table_covers_every_pinned_cli_and_class():
    assert {(r["cli"], r["version"]) for r in ROWS} == {("claude", "2.1.332"), ("codex", "0.171.0"),
                                                        ("gemini", "0.61.0"), ("opencode", "1.18.33")}
    assert {r["klass"] for r in ROWS} >= {"api_error", "auth", "fatal_error", "usage_limit", "context_limit"}
    assert len(ROWS) >= 40


def _expected_state(klass: str) -> AgentState:
    return AgentState.API_ERROR if klass == "auth" else AgentState(klass)


@pytest.mark.parametrize("row", [r for r in ROWS if r["where"] == "screen"], ids=lambda r: f"{r['cli']}:{r['message'][:40]}")
def test_screen_rows(row):
    path, start = TEMPLATES[row["cli"]]
    lines = (GOLDEN / path).read_text(encoding="utf-8").splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(start))
    lines[i] = row["message"].strip("\n")
    screen = "\n".join(lines) + "\n"
    analysis = load_for(row["cli"], row["version"]).analyse(screen, "", NOW)
    assert analysis.state == _expected_state(row["klass"]), (row, [m.rule for m in analysis.matches])
    assert analysis.matches[0].rule == row["rule"], (row, [m.rule for m in analysis.matches])
    if analysis.state == AgentState.API_ERROR:
        assert error_kind(analysis) == ("auth" if row["klass"] == "auth" else "retry"), row


@pytest.mark.parametrize("row", [r for r in ROWS if r["where"] == "hook"], ids=lambda r: r["message"][:40])
def test_claude_hook_rows(row):
    m = re.match(r"error=(?P<error>\S+) (?P<field>msg|details)=(?P<text>.*)$", row["message"])
    assert m, row
    rec = {"ev": "StopFailure", "t": NOW.timestamp(), "pid": 1, "sid": "s", "error": m["error"],
           ("msg" if m["field"] == "msg" else "error_details"): m["text"]}
    st = fold(HookState(), rec)
    assert st.agent_state == _expected_state(row["klass"]), (row, st)
    if st.agent_state == AgentState.USAGE_LIMIT:
        # from the epoch the CLI reported, else its clock time after the hook's time
        assert st.reset_at in ("2025-12-06T05:46:40Z", "2026-12-07T00:44:00Z"), st
    pane = ScreenAnalysis(state=AgentState.BUSY)
    merged, winner = merge(pane, st.agent_state, 100.0, f"hook {st.evidence}", "claude.hook.StopFailure", 99.0, 100.1,
                           groups={"error_kind": st.error})
    assert winner == "source" and merged.state == st.agent_state and merged.matches[0].structured
    if merged.state == AgentState.API_ERROR:
        assert error_kind(merged) == ("auth" if row["klass"] == "auth" else "retry"), row


@pytest.mark.parametrize("row", [r for r in ROWS if r["where"] == "api"], ids=lambda r: r["message"][:40])
def test_opencode_api_rows(row):
    status, message = row["message"].split(" ", 1)
    headers = {}
    if "usage limit reached|" in message:
        headers = {"anthropic-ratelimit-unified-status": "rejected",
                   "anthropic-ratelimit-unified-reset": message.rsplit("|", 1)[1]}
    msg = {"info": {"role": "assistant", "error": {"name": "APIError", "data": {
        "message": message, "statusCode": int(status), "isRetryable": False, "responseHeaders": headers}}}, "parts": []}
    outcome = classify_message(msg, NOW)
    assert outcome.state == _expected_state(row["klass"]), (row, outcome)
    assert outcome_kind(outcome) == ("auth" if row["klass"] == "auth" else "retry")
    if outcome.state == AgentState.USAGE_LIMIT:
        assert outcome.reset_at == datetime(2025, 12, 6, 5, 46, 40, tzinfo=timezone.utc)
