"""Loops that run for days (issue 13), on the real opencode 1.18.33 under a real
``ccci watch``, offline, against the scripted model server (fixtures: ``conftest.py``).

* A healthy loop ends a turn, is resumed, ends the next...: ``TURNS`` (60 with
  ``CCCI_E2E_TURNS=60``; 25 by default) clean turn ends in a row are all resumed with the
  default ``max_resumes`` (20), which counts resumes after
  failures only; nothing is escalated. Turns are counted at the model server.
* A watcher restarted while the agent sits in a declared ``WAITING-UNTIL`` resumes
  nothing before the deadline (no prompt reaches the model server), and resumes the
  agent after it.

Latencies are printed (``-s``), not asserted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from ccci.clock import UTC, iso
from ccci.config import DEFAULT_CHECKS
from ccci.testing.model_server import Text
from real_cli import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

#: clean turn ends in a row: issue 13 asks for 60 (3.1-3.4 s each here, about 3.5 min in
#: all; run with CCCI_E2E_TURNS=60, measured 187 s and 206 s); the default run does 25, already
#: more than the old cap (max_resumes 20 counted every turn end) and keeps CI under its budget
TURNS = int(os.environ.get("CCCI_E2E_TURNS", "25"))
FAR = "WAITING-UNTIL: 2099-01-01T00:00:00Z"


def _at(e: dict) -> float:
    return datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()


def _kv(f, key: str) -> str | None:
    st = f.store()
    try:
        return st.get(key)
    finally:
        st.close()


def _status(f) -> dict[str, dict]:
    """``ccci status --json`` run as a person would, by agent name."""
    out = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.fleet), "status", "--json"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    return {r["name"]: r for r in json.loads(out)}


def _turn_resumes(evs: list[dict]) -> list[dict]:
    return [e for e in evs if e["kind"] == "agent_resumed" and e.get("agent") == "builder"
            and e["data"]["reason"].startswith("process_death: turn ended")]


def test_sixty_clean_turn_ends_are_all_resumed_without_escalation(oc_fleet):
    # turn i answers TURN-i; the 61st declares a far wait so the loop then rests
    steps = [Text(f"TURN-{i} done.") for i in range(TURNS)] + [Text(f"All done. {FAR}")]
    f = oc_fleet({"builder": steps}, checks={"max_resumes": DEFAULT_CHECKS["max_resumes"]})
    t0 = time.monotonic()
    started = f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 60, "the agent to start")
    conv = started[0]["data"]["conversation_id"]
    f.wait(lambda: len(f.main_requests("builder")) >= TURNS + 1, 420, f"{TURNS + 1} turns at the model server")
    elapsed = time.monotonic() - t0
    evs = f.events()
    resumed = _turn_resumes(evs)
    assert len(resumed) >= TURNS and {e["data"]["conversation_id"] for e in resumed} == {conv}
    assert not [e for e in evs if e["kind"] in ("escalation", "escalation_repeated", "backoff", "breaker_open")], \
        [e["message"] for e in evs if e["kind"].startswith("escalation")]
    # every turn reached the model: the 61st call carries the 60 earlier replies, in order
    main = f.main_requests("builder")
    last = json.dumps(main[TURNS]["json"]["messages"])
    positions = [last.find(f"TURN-{i} done.") for i in range(TURNS)]
    assert -1 not in positions and positions == sorted(positions)
    st = f.store()
    try:
        rec = st.agent("builder")
        assert not rec.given_up and rec.resumes == 0 and rec.restarts == 0
        assert st.restart_count("builder", "turn_end") == len(resumed)
    finally:
        st.close()
    gaps = [_at(e) - main[i]["time"] for i, e in enumerate(resumed[:TURNS])]
    print(f"\n{TURNS} turns in {elapsed:.0f} s ({elapsed / TURNS:.2f} s/turn); model answer -> resume: "
          f"p50 {sorted(gaps)[len(gaps) // 2]:.2f} s, max {max(gaps):.2f} s")


def test_a_watcher_restart_during_a_declared_wait_resumes_nothing_before_the_deadline(oc_fleet):
    deadline = (datetime.now(UTC) + timedelta(seconds=75)).replace(microsecond=0)
    f = oc_fleet({"builder": [Text(f"Nothing to do yet. WAITING-UNTIL: {iso(deadline)}"),
                              Text(f"WOKE-AT-THE-DEADLINE. {FAR}")]})
    f.wait(lambda: len(f.main_requests("builder")) >= 1, 90, "the first turn")
    # the turn ends: ccci sees the exited pane in a declared wait and persists it
    f.wait(lambda: (_kv(f, "declared_wait.builder") or "") == iso(deadline), 60, "the declared wait to be seen")
    status = _status(f)
    assert status["builder"]["state"] == "waiting" and status["builder"]["waiting_until"] == iso(deadline)
    old = f.watcher
    os.kill(old.pid, signal.SIGKILL)
    old.wait(timeout=10)
    n_events = len(f.events())
    f.watch()
    adopted = f.wait_event(lambda evs: [e for e in evs[n_events:] if e["kind"] == "agent_adopted"], 60,
                           "the new watcher to adopt the exited agent")
    assert adopted[0]["data"].get("exited") is True
    # the new watcher shows the declared wait (`ccci status` is a process of its own: it is
    # asked well before the deadline, and its answer counts only if it came before it)
    f.wait(lambda: _status(f)["builder"]["state"] == "waiting", 20, "the new watcher to show the declared wait")
    assert datetime.now(UTC) < deadline, "the test machine is too slow for this deadline"
    # nothing reaches the model before the deadline
    while datetime.now(UTC) < deadline - timedelta(seconds=1):
        assert len(f.main_requests("builder")) == 1, "a prompt reached the model before the declared deadline"
        assert not [e for e in f.events()[n_events:] if e["kind"] == "agent_resumed"]
        time.sleep(0.5)
    f.wait(lambda: len(f.main_requests("builder")) >= 2, 90, "the resume after the deadline")
    second = f.main_requests("builder")[1]
    assert second["time"] >= deadline.timestamp()
    resumed = [e for e in f.events()[n_events:] if e["kind"] == "agent_resumed"]
    assert len(resumed) == 1 and resumed[0]["data"]["reason"].startswith("process_death: turn ended")
    assert _at(resumed[0]) >= deadline.timestamp()
    assert not [e for e in f.events()[n_events:] if "not running at watcher start" in e["message"]]
    print(f"\nresumed {second['time'] - deadline.timestamp():.2f} s after the declared deadline")
