"""The plugin contract on a real fleet (real tmux, real git, ``ccci watch`` processes,
a fleet-local ``ccci_plugins.py``):

* a plugin whose ``ccci_choose_remedy`` and ``ccci_run_remedy`` (both ``tryfirst``) raise
  cannot stop the restart after ``kill -9`` (within 3 s), and the events name the plugin;
* a check and a remedy written the documented way, on text that stays on screen, run
  the remedy exactly once, also across a ``kill -9`` of the watcher;
* ``CCCI_DISABLE_PLUGINS=phases`` on a phased fleet: no phase preamble, no phase moves.
"""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

from ccci import config as config_mod
from ccci.clock import parse_utc

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

RAISING = textwrap.dedent('''
    from ccci import hookimpl

    @hookimpl(tryfirst=True)
    def ccci_choose_remedy(finding, agent):
        return finding.data["no_such_key"]          # KeyError on every finding

    @hookimpl(tryfirst=True)
    def ccci_run_remedy(remedy):
        raise RuntimeError("this plugin breaks every remedy")
''')


def test_a_raising_remedy_plugin_cannot_stop_a_kill_9_restart(fleet):
    (fleet.root / "ccci_plugins.py").write_text(RAISING)
    fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.live_pid(a) for a in fleet.AGENTS) and fleet.events("agent_started"), 30)
    assert fleet.wait(lambda: fleet.store.agent("builder").state == "running", 15)
    old = fleet.live_pid("builder")
    n0 = len(fleet.restarts("builder"))
    killed_at = time.time()
    os.kill(old, signal.SIGKILL)
    assert fleet.wait(lambda: len(fleet.restarts("builder")) > n0, 15), "the builder was never restarted"
    ev = fleet.restarts("builder")[n0]
    took = parse_utc(ev["at"]).timestamp() - killed_at
    assert took <= 3.0, f"restart took {took:.2f}s"
    assert fleet.live_pid("builder") not in (None, old)
    errors = [e for e in fleet.events("plugin_error") if e["data"].get("hook") == "ccci_choose_remedy"]
    assert errors, "the raising chooser was not reported"
    assert all(e["data"]["plugin"] == "ccci_plugins" for e in errors)
    assert errors[0]["data"]["where"].startswith("ccci_plugins.py:") and "KeyError" in errors[0]["message"]
    assert "ccci_plugins" in errors[0]["message"]


ONCE = textwrap.dedent('''
    """A check on text that stays on screen and a notify-style remedy, written the
    documented way (docs/plugins.md): the evidence names the occurrence, the remedy
    returns RemedyResult(True) and so runs once per occurrence."""
    from pathlib import Path

    from ccci import Finding, Remedy, RemedyResult, hookimpl

    MARK = "PLEASE-PAGE-" + "SOMEONE"

    @hookimpl
    def ccci_check_agent(agent, block):
        for line in block.splitlines():
            if MARK in line:
                return Finding("page_request", agent.name, "the agent asks for a person", evidence=line.strip())
        return None

    @hookimpl
    def ccci_choose_remedy(finding):
        if finding.check == "page_request":
            return Remedy("page", finding.agent, finding)
        return None

    @hookimpl
    def ccci_run_remedy(remedy, services):
        if remedy.action != "page":
            return None
        with open(Path(services.config.root) / "pages.log", "a") as fh:
            fh.write(remedy.reason.evidence + "\\n")
        services.emit("paged", remedy.reason.evidence, agent=remedy.agent)
        return RemedyResult(True, "paged")
''')


def test_a_documented_once_per_occurrence_remedy_runs_once_across_a_watcher_kill_9(fleet):
    (fleet.root / "ccci_plugins.py").write_text(ONCE)
    w1 = fleet.watch("--quiet")
    # the first handoff (claim -> review -> builder) settles; nothing pings the adversary after it
    assert fleet.wait(lambda: fleet.events("message_delivered", agent="builder"), 60), "no handoff"
    assert fleet.wait(lambda: fleet.settled(3.0), 60), "the fleet did not settle"
    assert fleet.ccci("send", "adversary", "PLEASE-PAGE-SOMEONE about the deploy").returncode == 0
    pages = fleet.root / "pages.log"
    assert fleet.wait(lambda: pages.exists() and pages.read_text().strip(), 20), "the remedy never ran"
    time.sleep(8)  # the text stays in the newest block; real ticks of the real watcher
    assert "PLEASE-PAGE-SOMEONE" in fleet.screen("adversary")
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    t_restart = time.time()
    fleet.watch("--quiet")
    assert fleet.wait(lambda: [e for e in fleet.events("agent_adopted") if parse_utc(e["at"]).timestamp() >= t_restart],
                      20), "the new watcher did not adopt the agents"
    time.sleep(8)  # the new watcher sees the same occurrence for 8 s
    assert "PLEASE-PAGE-SOMEONE" in fleet.screen("adversary")
    assert pages.read_text().splitlines() == ["» PLEASE-PAGE-SOMEONE about the deploy"]
    assert len(fleet.events("paged")) == 1


def test_disabling_phases_removes_all_phase_behaviour(fleet, tmp_path):
    fleet.cfg.path.write_text(fleet.cfg.path.read_text() + '\n[phases]\norder = ["1a", "1b"]\n')
    fleet.cfg = config_mod.load(fleet.root)
    fleet.watch("--quiet", env={"CCCI_DISABLE_PLUGINS": "phases"})
    assert fleet.wait(lambda: fleet.events("message_delivered", agent="builder"), 60), "no handoff"
    assert fleet.wait(lambda: fleet.settled(3.0), 60)
    # phase 1a is DONE on origin: with the phases plugin this moves the fleet to 1b
    scratch = tmp_path / "scratch"
    subprocess.run(["git", "clone", "--quiet", fleet.cfg.git.origin, str(scratch)], check=True)
    (scratch / "STATUS-1a.md").write_text("# Status of phase 1a\n\n## DONE\n")
    for args in (["add", "STATUS-1a.md"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                 "--quiet", "-m", "status: phase 1a done"], ["push", "--quiet", "origin", "HEAD:main"]):
        subprocess.run(["git", "-C", str(scratch), *args], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(scratch), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert fleet.wait(lambda: fleet.store.get("git.baseline.main") == head, 20), "the watcher never saw the push"
    time.sleep(3)  # ticks after the watcher read STATUS-1a.md's DONE
    log = (fleet.cfg.state_dir / "logs" / "builder.log").read_text(errors="replace")
    assert "PHASE" not in log, "a phase preamble reached the agent"
    assert not fleet.events("phase_complete") and not fleet.events("phase_moved")
    assert not fleet.events("sequence_complete") and not (fleet.root / "SEQUENCE-COMPLETE").exists()
    assert fleet.store.get("phase.current") is None
    assert fleet.live_pid("builder") and fleet.live_pid("adversary")
    env = open(f"/proc/{fleet.live_pid('builder')}/environ", "rb").read().split(b"\0")
    assert [v for v in env if v.startswith(b"CCCI_AGENT=")] and not [v for v in env if v.startswith(b"CCCI_PHASE=")]


def test_sighup_makes_a_running_watcher_load_a_changed_ccci_plugins_py(fleet):
    w = fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("agent_started"), 30)
    (fleet.root / "ccci_plugins.py").write_text(ONCE)
    w.send_signal(signal.SIGHUP)
    assert fleet.wait(lambda: fleet.events("plugins_reloaded"), 15), "no reload after SIGHUP"
    [ev] = fleet.events("plugins_reloaded")
    assert ev["data"]["enabled"] == ["ccci_plugins"] and w.poll() is None
    assert fleet.wait(lambda: fleet.events("message_delivered", agent="builder"), 60), "no handoff"
    assert fleet.wait(lambda: fleet.settled(3.0), 60), "the fleet did not settle"
    assert fleet.ccci("send", "adversary", "PLEASE-PAGE-SOMEONE now").returncode == 0
    assert fleet.wait(lambda: fleet.events("paged"), 20), "the reloaded plugin did not act"
