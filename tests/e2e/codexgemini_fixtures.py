"""End-to-end fixtures for the real Codex CLI and Gemini CLI, in a real tmux server,
talking to the scripted model server (:mod:`ccci.testing.model_server`) inside the
loopback-only network namespace of ``conftest.netns``.

Kept apart from the Claude Code fixtures in ``conftest.py`` (which it reuses: ``netns``,
``e2e_tmux``); test modules import what they use from here::

    from codexgemini_fixtures import codex_bin, codex_session  # noqa: F401 (fixtures)

Fixtures
========
``codex_bin`` / ``gemini_bin``
    path of the pinned CLI (``@openai/codex@0.169.0``, ``@google/gemini-cli@0.61.0``):
    found in ``<repo>/.cache/npm`` or installed there with ``npm install --prefix`` under
    the same lock file the Claude Code fixture uses; ``$CCCI_CODEX_BIN`` /
    ``$CCCI_GEMINI_BIN`` override. Skips when npm is missing or the install fails.
``codex_session`` / ``gemini_session``
    factory ``(script, *, env=None, name=None, start=True, resume_of=None) ->
    CliSession``: a throwaway HOME with the settings that skip every first-run dialog, a
    git project with a bare origin, the model server (subprocess in the namespace) and
    the CLI in a tmux pane, launched with the backend's ``launch()`` argv.

The same classes drive ``tests/e2e/record_codexgemini.py``, which recorded the golden
screens in ``tests/golden/codex-0.169.0/`` and ``tests/golden/gemini-0.61.0/``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest

from ccci.backends.base import Backend
from ccci.backends.codex import TESTED_VERSION as CODEX_VERSION, CodexBackend
from ccci.backends.gemini import TESTED_VERSION as GEMINI_VERSION, GeminiBackend
from ccci.model import AgentSpec, Role, ScreenAnalysis
from ccci.processes import kill_tree
from ccci.testing import agent_clis
from ccci.testing.model_server import step_to_json
from ccci.tmux import Tmux

REPO = Path(__file__).resolve().parents[2]
NPM_PREFIX = REPO / ".cache" / "npm"
API_KEY = "e2e-key-0123456789abcdefghijklmnop"  # any value; never a real key
#: environment variable named in the Codex provider's ``env_key``
CODEX_KEY_ENV = "CCCI_MODEL_KEY"

CLIS = {
    "codex": {"package": f"@openai/codex@{CODEX_VERSION}", "bin": "codex", "version": CODEX_VERSION,
              "env": "CCCI_CODEX_BIN", "backend": CodexBackend},
    "gemini": {"package": f"@google/gemini-cli@{GEMINI_VERSION}", "bin": "gemini", "version": GEMINI_VERSION,
               "env": "CCCI_GEMINI_BIN", "backend": GeminiBackend},
}


# ----------------------------------------------------------------------------- CLI


def ensure_cli(kind: str) -> Path:
    """The pinned CLI ``kind`` (``codex`` | ``gemini``), installed on first use by
    :func:`ccci.testing.agent_clis.ensure_cli` (the prefix and lock every e2e fixture and
    ``.ci/setup`` share); ``$CCCI_CODEX_BIN`` / ``$CCCI_GEMINI_BIN`` override.

    :raises pytest.skip.Exception: when it cannot be installed (npm missing, offline).
    """
    info = CLIS[kind]
    override = os.environ.get(info["env"])
    if override:
        path = Path(override)
        if not path.exists():
            pytest.skip(f"{info['env']}={override} does not exist")
        return path
    try:
        return agent_clis.ensure_cli(kind, NPM_PREFIX)
    except agent_clis.CliUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """The pinned Codex CLI (``@openai/codex@0.169.0``)."""
    return ensure_cli("codex")


@pytest.fixture(scope="session")
def gemini_bin() -> Path:
    """The pinned Gemini CLI (``@google/gemini-cli@0.61.0``)."""
    return ensure_cli("gemini")


# --------------------------------------------------------------------------- session


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


class CliSession:
    """One real Codex or Gemini CLI in a tmux pane, with its own HOME, project and model
    server.

    :param kind: ``"codex"`` or ``"gemini"``.
    :param root: a fresh directory for HOME, project, origin, script and request log.
    :param name: tmux session name.
    :param tmux: the private tmux server.
    :param netns: the loopback-only network namespace.
    :param bin_path: the CLI.
    :param script: model-server steps.
    :param env: extra environment for the CLI.
    :param resume_of: share HOME/project/conversation with an earlier session.
    :param model: ``spec.model`` for the launch (``""``: the CLI's configured default).
    """

    def __init__(self, *, kind: str, root: Path, name: str, tmux: Tmux, netns: str, bin_path: Path,
                 script: list, env: dict[str, str] | None = None, resume_of: "CliSession | None" = None,
                 model: str = "", codex_retries: int = 1) -> None:
        self.kind = kind
        self.codex_retries = codex_retries
        self.root = root
        self.name = name
        self.tmux = tmux
        self.netns = netns
        self.bin_path = bin_path
        self.backend: Backend = CLIS[kind]["backend"]()
        self.extra_env = dict(env or {})
        self.model = model
        self.config = SimpleNamespace(name="e2e", state_dir=root / "state")  # what launch() reads
        self.server: subprocess.Popen | None = None
        self.pids: list[int] = []  # pane pids of every launch
        self.names: list[str] = []  # tmux sessions of every launch
        self.url = ""
        self.pane_id = ""
        self.home = root / f"home-{kind}"
        self.project = root / f"proj-{kind}"
        self.origin = root / f"origin-{kind}.git"
        self.log = root / f"requests-{name}.jsonl"
        self.script_file = root / f"script-{name}.json"
        self.script_file.write_text(json.dumps({"steps": [step_to_json(s) for s in script]}))
        if resume_of is None:
            self.project.mkdir(parents=True, exist_ok=True)
            self.conversation_id = self.backend.new_conversation_id()
            self._prepare_project()
        else:
            self.conversation_id = resume_of.conversation_id

    # ------------------------------------------------------------------ setup
    def _prepare_project(self) -> None:
        git(self.root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        git(self.project, "init", "-q", "-b", "main")
        # repo-local identity: Gemini CLI's shell tool did not pick up $HOME/.gitconfig
        git(self.project, "config", "user.name", "e2e agent")
        git(self.project, "config", "user.email", "agent@example.invalid")
        (self.project / "README.md").write_text("e2e project\n")
        git(self.project, "add", "README.md")
        git(self.project, "commit", "-q", "-m", "initial")
        git(self.project, "remote", "add", "origin", str(self.origin))
        git(self.project, "push", "-q", "origin", "main")

    def prepare_home(self) -> None:
        """Write the settings that skip first-run dialogs and point the CLI at the
        model server (``self.url`` must be set)."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = e2e agent\n\temail = agent@example.invalid\n[init]\n\tdefaultBranch = main\n")
        if self.kind == "codex":
            d = self.home / ".codex"
            d.mkdir(exist_ok=True)
            # wire_api "responses" is the only one Codex 0.169.0 accepts; the provider
            # reads its key from CCCI_MODEL_KEY; the project is trusted (no trust prompt)
            (d / "config.toml").write_text(
                'model = "scripted-model"\n'
                'model_provider = "ccci"\n'
                'check_for_update_on_startup = false\n\n'
                '[model_providers.ccci]\n'
                'name = "ccci scripted model server"\n'
                f'base_url = "{self.url}/v1"\n'
                f'env_key = "{CODEX_KEY_ENV}"\n'
                'wire_api = "responses"\n'
                f'request_max_retries = {self.codex_retries}\n'
                'stream_max_retries = 1\n\n'
                f'[projects."{self.project}"]\n'
                'trust_level = "trusted"\n')
        else:
            d = self.home / ".gemini"
            d.mkdir(exist_ok=True)
            settings = {
                "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
                "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
                "ui": {"theme": "Default"},
            }
            (d / "settings.json").write_text(json.dumps(settings, indent=2))

    def start_server(self) -> str:
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "ccci.testing.model_server",
                "--port", "0", "--script", str(self.script_file), "--log", str(self.log)]
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       cwd=self.root, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = self.server.stdout.readline().strip() if self.server.stdout else ""
        if not line.startswith("http://127.0.0.1:"):
            err = self.server.stderr.read() if self.server.stderr else ""
            raise RuntimeError(f"model server did not start: {line!r} {err[-1000:]}")
        self.url = line
        return line

    def spec(self) -> AgentSpec:
        return AgentSpec(name=self.name.split("~")[0], role=Role.LOOP, backend=self.kind, workdir=self.project,
                         model=self.model, env={"HOME": str(self.home)})

    def launch(self, resume: bool = False, prompt: str = "") -> list[str]:
        """Start the CLI with the argv of the backend's ``launch()``; returns that argv."""
        self.prepare_home()
        plan = self.backend.launch(self.spec(), self.config, self.conversation_id, resume, prompt)
        assert plan.argv[0] == self.kind, plan.argv
        env = {
            "PATH": f"{self.bin_path.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.home),
            "TERM": "tmux-256color",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            **plan.env,
            **self.extra_env,
        }
        if self.kind == "codex":
            env[CODEX_KEY_ENV] = API_KEY
        else:
            env["GEMINI_API_KEY"] = API_KEY
            env["GOOGLE_GEMINI_BASE_URL"] = self.url
        argv = ["ip", "netns", "exec", self.netns, "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), str(self.bin_path), *plan.argv[1:]]
        if self.pane_id:
            # relaunch in a new tmux session: killing the only session would make the
            # server exit under the next command ("server exited unexpectedly")
            self.launches = getattr(self, "launches", 1) + 1
            self.name = f"{self.name.split('~')[0]}~{self.launches}"
        pane = self.tmux.new_session(self.name, argv, cwd=plan.cwd, env={})
        self.pane_id = pane.pane_id
        self.pids.append(pane.pid)
        self.names.append(self.name)
        return plan.argv

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

    def wait_until(self, pred: Callable[[str, ScreenAnalysis], bool], timeout: float, what: str,
                   interval: float = 0.1) -> tuple[str, ScreenAnalysis]:
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

    def main_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["kind"] == "main"]

    # ------------------------------------------------------------------ teardown
    def stop_cli(self) -> None:
        """Kill every CLI process this session launched, then its tmux sessions. Gemini CLI
        0.61.0 (node) survives the SIGHUP of a closed pane, so closing tmux is not enough."""
        for pid in self.pids:
            kill_tree(pid)
        for name in {self.name, *self.names}:
            self.tmux.kill_session(name)

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


def _factory(kind: str, tmp_path: Path, tmux: Tmux, netns: str, bin_path: Path
             ) -> tuple[Callable[..., CliSession], list[CliSession]]:
    sessions: list[CliSession] = []

    def make(script: list, *, env: dict[str, str] | None = None, name: str | None = None,
             start: bool = True, resume_of: CliSession | None = None, model: str = "") -> CliSession:
        s = CliSession(kind=kind, root=tmp_path, name=name or f"{kind}-{len(sessions)}-{uuid.uuid4().hex[:4]}",
                       tmux=tmux, netns=netns, bin_path=bin_path, script=script, env=env,
                       resume_of=resume_of, model=model)
        sessions.append(s)
        if start:
            s.start_server()
            s.launch(resume=resume_of is not None, prompt="" if resume_of is not None else "")
        return s

    return make, sessions


@pytest.fixture
def codex_session(tmp_path: Path, e2e_tmux: Tmux, netns: str, codex_bin: Path) -> Iterator[Callable[..., CliSession]]:
    """Factory: ``codex_session(script, env=None, name=None, start=True, resume_of=None)``."""
    make, sessions = _factory("codex", tmp_path, e2e_tmux, netns, codex_bin)
    yield make
    for s in sessions:
        s.close()


@pytest.fixture
def gemini_session(tmp_path: Path, e2e_tmux: Tmux, netns: str, gemini_bin: Path) -> Iterator[Callable[..., CliSession]]:
    """Factory: ``gemini_session(script, env=None, name=None, start=True, resume_of=None)``."""
    make, sessions = _factory("gemini", tmp_path, e2e_tmux, netns, gemini_bin)
    yield make
    for s in sessions:
        s.close()


def type_text(session: CliSession, text: str) -> None:
    """Type ``text`` into the pane without Enter (unsent input)."""
    session.tmux.send_literal(session.pane_id, text)


def press(session: CliSession, key: str) -> None:
    session.tmux.send_key(session.pane_id, key)


def capture_to(path: Path, screen: str) -> None:
    """Save a capture as a golden file (UTF-8, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(screen + "\n", encoding="utf-8")


__all__ = ["CliSession", "capture_to", "codex_bin", "codex_session", "ensure_cli", "gemini_bin",
           "gemini_session", "press", "type_text"]
