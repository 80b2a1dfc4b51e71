"""End-to-end fixtures for the real opencode CLI under a real ``ccci watch``.

Everything runs inside the loopback-only network namespace of ``tests/e2e/conftest.py``
(``netns``): the scripted model server, and ``ccci watch`` itself, so the tmux server it
starts, the shared ``opencode serve`` and every ``opencode run`` are in the namespace too.
The test process outside reads the tmux panes through the socket file and the fleet's
state through its files.

Fixtures
========
``opencode_bin``  the pinned ``opencode-ai`` binary (:func:`ccci.testing.agent_clis.ensure_cli`,
                  the same install step as ``claude_bin``); ``$CCCI_OPENCODE_BIN`` overrides.
``oc_fleet``      factory ``(by_marker, agents=("builder",), checks=None) -> OcFleet``:
                  a fleet directory (bare origin, one clone per agent, prompts carrying
                  a marker ``ROLE-<AGENT>-MARK`` so one model server answers each agent from
                  its own script), a HOME with the opencode provider config, the model
                  server and ``ccci watch`` started in the namespace; all stopped afterwards.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ccci.state import StateStore
from ccci.testing.agent_clis import CliUnavailable, ensure_cli
from ccci.testing.model_server import step_to_json

REPO = Path(__file__).resolve().parents[3]
NPM_PREFIX = REPO / ".cache" / "npm"
RECORD = os.environ.get("CCCI_E2E_RECORD") == "1"
GOLDEN = REPO / "tests" / "golden" / "opencode-1.18.33"



@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    """The pinned opencode binary, installed under ``<repo>/.cache/npm`` on first use."""
    override = os.environ.get("CCCI_OPENCODE_BIN")
    if override:
        path = Path(override)
        if not path.exists():
            pytest.skip(f"CCCI_OPENCODE_BIN={override} does not exist")
        return path
    try:
        return ensure_cli("opencode", NPM_PREFIX)
    except CliUnavailable as exc:
        pytest.skip(str(exc))


def marker(agent: str) -> str:
    """The marker in ``agent``'s prompt that selects its script on the model server."""
    return f"ROLE-{agent.upper()}-MARK"


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


class OcFleet:
    """A fleet of opencode agents supervised by a real ``ccci watch`` in the namespace."""

    def __init__(self, root: Path, netns: str, opencode_bin: Path, by_marker: dict[str, list],
                 agents: tuple[str, ...], checks: dict[str, Any] | None) -> None:
        self.root = root
        self.netns = netns
        self.bin_dir = opencode_bin.parent
        self.agents = agents
        self.home = root / "home"
        self.fleet = root / "fleet"
        self.origin = root / "origin.git"
        self.log = root / "model-requests.jsonl"
        self.script = root / "script.json"
        root.mkdir(parents=True, exist_ok=True)
        self.socket = f"ccci-oc-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.name = "ocfleet"
        self.script.write_text(json.dumps({"by_marker": {marker(a): [step_to_json(s) for s in steps]
                                                         for a, steps in by_marker.items()}}))
        self.checks = {"startup_grace": 2, "max_resumes": 50, **(checks or {})}
        self.server: subprocess.Popen | None = None
        self.watch: subprocess.Popen | None = None
        self.url = ""

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        (self.home / ".config" / "opencode").mkdir(parents=True)
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = e2e agent\n\temail = agent@example.invalid\n[init]\n\tdefaultBranch = main\n")
        git(self.root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        seed = self.root / "seed"
        seed.mkdir()
        git(seed, "init", "-q", "-b", "main")
        (seed / "README.md").write_text("e2e project\n")
        git(seed, "add", "README.md")
        git(seed, "commit", "-q", "-m", "initial")
        git(seed, "push", "-q", str(self.origin), "main")
        (self.fleet / "prompts").mkdir(parents=True)
        agents_toml = []
        for a in self.agents:
            git(self.root, "clone", "-q", str(self.origin), str(self.fleet / "work" / a))
            (self.fleet / "prompts" / f"{a}.md").write_text(f"{marker(a)} You are the {a}. Work your loop.\n")
            agents_toml.append(
                f'[[agents]]\nname = "{a}"\nrole = "loop"\nbackend = "opencode"\nworkdir = "work/{a}"\n'
                f'prompt_file = "prompts/{a}.md"\nhandoff_role = "{a}"\nenv = {{ HOME = "{self.home}" }}\n')
        checks = "\n".join(f"{k} = {v}" for k, v in self.checks.items())
        (self.fleet / "ccci.toml").write_text(
            f'[fleet]\nname = "{self.name}"\ntmux_socket = "{self.socket}"\ntick_seconds = 1.0\n\n'
            f'[git]\norigin = "{self.origin}"\nbranch = "main"\nfetch_interval = 1\n\n'
            f'[checks]\n{checks}\n\n[opencode]\nport = 0\nenv = {{ HOME = "{self.home}" }}\n\n'
            + "\n".join(agents_toml))

    def start_model_server(self) -> None:
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci.testing.model_server",
                "--port", "0", "--script", str(self.script), "--log", str(self.log)]
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       cwd=self.root, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = self.server.stdout.readline().strip() if self.server.stdout else ""
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"model server did not start: {line!r} {self.server.stderr.read()[-800:]}")
        self.url = line
        provider = {"npm": "@ai-sdk/openai-compatible", "name": "Scripted",
                    "options": {"baseURL": f"{line}/v1", "apiKey": "sk-e2e-opencode-0123456789"},
                    "models": {"model": {"name": "Scripted model"}}}
        (self.home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(
            {"$schema": "https://opencode.ai/config.json", "provider": {"scripted": provider},
             "model": "scripted/model", "autoupdate": False, "share": "disabled"}, indent=2))

    def start_watch(self) -> None:
        env = {"PATH": f"{self.bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(self.home), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        argv = ["ip", "netns", "exec", self.netns, "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                sys.executable, "-m", "ccci", "--fleet", str(self.fleet), "watch"]
        self.watch_log = open(self.root / "watch.log", "w")
        self.watch = subprocess.Popen(argv, stdout=self.watch_log, stderr=subprocess.STDOUT, cwd=self.fleet,
                                      start_new_session=True)

    # ------------------------------------------------------------------ reading
    def store(self) -> StateStore:
        return StateStore(self.fleet / ".ccci")

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict]:
        st = self.store()
        try:
            evs = st.events(limit=100000)
        finally:
            st.close()
        return [e for e in evs if (kind is None or e["kind"] == kind) and (agent is None or e.get("agent") == agent)]

    def wait_event(self, pred: Callable[[list[dict]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events() if (self.fleet / ".ccci" / "state.db").exists() else []
            res = pred(evs)
            if res:
                return res
            if self.watch is not None and self.watch.poll() is not None:
                pytest.fail(f"ccci watch exited ({self.watch.returncode}) waiting for {what}\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        evs = self.events() if (self.fleet / ".ccci" / "state.db").exists() else []
        lines = [f"{e['at']} {e['kind']} {e.get('agent') or '-'}: {e['message'][:160]}" for e in evs[-40:]]
        reqs = [f"{r['kind']} {r['step']} {r['status']}" for r in self.requests()][-20:]
        watch = (self.root / "watch.log").read_text()[-2000:] if (self.root / "watch.log").exists() else ""
        return "--- events ---\n" + "\n".join(lines) + "\n--- requests ---\n" + "\n".join(reqs) + "\n--- watch ---\n" + watch

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def main_requests(self, agent: str | None = None) -> list[dict]:
        out = [r for r in self.requests() if r["kind"] == "main"]
        if agent:
            out = [r for r in out if marker(agent) in json.dumps(r["json"].get("messages", [])[:3])]
        return out

    def serve_state(self) -> dict:
        p = self.fleet / ".ccci" / "opencode-serve.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True).stdout

    def capture(self, agent: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", f"=ccci-{self.name}-{agent}:")

    def record(self, filename: str, screen: str) -> None:
        """With ``CCCI_E2E_RECORD=1``, save ``screen`` to ``tests/golden/opencode-1.18.33/``."""
        if RECORD:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            (GOLDEN / filename).write_text(screen.rstrip("\n") + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        if self.watch is not None and self.watch.poll() is None:
            os.killpg(self.watch.pid, signal.SIGTERM)
            try:
                self.watch.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.watch.pid, signal.SIGKILL)
                self.watch.wait(timeout=5)
        self.tmux("kill-server")
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.server is not None:
            for f in (self.server.stdout, self.server.stderr):
                if f:
                    f.close()
        if getattr(self, "watch_log", None):
            self.watch_log.close()
        sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.geteuid()}" / self.socket
        sock.unlink(missing_ok=True)


@pytest.fixture
def oc_fleet(tmp_path: Path, netns: str, opencode_bin: Path) -> Iterator[Callable[..., OcFleet]]:
    """Factory: ``oc_fleet(by_marker, agents=("builder",), checks=None)`` -> a started
    :class:`OcFleet` (model server and ``ccci watch`` running)."""
    fleets: list[OcFleet] = []

    def make(by_marker: dict[str, list], agents: tuple[str, ...] = ("builder",),
             checks: dict[str, Any] | None = None) -> OcFleet:
        f = OcFleet(tmp_path / f"f{len(fleets)}", netns, opencode_bin, by_marker, agents, checks)
        fleets.append(f)
        f.prepare()
        f.start_model_server()
        f.start_watch()
        return f

    yield make
    for f in fleets:
        f.close()
