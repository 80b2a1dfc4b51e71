"""Fleet service: one shared ``opencode serve`` on loopback for the fleet's opencode agents.

A builtin plugin, like :mod:`ccci.gitwatch` and :mod:`ccci.external`. When any agent
uses ``backend = "opencode"``, the watcher:

* starts the server in ``ccci_configure``, i.e. before :meth:`Supervisor.adopt` launches
  the agents (they attach to it: ``opencode run --attach URL``);
* clears stale state first: a state file whose pid is gone is removed; a leftover server
  of a killed watcher (pid alive, same port, healthy) is adopted, one that does not
  answer is killed; a leftover tmux session is killed;
* health-checks it every tick (process alive via psutil, then ``GET /global/health``
  with a 1 s limit) and restarts it when the process died or
  :data:`UNHEALTHY_LIMIT` checks in a row failed over at least :data:`UNHEALTHY_MIN_S`. Agents whose ``opencode run`` died with
  the server are resumed by the process-death check (``--session`` continues them; the
  sessions live in the server's storage and survive its restart);
* reports each step as an event (``data["happened_at"]``: when it happened, UTC; the
  event itself is logged at the next tick): ``opencode_serve_started``, ``opencode_serve_adopted``,
  ``opencode_serve_stale_cleared``, ``opencode_serve_died``,
  ``opencode_serve_unhealthy``, ``opencode_serve_restarted`` (with ``latency_s``: death
  seen -> healthy again), ``opencode_serve_failed``.

The server runs in its own tmux session ``ccci-<fleet>--opencode-serve`` on the fleet's
tmux server (it outlives a killed watcher, like the agents; its output is kept in
``<state>/logs/opencode-serve.log``). Its pid, port and URL are persisted in
``<state>/opencode-serve.json``.

Configuration (``ccci.toml``)::

    [opencode]
    port = 0              # 0: pick a free loopback port once and keep it (persisted)
    start_timeout = 30    # s to wait for /global/health after a start
    env = { }             # extra environment of the server (provider keys, HOME,
                          # OPENCODE_CONFIG); never logged

Stopping (issue 13: ``opencode serve`` takes about 600 MB): the server runs only while an
opencode agent needs it. An opencode agent needs it while its ``opencode run`` is alive
or while ccci is to run it (neither stopped by ``ccci stop`` nor given up). So:

* ``ccci stop`` of the last such agent (with or without a watcher) stops the server
  (``ccci_report_event`` on ``agent_stopped``), after aborting the stopped agent's
  running turn on the server when other agents still need it;
* a watcher stops the server on the tick it sees no agent needing it (all stopped or
  given up, e.g. after ``SEQUENCE-COMPLETE``), and starts it again when one is started;
* a watcher that exits (Ctrl-C, SIGTERM) stops the server unless an ``opencode run`` is
  alive: agents outlive their watcher by design (the next watcher adopts them), and a
  turn in flight needs its server; then the server is left running and
  ``opencode_serve_left_running`` names the agents (``ccci stop`` stops it later). Agents
  between turns are not running: their next turn starts with the next watcher, which
  starts the server again (about 3.5 s).

Each stop is an ``opencode_serve_stopped`` event (``reason``, ``pid``).

Publishes ``snapshot.facts["opencode_serve"]``: ``{"url": str, "healthy": bool,
"pid": int | None, "restarts": int}``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from ccci.backends.opencode import QUIET_ENV, ServerClient, ServerError
from ccci.hookspecs import hookimpl
from ccci.stash import StashKey
from ccci.model import Event

STATE_FILE = "opencode-serve.json"
UNHEALTHY_LIMIT = 3  #: failed health checks in a row before a live server is restarted ...
#: ... spanning at least this many seconds: on 2 cores at load average 15-20 a live, busy
#: server missed three 1 s health requests in 3 s and was killed under its agent (CI, 2026-12-07)
UNHEALTHY_MIN_S = 15.0
HEALTH_TIMEOUT_S = 1.0  #: seconds per health request (loopback: answers take ~2 ms)
DEFAULT_START_TIMEOUT_S = 30.0  #: measured start to healthy: 3.5 s on a loaded 2-core machine
MAX_BACKOFF_S = 60.0  #: cap of the delay between failed starts (doubling from 1 s)
BACKEND = "opencode"


class ServeConfigError(ValueError):
    """Bad ``[opencode]`` table; ``str()`` is the one-line message."""


def settings(config) -> dict[str, Any]:
    """``[opencode]`` of ``ccci.toml`` with defaults: ``port`` (int, 0 = auto),
    ``start_timeout`` (float s), ``env`` (dict str -> str).

    :raises ServeConfigError: naming the file, the key and the fix.
    """
    raw = config.raw.get("opencode", {}) or {}
    where = f"{config.path}: opencode"
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{where}: must be a table ([opencode])")
    unknown = set(raw) - {"port", "start_timeout", "env"}
    if unknown:
        raise ServeConfigError(f"{where}.{sorted(unknown)[0]}: unknown key; known: env, port, start_timeout")
    port = raw.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ServeConfigError(f"{where}.port: {port!r} is not a port; use 0 (pick one) or 1-65535")
    timeout = raw.get("start_timeout", DEFAULT_START_TIMEOUT_S)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ServeConfigError(f"{where}.start_timeout: {timeout!r}; use a number of seconds > 0")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ServeConfigError(f"{where}.env: use a table of strings, e.g. env = {{ HOME = \"/home/me\" }}")
    return {"port": port, "start_timeout": float(timeout), "env": dict(env)}


def needed(config) -> bool:
    """True when an agent of the fleet uses the opencode backend."""
    return any(a.backend == BACKEND for a in config.agents)


def session_name(config) -> str:
    """The server's tmux session: ``ccci-<fleet>--opencode-serve`` (the double dash keeps it
    apart from every agent's ``ccci-<fleet>-<agent>``)."""
    return f"ccci-{config.name}--opencode-serve"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound once and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True when 127.0.0.1:``port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _is_serve(pid: int | None, port: int | None = None) -> bool:
    """True when ``pid`` is a live ``opencode serve`` (on ``port``, when given)."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if "serve" not in cmd or not any("opencode" in Path(a).name for a in cmd[:1]):
        return False
    return port is None or str(port) in cmd


@dataclass
class ServeManager:
    """Starts, adopts, checks and restarts one fleet's ``opencode serve``.

    :param config: the fleet config.
    :param tmux: a :class:`ccci.tmux.Tmux` on the fleet's tmux server.
    :param mono: the monotonic clock (seconds).
    """

    config: Any
    tmux: Any
    mono: Any = time.monotonic
    url: str = ""
    pid: int | None = None
    port: int = 0
    healthy: bool = False
    restarts: int = 0
    failures: int = 0
    first_failure_mono: float = 0.0  #: when the current run of failed health checks began
    start_failures: int = 0
    next_start_mono: float = 0.0
    down_since_mono: float | None = None
    #: a restart under way on the tick path: (monotonic deadline, monotonic start, why);
    #: ``None`` otherwise
    starting: tuple[float, float, str] | None = None
    restart_since_mono: float = 0.0  #: when the server was found down (the restart's latency)
    events: list[Event] = field(default_factory=list)

    # ------------------------------------------------------------------ state file
    @property
    def state_path(self) -> Path:
        return Path(self.config.state_dir) / STATE_FILE

    def _read_state(self) -> dict:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.pid, "port": self.port, "url": self.url, "healthy": self.healthy,
                                   "session": session_name(self.config),
                                   "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_path)

    def _event(self, kind: str, message: str, **data: Any) -> None:
        # events are logged at the next tick's observe; keep when it really happened
        # (a start in ccci_configure precedes the agents' starts)
        data["happened_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.events.append(Event(kind, message, data=data))

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    # ------------------------------------------------------------------ probes
    def probe(self, url: str | None = None) -> bool:
        """One health request (``GET /global/health``, :data:`HEALTH_TIMEOUT_S`)."""
        try:
            return bool(ServerClient(url or self.url, timeout=HEALTH_TIMEOUT_S).health().get("healthy"))
        except ServerError:
            return False

    # ------------------------------------------------------------------ start
    def ensure(self, wait: bool = True) -> bool:
        """Make sure the server runs and answers: adopt a healthy leftover, clear stale
        state, start it.

        :param wait: block until the new server is healthy (at most ``start_timeout``
            s), as before the agents' first launch; ``False`` (a restart on the tick
            path, under the plugin's ``check_timeout``): return at once and let
            :meth:`check` probe it once per tick until healthy or ``start_timeout``.
        :returns: ``True`` when healthy (``False`` while a start without ``wait`` is
            under way). Failures are events, never exceptions.
        """
        conf = settings(self.config)
        st = self._read_state()
        old_pid, old_port = st.get("pid"), int(st.get("port") or 0)
        if old_port and _is_serve(old_pid, old_port) and self.probe(f"http://127.0.0.1:{old_port}"):
            self.pid, self.port, self.url = old_pid, old_port, f"http://127.0.0.1:{old_port}"
            self.healthy, self.failures = True, 0
            self._write_state()
            self._event("opencode_serve_adopted", f"adopted the running opencode serve (pid {old_pid}, {self.url})",
                        pid=old_pid, url=self.url)
            return True
        self._clear_stale(st)
        port = conf["port"] or old_port or free_port()
        if not port_free(port):
            if conf["port"]:
                self._failed(f"port {port} (opencode.port in {self.config.path}) is in use by another program; "
                             "free it or set opencode.port = 0")
                return False
            port = free_port()
        return self._start(port, conf, wait)

    def _clear_stale(self, st: dict) -> None:
        from ccci.processes import kill_tree

        cleared = []
        pid = st.get("pid")
        if _is_serve(pid):
            kill_tree(int(pid))
            cleared.append(f"killed unresponsive server pid {pid}")
        name = session_name(self.config)
        panes = self.tmux.list_panes()
        if name in panes:
            if panes[name].pid and _is_serve(panes[name].pid):
                kill_tree(panes[name].pid)
            self.tmux.kill_session(name)
            cleared.append(f"killed leftover tmux session {name}")
        if self.state_path.exists():
            self.state_path.unlink()
            cleared.append(f"removed {STATE_FILE} (pid {pid}, port {st.get('port')})")
        if cleared:
            self._event("opencode_serve_stale_cleared", "; ".join(cleared), pid=pid, port=st.get("port"))

    def _failed(self, why: str) -> None:
        self.healthy = False
        self.start_failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** (self.start_failures - 1))
        self.next_start_mono = self.mono() + delay
        self._event("opencode_serve_failed", f"{why}; next try in {delay:.0f}s", seconds=delay)

    def _start(self, port: int, conf: dict, wait: bool = True) -> bool:
        exe = shutil.which("opencode")
        if exe is None:
            self._failed("'opencode' is not on PATH; install opencode-ai (npm) for the opencode agents")
            return False
        url = f"http://127.0.0.1:{port}"
        env = {**QUIET_ENV, **conf["env"]}
        t0 = self.mono()
        try:
            pane = self.tmux.new_session(session_name(self.config), [exe, "serve", "--port", str(port),
                                                                     "--hostname", "127.0.0.1"],
                                         Path(self.config.root), env,
                                         log_file=Path(self.config.state_dir) / "logs" / "opencode-serve.log")
        except Exception as exc:  # noqa: BLE001 - reported, retried with backoff
            self._failed(f"tmux could not start opencode serve: {str(exc)[:200]}")
            return False
        self.pid, self.port, self.url, self.healthy = pane.pid, port, url, False
        self._write_state()
        deadline = t0 + conf["start_timeout"]
        if not wait:
            self.starting = (deadline, t0, "")
            return False
        while self.mono() < deadline:
            if self.probe(url):
                self.healthy, self.failures, self.start_failures = True, 0, 0
                self._write_state()
                self._event("opencode_serve_started", f"opencode serve up on {url} (pid {pane.pid}) after "
                            f"{self.mono() - t0:.2f}s", pid=pane.pid, url=url, startup_s=round(self.mono() - t0, 3))
                return True
            if not _alive(pane.pid):
                break  # exited (not: "not opencode yet": right after the fork the pane's
                # process is still tmux's child, before it execs opencode; seen under load)
            time.sleep(0.1)
        self._failed(f"opencode serve on {url} (pid {pane.pid}) not healthy after {self.mono() - t0:.1f}s; "
                     f"see {Path(self.config.state_dir) / 'logs' / 'opencode-serve.log'}")
        return False

    # ------------------------------------------------------------------ each tick
    def check(self) -> None:
        """One health check (process, then HTTP); restarts when needed. Never blocks
        longer than one health request (:data:`HEALTH_TIMEOUT_S`) plus a process
        start: a restart's wait for health is spread over the following ticks
        (:attr:`starting`). Under load (load average 15-20 on 2 cores) a blocking
        30 s wait inside the tick ran past the plugin's ``check_timeout``: the
        interrupted start was taken for a dead server, the next tick killed it and
        started another, and after 5 timeouts the plugin was disabled."""
        mono = self.mono()
        if self.starting is not None:
            self._check_starting(mono)
            return
        if not self.healthy and self.pid is None:
            if mono >= self.next_start_mono:
                self._restart("not running")
            return
        if not _is_serve(self.pid, self.port):
            if self.down_since_mono is None:
                self.down_since_mono = mono
            self._event("opencode_serve_died", f"opencode serve (pid {self.pid}) is gone", pid=self.pid)
            self.healthy, self.pid = False, None
            if mono >= self.next_start_mono:
                self._restart("process died")
            return
        if self.probe():
            if not self.healthy:  # a start that was reported failed came up after all
                self.start_failures = 0
                if self.down_since_mono is not None:
                    self.restarts += 1
                    latency = mono - self.down_since_mono
                    self.down_since_mono = None
                    self._event("opencode_serve_restarted", f"opencode serve healthy again on {self.url} after "
                                f"{latency:.2f}s", url=self.url, pid=self.pid, latency_s=round(latency, 3))
                else:
                    self._event("opencode_serve_started", f"opencode serve up on {self.url} (pid {self.pid})",
                                pid=self.pid, url=self.url)
                self.healthy = True
                self._write_state()
            self.healthy, self.failures = True, 0
            return
        self.failures += 1
        if self.failures == 1:
            self.first_failure_mono = mono
        if self.failures >= UNHEALTHY_LIMIT and mono - self.first_failure_mono >= UNHEALTHY_MIN_S:
            if self.down_since_mono is None:
                self.down_since_mono = mono
            self._event("opencode_serve_unhealthy", f"opencode serve (pid {self.pid}) failed {self.failures} "
                        "health checks in a row; restarting it", pid=self.pid)
            self.healthy = False
            from ccci.processes import kill_tree

            kill_tree(self.pid)
            self.pid = None
            if mono >= self.next_start_mono:
                self._restart("unhealthy")

    def _check_starting(self, mono: float) -> None:
        deadline, t0, why = self.starting
        if self.probe():
            self.starting = None
            self.healthy, self.failures, self.start_failures = True, 0, 0
            self._write_state()
            self._event("opencode_serve_started", f"opencode serve up on {self.url} (pid {self.pid}) after "
                        f"{mono - t0:.2f}s", pid=self.pid, url=self.url, startup_s=round(mono - t0, 3))
            self._restarted(why, self.restart_since_mono)
            return
        if _alive(self.pid) and mono < deadline:
            return  # still starting (right after the fork the pane's process is not opencode yet)
        self.starting = None
        pid = self.pid
        if _alive(pid):
            from ccci.processes import kill_tree

            kill_tree(int(pid))
        self.pid = None
        self._failed(f"opencode serve on {self.url} (pid {pid}) not healthy after {mono - t0:.1f}s; "
                     f"see {Path(self.config.state_dir) / 'logs' / 'opencode-serve.log'}")

    def stop(self, reason: str) -> bool:
        """Stop the server: kill its process tree and its tmux session, remove the state
        file; the manager then reads as not running (a later :meth:`check` starts it
        again). :returns: ``True`` when something was running. Never raises."""
        from ccci.processes import kill_tree

        st = self._read_state()
        pid = self.pid or st.get("pid")
        found = False
        if _is_serve(pid):
            kill_tree(int(pid))
            found = True
        name = session_name(self.config)
        try:
            if name in self.tmux.list_panes():
                self.tmux.kill_session(name)
                found = True
        except Exception:  # noqa: BLE001 - tmux server gone: nothing left to kill there
            pass
        try:
            self.state_path.unlink()
        except OSError:
            pass
        self.pid, self.healthy, self.failures, self.down_since_mono = None, False, 0, None
        self.next_start_mono, self.starting = 0.0, None
        if found:
            self._event("opencode_serve_stopped", f"opencode serve stopped (pid {pid}): {reason}", pid=pid,
                        reason=reason)
        return found

    def _restart(self, why: str) -> None:
        since = self.down_since_mono if self.down_since_mono is not None else self.mono()
        healthy = self.ensure(wait=False)
        if self.starting is not None:  # reported by check() once it answers
            self.starting = (self.starting[0], self.starting[1], why)
            self.restart_since_mono = since
        elif healthy:
            self._restarted(why, since)

    def _restarted(self, why: str, since: float) -> None:
        if why:
            self.restarts += 1
            latency = self.mono() - since
            self.down_since_mono = None
            self._event("opencode_serve_restarted", f"opencode serve restarted ({why}) in {latency:.2f}s; "
                        "agents resume with --session", url=self.url, pid=self.pid, latency_s=round(latency, 3))


MANAGER = StashKey[ServeManager]("manager")  #: the fleet's server manager, in this plugin's fleet stash


def manager(config, stash, tmux=None) -> ServeManager:
    """The fleet's :class:`ServeManager` kept in ``stash`` (created on first use)."""
    m = stash.get(MANAGER)
    if m is None or m.config is not config:
        if tmux is None:
            from ccci.tmux import Tmux

            tmux = Tmux(socket_name=config.tmux_socket or None)
        old, m = m, ServeManager(config, tmux)
        if old is not None:
            m.pid, m.port, m.url, m.healthy = old.pid, old.port, old.url, old.healthy
        stash[MANAGER] = m
    return m


def starting(config) -> str | None:
    """A one-line reason while the fleet's server was started and does not answer yet
    (its state file says ``"healthy": false`` and its process lives), else ``None``."""
    st = ServeManager(config, None)._read_state()
    if st.get("healthy") is False and _alive(st.get("pid")):
        return f"opencode serve is starting (pid {st.get('pid')}, {st.get('url')})"
    return None


def server_url(config) -> str:
    """Base URL of the fleet's ``opencode serve`` (``http://127.0.0.1:PORT``).

    :raises ServerError: when no server is known to run (none started, or the last
        start failed).
    """
    st = ServeManager(config, None)._read_state()
    if st.get("healthy") is False:
        # a restart under way (ServeManager.starting): an agent launched now attached to
        # a server that was not listening yet and sat idle for good (e2e, load 15)
        raise ServerError(f"the fleet's opencode serve is starting (pid {st.get('pid')}, {st.get('url')}); "
                          "the watcher launches the agent once it answers")
    if st.get("url") and _is_serve(st.get("pid"), st.get("port")):
        return str(st["url"])
    raise ServerError(f"the fleet's opencode serve is not running (see {Path(config.state_dir) / STATE_FILE}); "
                      "the watcher starts it")


@hookimpl
def ccci_configure(config, stash):
    if needed(config):
        settings(config)  # a bad [opencode] table fails here, at start, in one line
        manager(config, stash).ensure()


def _needing(agents: dict, live: dict) -> list[str]:
    """Names of the opencode agents that need the server: ``opencode run`` alive
    (``live[name]``), or neither stopped nor given up.

    :param agents: name -> an object with ``spec.backend``, ``stopped``, ``given_up``.
    :param live: name -> the agent's pane process is alive."""
    return [n for n, rt in agents.items() if rt.spec.backend == BACKEND
            and (live.get(n) or not (rt.stopped or rt.given_up))]


def _live(services, names) -> dict[str, bool]:
    out = {}
    for n in names:
        try:
            pane = services.pane(n)
        except Exception:  # noqa: BLE001 - tmux gone: nothing alive
            pane = None
        out[n] = pane is not None and not pane.dead
    return out


@hookimpl(tryfirst=True)
def ccci_observe(snapshot, config, agents, stash):
    """Health-check (and restart) the shared server before the backends read it this
    tick; stops it when no opencode agent needs it (:func:`_needing`); publishes
    ``snapshot.facts["opencode_serve"]``."""
    if not needed(config):
        return
    m = manager(config, stash)
    live = {n: p is not None and not p.dead for n, p in snapshot.panes.items()}
    if not _needing(agents, live):
        if m.pid is not None or m.state_path.exists():
            m.stop("no opencode agent left (all stopped or given up)")
        snapshot.events.extend(m.take_events())
        snapshot.facts["opencode_serve"] = {"url": m.url, "healthy": False, "pid": None, "restarts": m.restarts}
        return
    m.check()
    snapshot.events.extend(m.take_events())
    snapshot.facts["opencode_serve"] = {"url": m.url, "healthy": m.healthy, "pid": m.pid, "restarts": m.restarts}


@hookimpl
def ccci_report_event(event, services, stash):
    """``ccci stop`` (here or in the watcher): when the stopped agent was the last
    opencode agent needing the server, stop it; otherwise abort the stopped agent's
    running turn on the server (killing ``opencode run`` leaves it running)."""
    if event.kind != "agent_stopped" or not event.agent:
        return
    config = services.config
    if not needed(config):
        return
    names = services.agents()
    views = {n: services.agent(n) for n in names}
    if views.get(event.agent) is None or views[event.agent].spec.backend != BACKEND:
        return
    left = _needing(views, _live(services, names))
    if left:
        from ccci.backends.opencode import ServerError

        rt = views[event.agent]
        conv = str(rt.conversation_id or "")
        if conv.startswith("ses"):
            try:
                c = ServerClient(server_url(config))
                if c.statuses(str(rt.spec.workdir)).get(conv):
                    c.abort(conv, str(rt.spec.workdir))
                    services.emit("opencode_turn_aborted", f"aborted the running turn of {conv} on the server "
                                  "(agent stopped)", agent=event.agent, session=conv, mode="stop")
            except ServerError:
                pass
        return
    m = manager(config, stash)
    if m.stop(f"ccci stop: no opencode agent left after {event.agent}"):
        for ev in m.take_events():
            services.emit(ev.kind, ev.message, **ev.data)


@hookimpl
def ccci_unconfigure(config, stash, services):
    """The watcher is exiting: stop the server unless an ``opencode run`` is alive (see
    the module docstring for why)."""
    if not needed(config):
        return
    names = [n for n in services.agents() if services.agent(n).spec.backend == BACKEND]
    alive = [n for n, up in _live(services, names).items() if up]
    m = manager(config, stash)
    if alive:
        services.emit("opencode_serve_left_running", f"opencode serve left running for {', '.join(alive)} "
                      "(their turns are in flight; ccci stop stops it)", agents=alive, pid=m.pid)
        return
    m.stop("the watcher exited and no opencode run is alive")
    for ev in m.take_events():
        services.emit(ev.kind, ev.message, **ev.data)
