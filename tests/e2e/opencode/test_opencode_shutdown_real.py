"""Issue 15: ``ccci start`` (the watcher in the background) then ``ccci shutdown`` leaves
no ccci, tmux or opencode process of a real opencode fleet: the watcher, the fleet's
tmux server, the shared ``opencode serve`` and an ``opencode run`` in the middle of a
turn all end. Everything runs in the loopback-only namespace (``ccci start`` is run there,
so the watcher it spawns, the tmux server and opencode are too).

The process check is :func:`ccci.testing.fleet.fleet_processes` (also used by the
scripted-fleet test ``tests/integration/test_shutdown.py``): the command line names the
fleet or its tmux socket, or the process runs in the fleet's directory.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from ccci.testing.fleet import fleet_processes
from ccci.testing.model_server import Text

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(240)]


def test_start_then_shutdown_leaves_no_ccci_tmux_or_opencode_process(oc_fleet):
    reply = "SLOW-SHUTDOWN-REPLY " + " ".join(f"w{i:02d}" for i in range(30))  # a turn still running at shutdown
    f = oc_fleet({"builder": [Text(reply, delay=3.0, chunk=12)]}, watch=False)
    try:
        out = subprocess.run(f.ccci_argv("start"), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        # the CLI could not start the agent (only a watcher starts opencode serve): the watcher did
        assert "the watcher tries again" in out.stdout or "builder: started" in out.stdout, out.stdout
        f.wait_event(lambda evs: [e for e in evs if e["kind"] == "opencode_serve_started"], 90, "the server")
        procs = f.wait(lambda: [p for p in fleet_processes(f.fleet, f.socket) if "opencode run " in p] and
                       fleet_processes(f.fleet, f.socket), 120, "opencode run (the agent's turn)")
        pid = f.serve_state()["pid"]
        lines = [p.split(": ", 1)[1] for p in procs]
        assert any(p.startswith(f"{pid}:") for p in procs), procs  # opencode serve
        assert any(f"-m ccci --fleet {f.fleet} watch" in ln for ln in lines), procs  # the background watcher
        assert any(os.path.basename(ln.split()[0]) == "tmux" and ({f"-L{f.socket}", f.socket} & set(ln.split()))
                   for ln in lines), procs  # the fleet's tmux server
        t0 = time.monotonic()
        out = subprocess.run(f.ccci_argv("shutdown"), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "watcher pid" in out.stdout and "builder: stopped" in out.stdout, \
            out.stdout + out.stderr
        f.wait(lambda: not fleet_processes(f.fleet, f.socket), 20, "no process of the fleet")
        print(f"\nccci shutdown -> no process of the fleet: {time.monotonic() - t0:.1f} s")
        kinds = [e["kind"] for e in f.events()]
        assert "watcher_stopping" in kinds and "watcher_stopped" in kinds and "opencode_serve_stopped" in kinds
        assert "tmux_server_lost" not in kinds
        assert not f.serve_state()
    finally:
        subprocess.run(f.ccci_argv("shutdown"), capture_output=True, timeout=120)
