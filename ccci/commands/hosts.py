"""``ccci hosts status|deploy`` and the fan-out the fleet-wide commands use.

A fleet with ``[[hosts]]`` has one watcher per host; ``ccci status``, ``events``,
``send``, ``start``, ``stop`` and ``logs`` run here for this host's agents and through
:mod:`ccci.hosts` (``ssh HOST ccci --fleet DIR --host NAME --local ...``) for the
others'. A host that does not answer is one line (``unreachable``), never an exception.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
import click

from ccci import config as config_mod
from ccci.hosts import Hosts, Reply



def split_by_host(cfg: config_mod.FleetConfig, names: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``(this host's agents, {other host: its agents})`` for ``names`` (all agents of
    every host when empty). :raises config_mod.ConfigError: for a name no host has."""
    known = {a.name: a.host for a in cfg.all_agents}
    for n in names:
        if n not in known:
            raise config_mod.ConfigError(f"{cfg.path}: no agent {n!r}; agents are: {', '.join(known) or 'none'}")
    chosen = list(names) or list(known)
    local = [n for n in chosen if known[n] == cfg.this_host]
    remote: dict[str, list[str]] = {}
    if not names:
        remote = {h: [] for h in cfg.remote_agents()}  # every other host, even one without agents
    for n in chosen:
        if known[n] != cfg.this_host:
            remote.setdefault(known[n], []).append(n)
    return local, remote


def remote_status(cfg: config_mod.FleetConfig) -> tuple[list[dict], list[Reply]]:
    """``(rows, unreachable)``: ``ccci status --json`` of every other host at once, each
    row with its ``host``; the replies of hosts that did not answer."""
    rows: list[dict] = []
    down: list[Reply] = []
    for host, (data, reply) in Hosts(cfg).ccci_json_many(cfg.remote_agents(), ["status", "--json"]).items():
        if data is None or not isinstance(data, list):
            down.append(reply)
            continue
        rows += [{**r, "host": host} for r in data if isinstance(r, dict)]
    return rows, down


def remote_events(cfg: config_mod.FleetConfig, hosts: list[str], args: list[str]) -> tuple[list[dict], list[Reply]]:
    """``(events, unreachable)``: ``ccci events --json ARGS`` of ``hosts`` at once, each
    event with its ``host``."""
    out: list[dict] = []
    down: list[Reply] = []
    h = Hosts(cfg)
    from concurrent.futures import ThreadPoolExecutor

    if not hosts:
        return out, down
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futs = {x: pool.submit(h.ccci, x, ["events", "--json", *args]) for x in hosts}
        for host, f in futs.items():
            r = f.result()
            if not r.ok or r.code != 0:
                if r.ok:
                    r.ok, r.error = False, f"{host}: ccci events failed ({(r.stderr.strip() or 'exit %s' % r.code).splitlines()[0][:200]})"
                down.append(r)
                continue
            for line in r.stdout.splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if isinstance(e, dict):
                    out.append({**e, "host": host})
    return out, down


def forward(cfg: config_mod.FleetConfig, host: str, args: list[str], timeout: float | None) -> int:
    """Run ``ccci ARGS`` on ``host`` with its output shown here; returns its exit
    status, or 1 after one ``unreachable`` line on stderr."""
    from ccci.commands.cli import say

    sys.stdout.flush()
    r = Hosts(cfg).passthrough(host, args, timeout=timeout, stdout=sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None)
    if not r.ok:
        say(("unreachable:", "red"), " ", r.error, err=True)
        return 1
    if r.stderr:
        sys.stderr.write(r.stderr)
    return int(r.code or 0)


# ---------------------------------------------------------------------------- commands
@click.group("hosts")
def hosts_group() -> None:
    """The fleet's hosts ([[hosts]] in ccci.toml): reachability and deployment."""


@hosts_group.command("here", hidden=True)
@click.pass_context
def hosts_here(ctx: click.Context) -> None:
    """JSON about this host (what ``ccci hosts status`` asks each host over ssh)."""
    from ccci import __version__
    from ccci.commands.cli import load_config
    from ccci.lock import FleetLock

    cfg = load_config(ctx.obj["fleet"])
    lock = FleetLock(cfg.state_dir)
    held = lock.is_held()
    click.echo(json.dumps({"host": cfg.this_host, "version": __version__, "watcher_running": held,
                           "watcher_pid": lock.holder() if held else None, "agents": [a.name for a in cfg.agents],
                           "fleet": str(cfg.root)}))


def host_rows(cfg: config_mod.FleetConfig) -> list[dict]:
    """One dict per host (this one first): host, reachable, version, watcher_running,
    watcher_pid, agents, seconds (the round trip) and error."""
    from ccci import __version__
    from ccci.lock import FleetLock

    lock = FleetLock(cfg.state_dir)
    held = lock.is_held()
    rows = [{"host": cfg.this_host, "reachable": True, "version": __version__, "watcher_running": held,
             "watcher_pid": lock.holder() if held else None, "agents": [a.name for a in cfg.agents],
             "seconds": 0.0, "error": ""}]
    for host, (data, r) in Hosts(cfg).ccci_json_many(cfg.remote_agents(), ["hosts", "here"]).items():
        if isinstance(data, dict):
            rows.append({"host": host, "reachable": True, "version": data.get("version"),
                         "watcher_running": bool(data.get("watcher_running")), "watcher_pid": data.get("watcher_pid"),
                         "agents": data.get("agents", []), "seconds": round(r.seconds, 3), "error": ""})
        else:
            rows.append({"host": host, "reachable": False, "version": None, "watcher_running": None,
                         "watcher_pid": None, "agents": [a.name for a in cfg.remote_agents().get(host, [])],
                         "seconds": round(r.seconds, 3), "error": r.error})
    return rows


@hosts_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host, in a list.")
@click.pass_context
def hosts_status(ctx: click.Context, as_json: bool) -> None:
    """Per host: reachable over ssh, its ccci version, its watcher, its agents.
    Exit status 1 when a host is unreachable or its watcher is not running."""
    from rich.table import Table

    from ccci.commands.cli import cell, console, load_config

    cfg = load_config(ctx.obj["fleet"])
    rows = host_rows(cfg)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        t = Table(title=cell(f"fleet {cfg.name} — hosts (this one: {cfg.this_host})"))
        for col in ("host", "reachable", "ccci", "watcher", "agents", "ssh round trip"):
            t.add_column(col, overflow="fold")
        for r in rows:
            watcher = ("-" if r["watcher_running"] is None else
                       f"running (pid {r['watcher_pid']})" if r["watcher_running"] else "NOT running")
            t.add_row(*map(cell, (r["host"], "yes" if r["reachable"] else f"unreachable: {r['error']}",
                                  r["version"] or "-", watcher, ", ".join(r["agents"]) or "-",
                                  f"{r['seconds']:.2f}s" if r["host"] != cfg.this_host else "-")))
        console.print(t)
    sys.exit(0 if all(r["reachable"] and r["watcher_running"] for r in rows) else 1)


def build_dist(out_dir: Path) -> Path:
    """A wheel of the ccci that runs this command (``pip wheel --no-deps`` of a copy of its
    source tree, into ``out_dir``). :raises click.ClickException: when ccci is not
    installed from a source tree, or the build fails."""
    import ccci

    src = Path(ccci.__file__).resolve().parents[1]
    if not (src / "pyproject.toml").is_file():
        raise click.ClickException(f"{src}: no pyproject.toml next to the ccci package, so no wheel can be built "
                                   "here; run ccci hosts deploy from a source checkout")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    import shutil

    copy = out_dir / "src"
    shutil.copytree(src, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", "tests", "bench", ".ccci"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(out_dir), str(copy)], capture_output=True, text=True, timeout=300)
    wheels = sorted(out_dir.glob("ccci-*.whl"))
    if r.returncode != 0 or not wheels:
        raise click.ClickException(f"building the ccci wheel failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return wheels[-1]


def deploy_steps(cfg: config_mod.FleetConfig, host: str, wheel_name: str, *, pip_args: list[str],
                 service: bool, scope: str) -> list[tuple[str, list[str], str | None]]:
    """The remote steps of ``ccci hosts deploy``: ``(what, remote words, local file to
    send on stdin or None)``. Pure: the unit tests read it."""
    h = cfg.hosts[host]
    fleet_dir = h.fleet_dir or str(cfg.root)
    venv = str(PurePosixPath(h.ccci).parent.parent)  # <venv>/bin/ccci
    wheel_remote = f"{PurePosixPath(venv).parent}/{wheel_name}"
    steps: list[tuple[str, list[str], str | None]] = [
        ("make the venv", ["sh", "-c", 'test -x "$1/bin/python" || { mkdir -p "$(dirname "$1")" && "$2" -m venv "$1"; }',
                           "sh", venv, h.python], None),
        ("send the wheel", ["sh", "-c", 'cat > "$1"', "sh", wheel_remote], "WHEEL"),
        ("install ccci", [f"{venv}/bin/python", "-m", "pip", "install", "--quiet", "--upgrade", *pip_args,
                          wheel_remote], None),
        ("make the fleet directory", ["mkdir", "-p", fleet_dir], None),
        ("send ccci.toml", ["sh", "-c", 'cat > "$1"', "sh", f"{fleet_dir}/ccci.toml"], str(cfg.path)),
    ]
    for a in cfg.all_agents:
        if a.host == host and a.prompt_file is not None and a.prompt_file.is_file():
            try:
                rel = a.prompt_file.relative_to(cfg.root)
            except ValueError:
                continue
            dest = f"{fleet_dir}/{rel.as_posix()}"
            steps.append((f"send {rel}", ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", dest],
                          str(a.prompt_file)))
    if service:
        steps.append(("install the watcher service",
                      [h.ccci, "--fleet", fleet_dir, "--host", host, "service", "install", f"--{scope}"], None))
    return steps


@hosts_group.command("deploy")
@click.argument("host")
@click.option("--no-service", is_flag=True, help="Do not install the watcher's service unit (ccci service install).")
@click.option("--user/--system", "user", default=True, show_default=True, help="Service scope on the host.")
@click.option("--pip-arg", "pip_args", multiple=True, metavar="ARG",
              help="An extra argument for pip install on the host (repeat; e.g. --pip-arg=--no-deps).")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Install this wheel instead of building one from this ccci's source tree.")
@click.pass_context
def hosts_deploy(ctx: click.Context, host: str, no_service: bool, user: bool, pip_args: tuple[str, ...],
                 wheel: Path | None) -> None:
    """Install or upgrade ccci on HOST (a wheel built here, pip-installed into a venv
    there), copy the fleet config (and that host's prompt files), install its watcher
    service (ccci service install, with --host HOST). Each step is one line; the first
    that fails ends the command with exit status 1."""
    from ccci.commands.cli import fail, load_config, say

    cfg = load_config(ctx.obj["fleet"])
    if host not in cfg.hosts:
        fail(f"{cfg.path}: hosts: no host {host!r}; hosts are: {', '.join(cfg.hosts) or 'none ([[hosts]] tables)'}")
    hs = Hosts(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        whl = wheel or build_dist(Path(tmp))
        steps = deploy_steps(cfg, host, whl.name, pip_args=list(pip_args), service=not no_service,
                             scope="user" if user else "system")
        for what, words, send in steps:
            data = None
            if send == "WHEEL":
                data = whl.read_bytes()
            elif send:
                data = Path(send).read_bytes()
            t0 = time.monotonic()
            r = hs.run(host, words, stdin=data, timeout=max(cfg.hosts[host].timeout, 600.0))
            if not r.ok:
                fail(r.error, code=1)
            if r.code != 0:
                fail(f"{host}: {what} failed (exit {r.code}): {' '.join((r.stderr or r.stdout).split())[-300:]}", code=1)
            say(f"{host}: {what} ({time.monotonic() - t0:.1f}s)")
    say(f"{host}: deployed ccci from {whl.name}; check with: ccci hosts status")


def merge_events(local: list[dict], remote: list[dict], last: int) -> list[dict]:
    """Events of every host in time order (ISO-8601 UTC ``at``), the last ``last``."""
    rows = sorted([*local, *remote], key=lambda e: (str(e.get("at", "")), e.get("host", ""), e.get("id", 0)))
    return rows[-last:] if last else rows

