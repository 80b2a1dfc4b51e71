"""Token usage of a real opencode 1.18.33 agent, read from the server's session data
(``ccci.backends.opencode.usage``), equals the usage the model server sent for the
agent's turns, exactly (issue 17), including a turn with a tool call (two model calls in
one assistant message, each with its own step-finish part).

CI runs the plain-turn variant inside ``test_opencode_real.py``'s turn-end test (a fleet
costs ~50 s to start on a loaded machine); this tool-call variant runs with
``CCCI_E2E_USAGE=1``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from real_cli import REPO

from ccci.testing.model_server import Text, ToolUse

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]


def sent_tokens(requests: list[dict]) -> dict[str, int]:
    """The usage the model server sent in its 200 answers, as ``status --json``'s
    ``tokens_today`` names it (OpenAI answers carry no cache writes)."""
    want = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    for r in requests:
        if r.get("status") == 200 and r.get("usage"):
            u = r["usage"]
            want["input"] += u["input_tokens"]
            want["output"] += u["output_tokens"]
            want["cache_read"] += u["cache_read_input_tokens"]
            want["cache_write"] += u["cache_creation_input_tokens"]
    return want


def status_rows(f) -> dict:
    out = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.fleet), "status", "--json"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}


@pytest.mark.skipif(os.environ.get("CCCI_E2E_USAGE") != "1", reason="long variant: CCCI_E2E_USAGE=1")
def test_opencode_tokens_match_what_the_server_sent(oc_fleet):
    wait_until = (datetime.now(timezone.utc) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    f = oc_fleet({"builder": [
        ToolUse("bash", {"command": "echo usage > u.txt", "description": "write a file"},
                usage={"input_tokens": 11111, "output_tokens": 44, "cache_read_input_tokens": 500}),
        Text(f"Wrote it. WAITING-UNTIL: {wait_until}", usage={"input_tokens": 22222, "output_tokens": 33}),
    ]}, checks={"usage_interval": 1})
    t1 = time.monotonic()
    mine = lambda: [r for r in f.main_requests("builder") if r.get("status") == 200]  # noqa: E731
    f.wait(lambda: len(mine()) >= 2, 150, "both model calls of the turn")
    want = sent_tokens(mine())
    assert want["input"] == 11111 + 22222
    t2 = time.monotonic()
    deadline = time.monotonic() + 45
    while (row := status_rows(f)["builder"])["tokens_today"] != want and time.monotonic() < deadline:
        time.sleep(1)
    side = [r for r in f.requests() if r["kind"] == "side" and "ROLE-BUILDER-MARK" in json.dumps(r["json"])]
    assert row["tokens_today"] == want, (row["tokens_today"], want, [r["usage"] for r in mine()], len(side))
    # the context is the newest call's: input + cache read + output
    assert row["context"]["tokens"] == 22222 + 33
    assert row["context"]["model"] == "scripted/model"
    print(f"opencode: counted {want}; side calls not in the session: {len(side)}; "
          f"server start and turn {t2 - t1:.1f} s, status matched {time.monotonic() - t2:.1f} s")
