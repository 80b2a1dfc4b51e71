"""``[budget]`` on a real fleet under a real ``ccci watch``: an agent over its daily
budget is escalated once and held (never killed, not restarted after a ``kill -9``)
until a person lifts it with ``ccci budget reset``; the report and ``status --json``
show the cost, and no report shows the secret in the agents' environment."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from ccci.clock import UTC
from ccci.cost import utc_day
from ccci.testing.fleet import Fleet, fleet_name

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


SECRET = "sk-ant-api03-DoNotShowMe-7f3a9c"


@pytest.fixture
def secret_fleet(tmp_path):
    """The demo fleet with a secret in every agent's environment."""
    f = Fleet(tmp_path / "fleet", fleet_name(tmp_path), agents={"env": {"ANTHROPIC_API_KEY": SECRET}})
    yield f
    f.close()


def test_budget_holds_an_agent_without_killing_it_until_budget_reset(secret_fleet, tmp_path):
    from datetime import datetime

    fleet = secret_fleet
    with open(fleet.root / "ccci.toml", "a") as f:
        f.write('\n[budget]\nagent_daily_usd = 1.0\n\n[prices."scripted-model"]\ninput = 2.0\noutput = 10.0\n')
    fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.live_pid(a) and fleet.idle(a) for a in fleet.AGENTS), 60), "fleet not up"
    pid = fleet.live_pid("builder")
    now = datetime.now(UTC)
    # what a CLI's transcript reader records: 200k output tokens at $10/M = $2 > $1
    fleet.store.set_usage("builder", utc_day(now), "conv-1", "scripted-model", {"output_tokens": 200_000}, now)
    fleet.store.set_usage("adversary", utc_day(now), "conv-2", "scripted-model", {"input_tokens": 100_000}, now)

    esc = fleet.wait(lambda: [e for e in fleet.events("escalation", "builder") if e["data"].get("check") == "budget"],
                     30, poll=0.3)
    assert esc, f"no budget escalation; events: {[e['kind'] for e in fleet.events()][-20:]}"
    assert "builder spent $2.00 of $1.00" in esc[0]["message"]
    assert esc[0]["data"]["retry_at"][:10] > utc_day(now)  # the automatic retry: the next UTC day at the earliest
    assert fleet.store.agent("builder").given_up and not fleet.store.agent("adversary").given_up
    assert fleet.live_pid("builder") == pid, "the held agent's process was touched"

    rows = {r["name"]: r for r in json.loads(fleet.ccci("status", "--json").stdout)}
    assert rows["builder"]["cost_today_usd"] == pytest.approx(2.0)
    assert rows["adversary"]["cost_today_usd"] == pytest.approx(0.2)

    # held: a kill -9 is not answered with a restart
    n0 = len(fleet.restarts("builder"))
    os.kill(pid, signal.SIGKILL)
    assert fleet.wait(lambda: fleet.live_pid("builder") is None, 10)
    time.sleep(4)  # 4 ticks: process death acts within one for an agent that is not held
    assert len(fleet.restarts("builder")) == n0 and fleet.live_pid("builder") is None

    # a person lifts it: the watcher picks it up and restarts the dead agent
    out = fleet.ccci("budget", "reset", "builder")
    assert out.returncode == 0 and "budget lifted" in out.stdout, out.stderr
    assert fleet.wait(lambda: len(fleet.restarts("builder")) > n0 and fleet.live_pid("builder"), 30), \
        f"not restarted after 'ccci budget reset'; events: {[e['kind'] for e in fleet.events(agent='builder')][-10:]}"
    assert len(fleet.events("escalation", "builder")) == 1  # not escalated again the same day

    out = fleet.ccci("report", "--since", "10m", "--json", "--html", str(tmp_path / "r.html"))
    rep = json.loads(out.stdout)
    # no report shows a secret from an agent's environment
    assert SECRET not in out.stdout and SECRET not in (tmp_path / "r.html").read_text()
    assert SECRET not in fleet.ccci("report", "--since", "10m").stdout
    assert rep["agents"]["builder"]["cost_usd"] == pytest.approx(2.0)
    assert rep["agents"]["builder"]["escalations"]["total"] == 1
    assert rep["agents"]["builder"]["time_in_state_s"].get("given_up", 0) > 0
