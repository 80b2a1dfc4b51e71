"""``ccci events``: the event log as the CLI prints it."""
from __future__ import annotations

import json

from click.testing import CliRunner

from ccci.commands.cli import main
from ccci.commands.init import init_fleet
from ccci.model import Event
from ccci.state import StateStore


def test_last_n_prints_all_n_newest_events_past_one_page(tmp_path):
    # the chaos soak (bench/soak.py) reads thousands of events: '--last N' over 1000
    # printed only the oldest 1000 of them (one page of StateStore.events)
    root = tmp_path / "fleet"
    init_fleet(root, demo=True, name="evpages")
    store = StateStore(root / ".ccci")
    for i in range(1500):
        store.append_event(Event("finding", f"event {i}"))
    store.close()
    res = CliRunner().invoke(main, ["--fleet", str(root), "events", "--json", "--last", "1200"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert len(rows) == 1200
    assert rows[0]["message"] == "event 300" and rows[-1]["message"] == "event 1499"
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows})
