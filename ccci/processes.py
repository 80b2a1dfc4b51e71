"""Processes of the agents: the per-tick scan (psutil) and killing a process tree.

The ``psutil.Process`` of each agent kept between ticks (:class:`ProcessScanner`); the
child counts (one pass over ``/proc`` for the parent map, :func:`child_counts`) only
when a plugin reads :attr:`ProcessInfo.children <ccci.model.ProcessInfo>`, at most once
per scan (:class:`LazyChildCounts`).
"""
from __future__ import annotations

import signal
import time

import psutil

from ccci.model import ProcessInfo


def child_counts() -> dict[int, int]:
    """``{ppid: number of children}`` for every process on the machine, from ONE pass
    over ``/proc``.

    ``psutil.Process.children()`` rebuilds this parent map on every call (it reads
    ``/proc/<pid>/stat`` of every process), so calling it per agent made a tick
    O(agents x processes): 84% of a 50-agent tick in ``bench/`` (commit d94f74f).
    Uses psutil's own ``_ppid_map`` when present, else the public ``process_iter``.
    """
    counts: dict[int, int] = {}
    ppid_map = getattr(psutil, "_ppid_map", None)
    if ppid_map is not None:
        pairs = ppid_map().items()
    else:  # pragma: no cover - other psutil versions
        pairs = ((p.pid, p.info.get("ppid") or 0) for p in psutil.process_iter(["ppid"]))
    for _pid, ppid in pairs:
        counts[ppid] = counts.get(ppid, 0) + 1
    return counts


class LazyChildCounts:
    """The parent map of one scan, built by :func:`child_counts` on the first
    :meth:`get` and kept for the scan's later reads; never built when nothing reads it.

    The pass over ``/proc`` reads ``/proc/<pid>/stat`` of every process on the machine
    (bench/: 7.4 ms of a 50-agent tick with ~340 processes, 21.6 ms of a 200-agent tick
    with ~480), while no builtin check reads the child count. The kernel's
    ``/proc/<pid>/task/<tid>/children`` (``CONFIG_PROC_CHILDREN``), which would list one
    process's children without the full pass, is missing from common kernels.
    """

    __slots__ = ("_counts", "builds")

    def __init__(self) -> None:
        self._counts: dict[int, int] | None = None
        self.builds = 0  #: parent maps built (0 or 1; for tests and benchmarks)

    def get(self, pid: int) -> int:
        """:returns: the number of child processes of ``pid`` (zombies included) when the
        map was built (the first call), 0 for a pid with none or unknown."""
        if self._counts is None:
            self._counts = child_counts()
            self.builds += 1
        return self._counts.get(pid, 0)


class ScannedProcessInfo(ProcessInfo):
    """A :class:`ProcessInfo` from :class:`ProcessScanner` whose ``children`` is read
    from the scan's :class:`LazyChildCounts` on first access (then fixed): same value,
    same type (``int``), no ``/proc`` pass unless a plugin asks. Equal to a
    :class:`ProcessInfo` with the same fields; ``dataclasses.replace`` works on it."""

    __hash__ = None  # type: ignore[assignment]  # mutable, like ProcessInfo

    def __init__(self, pid: int | None, alive: bool, name: str = "", cpu_seconds: float = 0.0,
                 children: int = 0, counts: LazyChildCounts | None = None) -> None:
        self.pid, self.alive, self.name, self.cpu_seconds = pid, alive, name, cpu_seconds
        self._counts = counts if pid is not None else None
        self._children = children

    @property  # type: ignore[override]
    def children(self) -> int:  # noqa: D102 - documented on ProcessInfo
        if self._counts is not None:
            self._children = self._counts.get(self.pid)  # type: ignore[arg-type]
            self._counts = None
        return self._children

    @children.setter
    def children(self, value: int) -> None:
        self._counts, self._children = None, value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessInfo):
            return NotImplemented
        return ((self.pid, self.alive, self.name, self.cpu_seconds, self.children)
                == (other.pid, other.alive, other.name, other.cpu_seconds, other.children))

    def __repr__(self) -> str:
        return (f"ProcessInfo(pid={self.pid!r}, alive={self.alive!r}, name={self.name!r}, "
                f"cpu_seconds={self.cpu_seconds!r}, children={self.children!r})")


class ProcessScanner:
    """The per-tick process scan (psutil) of the agents' pane pids, as a callable
    ``pids -> {pid: ProcessInfo}``; the default ``process_scan`` of a :class:`Supervisor`.

    Child counts come from one parent map per call (:func:`child_counts`), built only
    when a ``children`` is first read (:class:`LazyChildCounts`). The
    ``psutil.Process`` of each pid is kept from one call to the next (entries for pids
    not asked for are dropped): building one reads ``/proc/<pid>/stat`` for its start
    time, once per agent per tick otherwise (bench/: 0.6 ms of a 50-agent tick). The
    answer is the same as from a fresh ``psutil.Process``: ``status()``, ``name()`` and
    ``cpu_times()`` read ``/proc/<pid>`` on every call and do not check the start time,
    so a reused pid reads as the new process either way, and a gone pid raises
    ``NoSuchProcess`` (``alive=False``).
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self.last_counts: LazyChildCounts | None = None

    def __call__(self, pids: list[int]) -> dict[int, ProcessInfo]:
        """:returns: ``{pid: ProcessInfo}``; a zombie or missing process is ``alive=False``."""
        out: dict[int, ProcessInfo] = {}
        kids = LazyChildCounts()
        self.last_counts = kids  #: the last call's counts (tests and benchmarks look at ``builds``)
        procs: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                p = self._procs.get(pid)
                if p is None:
                    p = psutil.Process(pid)
                with p.oneshot():
                    status = p.status()
                    alive = status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                    name = p.name()
                    t = p.cpu_times()
                procs[pid] = p
                out[pid] = ScannedProcessInfo(pid, alive, name, t.user + t.system, counts=kids)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                out[pid] = ProcessInfo(pid=pid, alive=False)
        self._procs = procs
        return out


def scan_processes(pids: list[int]) -> dict[int, ProcessInfo]:
    """One psutil pass over ``pids`` with nothing kept between calls (see
    :class:`ProcessScanner`, which a supervisor uses).

    :returns: ``{pid: ProcessInfo}``; a zombie or missing process is ``alive=False``.
    """
    return ProcessScanner()(pids)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (found first, then all killed; SIGKILL also
    ends a stopped process). Missing processes are ignored; returns within about 1 s."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    # wait until each is gone or a zombie (a zombie is dead; who reaps it is not ours
    # to wait for: in a container PID 1 may never do it), at most 1 s
    deadline = time.monotonic() + 1.0
    while procs and time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        procs = alive
        if procs:
            time.sleep(0.02)
