"""Three phases end to end on a real tmux fleet with a real git origin: claim and review
commits ping the right agent once each, DONE on origin moves the phase, the last phase
writes SEQUENCE-COMPLETE, and a watcher killed mid-sequence neither re-pings nor loses
its place."""
from __future__ import annotations

import signal

import pytest

from ccci import config as config_mod

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def _with_phases(fleet, phases):
    text = fleet.cfg.path.read_text()
    text = text.replace("wait_seconds = 600\n", "wait_seconds = 600\ndone_after = 2\n")
    text += "\n[phases]\norder = [" + ", ".join(f'"{p}"' for p in phases) + "]\n"
    fleet.cfg.path.write_text(text)
    fleet.cfg = config_mod.load(fleet.root)


def test_three_phases_end_to_end_with_a_watcher_restart(fleet):
    _with_phases(fleet, ["1a", "1b", "2"])
    w1 = fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("phase_complete"), 60), "phase 1a never completed"
    # kill -9 the watcher mid-sequence; a new one must carry on from the stored phase
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    pinged_before = {r["dedup_key"] for r in fleet.store.db.execute("SELECT dedup_key FROM messages WHERE dedup_key LIKE 'ping:%'")}
    assert fleet.store.get("phase.current") == "1b"
    w2 = fleet.watch("--quiet")
    assert fleet.wait(lambda: w2.poll() is not None, 120), "the watcher did not finish the sequence"
    assert w2.returncode == 0
    assert (fleet.root / "SEQUENCE-COMPLETE").is_file()
    done = [e["data"]["phase"] for e in fleet.events("phase_complete")]
    assert done == ["1a", "1b", "2"]
    assert fleet.events("sequence_complete")
    # every commit pinged at most once, and nothing pinged before the kill was queued again
    rows = list(fleet.store.db.execute("SELECT dedup_key, COUNT(*) AS n FROM messages WHERE dedup_key LIKE 'ping:%' GROUP BY dedup_key"))
    assert rows and all(r["n"] == 1 for r in rows)
    requeued = [e for e in fleet.events("ping_queued") if f"ping:{e['data']['sha']}:{e['agent']}" in pinged_before]
    assert len(requeued) == len(pinged_before)
    # handoffs really happened in the later phases: claims reached the adversary, reviews the builder
    delivered = fleet.events("message_delivered")
    assert any(e["agent"] == "adversary" and "claim(" in e["message"] for e in delivered)
    assert any(e["agent"] == "builder" and "review(" in e["message"] for e in delivered)
    # agents were started fresh in each phase, with the phase in their prompt
    log = (fleet.cfg.state_dir / "logs" / "builder.log").read_text(errors="replace")
    assert "PHASE 1b" in log and "PHASE 2" in log
    # the loops are stopped at the end
    assert fleet.pane("builder") is None and fleet.pane("adversary") is None
