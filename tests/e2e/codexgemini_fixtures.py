"""End-to-end fixtures for the real Codex CLI and Gemini CLI, in a real tmux server,
talking to the scripted model server (:mod:`ccci.testing.model_server`) inside the
loopback-only network namespace of ``conftest.netns``.

Kept apart from the Claude Code fixtures in ``conftest.py`` (which it reuses: ``netns``,
``e2e_tmux``); :class:`CliSession` is a :class:`real_cli.PaneSession`, like the Claude
Code one. Test modules import what they use from here::

    from codexgemini_fixtures import codex_bin, codex_session  # noqa: F401 (fixtures)

Fixtures
========
``codex_bin`` / ``gemini_bin``
    path of the pinned CLI (``@openai/codex@0.171.0``, ``@google/gemini-cli@0.61.0``):
    found in ``<repo>/.cache/npm`` or installed there with ``npm install --prefix`` under
    the same lock file the Claude Code fixture uses; ``$CCCI_CODEX_BIN`` /
    ``$CCCI_GEMINI_BIN`` override. ``$CCCI_CODEX_VERSION`` (e.g. ``0.169.0``, the other
    tested version) runs that Codex CLI instead, from ``<repo>/.cache/npm-codex-<version>``,
    and reads its screens with that version's rules (``real_cli.CODEX_VERSION``).
    Skips when npm is missing or the install fails.
``codex_session`` / ``gemini_session``
    factory ``(script, *, env=None, name=None, start=True, resume_of=None) ->
    CliSession``: a throwaway HOME with the settings that skip every first-run dialog, a
    git project with a bare origin, the model server (subprocess in the namespace) and
    the CLI in a tmux pane, launched with the backend's ``launch()`` argv.

The same classes drive ``tests/e2e/record_codexgemini.py``, which recorded the golden
screens in ``tests/golden/codex-<version>/`` and ``tests/golden/gemini-0.61.0/``.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest
from real_cli import CODEX_VERSION, PaneSession, git, pane_sessions, pinned_cli, seed_origin, write_gitconfig

from ccci.backends.codex import TESTED_VERSION as TESTED_CODEX_VERSION, CodexBackend
from ccci.backends.gemini import TESTED_VERSION as GEMINI_VERSION, GeminiBackend
from ccci.model import AgentSpec, Role
from ccci.processes import kill_tree
from ccci.tmux import Tmux

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
    """The pinned CLI ``kind`` (``codex`` | ``gemini``; Codex at ``real_cli.CODEX_VERSION``),
    installed on first use by :func:`ccci.testing.agent_clis.ensure_cli` (the prefix and
    lock every e2e fixture and ``.ci/setup`` share; another Codex version than the pin in
    ``.cache/npm-codex-<version>``); ``$CCCI_CODEX_BIN`` / ``$CCCI_GEMINI_BIN`` override.

    :raises pytest.skip.Exception: when it cannot be installed (npm missing, offline).
    """
    version = CLIS[kind]["version"]
    pinned = TESTED_CODEX_VERSION if kind == "codex" else GEMINI_VERSION
    return pinned_cli(kind, CLIS[kind]["env"], None if version == pinned else version)


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """The Codex CLI of ``real_cli.CODEX_VERSION`` (the pin, ``@openai/codex@0.171.0``, unless
    ``$CCCI_CODEX_VERSION`` names another)."""
    return ensure_cli("codex")


@pytest.fixture(scope="session")
def gemini_bin() -> Path:
    """The pinned Gemini CLI (``@google/gemini-cli@0.61.0``)."""
    return ensure_cli("gemini")


# --------------------------------------------------------------------------- session


class CliSession(PaneSession):
    """One real Codex or Gemini CLI in a tmux pane, with its own HOME, project and model
    server (the pane, the server and the waits: :class:`real_cli.PaneSession`).

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
        super().__init__(root=root, name=name, tmux=tmux, netns=netns, bin_path=bin_path,
                         backend=self.make_backend(kind), script=script, env=env)
        self.kind = kind
        self.codex_retries = codex_retries
        self.model = model
        self.config = SimpleNamespace(name="e2e", state_dir=root / "state")  # what launch() reads
        self.pids: list[int] = []  # pane pids of every launch
        self.names: list[str] = []  # tmux sessions of every launch
        self.home = root / f"home-{kind}"
        self.project = root / f"proj-{kind}"
        self.origin = root / f"origin-{kind}.git"
        if resume_of is None:
            self.conversation_id = self.backend.new_conversation_id()
            seed_origin(self.origin, self.project)
        else:
            self.conversation_id = resume_of.conversation_id

    @staticmethod
    def make_backend(kind: str):
        """The backend reading the pane: Codex's with the rules of the version under test
        (``real_cli.CODEX_VERSION``), whatever ``codex`` is on this process's PATH."""
        if kind == "codex":
            return CodexBackend(cli_version=CODEX_VERSION)
        return CLIS[kind]["backend"]()

    def prepare_home(self) -> None:
        """Write the settings that skip first-run dialogs and point the CLI at the
        model server (``self.url`` must be set)."""
        write_gitconfig(self.home)
        if self.kind == "codex":
            d = self.home / ".codex"
            d.mkdir(exist_ok=True)
            # wire_api "responses" is the only one Codex 0.169.0 and 0.171.0 accept; the provider
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

    # ------------------------------------------------------------------ teardown
    def stop_cli(self) -> None:
        """Kill every CLI process this session launched, then its tmux sessions. Gemini CLI
        0.61.0 (node) survives the SIGHUP of a closed pane, so closing tmux is not enough."""
        for pid in self.pids:
            kill_tree(pid)
        for name in {self.name, *self.names}:
            self.tmux.kill_session(name)


def _sessions(kind: str, tmp_path: Path, tmux: Tmux, netns: str, bin_path: Path) -> Iterator[Callable[..., CliSession]]:
    """The body of ``codex_session`` / ``gemini_session``."""
    def new(script: list, i: int, *, env: dict[str, str] | None = None, name: str | None = None,
            resume_of: CliSession | None = None, model: str = "") -> CliSession:
        return CliSession(kind=kind, root=tmp_path, name=name or f"{kind}-{i}-{uuid.uuid4().hex[:4]}", tmux=tmux,
                          netns=netns, bin_path=bin_path, script=script, env=env, resume_of=resume_of, model=model)

    yield from pane_sessions(new)


@pytest.fixture
def codex_session(tmp_path: Path, e2e_tmux: Tmux, netns: str, codex_bin: Path) -> Iterator[Callable[..., CliSession]]:
    """Factory: ``codex_session(script, env=None, name=None, start=True, resume_of=None)``."""
    yield from _sessions("codex", tmp_path, e2e_tmux, netns, codex_bin)


@pytest.fixture
def gemini_session(tmp_path: Path, e2e_tmux: Tmux, netns: str, gemini_bin: Path) -> Iterator[Callable[..., CliSession]]:
    """Factory: ``gemini_session(script, env=None, name=None, start=True, resume_of=None)``."""
    yield from _sessions("gemini", tmp_path, e2e_tmux, netns, gemini_bin)


def capture_to(path: Path, screen: str) -> None:
    """Save a capture as a golden file (UTF-8, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(screen + "\n", encoding="utf-8")


__all__ = ["CliSession", "capture_to", "codex_bin", "codex_session", "ensure_cli", "gemini_bin",
           "gemini_session", "git"]
