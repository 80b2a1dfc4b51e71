"""A real ``ccci watch`` gives back every file descriptor it opens for an agent's life
(issue 16: "0 leaked fds"): after agents are killed and restarted many times, and after
the tmux server itself is killed and the fleet restored, the watcher holds exactly the
descriptors it held before, kind by kind (pidfds, pipes, sockets, files).

The 2-hour chaos soak (bench/SOAK-7200s.md) samples the watcher's fd count under churn,
where the count moves with the number of live panes (one pidfd each); this test compares
two settled moments of one watcher, so any difference is a leak.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

import psutil
import pytest

from ccci.testing.fleet import Fleet, fleet_name

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

AGENT_KILLS = int(os.environ.get("CCCI_LEAK_KILLS", "16"))


def _fd_kinds(pid: int) -> Counter:
    """The process's open descriptors by kind: ``pidfd``, ``pipe``, ``socket``,
    ``anon:<name>``, or the path of a regular file (``/dev/null``, ``state.db`` ...)."""
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("anon_inode:"):
            name = target.split(":", 1)[1].strip("[]")
            kinds["pidfd" if name == "pidfd" else f"anon:{name}"] += 1
        elif target.startswith(("pipe:", "socket:")):
            kinds[target.split(":", 1)[0]] += 1
        else:
            kinds[target] += 1
    return kinds


def _settled_fds(fleet, watcher_pid: int) -> Counter:
    """The watcher's descriptors once the fleet is settled and two samples 1 s apart agree
    (a descriptor of a short-lived child, e.g. a ``git fetch`` pipe, must not count)."""
    last: list[Counter] = []

    def steady():
        if not fleet.settled():
            return None
        now = _fd_kinds(watcher_pid)
        last.append(now)
        return now if len(last) >= 2 and last[-2] == now else None

    found = fleet.wait(steady, 60, poll=1.0)
    assert found, f"the fleet did not settle with steady fds: last samples {last[-2:]}"
    return found


@pytest.fixture
def fleet(tmp_path):
    """The demo fleet with room for every restart this test makes (no intensity cap, no
    backoff: the test is about descriptors, not restart policy)."""
    f = Fleet(tmp_path / "fleet", fleet_name(tmp_path),
              checks={"restart_intensity": 1000, "backoff_initial": 0, "max_resumes": 1000})
    yield f
    f.close()


def test_agent_and_tmux_server_kills_leave_the_watcher_no_extra_descriptor(fleet):
    w = fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.live_pid(a) for a in fleet.AGENTS), 30), "agents did not start"
    before = _settled_fds(fleet, w.pid)
    # two per live agent: the control client's (its exit wakes the runner) and the process
    # scan's (liveness without /proc); the count is measured here, not assumed
    assert before["pidfd"] == 2 * len(fleet.AGENTS), before
    for i in range(AGENT_KILLS):
        agent = fleet.AGENTS[i % len(fleet.AGENTS)]
        assert fleet.kill_and_wait_restart(agent), f"kill {i + 1}: {agent} was not restarted"
    for _ in range(2):  # the tmux server: the control client and every pane go, the fleet is restored
        server = int(fleet.tmux.server.cmd("display-message", "-p", "#{pid}").stdout[0])
        old = {a: fleet.live_pid(a) for a in fleet.AGENTS}
        os.kill(server, signal.SIGKILL)
        assert fleet.wait(lambda: all((p := fleet.live_pid(a)) and p != old[a] for a in fleet.AGENTS), 40), \
            "the fleet was not restored after the tmux server was killed"
    after = _settled_fds(fleet, w.pid)
    assert w.poll() is None, "the watcher died"
    assert after == before, f"descriptors before {dict(before)}, after {dict(after)}"
    assert psutil.Process(w.pid).num_fds() == sum(after.values())
