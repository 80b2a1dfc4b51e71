"""End-to-end fixtures: the real Claude Code CLI, in a real tmux server, talking to the
scripted model server (:mod:`ccci.testing.model_server`) inside a network namespace that
has only loopback, so nothing can leave the machine.

Fixtures
========
``claude_bin``      path of the pinned CLI (``@anthropic-ai/claude-code@2.1.197``, installed by
                    ``.ci/setup``): found
                    in ``<repo>/.cache/npm`` or installed there with ``npm install
                    --prefix``; ``$CCCI_CLAUDE_BIN`` overrides. Skips when npm is missing
                    or the install fails (offline).
``netns``           name of a fresh network namespace ``ccci-e2e-<pid>`` with ``lo`` up;
                    deleted afterwards. Skips when ``ip netns add`` is not permitted.
``e2e_tmux``        :class:`ccci.tmux.Tmux` on a private socket (killed afterwards).
``claude_session``  factory ``(script, *, env=None, name=None, hooks=False) -> ClaudeSession``: a
                    throwaway HOME with the onboarding files, a git project with a bare
                    origin, the model server (subprocess in the namespace) and the CLI in
                    a tmux pane, launched with :meth:`ClaudeBackend.launch`'s argv/env.

Recording captures: with ``CCCI_E2E_RECORD=1`` the tests write the screens they assert on
to ``tests/golden/claude-2.1.197-recorded/`` (labels are kept by hand in its ``LABELS.toml``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest

from ccci.backends.claude import TESTED_VERSION, ClaudeBackend
from ccci.model import AgentSpec, Role, ScreenAnalysis
from ccci.testing.agent_clis import CliUnavailable, ensure_cli
from ccci.testing.model_server import step_to_json
from ccci.tmux import Tmux

REPO = Path(__file__).resolve().parents[2]
NPM_PREFIX = REPO / ".cache" / "npm"
CAPTURES = REPO / "tests" / "golden" / "claude-2.1.197-recorded"
API_KEY = "sk-ant-e2e-" + "0123456789abcdefghijklmnop"  # any value; its last 20 chars are pre-approved
RECORD = os.environ.get("CCCI_E2E_RECORD") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real agent CLI (npm package) in tmux, offline")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code binary, installed under ``<repo>/.cache/npm`` on first use
    (:func:`ccci.testing.agent_clis.ensure_cli`, shared with the opencode fixture)."""
    override = os.environ.get("CCCI_CLAUDE_BIN")
    if override:
        path = Path(override)
        if not path.exists():
            pytest.skip(f"CCCI_CLAUDE_BIN={override} does not exist")
        return path
    try:
        return ensure_cli("claude", NPM_PREFIX)
    except CliUnavailable as exc:
        pytest.skip(str(exc))


# ------------------------------------------------------------------- network namespace


def _ensure_ip() -> str:
    ip = shutil.which("ip")
    if ip:
        return ip
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "-qq", "iproute2"]
        if subprocess.run(install, capture_output=True, env=env, timeout=300).returncode != 0:
            subprocess.run([apt, "update", "-qq"], capture_output=True, env=env, timeout=300)
            subprocess.run(install, capture_output=True, env=env, timeout=300)
        ip = shutil.which("ip")
        if ip:
            return ip
    pytest.skip("the `ip` command (iproute2) is missing and could not be installed")


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    """A network namespace with only loopback, ``ccci-e2e-<pid>``; deleted afterwards."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces need Linux")
    ip = _ensure_ip()
    name = f"ccci-e2e-{os.getpid()}"
    res = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {res.stderr.strip()}")
    try:
        up = subprocess.run([ip, "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                            capture_output=True, text=True)
        if up.returncode != 0:
            pytest.skip(f"cannot bring up lo in {name}: {up.stderr.strip()}")
        links = subprocess.run([ip, "netns", "exec", name, "ip", "-o", "link"],
                               capture_output=True, text=True).stdout
        assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"], links
        yield name
    finally:
        subprocess.run([ip, "netns", "delete", name], capture_output=True)


# ------------------------------------------------------------------------------ tmux


@pytest.fixture(scope="module")
def e2e_tmux() -> Iterator[Tmux]:
    """A tmux server on a private socket; killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    name = f"ccci-e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    t = Tmux(socket_name=name)
    yield t
    t.kill_server()
    sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.geteuid()}" / name
    sock.unlink(missing_ok=True)  # tmux can leave the socket file behind


# --------------------------------------------------------------------------- session


def prepare_home(home: Path, project: Path) -> None:
    """A throwaway HOME in which Claude Code starts with no dialog (agent-cli-facts.md:
    onboarding done, the API key and ``project`` pre-approved, skip-permissions accepted)."""
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": TESTED_VERSION,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
        "bypassPermissionsModeAccepted": True,
        "projects": {str(project): {"hasTrustDialogAccepted": True, "allowedTools": []}},
    }
    (home / ".claude.json").write_text(json.dumps(state, indent=2))
    (home / ".claude" / "settings.json").write_text(json.dumps({"skipDangerousModePermissionPrompt": True}))
    (home / ".gitconfig").write_text(
        "[user]\n\tname = e2e agent\n\temail = agent@example.invalid\n[init]\n\tdefaultBranch = main\n")


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


class ClaudeSession:
    """One real Claude Code in a tmux pane, with its own HOME, project and model server."""

    def __init__(self, *, root: Path, name: str, tmux: Tmux, netns: str, claude_bin: Path,
                 script: list, env: dict[str, str] | None, resume_of: "ClaudeSession | None" = None,
                 hooks: bool = False) -> None:
        self.root = root
        self.name = name
        self.tmux = tmux
        self.netns = netns
        self.claude_bin = claude_bin
        self.backend = ClaudeBackend()
        self.extra_env = dict(env or {})
        self.server: subprocess.Popen | None = None
        self.url = ""
        self.pane_id = ""
        self.home = root / "home"
        self.project = root / "proj"
        self.origin = root / "origin.git"
        self.log = root / f"requests-{name}.jsonl"
        self.script_file = root / f"script-{name}.json"
        # with hooks, ClaudeBackend.launch writes <state_dir>/hooks/<name>.settings.json
        self.state_dir = (root / f"state-{name}") if hooks else None
        self.script_file.write_text(json.dumps({"steps": [step_to_json(s) for s in script]}))
        if resume_of is None:
            self._prepare_home()
            self._prepare_project()
            self.session_id = self.backend.new_conversation_id()
        else:
            self.session_id = resume_of.session_id

    # ------------------------------------------------------------------ setup
    def _prepare_home(self) -> None:
        prepare_home(self.home, self.project)

    def _prepare_project(self) -> None:
        _git(self.root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        self.project.mkdir(parents=True, exist_ok=True)
        _git(self.project, "init", "-q", "-b", "main")
        (self.project / "README.md").write_text("e2e project\n")
        _git(self.project, "add", "README.md")
        _git(self.project, "commit", "-q", "-m", "initial")
        _git(self.project, "remote", "add", "origin", str(self.origin))
        _git(self.project, "push", "-q", "origin", "main")

    def start_server(self) -> str:
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci.testing.model_server",
                "--port", "0", "--script", str(self.script_file), "--log", str(self.log)]
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       cwd=self.root)
        line = self.server.stdout.readline().strip() if self.server.stdout else ""
        if not line.startswith("http://127.0.0.1:"):
            err = self.server.stderr.read() if self.server.stderr else ""
            raise RuntimeError(f"model server did not start: {line!r} {err[-1000:]}")
        self.url = line
        return line

    def launch(self, resume: bool = False, prompt: str = "") -> None:
        """Start the CLI with the argv/env of :meth:`ClaudeBackend.launch`."""
        spec = AgentSpec(name=self.name, role=Role.LOOP, backend="claude", workdir=self.project)
        cfg = SimpleNamespace(name="e2e", **({"state_dir": self.state_dir} if self.state_dir else {}))
        plan = self.backend.launch(spec, cfg, self.session_id, resume, prompt)
        assert plan.argv[0] == "claude"
        env = {
            "PATH": f"{self.claude_bin.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.home),
            "TERM": "tmux-256color",
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            **plan.env,
            **self.extra_env,
        }
        argv = ["ip", "netns", "exec", self.netns, "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), str(self.claude_bin), *plan.argv[1:]]
        self.tmux.kill_session(self.name)
        pane = self.tmux.new_session(self.name, argv, cwd=plan.cwd, env={})
        self.pane_id = pane.pane_id

    # ------------------------------------------------------------------ reading
    def pane(self):
        return self.tmux.list_panes().get(self.name)

    def screen(self) -> str:
        return self.tmux.capture([self.pane_id]).get(self.pane_id, "")

    def read(self) -> tuple[str, str, ScreenAnalysis]:
        """(screen, title, analysis) of the pane now."""
        pane = self.pane()
        title = pane.title if pane else ""
        screen = self.screen()
        return screen, title, self.backend.analyse(screen, title)

    def wait_until(self, pred: Callable[[str, ScreenAnalysis], bool], timeout: float,
                   what: str, interval: float = 0.1) -> tuple[str, ScreenAnalysis]:
        """Poll the pane until ``pred(screen, analysis)``; fails with the last screen."""
        deadline = time.monotonic() + timeout
        screen, _title, an = self.read()
        while not pred(screen, an):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}; state={an.state.value}\n"
                            f"--- screen ---\n{screen}\n--- requests ---\n"
                            + "\n".join(f"{r['path']} {r['kind']} {r['step']} {r['status']}" for r in self.requests()))
            time.sleep(interval)
            screen, _title, an = self.read()
        return screen, an

    def wait_state(self, state: str, timeout: float = 30.0, also: Callable[[str], bool] | None = None
                   ) -> tuple[str, ScreenAnalysis]:
        return self.wait_until(lambda s, a: a.state.value == state and (also is None or also(s)),
                               timeout, f"state {state}")

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def hook_events(self) -> list[dict]:
        """Records the hook relay appended to this session's spool (``hooks=True``)."""
        from ccci.backends.claude import hook_paths

        if self.state_dir is None:
            return []
        spool = hook_paths(self.state_dir, self.name)[1]
        if not spool.exists():
            return []
        return [json.loads(ln) for ln in spool.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def main_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["kind"] == "main"]

    # ------------------------------------------------------------------ writing
    def type_and_enter(self, text: str) -> None:
        """Type ``text`` and press Enter in two tmux calls (agent-cli-facts.md)."""
        self.tmux.send_literal(self.pane_id, text)
        self.tmux.send_key(self.pane_id, "Enter")

    def record(self, filename: str, screen: str) -> None:
        """With ``CCCI_E2E_RECORD=1``, save ``screen`` as ``tests/golden/claude-2.1.197-recorded/<filename>``."""
        if RECORD:
            CAPTURES.mkdir(exist_ok=True)
            (CAPTURES / filename).write_text(screen + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ teardown
    def stop_cli(self) -> None:
        self.tmux.kill_session(self.name)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=5)
        if self.server is not None:
            for f in (self.server.stdout, self.server.stderr):
                if f:
                    f.close()

    def close(self) -> None:
        self.stop_cli()
        self.stop_server()


@pytest.fixture
def claude_session(tmp_path: Path, e2e_tmux: Tmux, netns: str, claude_bin: Path
                   ) -> Iterator[Callable[..., ClaudeSession]]:
    """Factory: ``claude_session(script, env=None, name=None, start=True)`` -> a started
    :class:`ClaudeSession` (server up, CLI launched with a fresh session id)."""
    sessions: list[ClaudeSession] = []

    def make(script: list, *, env: dict[str, str] | None = None, name: str | None = None,
             start: bool = True, resume_of: ClaudeSession | None = None, hooks: bool = False) -> ClaudeSession:
        s = ClaudeSession(root=tmp_path, name=name or f"e2e-{len(sessions)}-{uuid.uuid4().hex[:4]}",
                          tmux=e2e_tmux, netns=netns, claude_bin=claude_bin, script=script, env=env,
                          resume_of=resume_of, hooks=hooks)
        sessions.append(s)
        if start:
            s.start_server()
            s.launch(resume=resume_of is not None)
        return s

    yield make
    for s in sessions:
        s.close()


# ------------------------------------------------------------------ a supervised fleet


class ClaudeFleet:
    """A real ``ccci watch`` supervising real Claude Code agents (backend ``claude``).

    Everything runs in the loopback-only namespace: one model server per agent (its own
    script), the watcher (``ip netns exec NS python -m ccci watch``), and so the tmux
    server it starts and the agents in it. Each agent has a throwaway HOME (onboarding
    files) and a clone of one bare origin as its workdir; the agent's ``env`` in
    ``ccci.toml`` points the CLI at its server. ccci installs its hooks (the default).

    :param agents: ``{name: {"script": [steps], "env": {...}, "handoff_role": str}}``.
    :param checks: ``[checks]`` overrides (seconds).
    """

    def __init__(self, root: Path, netns: str, claude_bin: Path, agents: dict[str, dict],
                 checks: dict[str, Any] | None = None, tick: float = 0.5) -> None:
        from ccci.testing.fakes import toml_document

        self.root, self.netns, self.claude_bin = root, netns, claude_bin
        root.mkdir(parents=True, exist_ok=True)
        self.servers: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.watcher: subprocess.Popen | None = None
        self.origin = root / "origin.git"
        _git(root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        seed = root / "seed"
        seed.mkdir()
        _git(seed, "init", "-q", "-b", "main")
        (seed / "README.md").write_text("e2e fleet\n")
        _git(seed, "add", "README.md")
        _git(seed, "commit", "-q", "-m", "initial")
        _git(seed, "push", "-q", str(self.origin), "main")
        self.name = f"e2e{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.socket = f"ccci-{self.name}"
        tables = []
        for name, a in agents.items():
            work = root / "work" / name
            _git(root, "clone", "-q", str(self.origin), str(work))
            home = root / "homes" / name
            prepare_home(home, work)
            self.urls[name] = self._start_server(name, a["script"])
            env = {"HOME": str(home), "ANTHROPIC_BASE_URL": self.urls[name], "ANTHROPIC_API_KEY": API_KEY,
                   "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                   "TERM": "tmux-256color", "LANG": "C.UTF-8", **a.get("env", {})}
            t = {"name": name, "backend": "claude", "workdir": str(work), "env": env}
            if a.get("handoff_role"):
                t["handoff_role"] = a["handoff_role"]
            tables.append(t)
        doc = toml_document(
            {"fleet": {"name": self.name, "tmux_socket": self.socket, "tick_seconds": tick},
             "checks": {"startup_grace": 1, "failure_threshold": 1, "api_error_backoff": 3, "backoff_initial": 1,
                        "stall_idle": 3600, **(checks or {})},
             "git": {"origin": str(self.origin), "fetch_interval": 1}},
            {"agents": tables, "handoff": []})
        (root / "ccci.toml").write_text(doc)
        from ccci import config as config_mod

        self.cfg = config_mod.load(root / "ccci.toml", environ={})
        self.tmux = Tmux(socket_name=self.socket)
        self._store = None

    def _start_server(self, name: str, script: list) -> str:
        script_file = self.root / f"script-{name}.json"
        script_file.write_text(json.dumps({"steps": [step_to_json(x) for x in script]}))
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci.testing.model_server",
                "--port", "0", "--script", str(script_file), "--log", str(self.root / f"requests-{name}.jsonl")]
        srv = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=self.root)
        self.servers[name] = srv
        line = srv.stdout.readline().strip() if srv.stdout else ""
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"model server for {name} did not start: {line!r}")
        return line

    # ------------------------------------------------------------------ watcher
    def watch(self) -> None:
        env = {**os.environ, "PATH": f"{self.claude_bin.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(REPO)}
        out = open(self.root / "watcher.out", "wb")
        self.watcher = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci", "--fleet", str(self.root), "watch"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        out.close()

    # ------------------------------------------------------------------ reading
    @property
    def store(self):
        from ccci.state import StateStore

        if self._store is None:
            self._store = StateStore(self.cfg.state_dir)
        return self._store

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict]:
        return [e for e in self.store.events(limit=10**6, agent=agent) if kind is None or e["kind"] == kind]

    def requests(self, agent: str) -> list[dict]:
        log = self.root / f"requests-{agent}.jsonl"
        if not log.exists():
            return []
        return [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def main_requests(self, agent: str) -> list[dict]:
        return [r for r in self.requests(agent) if r["kind"] == "main"]

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def wait(self, pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            val = pred()
            if val:
                return val
            if self.watcher is not None and self.watcher.poll() is not None:
                break
            time.sleep(poll)
        tail = (self.root / "watcher.out").read_text(errors="replace")[-3000:] if (self.root / "watcher.out").exists() else ""
        screens = "\n".join(f"--- {a} ---\n{self.screen(a)}" for a in (x.name for x in self.cfg.agents))
        evs = "\n".join(f"{e['at']} {e['agent']} {e['kind']}: {e['message'][:200]}" for e in self.events()[-40:])
        hooks_dir = self.cfg.state_dir / "hooks"
        evs += "\n--- hooks ---\n" + "".join(p.read_text()[-3000:] for p in sorted(hooks_dir.glob("*.jsonl")))
        pytest.fail(f"timed out after {timeout}s waiting for {what}\n--- events ---\n{evs}\n--- watcher ---\n{tail}\n{screens}")

    def close(self) -> None:
        if self.watcher is not None and self.watcher.poll() is None:
            self.watcher.terminate()
            try:
                self.watcher.wait(15)
            except subprocess.TimeoutExpired:
                self.watcher.kill()
                self.watcher.wait(5)
        self.tmux.kill_server()
        for srv in self.servers.values():
            if srv.poll() is None:
                srv.terminate()
                try:
                    srv.wait(5)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    srv.wait(5)
            if srv.stdout:
                srv.stdout.close()
        if self._store is not None:
            self._store.close()


@pytest.fixture
def claude_fleet(tmp_path: Path, netns: str, claude_bin: Path) -> Iterator[Callable[..., ClaudeFleet]]:
    """Factory ``claude_fleet(agents, checks=None, tick=0.5) -> ClaudeFleet`` (not yet
    watching: call ``.watch()``); torn down afterwards."""
    fleets: list[ClaudeFleet] = []

    def make(agents: dict[str, dict], checks: dict[str, Any] | None = None, tick: float = 0.5) -> ClaudeFleet:
        f = ClaudeFleet(tmp_path / f"fleet{len(fleets)}", netns, claude_bin, agents, checks, tick)
        fleets.append(f)
        return f

    yield make
    for f in fleets:
        f.close()
