"""The ``ccci`` command line (click + rich).

Every command that works on a fleet finds ``ccci.toml`` in ``--fleet DIR`` (or
``$CCCI_FLEET``, or the current directory and its parents). Errors are one line on
stderr with exit status 2 (bad input) or 3 (another watcher holds the fleet).

Text that comes from users, configs, panes, commits or exceptions is printed literally:
through :func:`say` (a :class:`rich.text.Text`, so no markup, no ``:emoji:`` codes) or as
``Text`` table cells; only fixed words carry styles. ``[phases]`` stays ``[phases]``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ccci import config as config_mod
from ccci.clock import UTC, iso
from ccci.lifecycle import DECLARED_WAIT_KEY
from ccci.model import AgentState
from ccci.config import ConfigError
# the fleet actions live in ccci.commands.actions (the web dashboard calls them too)
from ccci.commands.actions import clear_escalation as _clear_escalation  # noqa: F401
from ccci.commands.actions import ensure_watcher  # noqa: F401

console = Console()
err_console = Console(stderr=True)


def say(*parts: str | tuple[str, str], err: bool = False, out: Console | None = None) -> None:
    """Print one line literally: each part is plain text, or ``(text, style)`` for a
    styled fixed word. Nothing in the text is read as markup or an emoji code."""
    target = out or (err_console if err else console)
    target.print(Text.assemble(*parts), soft_wrap=True)


def cell(value: object) -> Text:
    """A table cell that shows ``value`` as it is (table strings are markup otherwise)."""
    return Text("" if value is None else str(value))


def fail(msg: str, code: int = 2) -> None:
    say(("ccci:", "red"), " ", msg, err=True)
    sys.exit(code)


def load_config(fleet: str | None) -> config_mod.FleetConfig:
    try:
        return config_mod.load(config_mod.find_config(Path(fleet) if fleet else None))
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def build(cfg: config_mod.FleetConfig, echo_errors: bool = True):
    """Plugin manager, store, tmux and supervisor for ``cfg``."""
    from ccci.patterns import PatternError
    from ccci.plugins import get_plugin_manager
    from ccci.state import StateStore
    from ccci.supervisor import Supervisor
    from ccci.tmux import Tmux

    pm = get_plugin_manager(cfg.root)
    if echo_errors:
        for line in pm.load_errors:
            say(("ccci:", "yellow"), " ", line, err=True)
    try:
        store = StateStore(cfg.state_dir)
    except Exception as exc:  # noqa: BLE001
        fail(f"{cfg.state_dir}: cannot open the state database ({exc}); check the directory's permissions and free space")
    try:
        sup = Supervisor(cfg, pm, store, Tmux(cfg.tmux_socket or None))
    except (ValueError, PatternError) as exc:
        fail(str(exc))
    return sup


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fleet", envvar="CCCI_FLEET", default=None, metavar="DIR",
              help="Fleet directory (holds ccci.toml). Default: the current directory or a parent.")
@click.option("--host", "this_host", envvar="CCCI_HOST", default=None, metavar="NAME",
              help="Which [[hosts]] entry this machine is (sets CCCI_HOST; default: [fleet] this_host, else 'local'). "
                   "A watcher supervises only its own host's agents.")
@click.option("--local", "local_only", is_flag=True,
              help="Only this host's agents: contact no other host (what remote calls over ssh use).")
@click.version_option(package_name="ccci")
@click.pass_context
def main(ctx: click.Context, fleet: str | None, this_host: str | None, local_only: bool) -> None:
    """ccci: keep autonomous AI coding agents working unattended in tmux."""
    if this_host:
        os.environ["CCCI_HOST"] = this_host  # read by config.load; inherited by a background watcher
    ctx.obj = {"fleet": fleet, "local": local_only}


def _split(ctx: click.Context, cfg: config_mod.FleetConfig, names: tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    """``(this host's agents, {other host: agents})`` of ``names`` (every agent when
    empty); with ``--local``, no other host. One-line error for an unknown name."""
    from ccci.commands.hosts import split_by_host

    if ctx.obj.get("local"):
        return _agent_names(cfg, names), {}
    try:
        return split_by_host(cfg, names)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def _host_timeout(cfg: config_mod.FleetConfig, host: str) -> float:
    """The overall timeout (s) of one call to ``host`` (its ``timeout``; 20 for a name
    that is no ``[[hosts]]`` entry, which fails at once anyway)."""
    h = cfg.hosts.get(host)
    return h.timeout if h is not None else 20.0


def _forward_all(ctx: click.Context, cfg: config_mod.FleetConfig, remote: dict[str, list[str]], args: list[str],
                 timeout: float | None = None) -> int:
    """Run ``ccci ARGS AGENTS`` on each other host (output shown as it is); the worst exit status."""
    from ccci.commands.hosts import forward

    worst = 0
    for host, names in remote.items():
        worst = max(worst, forward(cfg, host, [*args, *names], timeout))
    return worst


def _act_everywhere(ctx: click.Context, cfg: config_mod.FleetConfig, remote: dict[str, list[str]],
                    args: list[str], here: Callable[[], Any] | None) -> None:
    """``ccci start`` / ``ccci restart``: forward ``ccci ARGS AGENTS`` to each other host
    in ``remote``, then call ``here()`` (``None``: nothing to do on this host), which
    returns a :class:`ccci.commands.actions.ActionResult` whose lines are printed. Exits
    with the worst remote status, else 1 when ``here`` failed; returns when all is well."""
    code = _forward_all(ctx, cfg, remote, args) if remote else 0
    if here is not None:
        res = here()
        for line in res.lines:
            say(line)
        if not res.ok:
            code = code or 1
    if code:
        sys.exit(code)


# ---------------------------------------------------------------------------- init
@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--origin", default=None, help="Existing git origin (URL or path). Default: create DIR/origin.git.")
@click.option("--branch", default="main", show_default=True)
@click.option("--backend", default="scripted", show_default=True, help="Default backend (scripted, claude, ...).")
@click.option("--name", default=None, help="Fleet name (default: the directory's name).")
def init(directory: Path, origin: str | None, branch: str, backend: str, name: str | None) -> None:
    """Scaffold a fleet (builder + adversary) that `ccci start` and `ccci watch` run as is."""
    from ccci.commands.init import InitError, init_fleet

    try:
        cfg = init_fleet(directory, origin=origin, branch=branch, backend=backend, name=name)
    except InitError as exc:
        fail(str(exc))
    say(f"created {cfg}")
    say(f"next: ccci --fleet {directory} watch   (starts the agents and supervises them)")


# ---------------------------------------------------------------------------- start/stop
@main.command()
@click.argument("agents", nargs=-1)
@click.option("--no-watch", is_flag=True, help="Do not start a background watcher (the agents run unsupervised).")
@click.pass_context
def start(ctx: click.Context, agents: tuple[str, ...], no_watch: bool) -> None:
    """Start agents (all by default). Idempotent: a live agent is left alone.

    When a watcher supervises the fleet, it is asked to start them (one writer);
    otherwise they are started here and a watcher is started in the background, so no
    agent runs unsupervised. An agent that cannot be started here (e.g. opencode's,
    whose shared ``opencode serve`` only a watcher starts) is left to that watcher,
    which tries again each tick; with ``--no-watch``, or when the failure gave the agent
    up (its CLI is missing), that is an error (exit 1).
    """
    from ccci.commands.actions import start_agents

    cfg = load_config(ctx.obj["fleet"])
    names, remote = _split(ctx, cfg, agents)
    _act_everywhere(ctx, cfg, remote, ["start", *(["--no-watch"] if no_watch else [])],
                    (lambda: start_agents(build(cfg), names, watch=not no_watch)) if names or not cfg.hosts else None)


@main.command()
@click.argument("agents", nargs=-1)
@click.pass_context
def stop(ctx: click.Context, agents: tuple[str, ...]) -> None:
    """Stop agents (all by default); the watcher leaves them stopped until `ccci start`."""
    from ccci.commands.actions import stop_agents

    cfg = load_config(ctx.obj["fleet"])
    names, remote = _split(ctx, cfg, agents)
    if names:
        for line in stop_agents(build(cfg), names).lines:
            say(line)
    if remote:
        sys.exit(_forward_all(ctx, cfg, remote, ["stop"]))


@main.command()
@click.argument("agents", nargs=-1)
@click.option("--no-watch", is_flag=True, help="Do not start a background watcher (the agents run unsupervised).")
@click.pass_context
def restart(ctx: click.Context, agents: tuple[str, ...], no_watch: bool) -> None:
    """Restart agents (all by default): stop them, then start them as `ccci start` does
    (a running watcher resumes their conversations within a tick)."""
    from ccci.commands.actions import restart_agents

    cfg = load_config(ctx.obj["fleet"])
    names, remote = _split(ctx, cfg, agents)
    _act_everywhere(ctx, cfg, remote, ["restart", *(["--no-watch"] if no_watch else [])],
                    (lambda: restart_agents(build(cfg), names, watch=not no_watch)) if names else None)


@main.command()
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait for the watcher to end before killing it (SIGKILL).")
@click.pass_context
def shutdown(ctx: click.Context, timeout: float) -> None:
    """Stop the whole fleet: end its watcher cleanly, then stop every agent.

    The watcher gets SIGTERM and leaves after its current tick through the normal path
    (a ``watcher_stopping`` event, every plugin's ``ccci_unconfigure``, e.g. the shared
    ``opencode serve`` ends; ``watcher_stopped``). Then every agent is stopped as by
    ``ccci stop``; ``ccci start`` brings the fleet back. A watcher run by systemd or
    launchd is restarted by them only after a failure, but use ``systemctl stop`` (or
    ``ccci service uninstall``) for a service. Exit status 1 when the watcher had to be
    killed (its plugins were not unconfigured).
    """
    from ccci.lock import FleetLock

    cfg = load_config(ctx.obj["fleet"])
    lock = FleetLock(cfg.state_dir)
    killed = False
    pid = lock.holder() if lock.is_held() else None
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    if pid:
        end = time.monotonic() + timeout
        while lock.is_held() and time.monotonic() < end:
            time.sleep(0.1)
        if lock.is_held():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed = True
            end = time.monotonic() + 5
            while lock.is_held() and time.monotonic() < end:
                time.sleep(0.1)
        say(f"watcher pid {pid} {'killed (it did not stop within %.0fs)' % timeout if killed else 'stopped'}")
    else:
        say("no watcher was running")
    sup = build(cfg)
    for n in _agent_names(cfg, ()):
        sup.store.update_agent(n, stopped=1)
        sup.lifecycle.stop(n, reason="ccci shutdown")
        say(f"{n}: stopped")
    if killed:
        sys.exit(1)


# ---------------------------------------------------------------------------- attach
def attach_argv(cfg: config_mod.FleetConfig, agent: str, read_only: bool = False) -> list[str]:
    """``tmux -L SOCKET|-S PATH attach-session -t =SESSION [-r]``: the command ``ccci attach`` runs
    (an argv list, never a shell line; ``=`` makes tmux match the session name exactly)."""
    return ["tmux", *cfg.tmux_args(), "attach-session", "-t", f"={cfg.session_name(agent)}", *(["-r"] if read_only else [])]


@main.command()
@click.argument("agent")
@click.option("-r", "--read-only", is_flag=True, help="Watch only: keys typed are not sent to the agent.")
@click.option("--print", "print_only", is_flag=True, help="Print the tmux command (one JSON list) instead of running it.")
@click.pass_context
def attach(ctx: click.Context, agent: str, read_only: bool, print_only: bool) -> None:
    """Attach this terminal to AGENT's pane on the fleet's tmux server (detach: C-b d).

    Anything typed reaches the agent, as if ccci typed it; -r watches only. Run from
    inside tmux, ``$TMUX`` is dropped for the nested client. Exit status 2 when the agent
    has no tmux session."""
    from ccci.tmux import Tmux

    cfg = load_config(ctx.obj["fleet"])
    _, remote = _split(ctx, cfg, (agent,))
    if remote:  # an agent of another host: attach there through ssh -t
        from ccci.hosts import Hosts

        host = next(iter(remote))
        if host not in cfg.hosts:
            fail(f"agent {agent!r} runs on host {host!r}, which is no [[hosts]] entry; attach on that machine")
        hs = Hosts(cfg)
        argv = hs.ssh_argv(host, hs.ccci_words(host, ["attach", agent, *(["-r"] if read_only else [])]), tty=True)
        if print_only:
            click.echo(json.dumps(argv))
            return
        sys.stdout.flush()
        os.execvp(argv[0], argv)
    argv = attach_argv(cfg, agent, read_only)
    if print_only:
        click.echo(json.dumps(argv))
        return
    if Tmux(cfg.tmux_socket or None).list_panes().get(cfg.session_name(agent)) is None:
        fail(f"agent {agent!r} has no tmux session ({cfg.session_name(agent)}); see ccci status, ccci start {agent}")
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


# ---------------------------------------------------------------------------- service
@main.group()
def service() -> None:
    """The watcher as a systemd user/system service (Linux) or a launchd agent (macOS)."""


def _scope_options(f):
    f = click.option("--fleet", "fleet_dir", default=None, metavar="DIR",
                     help="Fleet directory (default: ccci --fleet, $CCCI_FLEET or the current directory).")(f)
    f = click.option("--user/--system", "user", default=True, show_default=True,
                     help="A per-user service (systemctl --user; needs 'loginctl enable-linger USER' to run "
                          "without a login session) or a system-wide one (root).")(f)
    return f


@service.command("install")
@_scope_options
@click.option("--dry-run", is_flag=True, help="Print the unit (or plist) and where it would go; write nothing.")
@click.pass_context
def service_install(ctx: click.Context, fleet_dir: str | None, user: bool, dry_run: bool) -> None:
    """Write the service that runs `ccci watch` for this fleet, then enable and start it."""
    from ccci import service as svc

    cfg = load_config(fleet_dir or ctx.obj["fleet"])
    scope = "user" if user else "system"
    if dry_run:
        t, text = svc.render(cfg, scope)
        say(f"# {t.path}", err=True)
        click.echo(text, nl=False)
        return
    try:
        t = svc.install(cfg, scope)
    except svc.ServiceError as exc:
        fail(str(exc), code=1)
    say(f"installed and started {t.name} ({t.path})")
    if t.platform == "systemd" and scope == "user":
        say("to keep it running without a login session: loginctl enable-linger " + os.environ.get("USER", "$USER"))


@service.command("status")
@_scope_options
@click.pass_context
def service_status(ctx: click.Context, fleet_dir: str | None, user: bool) -> None:
    """The service manager's view of the fleet's watcher (exit status: the manager's)."""
    from ccci import service as svc

    cfg = load_config(fleet_dir or ctx.obj["fleet"])
    try:
        code, text = svc.status(cfg, "user" if user else "system")
    except svc.ServiceError as exc:
        fail(str(exc), code=1)
    click.echo(text)
    sys.exit(code)


@service.command("uninstall")
@_scope_options
@click.pass_context
def service_uninstall(ctx: click.Context, fleet_dir: str | None, user: bool) -> None:
    """Stop and disable the service and remove its file; the agents keep running."""
    from ccci import service as svc

    cfg = load_config(fleet_dir or ctx.obj["fleet"])
    try:
        t = svc.uninstall(cfg, "user" if user else "system")
    except svc.ServiceError as exc:
        fail(str(exc), code=1)
    say(f"removed {t.name}; the agents keep running (ccci shutdown stops them)")


def _agent_names(cfg: config_mod.FleetConfig, agents: tuple[str, ...]) -> list[str]:
    known = [a.name for a in cfg.agents]
    for a in agents:
        if a not in known:
            fail(f"{cfg.path}: no agent {a!r}; agents are: {', '.join(known)}")
    return list(agents) or known


# ---------------------------------------------------------------------------- status
def _utc_or_none(raw: str | None):
    from ccci.clock import parse_utc

    try:
        return parse_utc(raw) if raw else None
    except ValueError:
        return None


def status_rows(sup) -> list[dict]:
    """One dict per agent: name, backend, state, pid, uptime_s, restarts, resumes,
    conversation_id, last_event, session, waiting_until, and the version fields of
    :func:`version_fields`.

    ``state`` is ``stopped``, ``given_up``, ``waiting`` (a declared ``WAITING-UNTIL`` in
    the future: an exited agent of a backend that exits at every turn end, or an idle
    agent showing it; ``waiting_until`` is that deadline, ISO-8601 UTC, else ``None``),
    ``exited`` or the screen's :class:`ccci.model.AgentState` value. ``retry_at``: a
    given-up agent's next automatic retry (ISO-8601 UTC; ``None``: none planned,
    docs/reliability.md#escalation-and-automatic-retries)."""
    from ccci.remedies import escalation_record

    panes = sup.tmux.list_panes()
    live = {n: panes.get(rt.session) for n, rt in sup.agents.items()}
    ids = [p.pane_id for p in live.values() if p is not None and not p.dead]
    screens = sup.tmux.capture(ids) if ids else {}
    rows = []
    now = datetime.now(UTC)
    usage = sup.store.usage_rows(since_day=now.strftime("%Y-%m-%d"))
    spent = _cost_today(sup, usage, now)
    for n, rt in sup.agents.items():
        rec = sup.store.agent(n)
        pane = live[n]
        waiting_until = retry_at = None
        if rec.stopped:
            state = "stopped"
        elif rec.given_up:
            state = "given_up"
            retry_at = (escalation_record(sup.store, n) or {}).get("retry_at")
        elif pane is None or pane.dead:
            state = "exited"
            raw = sup.store.get(DECLARED_WAIT_KEY.format(agent=n)) if pane is not None else None
            until = _utc_or_none(raw)
            if until is not None and until > now:
                state, waiting_until = "waiting", until  # the turn ended declaring WAITING-UNTIL
        else:
            analysis = rt.backend.analyse(screens.get(pane.pane_id, ""), pane.title)
            state = analysis.state.value
            if analysis.state == AgentState.IDLE and analysis.waiting_until and analysis.waiting_until > now:
                state, waiting_until = "waiting", analysis.waiting_until
        alive = pane is not None and not pane.dead
        uptime = (now - rec.started_at).total_seconds() if (alive and rec.started_at) else None
        rows.append({
            "name": n, "backend": rt.spec.backend, "role": rt.spec.role.value, "state": state,
            "pid": pane.pid if alive else None, "uptime_s": round(uptime, 1) if uptime is not None else None,
            "restarts": rec.restarts, "resumes": rec.resumes, "conversation_id": rec.conversation_id or None,
            "session": rt.session, "last_event": rec.last_event,
            "waiting_until": iso(waiting_until) if waiting_until else None, "retry_at": retry_at,
            "cost_today_usd": round(spent.get(n, 0.0), 6) if spent is not None else None,
            **version_fields(rt.backend, rt.spec, sup.config, rec.conversation_id or ""),
            **usage_fields(sup.kv, usage, n, rt.spec.backend),
        })
    return rows


def _cost_today(sup, usage_rows: list[dict], now: datetime) -> dict[str, float] | None:
    """``{agent: USD}`` for the UTC day of ``now`` from today's usage rows
    (:func:`ccci.cost.cost_today_rows`); ``None`` when the prices cannot be read (a bad
    ``[prices]`` table is reported at load)."""
    from ccci.cost import PriceError, cost_today_rows, price_table

    try:
        return cost_today_rows(usage_rows, price_table(sup.config), now)
    except PriceError:
        return None


def usage_fields(kv, usage_rows: list[dict], agent: str, backend: str) -> dict:
    """``tokens_today`` (``{"input", "output", "cache_read", "cache_write"}`` tokens of the
    current UTC day, all models, as the watcher read them from the CLI's records) and
    ``context`` (``{"tokens", "window", "fraction", "model", "at"}``: the newest context use
    the watcher read, ``None`` before any) for ``ccci status --json``
    (:mod:`ccci.usage_watch`)."""
    from ccci.usage import day_totals, read_context

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return {"tokens_today": day_totals(usage_rows, agent, today), "context": read_context(kv, agent)}


def version_fields(backend, spec, cfg, conversation_id: str) -> dict:
    """``cli_version`` (what the agent's CLI recorded about itself at launch, when its
    backend can tell, else the version the screen rules are for), ``rules_version`` and
    ``tested`` (``cli_version`` is one the backend was checked against) for ``ccci status --json``."""
    try:
        rules = backend.rules_version or None
        tested_versions = backend.versions_tested()
    except Exception:  # noqa: BLE001 - a third-party backend whose patterns do not load: unknown
        rules, tested_versions = None, ()
    try:
        running = backend.running_version(spec, cfg, conversation_id)
    except Exception:  # noqa: BLE001 - unreadable session files: fall back to the rules' version
        running = None
    version = running or rules
    return {"cli_version": version, "rules_version": rules, "tested": version is not None and version in tested_versions}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per agent, in a list.")
@click.option("--watch", "watch_", is_flag=True, help="Keep the table on screen, refreshed (Ctrl-C ends it).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between refreshes with --watch.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch_: bool, interval: float) -> None:
    """Agents with backend, state, pid, uptime, restarts, cost today and last event."""
    cfg = load_config(ctx.obj["fleet"])
    if as_json and watch_:
        fail("--json and --watch do not go together; use --json once, or --watch for the live table")
    sup = build(cfg, echo_errors=not as_json)
    rows, down = _status_all(ctx, cfg, sup)
    if as_json:
        # a host that did not answer: one row with state "unreachable", name null, the reason in "error"
        click.echo(json.dumps(rows + [{"host": r.host, "name": None, "state": "unreachable", "error": r.error}
                                      for r in down], indent=2))
        return
    if not watch_:
        console.print(status_table(cfg, rows, down))
        return
    import threading

    from rich.live import Live

    # Ctrl-C ends it even when SIGINT came in ignored or its KeyboardInterrupt is caught on
    # the way (a full CI run twice left it drawing for over 10 s after Ctrl-C): the
    # handler also sets a flag the loop checks between frames
    stop = threading.Event()

    def _on_int(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, _on_int)
    try:
        with Live(status_table(cfg, rows, down), console=console, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            while not stop.wait(interval):
                live.update(status_table(cfg, *_status_all(ctx, cfg, sup)), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)


def _status_all(ctx: click.Context, cfg: config_mod.FleetConfig, sup) -> tuple[list[dict], list]:
    """``(rows, hosts that did not answer)``: this host's :func:`status_rows` and, for a
    fleet over several hosts (not ``--local``), the other hosts' rows, asked while this
    one is read; every row names its host then."""
    remote = None
    if cfg.hosts and not ctx.obj.get("local") and cfg.remote_agents():
        from concurrent.futures import ThreadPoolExecutor

        from ccci.commands.hosts import remote_status

        pool = ThreadPoolExecutor(max_workers=1)
        remote = pool.submit(remote_status, cfg)  # the other hosts answer while this one is read
        pool.shutdown(wait=False)
    rows = status_rows(sup)
    down: list = []
    if cfg.hosts:  # a fleet over several hosts: every row names its host
        rows = [{**r, "host": cfg.this_host} for r in rows]
        if remote is not None:
            more, down = remote.result()
            rows += more
    return rows, down


def status_table(cfg: config_mod.FleetConfig, rows: list[dict], down: list = ()) -> Table:
    """The ``ccci status`` table for ``rows`` (:func:`status_rows`) and the hosts that
    did not answer, titled with the watcher and the time it was read (UTC)."""
    from ccci.lock import FleetLock

    held = FleetLock(cfg.state_dir)
    t = Table(title=cell(f"fleet {cfg.name} — watcher {'running (pid %s)' % held.holder() if held.is_held() else 'NOT running'}"
                         + (f" on {cfg.this_host}" if cfg.hosts else "") + f" — {iso(datetime.now(UTC))}"))
    for col in (*(("host",) if cfg.hosts else ()), "agent", "backend", "state", "pid", "uptime", "restarts",
                "tokens today", "ctx", "cost today", "last event"):
        t.add_column(col, overflow="fold")
    for r in rows:
        up = _dur(r["uptime_s"]) if r["uptime_s"] is not None else "-"
        state = (f"waiting until {r['waiting_until']}" if r["waiting_until"] else
                 f"given_up (retry {r['retry_at']})" if r["retry_at"] else r["state"])
        cost = "-" if r.get("cost_today_usd") is None else f"${r['cost_today_usd']:.2f}"
        t.add_row(*map(cell, (*((r["host"],) if cfg.hosts else ()), r["name"], r["backend"], state, r["pid"] or "-", up,
                              r["restarts"], _tokens(r.get("tokens_today")), _ctx(r.get("context")), cost,
                              (r["last_event"] or "")[:70])))
    for r in down:
        t.add_row(cell(r.host), cell("-"), cell("-"), Text("unreachable", style="red"),
                  *map(cell, ("-", "-", "-", "-", "-", "-", r.error)))
    return t


def _tokens(t: dict | None) -> str:
    """``12.3k in / 4.5k out`` (cache reads and writes in the input), ``-`` for none (or
    a row from another host's older ccci, without the field)."""
    if not t:
        return "-"
    total_in = t["input"] + t["cache_read"] + t["cache_write"]
    if not total_in and not t["output"]:
        return "-"

    def k(n: int) -> str:
        return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)
    return f"{k(total_in)} in / {k(t['output'])} out"


def _ctx(c: dict | None) -> str:
    """``ctx 82%`` (``ctx 41.0k`` when the window is unknown), ``-`` before any reading."""
    if not c or c.get("tokens") is None:
        return "-"
    if c.get("fraction") is not None:
        return f"ctx {round(100 * c['fraction'])}%"
    return f"ctx {c['tokens'] / 1e3:.1f}k"


def _dur(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# ---------------------------------------------------------------------------- logs/events
@main.command()
@click.argument("agent")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("-n", "--lines", default=100, show_default=True, help="Lines of history to print first.")
@click.pass_context
def logs(ctx: click.Context, agent: str, follow: bool, lines: int) -> None:
    """The agent's pane output (kept with tmux pipe-pane in <state_dir>/logs/)."""
    cfg = load_config(ctx.obj["fleet"])
    _, remote = _split(ctx, cfg, (agent,))
    if remote:  # an agent of another host: its log is there (-f: no time limit)
        sys.exit(_forward_all(ctx, cfg, remote, ["logs", *(["-f"] if follow else []), "-n", str(lines)],
                              timeout=None if follow else _host_timeout(cfg, next(iter(remote)))))
    path = cfg.state_dir / "logs" / f"{agent}.log"
    if not path.exists():
        fail(f"{path}: no log yet; the agent has not been started by ccci")
    with open(path, "rb") as fh:
        data = fh.read()
        tail = b"\n".join(data.split(b"\n")[-lines:])
        sys.stdout.buffer.write(tail)
        sys.stdout.flush()
        while follow:
            chunk = fh.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.3)


@main.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--agent", default=None, help="Only this agent's events.")
@click.option("-n", "--last", default=50, show_default=True, help="How many past events to print.")
@click.pass_context
def events(ctx: click.Context, follow: bool, as_json: bool, agent: str | None, last: int) -> None:
    """The append-only event log (what ccci saw and did).

    In a fleet with [[hosts]]: --agent of another host reads that host's log; without
    --agent, every host's last events are merged in time order (-f follows this host's)."""
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    host = cfg.host_of(agent) if agent else None
    if cfg.hosts and not ctx.obj.get("local") and agent and host is not None and host != cfg.this_host:
        args = ["events", *(["-f"] if follow else []), *(["--json"] if as_json else []), "--agent", agent, "-n", str(last)]
        sys.exit(_forward_all(ctx, cfg, {host: []}, args, timeout=None if follow else _host_timeout(cfg, host)))
    store = StateStore(cfg.state_dir)
    after = max(0, store.last_event_id() - last)
    if cfg.hosts and not ctx.obj.get("local") and not follow and not agent:
        from ccci.commands.hosts import merge_events, remote_events

        mine = [{**e, "host": cfg.this_host} for e in store.events(after_id=after)]
        theirs, down = remote_events(cfg, list(cfg.remote_agents()), ["-n", str(last)])
        for e in merge_events(mine, theirs, last):
            if as_json:
                click.echo(json.dumps(e))
            else:
                who = f" [{e['agent']}]" if e.get("agent") else ""
                click.echo(f"{e['at']} {e['host']} {e['kind']}{who} {e['message']}")
        for r in down:
            say(("unreachable:", "red"), " ", r.error, err=True)
        return
    while True:
        while True:  # in pages: StateStore.events returns at most 1000 at a time
            batch = store.events(after_id=after, agent=agent)
            for e in batch:
                after = e["id"]
                if as_json:
                    click.echo(json.dumps(e))
                else:
                    who = f" [{e['agent']}]" if e["agent"] else ""
                    click.echo(f"{e['at']} {e['kind']}{who} {e['message']}")
            if not batch:
                break
        if not follow:
            break
        time.sleep(0.5)


# ---------------------------------------------------------------------------- watch
@main.command()
@click.option("--standby", is_flag=True, help="If another watcher holds the fleet, wait and take over when it stops.")
@click.option("--quiet", is_flag=True, help="Do not print events (they are still logged).")
@click.option("--ticks", type=int, default=None, hidden=True, help="Stop after N ticks (tests).")
@click.option("--exit-when-idle", "idle_exit", type=float, default=None, metavar="SECONDS",
              help="Exit after SECONDS with nothing to supervise (every agent stopped, no job running or "
                   "scheduled). 'ccci start' passes [fleet] idle_exit (300); ignored under systemd (NOTIFY_SOCKET set).")
@click.pass_context
def watch(ctx: click.Context, standby: bool, quiet: bool, ticks: int | None, idle_exit: float | None) -> None:
    """The daemon: supervise the fleet, tick by tick, until SIGTERM or Ctrl-C.

    Under systemd (``Type=notify``, see ``ccci service``) it sends READY=1 after the
    first tick, STATUS= with a fleet summary, WATCHDOG=1 after every tick, STOPPING=1."""
    from ccci.reporters import eventlog
    from ccci.lock import FleetLock, LockHeld
    from ccci.service import ServiceNotifier, fleet_summary, nothing_to_supervise

    cfg = load_config(ctx.obj["fleet"])
    lock = FleetLock(cfg.state_dir)
    stop_waiting = {"flag": False}

    def _stop_wait(*_):
        stop_waiting["flag"] = True

    signal.signal(signal.SIGTERM, _stop_wait)
    try:
        if standby and lock.is_held():
            say(f"ccci: standing by; watcher pid {lock.holder()} holds {cfg.name}", err=True)
        lock.acquire(wait=standby, should_stop=lambda: stop_waiting["flag"])
    except LockHeld as exc:
        fail(str(exc), code=3)
    if stop_waiting["flag"]:
        return
    sup = build(cfg)
    if not quiet:
        sup.pm.register_checked(eventlog.EventEcho(), "eventlog-echo", "builtin")
    for line in sup.pm.load_errors:
        sup.emit("plugin_skipped", line)
    notifier = ServiceNotifier()
    if notifier.enabled:
        idle_exit = None  # a service never leaves by itself

    def _stop(signum=None, _frame=None, reason: str = "") -> None:
        sup.request_stop(signum, reason=reason)
        notifier.stopping(f"stopping ({sup.stop_reason})")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, sup.request_reload)  # reload the fleet's ccci_plugins.py
    sup.emit("watcher_started", f"watching fleet {cfg.name} (pid {os.getpid()}, tick {cfg.tick_seconds}s)", pid=os.getpid(),
             service=notifier.enabled, exit_when_idle=idle_exit)
    idle = {"since": None}

    def _after_tick() -> None:
        # the lock file may be deleted (rm -rf of the state directory): lock a new one,
        # or stop if another watcher got it first (two watchers must never act)
        if not sup.stopping and not lock.verify():
            sup.emit("watcher_superseded", f"watcher pid {os.getpid()} lost {lock.path} to another watcher; stopping")
            _stop(reason="superseded by another watcher")
        notifier.tick_done(fleet_summary(sup))
        if idle_exit is not None and not sup.stopping:
            now = time.monotonic()
            if not nothing_to_supervise(sup):
                idle["since"] = None
            elif idle["since"] is None:
                idle["since"] = now
            elif now - idle["since"] >= idle_exit:
                _stop(reason=f"idle: nothing to supervise for {idle_exit:.0f}s (every agent stopped, no job)")

    try:
        sup.run(ticks=ticks, on_tick=_after_tick)
    finally:
        notifier.stopping(f"stopping ({sup.stop_reason or 'done'})")  # once: a signal may have sent it
        sup.emit("watcher_stopped", f"watcher pid {os.getpid()} stopped")
        lock.release()
        notifier.close()


# ---------------------------------------------------------------------------- send
@main.command()
@click.argument("agent")
@click.argument("text")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for delivery.")
@click.pass_context
def send(ctx: click.Context, agent: str, text: str, timeout: float) -> None:
    """Deliver TEXT to AGENT's input box, once the agent is idle, and verify it was submitted.

    Exit status: 0 delivered; 1 still queued after --timeout (the message stays queued and
    is delivered when the agent is ready: the running watcher, or the next one, does it);
    3 failed (it will not be delivered; the reason is printed); 2 bad input.
    """
    from ccci.commands.actions import queue_send
    from ccci.lock import FleetLock

    cfg = load_config(ctx.obj["fleet"])
    _, remote = _split(ctx, cfg, (agent,))
    if remote:  # the agent's own host delivers it (its watcher, or that ccci send)
        host = next(iter(remote))
        sys.exit(_forward_all(ctx, cfg, {host: []}, ["send", "--timeout", f"{timeout:g}", agent, text],
                              timeout=timeout + _host_timeout(cfg, host)))
    sup = build(cfg)
    mid = queue_send(sup, agent, text)
    lock = FleetLock(cfg.state_dir)
    watched = lock.is_held()
    deadline = time.monotonic() + timeout
    if not watched:
        # no watcher: deliver ourselves, waiting for the agent to be ready
        while time.monotonic() < deadline:
            sup.observe()
            # its own message only: concurrent 'ccci send's each typed every queued
            # message, so one was delivered up to three times (found by bench/soak.py)
            sup.outbox.deliver_pending(only=mid)
            row = sup.store.message(mid)
            if row["status"] != "queued":
                break
            time.sleep(0.5)
    while time.monotonic() < deadline:
        row = sup.store.message(mid)
        if row["status"] in ("delivered", "failed"):
            break
        time.sleep(0.3)
    row = sup.store.message(mid)
    if row["status"] == "delivered":
        say(f"delivered to {agent}: {row['detail']}")
        return
    if row["status"] == "failed":
        fail(f"message {mid} to {agent} failed and will not be delivered: {row['detail']}", code=3)
    fail(f"message {mid} to {agent} is still queued after {timeout:.0f}s: {_why_queued(sup, agent, row, watched)}",
         code=1)


def _why_queued(sup, agent: str, row: dict, watched: bool) -> str:
    """Why a message is not delivered yet, in the user's words (never internals such as
    the pane log offset a half-sent message records)."""
    rec = sup.store.agent(agent)
    later = "the watcher delivers it when the agent is ready" if watched else \
        "no watcher is running (ccci start); the next one delivers it when the agent is ready"
    if row["status"] == "sending":
        return f"it is being typed into the agent's input box right now; {later}"
    if rec.stopped:
        return f"{agent} is stopped (ccci start {agent} to run it again); it is delivered after that"
    if rec.given_up:
        return f"ccci gave up on {agent} ({rec.last_event or 'see ccci events'}); it is delivered once the agent runs again"
    try:
        state = next(r["state"] for r in status_rows(sup) if r["name"] == agent)
    except Exception:  # noqa: BLE001 - the explanation must not fail the command
        state = "unknown"
    reasons = {
        "busy": f"{agent} is busy (its turn has not ended)",
        "waiting_input": f"{agent} shows a dialog that needs a person (ccci never types into a dialog; "
                         f"attach with tmux and answer it)",
        "unsent_input": f"{agent}'s input box holds a draft that is not this message (ccci never types over it)",
        "exited": f"{agent} is not running (its pane is gone or dead)",
        "usage_limit": f"{agent} is waiting for its usage limit to reset",
        "context_limit": f"{agent} hit its context limit and is being compacted",
    }
    return f"{reasons.get(state, f'{agent} is not ready for input (state {state})')}; {later}"


# ---------------------------------------------------------------------------- diagnose
@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agent", default=None, help="Read this running agent's pane now (instead of FILE), with the "
              "structured readings (hooks, session file) ccci last logged for it.")
@click.option("--backend", default=None, help="Backend whose patterns read the screen (claude, scripted, ...); "
              "with --agent, the agent's own.")
@click.option("--title", default="", help="Pane title at capture time, if known.")
@click.option("--json", "as_json", is_flag=True, help="Print the conclusion as JSON.")
@click.option("--now", "now_text", default="", metavar="ISO-8601",
              help="When the capture was taken (UTC; default: now): places a reset time shown without a date.")
@click.option("--cli-version", default="", metavar="VERSION",
              help="Read with the pattern file of this CLI version (e.g. 2.1.332; default: the backend's choice).")
@click.pass_context
def diagnose(ctx: click.Context, file: Path | None, agent: str | None, backend: str | None, title: str,
             as_json: bool, now_text: str, cli_version: str) -> None:
    """Run every check on a pane capture and print the conclusion.

    FILE is `tmux capture-pane -p` output, or `capture-pane -p -e` output (with escapes),
    read as `ccci watch` reads panes: text drawn faint in the input box is a placeholder.
    With --agent NAME, the agent's live pane is read instead, and the structured readings
    (the CLI's hooks or session file, as `ccci watch` last logged them: hook_state,
    rules_drift, hook_stale events) are shown next to the screen's.
    """
    from ccci.commands.diagnose import DiagnoseError
    from ccci.commands.diagnose import diagnose as run_diagnose
    from ccci.patterns import PatternError
    from ccci.plugins import get_plugin_manager

    from ccci.clock import parse_utc

    now = None
    if now_text:
        try:
            now = parse_utc(now_text)
        except ValueError:
            fail(f"--now {now_text!r}: not an ISO-8601 time; use e.g. 2026-11-22T06:04:00Z")
    if (file is None) == (agent is None):
        fail("diagnose: give a capture FILE or --agent NAME (one of them)")
    structured: list[dict] = []
    if agent is not None:
        text, backend, title, cli_version, structured = _live_capture(ctx, agent, backend, title, cli_version)
        label = f"agent {agent} (live pane)"
    else:
        if not backend:
            fail("diagnose: --backend is required with a capture FILE (e.g. --backend claude)")
        text = file.read_bytes()[: 8 * 1024 * 1024].decode("utf-8", "replace")
        label = str(file)
    pm = get_plugin_manager(fleet_root=_fleet_root_or_none())
    try:
        result = run_diagnose(pm, text, backend, title, now=now, cli_version=cli_version or None)
    except (DiagnoseError, PatternError) as exc:
        fail(str(exc))
    if agent is not None:
        result["structured"] = structured
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    say((label, "bold"), ": ", (str(result["state"]), "bold"), f" (patterns {result['patterns']})")
    if result["reset_at"]:
        say(f"  reset_at {result['reset_at']}")
    if result["input_text"]:
        say(f"  input box holds {result['input_text'][:120]!r}")
    if result["placeholder"]:
        say(f"  input box is empty; placeholder {result['placeholder'][:120]!r}")
    for m in result["matches"]:
        say(f"  rule {m['rule']} -> {m['state']}: {m['line'][:120]!r}")
    for f in result["findings"]:
        say(f"  finding {f['check']}: {f['summary']} | {f['evidence'][:120]}")
    for e in result["errors"]:
        say("  ", ("check error", "yellow"), f" {e}")
    if agent is not None:
        if not structured:
            say("  structured readings: none logged for this agent (no hooks, or they agree with the screen)")
        for e in structured:
            say(f"  {e['at']} {e['kind']}: {e['message'][:300]}")


#: events that carry a structured source's reading of an agent (hooks, session file)
STRUCTURED_EVENTS = ("hook_state", "rules_drift", "hook_stale")


def _live_capture(ctx: click.Context, agent: str, backend: str | None, title: str, cli_version: str):
    """``(styled screen, backend name, pane title, cli version, structured events)`` of a
    running agent: its pane captured now as ``ccci watch`` captures it, and its last 5
    :data:`STRUCTURED_EVENTS` from the event log. Exits with a one-line error when the
    agent is unknown or has no live pane."""
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    _agent_names(cfg, (agent,))  # one-line error for an unknown agent
    sup = build(cfg)
    rt = sup.agents[agent]
    pane = sup.tmux.list_panes().get(rt.session)
    if pane is None or pane.dead:
        fail(f"agent {agent!r} has no live pane (tmux session {rt.session!r}); see ccci status")
    screen = sup.tmux.capture([pane.pane_id]).get(pane.pane_id, "")
    rec = sup.store.agent(agent)
    if not cli_version:
        cli_version = version_fields(rt.backend, rt.spec, cfg, rec.conversation_id or "").get("cli_version") or ""
    events = StateStore(cfg.state_dir).latest_events(agent, STRUCTURED_EVENTS, 5)
    return screen, backend or rt.spec.backend, title or pane.title, cli_version, events


# ---------------------------------------------------------------------------- doctor
@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per agent, in a list.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds each CLI's --version may take.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """Per agent: its CLI on PATH, the version it reports, the version the screen rules
    are for, and whether ccci was checked against that version (outside a fleet: per
    backend). Exit status 1 when a CLI is missing or untested."""
    from ccci.commands.doctor import check_backend
    from ccci.patterns import PatternError
    from ccci.plugins import collect_backends, get_plugin_manager

    cfg = load_config(ctx.obj["fleet"]) if ctx.obj.get("fleet") else None
    if cfg is None and _fleet_root_or_none() is not None:
        cfg = load_config(None)
    pm = get_plugin_manager(fleet_root=cfg.root if cfg else None)
    backends = collect_backends(pm)
    rows = []
    if cfg is not None:
        for bname, rules in cfg.patterns.items():
            if bname in backends:
                try:
                    backends[bname].set_overrides(rules, f"{cfg.path}: patterns.{bname}")
                except PatternError as exc:
                    fail(str(exc))
        for spec in cfg.agents:
            backend = backends.get(spec.backend)
            if backend is None:
                fail(f"{cfg.path}: agents.{spec.name}.backend: unknown backend {spec.backend!r}; "
                     f"known: {', '.join(sorted(backends))}")
            rows.append(check_backend(backend, spec.name, dict(spec.env or {}), timeout))
    else:
        rows = [check_backend(b, None, None, timeout) for _, b in sorted(backends.items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            who = f"{r['agent']} ({r['backend']})" if r["agent"] else r["backend"]
            if not r["executable"]:
                say((who, "bold"), f": no separate CLI to check (rules {r['rules_version'] or '?'})")
                continue
            rules = f"rules for {r['rules_version'] or '?'}"
            if not r["path"]:
                say((who, "bold"), f": {r['executable']} not found on PATH; {rules}")
            else:
                version = r["version"] or r["version_output"] or "?"
                tested = {True: ("tested", "green"), False: ("NOT tested", "yellow"),
                          None: ("not checked", "yellow")}[r["tested"]]
                say((who, "bold"), f": {r['path']} version {version}; {rules}; ", tested)
            if r["advice"]:
                say("  ", ("advice:", "yellow"), " ", r["advice"])
        for line in pm.load_errors:
            say(("ccci:", "yellow"), " ", line, err=True)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


def _fleet_root_or_none(fleet: str | None = None) -> Path | None:
    try:
        return config_mod.find_config(Path(fleet) if fleet else None).parent
    except ConfigError:
        return None


# ---------------------------------------------------------------------------- jobs
@main.group()
def job() -> None:
    """One-shot jobs (agents with role = "job")."""


def _job(ctx: click.Context, name: str, args: tuple[str, ...], mode: str, timeout: float) -> None:
    from ccci import jobs as jobs_mod
    from ccci.commands.actions import request_job
    from ccci.model import Role
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    spec = next((a for a in cfg.agents if a.name == name), None)
    if spec is None or spec.role != Role.JOB:
        jobs = ", ".join(a.name for a in cfg.agents if a.role == Role.JOB) or "none"
        fail(f"{cfg.path}: no job {name!r}; jobs (agents with role = \"job\"): {jobs}")
    store = StateStore(cfg.state_dir)
    pid = request_job(cfg, store, name, mode, list(args))
    key = jobs_mod.RESULT_KEY.format(name=name)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        res = store.get(key)
        if res:
            say(f"{name}: {res} (watcher pid {pid}); view it with: ccci logs {name} -f")
            if res.startswith("failed"):
                sys.exit(1)
            return
        time.sleep(0.2)
    fail(f"job {name}: the watcher (pid {pid}) did not take the request within {timeout:.0f}s; see 'ccci events'", code=1)


@job.command("start", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--timeout", default=30.0, show_default=True)
@click.pass_context
def job_start(ctx: click.Context, name: str, args: tuple[str, ...], timeout: float) -> None:
    """Use-or-create: leave a busy run alone; clear a finished, idle or wedged one and start fresh."""
    _job(ctx, name, args, "start", timeout)


@job.command("fresh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--timeout", default=30.0, show_default=True)
@click.pass_context
def job_fresh(ctx: click.Context, name: str, args: tuple[str, ...], timeout: float) -> None:
    """Always start the job fresh (a busy run is stopped)."""
    _job(ctx, name, args, "fresh", timeout)


# ---------------------------------------------------------------------------- phase
@main.command()
@click.argument("action", type=click.Choice(["status", "insert", "skip"]), default="status")
@click.argument("phase_id", required=False)
@click.option("--at", "at", type=click.Choice(["current"]), default="current", show_default=True,
              help="insert: where the new phase goes (it becomes the current phase).")
@click.pass_context
def phase(ctx: click.Context, action: str, phase_id: str | None, at: str) -> None:
    """Show or change the fleet's phase: status | insert ID --at current | skip."""
    import json as _json

    from ccci import phases as ph
    from ccci.lock import FleetLock
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    if ph.settings(cfg) is None:
        fail(f"{cfg.path}: phases: no [phases] table; add [phases] order = [\"1\", \"2\"]")
    store = StateStore(cfg.state_dir)
    cur = ph.current(cfg, store)
    seq = ph.order(cfg, store)
    if action == "status":
        for p in seq:
            mark = "→" if p == cur else " "
            say(f"{mark} {p}")
        if cur is None:
            say("sequence complete")
        return
    watching = FleetLock(cfg.state_dir).is_held()
    if action == "insert":
        if not phase_id:
            fail("ccci phase insert: give the new phase's ID")
        if phase_id in seq:
            fail(f"phase {phase_id!r} is already in the order: {', '.join(seq)}")
        i = seq.index(cur) if cur in seq else len(seq)
        seq.insert(i, phase_id)
        store.put(ph.ORDER_KEY, _json.dumps(seq))
        target: str | None = phase_id
    else:
        if cur is None:
            fail("the sequence is complete; nothing to skip")
        target = ph.next_after(cfg, store, cur)
    if watching:
        ph.request_enter(store, target)
        say(f"asked the watcher to move the fleet to phase {target or '(end)'}")
    else:
        store.put(ph.CURRENT_KEY, target or "")
        say(f"phase is now {target or '(complete)'}; agents start in it")


# ---------------------------------------------------------------------------- plugins
@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: name, where each came from, the hooks it implements; skipped ones;
    and disabled ones with the reason and how to re-enable them."""
    from ccci.plugins import get_plugin_manager

    root = _fleet_root_or_none(ctx.obj.get("fleet"))
    pm = get_plugin_manager(fleet_root=root)
    infos = pm.describe()
    disabled = [{"name": n, "reason": "CCCI_DISABLE_PLUGINS",
                 "enable": "remove it from CCCI_DISABLE_PLUGINS and restart the watcher"}
                for n in sorted(pm.disabled)]
    disabled += _disabled_by_watcher(root)
    if as_json:
        click.echo(json.dumps({"plugins": [i.__dict__ for i in infos], "errors": pm.load_errors,
                               "disabled": disabled}, indent=2))
        return
    t = Table(title="ccci plugins")
    t.add_column("plugin")
    t.add_column("source")
    t.add_column("hooks", overflow="fold")
    for i in infos:
        t.add_row(cell(i.name), cell(i.source), cell(", ".join(h.removeprefix("ccci_") for h in i.hooks)))
    console.print(t)
    for d in disabled:
        say(("disabled:", "yellow"), " ", f"{d['name']} ({d['reason']}); to enable: {d['enable']}")
    for line in pm.load_errors:
        say(("ccci:", "yellow"), " ", line, err=True)


def _disabled_by_watcher(root: Path | None) -> list[dict]:
    """Plugins the fleet's current watcher disabled (five failing ticks), from the
    ``plugin_disabled`` events since its last start or plugin reload."""
    if root is None:
        return []
    try:
        cfg = config_mod.load(config_mod.find_config(root))
    except ConfigError:
        return []
    if not (cfg.state_dir / "state.db").exists():
        return []
    from ccci.state import StateStore

    store = StateStore(cfg.state_dir)
    try:
        out: dict[str, dict] = {}
        for e in store.events(limit=10**7):
            if e["kind"] == "watcher_started":
                out.clear()
            elif e["kind"] == "plugins_reloaded":
                for name in e["data"].get("enabled", []):
                    out.pop(name, None)
            elif e["kind"] == "plugin_disabled" and e["data"].get("plugin"):
                name = e["data"]["plugin"]
                how = ("fix ccci_plugins.py, then send the watcher SIGHUP (kill -HUP <pid>) or restart it"
                       if name == "ccci_plugins" else "fix or upgrade the plugin, then restart the watcher")
                out[name] = {"name": name, "reason": f"disabled by the watcher: {e['data'].get('reason', e['message'])}",
                             "enable": how}
        return list(out.values())
    finally:
        store.close()


# ---------------------------------------------------------------------------- demo
@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo fleet directory and tmux server afterwards.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to build the demo fleet (default: a temporary directory).")
def demo(keep: bool, directory: Path | None) -> None:
    """Build a throwaway fleet of scripted agents, inject every fault, show what ccci did.

    Exits 0 only if every injected fault was detected and healed.
    """
    from ccci.commands.demo import run_demo

    # a log file or CI has no terminal width: keep the timeline's lines whole
    out = console if sys.stdout.isatty() else Console(width=160)
    ok = run_demo(out, keep=keep, directory=directory)
    sys.exit(0 if ok else 1)



from ccci.commands.budget import budget as _budget  # noqa: E402 - command modules import this one lazily
from ccci.commands.report import report as _report  # noqa: E402

main.add_command(_report)
main.add_command(_budget)


# ---------------------------------------------------------------------------- web
from ccci.commands.web import web  # noqa: E402

main.add_command(web)


from ccci.commands.hosts import hosts_group  # noqa: E402 - the commands module imports helpers from this one

main.add_command(hosts_group)

if __name__ == "__main__":  # pragma: no cover
    main()
