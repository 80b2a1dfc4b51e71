"""Processes of the agents: the per-tick scan (psutil) and killing a process tree.

The ``psutil.Process`` of each agent kept between ticks (:class:`ProcessScanner`); the
child counts (one pass over ``/proc`` for the parent map, :func:`child_counts`) only
when a plugin reads :attr:`ProcessInfo.children <ccci.model.ProcessInfo>`, at most once
per scan (:class:`LazyChildCounts`). Liveness from a Linux pidfd per agent process
(``os.pidfd_open``, Linux >= 5.3): ``/proc`` is read only for a pid seen for the first
time or whose pidfd reported its exit; ``name`` and ``cpu_seconds`` of the others are
read when a plugin first reads them.
"""
from __future__ import annotations

import os
import select
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
    from the scan's :class:`LazyChildCounts` on first access (then fixed), and whose
    ``name`` and ``cpu_seconds``, when the scan did not read them (a live process known
    by its pidfd), are read from ``proc`` on first access (then fixed; ``""`` and 0.0
    when the process is gone by then): same values, same types, no ``/proc`` read
    unless a plugin asks. Equal to a :class:`ProcessInfo` with the same fields;
    ``dataclasses.replace`` works on it."""

    __hash__ = None  # type: ignore[assignment]  # mutable, like ProcessInfo

    def __init__(self, pid: int | None, alive: bool, name: str | None = "", cpu_seconds: float | None = 0.0,
                 children: int = 0, counts: LazyChildCounts | None = None,
                 proc: psutil.Process | None = None) -> None:
        self.pid, self.alive = pid, alive
        self._counts = counts if pid is not None else None
        self._children = children
        self._proc = proc if (name is None or cpu_seconds is None) else None
        self._name, self._cpu = name or "", cpu_seconds or 0.0

    def _read(self) -> None:
        p, self._proc = self._proc, None
        try:
            with p.oneshot():
                self._name = p.name()
                t = p.cpu_times()
                self._cpu = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass

    @property  # type: ignore[override]
    def name(self) -> str:  # noqa: D102 - documented on ProcessInfo
        if self._proc is not None:
            self._read()
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if self._proc is not None:
            self._read()
        self._name = value

    @property  # type: ignore[override]
    def cpu_seconds(self) -> float:  # noqa: D102 - documented on ProcessInfo
        if self._proc is not None:
            self._read()
        return self._cpu

    @cpu_seconds.setter
    def cpu_seconds(self, value: float) -> None:
        if self._proc is not None:
            self._read()
        self._cpu = value

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
    """The per-tick process scan of the agents' pane pids, as a callable
    ``pids -> {pid: ProcessInfo}``; the default ``process_scan`` of a :class:`Supervisor`.

    Liveness: each live pid gets a pidfd (``os.pidfd_open``), all in one ``epoll``; a
    pidfd becomes readable when its process exits (a zombie included). Every call polls
    the epoll once (no wait): a watched pid whose pidfd did not fire is alive with no
    ``/proc`` read (bench/: the per-pid ``oneshot()`` read of status, name and CPU was
    8 ms of a 200-agent tick); a new pid, or one whose pidfd fired, is read through
    psutil as before (``status()``: a zombie or a missing process is dead; a pid reused
    by a new process reads alive and gets a new pidfd). Without pidfds (not Linux,
    kernel < 5.3, out of file descriptors) every pid is read every call.

    Child counts come from one parent map per call (:func:`child_counts`), built only
    when a ``children`` is first read (:class:`LazyChildCounts`). The
    ``psutil.Process`` of each pid is kept from one call to the next (entries for pids
    not asked for are dropped): building one reads ``/proc/<pid>/stat`` for its start
    time, once per agent per tick otherwise (bench/: 0.6 ms of a 50-agent tick). The
    answer is the same as from a fresh ``psutil.Process``: ``status()``, ``name()`` and
    ``cpu_times()`` read ``/proc/<pid>`` on every call and do not check the start time,
    so a reused pid reads as the new process either way, and a gone pid raises
    ``NoSuchProcess`` (``alive=False``).

    :param pidfds: use pidfds where the platform has them (False: read every pid).
    """

    def __init__(self, pidfds: bool = True) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self.last_counts: LazyChildCounts | None = None
        self._fds: dict[int, int] = {}  # pid -> pidfd of a process last seen alive
        self._epoll = select.epoll() if pidfds and hasattr(os, "pidfd_open") and hasattr(select, "epoll") else None
        self.reads = 0  #: pids read through psutil, all calls (tests and benchmarks)

    def __call__(self, pids: list[int]) -> dict[int, ProcessInfo]:
        """:returns: ``{pid: ProcessInfo}``; a zombie or missing process is ``alive=False``."""
        out: dict[int, ProcessInfo] = {}
        kids = LazyChildCounts()
        self.last_counts = kids  #: the last call's counts (tests and benchmarks look at ``builds``)
        procs: dict[int, psutil.Process] = {}
        old_fds, fds = self._fds, {}
        fired = {fd for fd, _ in self._epoll.poll(0)} if self._epoll is not None and old_fds else set()
        for pid in pids:
            fd = old_fds.get(pid)
            if fd is not None and fd not in fired and pid not in fds:
                p = self._procs[pid]
                procs[pid], fds[pid] = p, fd
                out[pid] = ScannedProcessInfo(pid, True, None, None, counts=kids, proc=p)
                continue
            new_fd = None
            try:
                self.reads += 1
                p = self._procs.get(pid) if fd is None else None  # after an exit: a fresh one
                if p is None:
                    p = psutil.Process(pid)
                new_fd = self._watch(pid) if pid not in fds else None
                with p.oneshot():
                    status = p.status()
                    alive = status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                    name = p.name()
                    t = p.cpu_times()
                if new_fd is not None:
                    if alive:
                        fds[pid] = new_fd
                    else:
                        self._unwatch(new_fd)
                procs[pid] = p
                out[pid] = ScannedProcessInfo(pid, alive, name, t.user + t.system, counts=kids)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if new_fd is not None:
                    self._unwatch(new_fd)
                out[pid] = ProcessInfo(pid=pid, alive=False)
        kept = set(fds.values())
        for fd in old_fds.values():
            if fd not in kept:
                self._unwatch(fd)
        self._fds = fds
        self._procs = procs
        return out

    def _watch(self, pid: int) -> int | None:
        """A pidfd of ``pid`` in the epoll, or None (no pidfds, no such process, no fd)."""
        if self._epoll is None:
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _unwatch(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        os.close(fd)

    def close(self) -> None:
        """Close the pidfds and the epoll (the next call reads every pid again)."""
        for fd in self._fds.values():
            self._unwatch(fd)
        self._fds = {}
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


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
