"""Token usage read from the real Claude Code's transcript (issue 17: "Tokens for a real
Claude Code agent driven by the e2e model server match the usage the model server sent,
exactly"), and ``/compact`` sent by ccci when an idle agent is above ``compact_at``
(issue 16 part 5), with the model server reporting large usage.

With ``CCCI_E2E_RECORD=1`` the transcript of the first test is saved as
``tests/golden/claude-<version>-recorded/transcripts/usage_turns.jsonl``, with the usage
the server sent beside it (``usage_turns.sent.json``), for the unit tests of
:mod:`ccci.backends.claude.transcript`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import CAPTURES
from real_cli import RECORD, REPO

from ccci.backends.claude import ClaudeBackend
from ccci.model import AgentSpec, AgentState, Role
from ccci.state import USAGE_COUNTERS
from ccci.testing.model_server import Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]

#: Anthropic usage field -> ccci counter
AS_CCCI = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
           "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}


def _ready(screen, an) -> bool:
    return an.state == AgentState.IDLE and an.input_present


def sent_totals(requests: list[dict]) -> dict[str, int]:
    """What the model server's answers reported, summed (ccci counter names)."""
    out = dict.fromkeys(USAGE_COUNTERS, 0)
    for r in requests:
        if r.get("status") == 200 and r.get("usage"):
            for theirs, ours in AS_CCCI.items():
                out[ours] += r["usage"][theirs]
    return out


def test_transcript_usage_matches_what_the_server_sent(claude_session):
    s = claude_session([
        (Text("Writing the file now."),
         ToolUse("Bash", {"command": "echo usage-e2e > u.txt", "description": "write"},
                 usage={"input_tokens": 12345, "output_tokens": 67, "cache_read_input_tokens": 1000,
                        "cache_creation_input_tokens": 200})),
        Text("USAGE-ONE done.", usage={"input_tokens": 23456, "output_tokens": 89}),
        Text("USAGE-TWO streamed in small pieces.", delay=0.05, chunk=4,
             usage={"input_tokens": 40000, "output_tokens": 321, "cache_read_input_tokens": 777}),
    ])
    s.wait_until(_ready, 45, "the CLI to start idle")
    s.type_and_enter("write the file please")
    s.wait_until(lambda sc, an: "USAGE-ONE" in sc and _ready(sc, an), 60, "turn 1")
    s.type_and_enter("second turn")
    s.wait_until(lambda sc, an: "USAGE-TWO" in sc and _ready(sc, an), 60, "turn 2")
    backend = ClaudeBackend()
    spec = AgentSpec(name=s.name, role=Role.LOOP, backend="claude", workdir=s.project, env={"HOME": str(s.home)})
    want = sent_totals(s.requests())
    assert want["input_tokens"] == 12345 + 23456 + 40000

    def summed():
        r = backend.read_usage(spec, None, s.session_id)
        if r is None:
            return None, None
        tot = dict.fromkeys(USAGE_COUNTERS, 0)
        for counts in r.totals.values():
            for k in USAGE_COUNTERS:
                tot[k] += counts[k]
        return tot, r

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got, reading = summed()
        if got == want:
            break
        time.sleep(0.2)
    assert got == want, (got, want)
    # the newest answer's prompt plus its output is the context the next call starts from
    assert reading.context_tokens == 40000 + 321 + 777
    assert {m for (_d, _s, m) in reading.totals} == {r["json"]["model"] for r in s.main_requests()}
    if RECORD:
        dest = CAPTURES / "transcripts"
        dest.mkdir(parents=True, exist_ok=True)
        src = next(s.home.glob(f".claude/projects/*/{s.session_id}.jsonl"))
        shutil.copy(src, dest / "usage_turns.jsonl")
        sent = [{"step": r["step"], "usage": r["usage"]} for r in s.requests() if r.get("usage")]
        (dest / "usage_turns.sent.json").write_text(json.dumps(sent, indent=1) + "\n")
