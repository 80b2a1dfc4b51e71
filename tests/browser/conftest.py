"""Browser fixtures: a real scripted fleet (real ``ccci watch``, real tmux on a private
socket, real git), a real ``ccci web`` server on a free loopback port, and Debian's
``chromium`` driven by Playwright (``executable_path``; no browser download).

The fleet, the server and the browser are shared by the module's tests (about 10 s to
set up); each test opens its own page.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ccci.testing.fleet import Fleet, fleet_name

CHROMIUM = os.environ.get("CCCI_CHROMIUM", "/usr/bin/chromium")
#: a value that looks secret (its variable's name has TOKEN in it): it must never reach a page
SECRET = "s3cr3t-dashboard-value-4242"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Web:
    """A running ``ccci web`` for ``fleet`` at ``url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, fleet: Fleet, url: str, proc: subprocess.Popen, token: str) -> None:
        self.fleet, self.url, self.proc, self.token = fleet, url, proc, token
        self.secret = SECRET

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    tmp = tmp_path_factory.mktemp("web")
    fleet = Fleet(tmp / "fleet", fleet_name(tmp), agents={"env": {"SERVICE_TOKEN": SECRET}})
    proc = None
    try:
        fleet.watch("--quiet")
        assert fleet.wait(lambda: all(fleet.live_pid(a) and fleet.store.agent(a).state == "running"
                                      for a in fleet.AGENTS), 30), "the scripted fleet did not start"
        port = _free_port()
        log = open(tmp / "web.out", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(fleet.root), "web",
                                 "--listen", f"127.0.0.1:{port}", "--poll", "0.5"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        w = Web(fleet, url, proc, token="")

        def up():
            try:
                return w.get_json("/api/fleet")
            except OSError:
                return None

        assert fleet.wait(up, 30), (tmp / "web.out").read_text()
        w.token = (fleet.cfg.state_dir / "web-token").read_text().strip()
        yield w
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        fleet.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; .ci/setup does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download needed)")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    except Exception as exc:  # noqa: BLE001 - e.g. missing shared libraries
        pw.stop()
        pytest.skip(f"chromium ({CHROMIUM}) cannot start: {str(exc).splitlines()[0]}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser):
    """A fresh browser context (no token stored) at desktop size; JS errors fail the test."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert not errors, errors

