"""End-to-end fixtures: the real Claude Code CLI, in a real tmux server, talking to the
scripted model server (:mod:`ccci.testing.model_server`) inside a network namespace that
has only loopback, so nothing can leave the machine.

Fixtures
========
``claude_bin``      path of the pinned CLI (``@anthropic-ai/claude-code@2.1.197``, installed by
                    ``.ci/setup``): found
                    in ``<repo>/.cache/npm`` or installed there with ``npm install
                    --prefix``; ``$CCCI_CLAUDE_BIN`` overrides. Skips when npm is missing
                    or the install fails (offline). ``$CCCI_CLAUDE_VERSION`` (e.g.
                    ``2.1.332``) selects another version, installed in
                    ``<repo>/.cache/npm-claude-<version>``: the sessions then read screens
                    with that version's pattern file and record into
                    ``tests/golden/claude-<version>-recorded/``.
``netns``           name of a fresh network namespace ``ccci-e2e-<pid>`` with ``lo`` up;
                    deleted afterwards. Skips when ``ip netns add`` is not permitted.
``e2e_tmux``        :class:`ccci.tmux.Tmux` on a private socket (killed afterwards).
``claude_session``  factory ``(script, *, env=None, name=None, hooks=False) -> ClaudeSession``: a
                    throwaway HOME with the onboarding files, a git project with a bare
                    origin, the model server (subprocess in the namespace) and the CLI in
                    a tmux pane, launched with :meth:`ClaudeBackend.launch`'s argv/env.

Recording captures: with ``CCCI_E2E_RECORD=1`` the tests write the screens they assert on
to ``tests/golden/claude-<version>-recorded/`` (``$CCCI_E2E_RECORD_DIR`` names another
directory; labels are kept by hand in its ``LABELS.toml``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from real_cli import (CLAUDE_VERSION, RECORD, REPO, PaneSession, WatchedFleet, git, kill_tmux_server, pane_sessions,
                      pinned_cli, read_jsonl, seed_origin, start_model_server, write_gitconfig, write_script)

from ccci.backends.claude import TESTED_VERSION, ClaudeBackend
from ccci.model import AgentSpec, Role
from ccci.tmux import Tmux

#: where ``record()`` writes: ``$CCCI_E2E_RECORD_DIR``, else ``tests/golden/claude-<version>-recorded``
CAPTURES = Path(os.environ.get("CCCI_E2E_RECORD_DIR") or REPO / "tests" / "golden" / f"claude-{CLAUDE_VERSION}-recorded")
API_KEY = "sk-ant-e2e-" + "0123456789abcdefghijklmnop"  # any value; its last 20 chars are pre-approved


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real agent CLI (npm package) in tmux, offline")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code binary, installed under ``<repo>/.cache/npm`` on first use
    (:func:`ccci.testing.agent_clis.ensure_cli`, shared with the opencode fixture)."""
    return pinned_cli("claude", "CCCI_CLAUDE_BIN", None if CLAUDE_VERSION == TESTED_VERSION else CLAUDE_VERSION)


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
    kill_tmux_server(name)


# --------------------------------------------------------------------------- session


def prepare_home(home: Path, project: Path) -> None:
    """A throwaway HOME in which Claude Code starts with no dialog: onboarding done, the
    API key and ``project`` pre-approved, skip-permissions accepted
    (docs/agent-clis.md#claude-code-offline)."""
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": CLAUDE_VERSION,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
        "bypassPermissionsModeAccepted": True,
        "projects": {str(project): {"hasTrustDialogAccepted": True, "allowedTools": []}},
    }
    (home / ".claude.json").write_text(json.dumps(state, indent=2))
    (home / ".claude" / "settings.json").write_text(json.dumps({"skipDangerousModePermissionPrompt": True}))
    write_gitconfig(home)


class ClaudeSession(PaneSession):
    """One real Claude Code in a tmux pane, with its own HOME, project and model server
    (the pane, the server and the waits: :class:`real_cli.PaneSession`)."""

    def __init__(self, *, root: Path, name: str, tmux: Tmux, netns: str, claude_bin: Path,
                 script: list, env: dict[str, str] | None, resume_of: "ClaudeSession | None" = None,
                 hooks: bool = False) -> None:
        backend = ClaudeBackend(cli_version=CLAUDE_VERSION)  # read the screens with this version's patterns
        super().__init__(root=root, name=name, tmux=tmux, netns=netns, bin_path=claude_bin,
                         backend=backend, script=script, env=env)
        self.home = root / "home"
        self.project = root / "proj"
        self.origin = root / "origin.git"
        # with hooks, ClaudeBackend.launch writes <state_dir>/hooks/<name>.settings.json
        self.state_dir = (root / f"state-{name}") if hooks else None
        self.records = True  # record() writes (with CCCI_E2E_RECORD=1); see claude_session
        if resume_of is None:
            prepare_home(self.home, self.project)
            seed_origin(self.origin, self.project)
            self.session_id = self.backend.new_conversation_id()
        else:
            self.session_id = resume_of.session_id

    def launch(self, resume: bool = False, prompt: str = "") -> None:
        """Start the CLI with the argv/env of :meth:`ClaudeBackend.launch`."""
        spec = AgentSpec(name=self.name, role=Role.LOOP, backend="claude", workdir=self.project)
        cfg = SimpleNamespace(name="e2e", **({"state_dir": self.state_dir} if self.state_dir else {}))
        plan = self.backend.launch(spec, cfg, self.session_id, resume, prompt)
        assert plan.argv[0] == "claude"
        env = {
            "PATH": f"{self.bin_path.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
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
                *(f"{k}={v}" for k, v in env.items()), str(self.bin_path), *plan.argv[1:]]
        self.tmux.kill_session(self.name)
        pane = self.tmux.new_session(self.name, argv, cwd=plan.cwd, env={})
        self.pane_id = pane.pane_id

    def hook_events(self) -> list[dict]:
        """Records the hook relay appended to this session's spool (``hooks=True``)."""
        from ccci.backends.claude import hook_paths

        if self.state_dir is None:
            return []
        return read_jsonl(hook_paths(self.state_dir, self.name)[1])

    def record(self, filename: str, screen: str, title: str | None = None) -> None:
        """With ``CCCI_E2E_RECORD=1``, save ``screen`` as ``<CAPTURES>/<filename>``
        (``tests/golden/claude-<version>-recorded/`` unless ``$CCCI_E2E_RECORD_DIR``);
        with ``title`` (the pane title at capture time), also its line in
        ``<CAPTURES>/titles.txt`` (``<filename>\\t<title>``, one per file, the newest kept)."""
        if RECORD and self.records:
            CAPTURES.mkdir(parents=True, exist_ok=True)
            (CAPTURES / filename).write_text(screen + "\n", encoding="utf-8")
            if title is not None:
                titles = CAPTURES / "titles.txt"
                lines = titles.read_text(encoding="utf-8").splitlines() if titles.exists() else []
                rows = dict(ln.split("\t", 1) for ln in lines if "\t" in ln and not ln.startswith("#"))
                rows[filename] = " ".join(title.split())
                head = "# pane title at each capture (tmux list-panes), tab-separated"
                titles.write_text("\n".join([head, *(f"{k}\t{v}" for k, v in sorted(rows.items()))]) + "\n",
                                  encoding="utf-8")


@pytest.fixture
def claude_session(request: pytest.FixtureRequest, tmp_path: Path, e2e_tmux: Tmux, netns: str, claude_bin: Path
                   ) -> Iterator[Callable[..., ClaudeSession]]:
    """Factory: ``claude_session(script, env=None, name=None, start=True)`` -> a started
    :class:`ClaudeSession` (server up, CLI launched with a fresh session id).

    A test module that records names the versions its capture names belong to in
    ``RECORD_VERSIONS``; on another version its ``record()`` calls write nothing (so
    ``test_claude_real.py``'s 2.1.197 names never land in ``claude-2.1.332-recorded/``).
    A module without it (``test_claude_screens.py``) records on every version."""
    versions = getattr(request.module, "RECORD_VERSIONS", None)
    records = versions is None or CLAUDE_VERSION in versions

    def new(script: list, i: int, *, env: dict[str, str] | None = None, name: str | None = None,
            resume_of: ClaudeSession | None = None, hooks: bool = False) -> ClaudeSession:
        s = ClaudeSession(root=tmp_path, name=name or f"e2e-{i}-{uuid.uuid4().hex[:4]}", tmux=e2e_tmux,
                          netns=netns, claude_bin=claude_bin, script=script, env=env, resume_of=resume_of,
                          hooks=hooks)
        s.records = records
        return s

    yield from pane_sessions(new)


# ------------------------------------------------------------------ a supervised fleet


class ClaudeFleet(WatchedFleet):
    """A real ``ccci watch`` supervising real Claude Code agents (backend ``claude``).

    Everything runs in the loopback-only namespace: one model server per agent (its own
    script), the watcher (``ip netns exec NS python -m ccci watch``), and so the tmux
    server it starts and the agents in it. Each agent has a throwaway HOME (onboarding
    files) and a clone of one bare origin as its workdir; the agent's ``env`` in
    ``ccci.toml`` points the CLI at its server. ccci installs its hooks (the default).
    Events, waits and teardown: :class:`real_cli.WatchedFleet`.

    :param agents: ``{name: {"script": [steps], "env": {...}, "handoff_role": str, "options":
        {...} (the agent's ``[agents.options]``), "home_settings": {...} (merged into its
        ~/.claude/settings.json), "home_state": {...} (merged into its ~/.claude.json)}}``.
    :param checks: ``[checks]`` overrides (seconds).
    :param tables: more top-level tables of ``ccci.toml``, e.g. ``{"notify": {"urls": [...]}}``.
    """

    def __init__(self, root: Path, netns: str, claude_bin: Path, agents: dict[str, dict],
                 checks: dict[str, Any] | None = None, tick: float = 0.5,
                 tables: dict[str, dict] | None = None) -> None:
        from ccci import config as config_mod
        from ccci.testing.fakes import toml_document

        self.name = f"e2e{os.getpid()}{uuid.uuid4().hex[:4]}"
        super().__init__(root, netns, socket=f"ccci-{self.name}")
        self.claude_bin = claude_bin
        self.urls: dict[str, str] = {}
        self.origin = root / "origin.git"
        seed_origin(self.origin, root / "seed", "e2e fleet\n")
        agent_tables = []
        for name, a in agents.items():
            work = root / "work" / name
            git(root, "clone", "-q", str(self.origin), str(work))
            home = root / "homes" / name
            prepare_home(home, work)
            if a.get("home_settings"):  # e.g. {"permissions": {"defaultMode": "default"}}
                settings_file = home / ".claude" / "settings.json"
                settings_file.write_text(json.dumps({**json.loads(settings_file.read_text()), **a["home_settings"]}))
            if a.get("home_state"):  # e.g. {"hasSeenAutoDefaultNudge": True}
                state_file = home / ".claude.json"
                state_file.write_text(json.dumps({**json.loads(state_file.read_text()), **a["home_state"]}))
            script = write_script(root / f"script-{name}.json", a["script"])
            srv, self.urls[name] = start_model_server(netns, script, root / f"requests-{name}.jsonl", root)
            self.servers.append(srv)
            env = {"HOME": str(home), "ANTHROPIC_BASE_URL": self.urls[name], "ANTHROPIC_API_KEY": API_KEY,
                   "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                   "TERM": "tmux-256color", "LANG": "C.UTF-8", **a.get("env", {})}
            t = {"name": name, "backend": "claude", "workdir": str(work), "env": env}
            if a.get("handoff_role"):
                t["handoff_role"] = a["handoff_role"]
            if a.get("options"):
                t["options"] = a["options"]
            agent_tables.append(t)
        doc = toml_document(
            {"fleet": {"name": self.name, "tmux_socket": self.socket, "tick_seconds": tick},
             "checks": {"startup_grace": 1, "failure_threshold": 1, "api_error_backoff": 3, "backoff_initial": 1,
                        "stall_idle": 3600, **(checks or {})},
             "git": {"origin": str(self.origin), "fetch_interval": 1}, **(tables or {})},
            {"agents": agent_tables, "handoff": []})
        (root / "ccci.toml").write_text(doc)
        self.cfg = config_mod.load(root / "ccci.toml", environ={})
        self.state_dir = self.cfg.state_dir
        self.tmux = Tmux(socket_name=self.socket)

    def watch(self) -> None:
        env = {**os.environ, "PATH": f"{self.claude_bin.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(REPO)}
        self._start_watcher(["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci", "--fleet",
                             str(self.root), "watch"], env, self.root)

    # ------------------------------------------------------------------ reading
    def requests(self, agent: str) -> list[dict]:
        return read_jsonl(self.root / f"requests-{agent}.jsonl")

    def main_requests(self, agent: str) -> list[dict]:
        return [r for r in self.requests(agent) if r["kind"] == "main"]

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def _diagnostics(self) -> str:
        screens = "\n".join(f"--- {a.name} ---\n{self.screen(a.name)}" for a in self.cfg.agents)
        hooks = "".join(p.read_text()[-3000:] for p in sorted((self.state_dir / "hooks").glob("*.jsonl")))
        return f"--- hooks ---\n{hooks}\n{screens}"


@pytest.fixture
def claude_fleet(tmp_path: Path, netns: str, claude_bin: Path) -> Iterator[Callable[..., ClaudeFleet]]:
    """Factory ``claude_fleet(agents, checks=None, tick=0.5, tables=None) -> ClaudeFleet``
    (not yet watching: call ``.watch()``); torn down afterwards."""
    fleets: list[ClaudeFleet] = []

    def make(agents: dict[str, dict], checks: dict[str, Any] | None = None, tick: float = 0.5,
             tables: dict[str, dict] | None = None) -> ClaudeFleet:
        f = ClaudeFleet(tmp_path / f"fleet{len(fleets)}", netns, claude_bin, agents, checks, tick, tables)
        fleets.append(f)
        return f

    yield make
    for f in fleets:
        f.close()
