"""Token usage of the real Gemini CLI 0.61.0 read from its session file
(:mod:`ccci.backends.gemini_usage`) equals the usage the model server's Gemini API
answers reported, exactly (issue 17).

With ``CCCI_E2E_RECORD=1`` the session file is saved as
``tests/golden/gemini-0.61.0/session/usage_turns.jsonl`` with the usage the server sent
beside it (``usage_turns.sent.json``) for the unit tests.
"""
from __future__ import annotations

import json
import shutil

import pytest
from codexgemini_fixtures import gemini_bin, gemini_session  # noqa: F401 (fixtures)
from real_cli import RECORD, REPO, sent_totals, wait_usage

from ccci.clock import Clock
from ccci.send import deliver
from ccci.testing.model_server import Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]

SEND = {"send_enter_delay": 0.2, "send_retries": 3}


def test_gemini_session_usage_matches_what_the_server_sent(gemini_session, tmp_path):
    s = gemini_session([
        Text("Ready. USAGE-A", usage={"input_tokens": 15000, "output_tokens": 40, "cache_read_input_tokens": 2000}),
        ToolUse("run_shell_command", {"command": "echo usage > u.txt", "description": "write"},
                usage={"input_tokens": 16000, "output_tokens": 30}),
        Text("Wrote it. USAGE-B", usage={"input_tokens": 17000, "output_tokens": 50, "cache_read_input_tokens": 9000}),
    ])
    s.wait_state("idle", timeout=60, also=lambda sc: "Gemini CLI v0.61.0" in sc)
    assert deliver(s.tmux, s.pane_id, s.backend, "say ready", SEND, Clock(), tmp_path).delivered
    s.wait_state("idle", timeout=60, also=lambda sc: "USAGE-A" in sc)
    assert deliver(s.tmux, s.pane_id, s.backend, "write the file", SEND, Clock(), tmp_path).delivered
    s.wait_state("idle", timeout=60, also=lambda sc: "USAGE-B" in sc)
    want = sent_totals(s.main_requests())
    assert want["input_tokens"] == 15000 + 16000 + 17000
    got, r = wait_usage(lambda: s.backend.read_usage(s.spec(), s.config, s.conversation_id), want)
    side = [q for q in s.requests() if q.get("kind") == "side"]
    assert got == want, (got, want, len(side))
    assert r.context_tokens == 17000 + 9000 + 50
    if RECORD:
        dest = REPO / "tests" / "golden" / "gemini-0.61.0" / "session"
        dest.mkdir(parents=True, exist_ok=True)
        src = next(x.path for x in s.backend.sessions(s.home / ".gemini") if x.id == s.conversation_id)
        shutil.copy(src, dest / "usage_turns.jsonl")
        (dest / "usage_turns.jsonl").chmod(0o644)
        sent = [{"step": q["step"], "usage": q["usage"]} for q in s.main_requests() if q.get("usage")]
        (dest / "usage_turns.sent.json").write_text(json.dumps(sent, indent=1) + "\n")
