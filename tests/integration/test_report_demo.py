"""``ccci report --since 1h --json`` on a fleet that ran the demo's faults accounts for
every restart and remedy in its event log, and ``--png`` writes the timeline.

The demo takes about two minutes, and CI runs it anyway (``.ci/run``: ``ccci demo
--keep --dir D``, then ``ccci shutdown``); this test reads that fleet when
``CCCI_DEMO_FLEET=D`` is set. With ``CCCI_REPORT_RUN_DEMO=1`` it runs the demo itself.
Otherwise it is skipped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.commands.report import STATE_COLOURS
from ccci.report import LAUNCH_KINDS, REMEDY_KINDS
from ccci.state import StateStore

pytestmark = [pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(900)]  # the demo itself: ~2-3 min


@pytest.fixture(scope="module")
def demo_fleet(tmp_path_factory) -> Path:
    given = os.environ.get("CCCI_DEMO_FLEET")
    if given:
        return Path(given)
    if os.environ.get("CCCI_REPORT_RUN_DEMO") != "1":
        pytest.skip("set CCCI_DEMO_FLEET to a fleet 'ccci demo --keep --dir' left (as .ci/run does), "
                    "or CCCI_REPORT_RUN_DEMO=1 to run the demo here (about 2 minutes)")
    d = tmp_path_factory.mktemp("demo") / "fleet"
    run = subprocess.run([sys.executable, "-m", "ccci", "demo", "--keep", "--dir", str(d)],
                         capture_output=True, text=True, timeout=600)
    try:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    finally:
        subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(d), "shutdown", "--timeout", "10"],
                       capture_output=True, timeout=60)
    return d


def test_report_accounts_for_every_restart_and_remedy_and_draws_the_timeline(demo_fleet, tmp_path):
    from PIL import Image

    png = tmp_path / "timeline.png"
    out = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(demo_fleet), "report", "--since", "1h",
                          "--json", "--png", str(png)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)

    cfg = config_mod.load(demo_fleet / "ccci.toml")
    store = StateStore(cfg.state_dir)
    log = [e for e in store.events(limit=10**6) if e["at"] >= rep["since"]]
    launches = {e["id"] for e in log if e["kind"] in LAUNCH_KINDS}
    remedies = {e["id"] for e in log if e["kind"] in REMEDY_KINDS}
    agents = rep["agents"]
    # the demo's faults are in the log: a kill -9 (process_death), the fatal 400 (fresh),
    # the frozen process (stall), the usage limit (wait), the context limit (send /compact)
    causes = {c for a in agents.values() for c in a["restarts"]["by_cause"]}
    assert {"process_death", "fatal_error", "stall"} <= causes, causes
    rem_causes = {c for a in agents.values() for c in a["remedies"]["by_cause"]}
    assert {"wait (usage_limit)", "send (context_limit)", "fresh (fatal_error)"} <= rem_causes, rem_causes
    # every restart and every remedy of the log, each once
    got_launch = [i for a in agents.values() for i in a["restarts"]["event_ids"]]
    assert sorted(got_launch) == sorted(launches)
    assert sum(a["restarts"]["total"] for a in agents.values()) == len(launches)
    assert sum(sum(a["restarts"]["by_cause"].values()) for a in agents.values()) == len(launches)
    got_rem = [i for a in agents.values() for i in a["remedies"]["event_ids"]] + rep["fleet_remedies"]["event_ids"]
    assert sorted(got_rem) == sorted(remedies)
    assert sum(sum(a["remedies"]["by_cause"].values()) for a in agents.values()) \
        + sum(rep["fleet_remedies"]["by_cause"].values()) == len(remedies)
    assert rep["event_counts"].get("remedy", 0) + rep["event_counts"].get("remedy_failed", 0) == len(remedies)
    # states were logged, and the limits the demo injected show as time lost
    assert agents["builder"]["time_lost_s"]["usage_limit"] > 0
    assert agents["builder"]["time_lost_s"]["stall"] > 0
    for a in agents.values():
        assert "busy" in a["time_in_state_s"] and "idle" in a["time_in_state_s"]
        assert 0 < a["uptime_pct"] <= 100
    assert rep["handoffs"].get("claim(", 0) >= 1 and rep["handoffs"].get("review(", 0) >= 1

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(BytesIO(data)).convert("RGB")
    assert img.size[0] >= 800 and img.size[1] >= 200
    colours = {c for _, c in img.getcolors(1 << 20)}
    for state in ("busy", "idle", "restarting"):
        hexc = STATE_COLOURS[state]
        assert tuple(int(hexc[i:i + 2], 16) for i in (1, 3, 5)) in colours, f"no {state} in the timeline"
