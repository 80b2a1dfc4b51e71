"""One-shot jobs: `ccci job start` on a busy job changes nothing; on a finished one it
starts fresh; a finished job stays idle and viewable and nothing touches it."""
from __future__ import annotations

import time

import pytest

from ccci import config as config_mod

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def test_job_start_is_use_or_create(fleet):
    upgrade = fleet.root / "work" / "upgrade"
    upgrade.mkdir(parents=True)
    fleet.cfg.path.write_text(fleet.cfg.path.read_text() + '\n[[agents]]\nname = "upgrade"\nrole = "job"\n'
                              'workdir = "work/upgrade"\n[agents.options]\nturn_seconds = 6\n')
    fleet.cfg = config_mod.load(fleet.root)
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("agent_started", "builder"), 20)
    time.sleep(2)
    assert fleet.pane("upgrade") is None, "a job must not start by itself"

    r = fleet.ccci("job", "start", "upgrade", "--", "bump", "deps")
    assert r.returncode == 0 and "started fresh" in r.stdout, r.stdout + r.stderr
    first = fleet.wait(lambda: fleet.pane("upgrade"), 10)
    assert first is not None
    assert fleet.wait(lambda: "working…" in fleet.screen("upgrade"), 10)
    assert "bump deps" in fleet.screen("upgrade"), "extra arguments pass through to the prompt"

    r = fleet.ccci("job", "start", "upgrade")
    assert r.returncode == 0 and "busy: left alone" in r.stdout, r.stdout + r.stderr
    assert fleet.pane("upgrade").pid == first.pid

    assert fleet.wait(lambda: fleet.events("job_finished", "upgrade"), 30), "the job never finished"
    time.sleep(8)  # longer than the demo stall_idle: a finished job is not nudged or restarted
    assert fleet.pane("upgrade").pid == first.pid and not fleet.pane("upgrade").dead
    assert fleet.idle("upgrade")
    assert not [e for e in fleet.events(agent="upgrade") if e["kind"] in ("finding", "remedy") and "stall" in e["message"]]

    r = fleet.ccci("job", "start", "upgrade")
    assert r.returncode == 0 and "started fresh" in r.stdout, r.stdout + r.stderr
    second = fleet.wait(lambda: (p := fleet.pane("upgrade")) and p.pid != first.pid and p, 10)
    assert second, "a finished job was not started fresh"
    assert fleet.store.agent("upgrade").conversation_id != ""


def test_job_on_unknown_name_is_a_one_line_error(fleet):
    r = fleet.ccci("job", "start", "builder")
    assert r.returncode == 2
    assert "no job 'builder'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
