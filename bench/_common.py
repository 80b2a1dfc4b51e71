"""Shared helpers of the benchmark suite: percentiles, clean-up of everything the run
started (tmux servers, watcher processes, temporary directories), machine facts."""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterable

import psutil

from ccci.clock import UTC, parse_utc
from ccci.tmux import socket_path_of

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
TMUX = shutil.which("tmux") or "tmux"


# ---------------------------------------------------------------------------- numbers
def pct(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation between closest ranks (numpy's
    default); ``None`` for no values."""
    xs = sorted(float(v) for v in values if v is not None)
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float], digits: int = 3) -> dict:
    vals = [v for v in values if v is not None]
    r = lambda x: None if x is None else round(x, digits)  # noqa: E731
    return {"p50": r(pct(vals, 50)), "p95": r(pct(vals, 95)), "n": len(vals),
            "min": r(min(vals)) if vals else None, "max": r(max(vals)) if vals else None}


def now_utc() -> datetime:
    return datetime.now(UTC)


def at(event: dict) -> datetime:
    """An event's time (millisecond UTC, as stored by ccci)."""
    return parse_utc(event["at"])


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- clean-up
class Cleanup:
    """Everything the run started, torn down in reverse on exit, on an exception, on
    SIGTERM/SIGINT/SIGHUP: watcher processes (SIGTERM, then SIGKILL), private tmux
    servers (kill-server, then SIGKILL of any pane process that outlived it, by pid,
    only if it is still the process we saw), temporary directories."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.sockets: list[str] = []
        self.dirs: list[Path] = []
        self.done = False
        atexit.register(self.run)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        raise SystemExit(128 + signum)

    def proc(self, p: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(p)
        return p

    def socket(self, name: str) -> str:
        self.sockets.append(name)
        return name

    def dir(self, path: Path) -> Path:
        self.dirs.append(path)
        return path

    @staticmethod
    def stop_proc(p: subprocess.Popen) -> None:
        if p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    @staticmethod
    def kill_tmux(socket: str) -> None:
        seen: list[tuple[int, float]] = []
        try:
            out = subprocess.run([TMUX, "-L", socket, "list-panes", "-a", "-F", "#{pane_pid}"],
                                 capture_output=True, text=True, timeout=10).stdout
            for line in out.split():
                try:
                    seen.append((int(line), psutil.Process(int(line)).create_time()))
                except (ValueError, psutil.Error):
                    pass
        except (OSError, subprocess.TimeoutExpired):
            pass
        subprocess.run([TMUX, "-L", socket, "kill-server"], capture_output=True, timeout=10)
        time.sleep(0.3)
        # tmux leaves the socket file behind; remove ours once no server answers on it
        path = Path(socket_path_of(socket))
        if path.exists() and subprocess.run([TMUX, "-L", socket, "list-sessions"], capture_output=True).returncode:
            path.unlink(missing_ok=True)
        for pid, created in seen:
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:  # the very process we saw, not a reused pid
                    for c in p.children(recursive=True) + [p]:
                        c.kill()
            except psutil.Error:
                pass

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        for p in reversed(self.procs):
            try:
                self.stop_proc(p)
            except Exception:  # noqa: BLE001
                pass
        for s in reversed(self.sockets):
            try:
                self.kill_tmux(s)
            except Exception:  # noqa: BLE001
                pass
        for d in reversed(self.dirs):
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------- machine
def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "mem_total_mb": round(psutil.virtual_memory().total / 2**20),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tmux": out(TMUX, "-V"),
        "git": out("git", "--version"),
        "psutil": psutil.__version__,
        "tmux_links_libutempter": "libutempter" in out("ldd", TMUX),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def ccci_commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args],
                                  capture_output=True, text=True, timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD").strip(), "subject": git("log", "-1", "--format=%s").strip(),
            "dirty_files": [ln[3:] for ln in dirty.splitlines()]}
