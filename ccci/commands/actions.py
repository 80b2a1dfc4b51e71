"""What ``ccci start``, ``stop``, ``restart``, ``send`` and ``job start`` do to a fleet, as
functions: the command line and the web dashboard (:mod:`ccci.web`) call the same code.

Each function works on a :class:`ccci.supervisor.Supervisor` built for the command
(``ccci.commands.cli.build``), never on a running watcher's internals: when a watcher
holds the fleet, it is asked (stopped flags cleared, a queued message, a job request in
the state database) and acts within a tick.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

from ccci import config as config_mod


@dataclass
class ActionResult:
    """What an action did: ``ok`` and one line per agent for people (``lines``)."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)


def ensure_watcher(cfg: config_mod.FleetConfig) -> int | None:
    """Make sure a watcher holds the fleet's lock: start ``ccci watch`` in the background
    when none does (never a second one), with ``--exit-when-idle`` ``[fleet] idle_exit``
    (it leaves once nothing is left to supervise). Returns the holder's pid."""
    from ccci.lock import FleetLock

    lock = FleetLock(cfg.state_dir)
    if lock.is_held():
        return lock.holder()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    log = open(cfg.state_dir / "watcher.log", "ab")
    idle = ["--exit-when-idle", f"{float(cfg.idle_exit):g}"] if cfg.idle_exit > 0 else []
    proc = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(cfg.root), "watch", "--quiet", *idle],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(50):  # wait until it holds the lock (or lost the race to another one)
        if lock.is_held():
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    return lock.holder()


def watcher_takes_it(cfg: config_mod.FleetConfig, lock) -> bool:
    """After ``ccci start`` cleared the stopped flags for a running watcher: ``False`` when
    that watcher exits within three ticks (one leaving for ``idle_exit`` may have
    decided just before it saw the flags), so the caller starts the agents itself."""
    end = time.monotonic() + 3 * float(cfg.tick_seconds) + 0.5
    while time.monotonic() < end:
        if not lock.is_held():
            return False
        time.sleep(0.1)
    return True


def clear_escalation(sup, name: str) -> None:
    """A person took over: not stopped, not given up, the failure resumes (``max_resumes``)
    and the escalation record (automatic retries) start over."""
    from ccci.remedies import ESCALATION_KEY

    with sup.store.transaction():
        rec = sup.store.agent(name)
        sup.store.update_agent(name, stopped=0, given_up=0, **({"resumes": 0} if rec.given_up else {}))
        sup.store.delete(ESCALATION_KEY.format(agent=name))


def start_agents(sup, names: list[str], watch: bool = True, reason: str = "ccci start") -> ActionResult:
    """Start ``names`` (``ccci start``). Idempotent: a live agent is left alone.

    When a watcher holds the fleet it is asked (stopped flags and escalations cleared; it
    starts them within a tick); otherwise they are launched here and, with ``watch``, a
    watcher is started in the background (:func:`ensure_watcher`).
    ``ok`` is ``False`` when a launch failed.
    """
    from ccci.lock import FleetLock, LockHeld

    cfg = sup.config
    res = ActionResult()
    lock = FleetLock(cfg.state_dir)
    while True:
        try:
            lock.acquire(wait=False)
            break
        except LockHeld:
            # every agent stopped: the watcher may be on its way out (idle_exit)
            maybe_leaving = all(sup.store.agent(a.name).stopped for a in cfg.agents)
            for n in names:
                clear_escalation(sup, n)
            if not maybe_leaving or watcher_takes_it(cfg, lock):
                res.lines.append(f"watcher running: it will start {', '.join(names)} within a tick")
                return res
            # the watcher left (idle) just as we asked: start them here
    try:
        panes = sup.tmux.list_panes()
        for n in names:
            rt = sup.agents[n]
            pane = panes.get(rt.session)
            clear_escalation(sup, n)
            if pane is not None and not pane.dead:
                res.lines.append(f"{n}: already running (pid {pane.pid}); left alone")
                continue
            out = sup.lifecycle.launch(n, "start", reason=reason)
            res.lines.append(f"{n}: {out.detail}")
            if not out.ok:
                res.ok = False
                return res
    finally:
        lock.release()
    if watch:
        res.lines.append(f"watcher pid {ensure_watcher(cfg)} supervises fleet {cfg.name}")
    return res


def stop_agents(sup, names: list[str], reason: str = "ccci stop") -> ActionResult:
    """Stop ``names`` (``ccci stop``): marked stopped (the watcher leaves them so until
    ``ccci start``) and their process ended (:meth:`ccci.lifecycle.Lifecycle.stop`)."""
    res = ActionResult()
    for n in names:
        sup.store.update_agent(n, stopped=1)
        sup.lifecycle.stop(n, reason=reason)
        res.lines.append(f"{n}: stopped")
    return res


def restart_agents(sup, names: list[str], watch: bool = True, reason: str = "ccci restart") -> ActionResult:
    """Restart ``names`` (``ccci restart``): :func:`stop_agents`, then :func:`start_agents`
    (a running watcher starts them within a tick, resuming the conversation as after
    any exit; without one they are launched here)."""
    first = stop_agents(sup, names, reason=reason)
    second = start_agents(sup, names, watch=watch, reason=reason)
    return ActionResult(second.ok, first.lines + second.lines)


def queue_send(sup, agent: str, text: str) -> int | None:
    """Queue ``text`` for ``agent`` (``ccci send``): the watcher, or whoever delivers
    next, types it once the agent is idle. Returns the message id."""
    return sup.queue_message(agent, text)


def request_job(cfg: config_mod.FleetConfig, store, name: str, mode: str, args: list[str]) -> int | None:
    """Ask for job ``name`` (``ccci job start|fresh``; ``mode`` is ``start`` or
    ``fresh``) with ``args`` and make sure a watcher runs to take the request.

    Returns the watcher's pid (``None``: none could be started). The outcome appears
    under :data:`ccci.jobs.RESULT_KEY` in the state database.
    """
    from ccci import jobs as jobs_mod

    jobs_mod.request(store, name, mode, list(args))
    return ensure_watcher(cfg)
