"""The watcher as an operating-system service: systemd (Linux) or launchd (macOS).

* :class:`ServiceNotifier` speaks systemd's notify protocol (``sd_notify(3)``) through
  the ``systemd-watchdog`` library: ``READY=1`` after the first complete tick, ``STATUS=``
  with a one-line fleet summary when it changes, ``WATCHDOG=1`` after every tick (a tick
  that hangs longer than ``WatchdogSec`` sends none, so systemd restarts the watcher), ``STOPPING=1`` when the watcher begins to leave. Without
  ``NOTIFY_SOCKET`` (not run by systemd) every call does nothing.
* :func:`systemd_unit` and :func:`launchd_plist` render the service definitions that
  ``ccci service install`` writes; :func:`install`, :func:`uninstall` and
  :func:`status` run ``systemctl`` or ``launchctl`` (argv lists, no shell).

The agents' tmux server is started by the watcher (``tmux new-session`` forks the
server), so under systemd it lives in the watcher's cgroup: the unit uses
``KillMode=process`` so that stopping or restarting the watcher (a crash, a watchdog
timeout, ``systemctl restart``) never kills tmux and the agents; the next watcher adopts
them, as after ``kill -9``. ``ccci shutdown`` stops the agents too.
"""
from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig
    from ccci.supervisor import Supervisor

WATCHDOG_S = 60  #: default ``WatchdogSec=`` (seconds): a tick hung this long gets the watcher restarted


class ServiceError(RuntimeError):
    """A service could not be installed, queried or removed; the message says why."""


# ---------------------------------------------------------------------------- notify
class ServiceNotifier:
    """systemd notifications of one watcher (no-ops when ``NOTIFY_SOCKET`` is unset).

    :param environ: the environment to read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``
        (microseconds) from (default :data:`os.environ`).
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.ready_sent = False
        self.stopping_sent = False
        self._status = ""
        self._wd: Any = None
        if self.enabled:
            from systemd_watchdog import WatchDog

            self._wd = WatchDog(addr=env["NOTIFY_SOCKET"])

    def _safe(self, fn, *args) -> None:
        if self._wd is None:
            return
        try:
            fn(*args)
        except OSError:
            pass  # the manager went away: supervision goes on without it

    def tick_done(self, summary: str) -> None:
        """After each complete tick: ``READY=1`` the first time, ``STATUS=summary`` when it
        changed, ``WATCHDOG=1`` every time."""
        if self._wd is None:
            return
        if summary != self._status:
            self._status = summary
            self._safe(self._wd.status, summary)
        if not self.ready_sent:
            self.ready_sent = True
            self._safe(self._wd.ready)
        # every tick (a datagram a second): a ping rate-limited to half of WatchdogSec
        # could come up to one tick late and miss a short watchdog interval
        self._safe(self._wd.notify)

    def stopping(self, why: str) -> None:
        """``STOPPING=1`` (and ``STATUS=why``): the watcher is leaving (sent once)."""
        if self._wd is None or self.stopping_sent:
            return
        self.stopping_sent = True
        self._safe(self._wd.status, why)
        # systemd-watchdog has no call for STOPPING; its sender writes one datagram
        self._safe(self._wd._send, "STOPPING=1\n")

    def close(self) -> None:
        if self._wd is not None:
            self._wd._socket.close()
            self._wd = None


def fleet_summary(sup: "Supervisor") -> str:
    """One line for ``STATUS=`` (``systemctl status``): agents running, stopped, given up."""
    snap = sup.last_snapshot
    n = len(sup.agents)
    running = sum(1 for name in sup.agents if snap is not None and (p := snap.processes.get(name)) is not None and p.alive)
    stopped = sum(1 for rt in sup.agents.values() if rt.stopped)
    given_up = sum(1 for rt in sup.agents.values() if rt.given_up)
    return (f"fleet {sup.config.name}: {running}/{n} agents running, {stopped} stopped, {given_up} given up"
            + ("; tmux server down" if snap is not None and snap.facts.get("tmux_server_down") else ""))


def nothing_to_supervise(sup: "Supervisor") -> bool:
    """True when every agent is stopped, or is a job that is neither running, requested
    nor scheduled (``schedule =``). Given-up agents still count (automatic retries)."""
    from ccci import jobs
    from ccci.model import Role

    for name, rt in sup.agents.items():
        if rt.spec.schedule:
            return False
        if sup.store.agent(name).stopped:  # the store: 'ccci start' may have cleared it since the tick began
            continue
        if rt.spec.role == Role.JOB and not jobs.is_active(sup.store, name) \
                and not sup.store.get(jobs.REQUEST_KEY.format(name=name)):
            continue
        return False
    return True


# ---------------------------------------------------------------------------- definitions
@dataclass
class Target:
    """Where a service definition goes and how it is managed.

    :param platform: ``systemd`` or ``launchd``.
    :param scope: ``user`` or ``system``.
    :param name: unit file name (``ccci-NAME.service``) or launchd label.
    :param path: the file to write.
    """

    platform: str
    scope: str
    name: str
    path: Path


def service_name(cfg: "FleetConfig") -> str:
    """``ccci-<fleet name>`` with characters systemd and launchd dislike replaced by ``-``."""
    return "ccci-" + re.sub(r"[^A-Za-z0-9_.-]", "-", cfg.name)


def target(cfg: "FleetConfig", scope: str = "user", platform: str | None = None) -> Target:
    """The service file of ``cfg`` for ``scope`` (``user`` or ``system``) on ``platform``
    (default: ``launchd`` on macOS, else ``systemd``).

    :raises ServiceError: for an unknown scope.
    """
    if scope not in ("user", "system"):
        raise ServiceError(f"scope must be user or system, not {scope!r}")
    platform = platform or ("launchd" if sys.platform == "darwin" else "systemd")
    base = service_name(cfg)
    if platform == "launchd":
        label = "io.ccci." + base
        folder = Path.home() / "Library/LaunchAgents" if scope == "user" else Path("/Library/LaunchDaemons")
        return Target("launchd", scope, label, folder / f"{label}.plist")
    if scope == "user":
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        folder = Path(xdg) / "systemd/user"
    else:
        folder = Path("/etc/systemd/system")
    return Target("systemd", scope, f"{base}.service", folder / f"{base}.service")


def watch_argv(cfg: "FleetConfig", python: str | None = None) -> list[str]:
    """The watcher's command line: ``PYTHON -m ccci --fleet ROOT [--host NAME] watch --quiet``
    (``--host`` when the config was loaded as one of its ``[[hosts]]``: that host's watcher)."""
    host = ["--host", cfg.this_host] if getattr(cfg, "this_host", "local") != "local" else []
    return [python or sys.executable, "-m", "ccci", "--fleet", str(cfg.root), *host, "watch", "--quiet"]


def _unit_arg(arg: str) -> str:
    """One ``ExecStart=`` word: specifiers (``%``) and variables (``$``) escaped, quoted
    when it holds blanks, quotes or backslashes (systemd.service(5), "Command lines")."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', arg) or not arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _unit_value(value: str) -> str:
    """A plain setting value with systemd specifiers escaped."""
    return value.replace("%", "%%")


def systemd_unit(cfg: "FleetConfig", scope: str = "user", python: str | None = None,
                 watchdog_s: int = WATCHDOG_S, path_env: str | None = None, user: str | None = None) -> str:
    """The ``.service`` unit that runs the fleet's watcher.

    :param scope: ``user`` (``WantedBy=default.target``) or ``system``
        (``WantedBy=multi-user.target``, ``User=`` the fleet directory's owner unless given).
    :param python: interpreter (default: this one).
    :param watchdog_s: ``WatchdogSec=`` in seconds (the longest a tick may hang).
    :param path_env: ``PATH`` for the agents' CLIs (default: this process's ``PATH``).
    :param user: ``User=`` for a system unit.
    :returns: the unit text.
    """
    argv = watch_argv(cfg, python)
    lines = [
        "# written by 'ccci service install'; remove with 'ccci service uninstall'",
        f"# fleet config: {cfg.path}",
        "[Unit]",
        f"Description=ccci watcher of fleet {_unit_value(cfg.name)}",
        *(["After=network-online.target", "Wants=network-online.target"] if scope == "system" else []),
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_unit_arg(a) for a in argv),
        f"WorkingDirectory={_unit_value(str(cfg.root))}",  # the rest of the line: no quotes
        f"Environment={_unit_arg('PATH=' + (path_env if path_env is not None else os.environ.get('PATH', '/usr/bin:/bin')))}",
        "Environment=PYTHONUNBUFFERED=1",
        f"WatchdogSec={int(watchdog_s)}",
        "Restart=on-failure",
        "RestartSec=5",
        # the first tick adopts or launches every agent: allow it time before READY=1
        "TimeoutStartSec=300",
        "TimeoutStopSec=90",
        # the tmux server (and so every agent) lives in this unit's cgroup: kill only the
        # watcher; the next one adopts the running agents. 'ccci shutdown' stops them.
        "KillMode=process",
    ]
    if scope == "system":
        if user is None:
            import pwd

            user = pwd.getpwuid(os.stat(cfg.root).st_uid).pw_name
        lines.append(f"User={_unit_value(user)}")
    lines += ["", "[Install]", "WantedBy=" + ("multi-user.target" if scope == "system" else "default.target"), ""]
    return "\n".join(lines)


def launchd_plist(cfg: "FleetConfig", scope: str = "user", python: str | None = None,
                  path_env: str | None = None) -> bytes:
    """The launchd property list (XML) that runs the fleet's watcher on macOS: started at
    load, restarted when it exits with a failure (``KeepAlive.SuccessfulExit = false``),
    output in ``<state_dir>/watcher.log``. launchd has no watchdog: a hung watcher is not
    restarted there.

    :returns: the plist as UTF-8 XML bytes.
    """
    label = target(cfg, scope, "launchd").name
    log = str(cfg.state_dir / "watcher.log")
    return plistlib.dumps({
        "Label": label,
        "ProgramArguments": watch_argv(cfg, python),
        "WorkingDirectory": str(cfg.root),
        "EnvironmentVariables": {"PATH": path_env if path_env is not None else os.environ.get("PATH", "/usr/bin:/bin"),
                                 "PYTHONUNBUFFERED": "1"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ProcessType": "Background",
        "StandardOutPath": log,
        "StandardErrorPath": log,
    })


def render(cfg: "FleetConfig", scope: str = "user", platform: str | None = None) -> tuple[Target, str]:
    """``(target, text)`` of the service definition for this platform."""
    t = target(cfg, scope, platform)
    if t.platform == "launchd":
        return t, launchd_plist(cfg, scope).decode()
    return t, systemd_unit(cfg, scope)


# ---------------------------------------------------------------------------- manage
def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found: this machine does not run "
                           f"{'launchd' if argv[0] == 'launchctl' else 'systemd'}") from None


def _systemctl(t: Target, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if t.scope == "user" else []), *args]


def install(cfg: "FleetConfig", scope: str = "user", platform: str | None = None) -> Target:
    """Write the service definition and enable and start it (``systemctl [--user]
    daemon-reload`` + ``enable --now``; ``launchctl load -w``).

    :raises ServiceError: when the file cannot be written or the service manager fails
        (its message included); the file stays, so a later ``systemctl`` can use it.
    """
    t, text = render(cfg, scope, platform)
    try:
        t.path.parent.mkdir(parents=True, exist_ok=True)
        t.path.write_text(text)
    except OSError as exc:
        raise ServiceError(f"{t.path}: cannot write the service file ({exc})") from None
    steps = ([["launchctl", "load", "-w", str(t.path)]] if t.platform == "launchd"
             else [_systemctl(t, "daemon-reload"), _systemctl(t, "enable", "--now", t.name)])
    for argv in steps:
        r = _run(argv)
        if r.returncode != 0:
            raise ServiceError(f"wrote {t.path}, but '{' '.join(argv)}' failed: {(r.stderr or r.stdout).strip()[:300]}")
    return t


def uninstall(cfg: "FleetConfig", scope: str = "user", platform: str | None = None) -> Target:
    """Stop and disable the service and remove its file (the agents keep running:
    ``KillMode=process``; ``ccci shutdown`` stops them).

    :raises ServiceError: when the service manager fails for another reason than the
        unit not being loaded.
    """
    t = target(cfg, scope, platform)
    if t.platform == "launchd":
        if t.path.exists():
            _run(["launchctl", "unload", "-w", str(t.path)])
    else:
        r = _run(_systemctl(t, "disable", "--now", t.name))
        if r.returncode != 0 and t.path.exists() and "not loaded" not in r.stderr and "does not exist" not in r.stderr:
            raise ServiceError(f"'{' '.join(_systemctl(t, 'disable', '--now', t.name))}' failed: {r.stderr.strip()[:300]}")
    if t.path.exists():
        t.path.unlink()
    if t.platform == "systemd" and shutil.which("systemctl"):
        _run(_systemctl(t, "daemon-reload"))
    return t


def status(cfg: "FleetConfig", scope: str = "user", platform: str | None = None) -> tuple[int, str]:
    """``(exit status, text)`` of ``systemctl [--user] status UNIT`` (or ``launchctl list
    LABEL``).

    :raises ServiceError: when the service manager is not there.
    """
    t = target(cfg, scope, platform)
    argv = (["launchctl", "list", t.name] if t.platform == "launchd"
            else _systemctl(t, "status", "--no-pager", "--lines=5", t.name))
    r = _run(argv)
    return r.returncode, (r.stdout + r.stderr).strip()
