"""Agents launched by hand: an orchestrator a person started in another terminal.

ccci keeps one orchestrator per fleet. Before starting one, and every
:data:`SCAN_INTERVAL_S` seconds while watching, it scans processes (psutil) for the
orchestrator backend's agent CLI whose working directory is the orchestrator's
``workdir`` and that ccci does not manage (not the process in ccci's own pane, nor one of
its descendants). When one is found, ccci does not start another: the process-death
check stays quiet for that agent and an ``orchestrator_external`` event says where it runs.

Publishes ``snapshot.facts["external"]``: ``{agent name: pid}``.
"""
from __future__ import annotations

from pathlib import Path

import psutil

from ccci.hookspecs import hookimpl
from ccci.model import Event, Role
from ccci.stash import StashKey

SCAN_INTERVAL_S = 5.0


def find_external(backend, workdir: Path, managed_pids: set[int]) -> int | None:
    """Pid of an agent process of ``backend`` running in ``workdir`` that is not managed
    (not in ``managed_pids`` nor a descendant of one), or ``None``."""
    workdir = Path(workdir).resolve()
    excluded: set[int] = set()
    for pid in managed_pids:
        try:
            excluded.add(pid)
            excluded.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        info = proc.info
        if info["pid"] in excluded or not info.get("cwd"):
            continue
        try:
            if Path(info["cwd"]).resolve() != workdir:
                continue
        except OSError:
            continue
        if backend.is_agent_process(info.get("name") or "", info.get("cmdline") or []):
            return int(info["pid"])
    return None


class _Scanner:
    def __init__(self) -> None:
        self.last_mono = -1e9
        self.found: dict[str, int] = {}


SCANNER = StashKey[_Scanner]("scanner")


@hookimpl
def ccci_observe(snapshot, config, mono, stash):
    orchestrators = [a for a in config.agents if a.role == Role.ORCHESTRATOR]
    if not orchestrators:
        return
    sc = stash.setdefault(SCANNER, _Scanner())
    if mono - sc.last_mono >= SCAN_INTERVAL_S:
        sc.last_mono = mono
        managed = {p.pid for p in snapshot.panes.values() if p is not None}
        found: dict[str, int] = {}
        for spec in orchestrators:
            backend = snapshot.facts.get("backends", {}).get(spec.name)
            if backend is None:
                continue
            pid = find_external(backend, spec.workdir, managed)
            if pid:
                found[spec.name] = pid
                if sc.found.get(spec.name) != pid:
                    snapshot.events.append(Event("orchestrator_external", f"an orchestrator runs outside ccci (pid {pid}, "
                                                 f"cwd {spec.workdir}); not starting another", agent=spec.name, data={"pid": pid}))
        sc.found = found
    snapshot.facts["external"] = dict(sc.found)


@hookimpl
def ccci_agent_active(agent, snapshot):
    if snapshot is not None and snapshot.facts.get("external", {}).get(agent.name):
        return False  # a hand-launched instance holds this role: not ours to judge
    return None


@hookimpl
def ccci_before_launch(agent, spec, services):
    if spec.role != Role.ORCHESTRATOR:
        return None
    pid = find_external(agent.backend, spec.workdir, {p for p in (agent.pid,) if p})
    if pid:
        services.emit("orchestrator_external", f"an orchestrator already runs outside ccci (pid {pid}); "
                      f"not starting another", agent=agent.name, pid=pid)
        return f"external orchestrator pid {pid}"
    return None
