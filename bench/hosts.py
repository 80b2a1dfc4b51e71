"""Multi-host numbers for docs/scaling.md; results in bench/hosts_results.json.

1. Cost of one scripted agent (``ccci.backends.scripted``) in its tmux pane, idle and
   busy (a long turn): CPU (psutil ``cpu_times`` over a window, ms per s) and RSS (MB)
   of the agent process, and of the tmux server.
2. Cost of an aggregated ``ccci status --json`` over N hosts: an sshd on 127.0.0.1 (a
   free port, keys made here, Debian ``openssh-server``) stands in for N hosts (N
   ``[[hosts]]`` entries with their own fleet directories, 2 agents each); wall time of
   the whole command, cold (no shared ssh connection) and warm (ControlMaster reused).

Run as root (sshd) from the repository: ``python bench/hosts.py``. Not a test: nothing is
asserted.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ccci.testing.fleet import Fleet  # noqa: E402


def cpu_ms_per_s(procs: list[psutil.Process], seconds: float) -> float:
    def total() -> float:
        t = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                t += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return t
    a = total()
    time.sleep(seconds)
    return round((total() - a) * 1000 / seconds, 2)


def agent_cost(tmp: Path) -> dict:
    f = Fleet(tmp / "agents", f"hb{os.getpid()}", options={"turn_seconds": 20.0, "wait_seconds": 3600})
    try:
        f.watch("--quiet")
        assert f.wait(lambda: all(f.live_pid(a) for a in f.AGENTS), 60)
        assert f.wait(lambda: all(f.idle(a) for a in f.AGENTS), 90)
        pane = psutil.Process(f.live_pid("builder"))
        agent = [pane, *pane.children(recursive=True)]
        server = psutil.Process(int(subprocess.run(["tmux", "-L", f.cfg.tmux_socket, "display", "-p", "#{pid}"],
                                                   capture_output=True, text=True).stdout.strip()))
        watcher = psutil.Process(f.watchers[0].pid)
        rss = lambda ps: round(sum(p.memory_info().rss for p in ps) / 2**20, 1)  # noqa: E731
        idle = {"agent_cpu_ms_per_s": cpu_ms_per_s(agent, 10), "agent_rss_mb": rss(agent),
                "tmux_server_rss_mb": rss([server]), "watcher_rss_mb": rss([watcher])}
        f.ccci("send", "--timeout", "30", "builder", "work on the next item")
        assert f.wait(lambda: "working" in f.screen("builder"), 30)
        busy = {"agent_cpu_ms_per_s": cpu_ms_per_s(agent, 10), "agent_rss_mb": rss(agent),
                "tmux_server_cpu_ms_per_s": cpu_ms_per_s([server], 5)}
        return {"idle": idle, "busy": busy, "note": "scripted agent: redraws a spinner every second while busy"}
    finally:
        f.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def close_master(fleet: Path, port: int, key: Path) -> None:
    """End the fleet's shared ssh connection (``ssh -O exit``), so the next call is cold."""
    from ccci import config as config_mod
    from ccci.hosts import control_dir

    ctl = control_dir(config_mod.load(fleet))
    subprocess.run(["ssh", "-o", f"ControlPath={ctl / '%C'}", "-O", "exit", "-p", str(port), "-i", str(key),
                    "root@127.0.0.1"], capture_output=True, timeout=10)


def status_cost(tmp: Path, sizes=(0, 1, 2, 4, 8), trials: int = 3) -> dict:
    keys = tmp / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "user")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
    (keys / "auth").write_text((keys / "user.pub").read_text())
    port = free_port()
    Path("/run/sshd").mkdir(exist_ok=True)
    conf = tmp / "sshd_config"
    conf.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile {tmp / 'sshd.pid'}\n"
                    f"AuthorizedKeysFile {keys / 'auth'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                    "PermitRootLogin prohibit-password\nMaxSessions 100\nMaxStartups 100\n")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], stderr=subprocess.DEVNULL)
    wrapper = tmp / "ccci"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m ccci \"$@\"\n")
    wrapper.chmod(0o755)
    out: dict = {}
    try:
        time.sleep(1)
        for n in sizes:
            base = tmp / f"n{n}"
            hosts = "".join(
                f'\n[[hosts]]\nname = "h{i}"\nssh = "root@127.0.0.1"\nport = {port}\nidentity_file = "{keys / "user"}"\n'
                'ssh_options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]\n'
                f'ccci = "{wrapper}"\nfleet_dir = "{base / f"h{i}"}"\n' for i in range(n))
            agents = "".join(f'\n[[agents]]\nname = "a{i}-{j}"\nhost = "h{i}"\n' for i in range(n) for j in range(2))
            agents += '\n[[agents]]\nname = "l0"\n\n[[agents]]\nname = "l1"\n'
            text = f'[fleet]\nname = "sb{n}"\ntmux_socket = "ccci-sb{os.getpid()}"\n[defaults]\nbackend = "scripted"\n{hosts}{agents}'
            for d in [base / "local", *(base / f"h{i}" for i in range(n))]:
                d.mkdir(parents=True)
                (d / "ccci.toml").write_text(text)
            cmd = [sys.executable, "-m", "ccci", "--fleet", str(base / "local"), "status", "--json"]
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            cold, warm = [], []
            for _ in range(trials):
                close_master(base / "local", port, keys / "user")
                t0 = time.monotonic()
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
                cold.append(time.monotonic() - t0)
                rows = json.loads(r.stdout)
                assert len(rows) == 2 * n + 2 and not any(x["state"] == "unreachable" for x in rows), r.stdout[-500:]
                t0 = time.monotonic()
                subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
                warm.append(time.monotonic() - t0)
            out[str(n)] = {"cold_s_p50": round(statistics.median(cold), 3), "warm_s_p50": round(statistics.median(warm), 3),
                           "trials": trials}
            print(n, out[str(n)], flush=True)
    finally:
        for n in sizes:
            if n:
                close_master(tmp / f"n{n}" / "local", port, keys / "user")
        sshd.send_signal(signal.SIGTERM)
        sshd.wait(10)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ccci-hosts-bench-"))
    try:
        res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": "python bench/hosts.py",
               "nproc": os.cpu_count(), "loadavg_start": list(os.getloadavg())}
        res["scripted_agent"] = agent_cost(tmp)
        print(res["scripted_agent"], flush=True)
        res["status_over_hosts"] = status_cost(tmp)
        res["loadavg_end"] = list(os.getloadavg())
        (REPO / "bench" / "hosts_results.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
