"""How fast ``ccci web`` shows what happened, and what one look at the fleet costs.

On a real scripted fleet (builder + adversary, real ``ccci watch``, real tmux and git)
with a real ``ccci web --poll 1`` and Debian's chromium (Playwright):

* ``look_ms``: wall time of one :meth:`ccci.web.view.FleetView.fleet` and ``agent``
  call (uncached: ``ttl=0``), in this process, ``--looks`` times each;
* ``kill_to_page_s``: ``kill -9`` of the builder's process -> the fleet page (open,
  never reloaded) shows one more restart; ``restart_event_to_page_s``: from the
  watcher's restart event (its timestamp) to the same moment. ``--kills`` trials.

Writes ``bench/web_dashboard.json`` (or ``--out FILE``). Run from the repository root:
``python bench/web_dashboard.py``. About a minute.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccci.clock import UTC, parse_utc  # noqa: E402
from ccci.testing.fleet import Fleet  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return round(xs[f] + (xs[c] - xs[f]) * (k - f), 4)


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "max": round(max(xs), 4) if xs else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--looks", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "web_dashboard.json"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from ccci.commands.cli import build
    from ccci.web.view import FleetView

    tmp = Path(tempfile.mkdtemp(prefix="ccci-bench-web-"))
    fleet = Fleet(tmp / "fleet", f"bw{os.getpid()}")
    web = None
    try:
        fleet.watch("--quiet")
        assert fleet.wait(lambda: all(fleet.live_pid(a) for a in fleet.AGENTS), 30)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        web = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(fleet.root), "web", "--listen",
                                f"127.0.0.1:{port}", "--poll", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return urllib.request.urlopen(url + "/api/fleet", timeout=5).status == 200
            except OSError:
                return False

        assert fleet.wait(up, 30)
        view = FleetView(build(fleet.cfg, echo_errors=False), ttl=0)
        looks = {"fleet": [], "agent": []}
        for _ in range(args.looks):
            t = time.perf_counter()
            view.fleet()
            looks["fleet"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            view.agent("builder")
            looks["agent"].append((time.perf_counter() - t) * 1000)
        kill_to_page, event_to_page = [], []
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = b.new_page()
            page.goto(url + "/")
            cell = page.locator('#fleet tr[data-agent="builder"] td[data-col="restarts"]')
            cell.wait_for(timeout=15000)
            for _ in range(args.kills):
                fleet.wait(lambda: fleet.store.agent("builder").state == "running" and fleet.live_pid("builder"), 30)
                time.sleep(3)  # past startup_grace noise, a settled page
                n = int(cell.inner_text())
                pid = fleet.live_pid("builder")
                t0 = time.time()
                os.kill(pid, signal.SIGKILL)
                page.wait_for_function(
                    "n => Number(document.querySelector('#fleet tr[data-agent=\"builder\"] td[data-col=\"restarts\"]')"
                    ".textContent) === n + 1", arg=n, timeout=60000, polling=20)
                t1 = time.time()
                kill_to_page.append(t1 - t0)
                ev = fleet.wait(lambda: [e for e in fleet.restarts("builder")
                                         if parse_utc(e["at"]).timestamp() >= t0 - 0.01], 10)
                if ev:
                    event_to_page.append(t1 - parse_utc(ev[0]["at"]).timestamp())
            b.close()
        out = {
            "what": "ccci web on a scripted fleet (2 agents), --poll 1, chromium via Playwright",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "cpus": os.cpu_count(),
            "look_ms": {k: summary(v) for k, v in looks.items()},
            "kill_to_page_s": summary(kill_to_page),
            "restart_event_to_page_s": summary(event_to_page),
            "raw": {"kill_to_page_s": [round(x, 3) for x in kill_to_page],
                    "restart_event_to_page_s": [round(x, 3) for x in event_to_page]},
        }
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: v for k, v in out.items() if k != "raw"}, indent=2))
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        fleet.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
