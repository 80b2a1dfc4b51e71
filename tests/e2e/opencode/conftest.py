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
``oc_fleet``      factory ``(by_marker, agents=("builder",), checks=None, default=None) -> OcFleet``:
                  a fleet directory (bare origin, one clone per agent, prompts carrying
                  a marker ``ROLE-<AGENT>-MARK`` so one model server answers each agent from
                  its own script; ``default``: the step answering a request no marker
                  matches, e.g. after opencode compacted the prompt away; the model
                  server's echo otherwise), a HOME with the opencode provider config, the model
                  server and ``ccci watch`` started in the namespace; all stopped afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from ccci.testing.model_server import step_to_json
from real_cli import RECORD, REPO, WatchedFleet, git, pinned_cli, read_jsonl, seed_origin, start_model_server, \
    write_gitconfig, write_script

GOLDEN = REPO / "tests" / "golden" / "opencode-1.18.33"


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    """The pinned opencode binary, installed under ``<repo>/.cache/npm`` on first use."""
    return pinned_cli("opencode", "CCCI_OPENCODE_BIN")


def marker(agent: str) -> str:
    """The marker in ``agent``'s prompt that selects its script on the model server."""
    return f"ROLE-{agent.upper()}-MARK"


class OcFleet(WatchedFleet):
    """A fleet of opencode agents supervised by a real ``ccci watch`` in the namespace
    (events, waits and teardown: :class:`real_cli.WatchedFleet`)."""

    def __init__(self, root: Path, netns: str, opencode_bin: Path, by_marker: dict[str, list],
                 agents: tuple[str, ...], checks: dict[str, Any] | None, default: Any = None) -> None:
        super().__init__(root, netns, socket=f"ccci-oc-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.bin_dir = opencode_bin.parent
        self.agents = agents
        self.home = root / "home"
        self.fleet = root / "fleet"
        self.state_dir = self.fleet / ".ccci"
        self.origin = root / "origin.git"
        self.log = root / "model-requests.jsonl"
        self.script = write_script(root / "script.json", by_marker={marker(a): steps for a, steps in by_marker.items()})
        if default is not None:
            doc = json.loads(self.script.read_text())
            doc["default"] = step_to_json(default)
            self.script.write_text(json.dumps(doc))
        self.name = "ocfleet"
        self.checks = {"startup_grace": 2, "max_resumes": 50, **(checks or {})}
        self.url = ""

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        (self.home / ".config" / "opencode").mkdir(parents=True)
        write_gitconfig(self.home)
        seed_origin(self.origin, self.root / "seed")
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
        srv, self.url = start_model_server(self.netns, self.script, self.log, self.root)
        self.servers.append(srv)
        provider = {"npm": "@ai-sdk/openai-compatible", "name": "Scripted",
                    "options": {"baseURL": f"{self.url}/v1", "apiKey": "sk-e2e-opencode-0123456789"},
                    "models": {"model": {"name": "Scripted model"}}}
        (self.home / ".config" / "opencode" / "opencode.json").write_text(json.dumps(
            {"$schema": "https://opencode.ai/config.json", "provider": {"scripted": provider},
             "model": "scripted/model", "autoupdate": False, "share": "disabled"}, indent=2))

    def ccci_argv(self, *args: str) -> list[str]:
        """``ccci --fleet FLEET ARGS`` in the namespace, with the environment the watcher
        gets (opencode on the PATH, the throwaway HOME)."""
        env = {"PATH": f"{self.bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(self.home), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        return ["ip", "netns", "exec", self.netns, "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                sys.executable, "-m", "ccci", "--fleet", str(self.fleet), *args]

    def watch(self) -> None:
        self._start_watcher(self.ccci_argv("watch"), dict(os.environ), self.fleet)

    # ------------------------------------------------------------------ reading
    def _diagnostics(self) -> str:
        return "--- requests ---\n" + "\n".join(f"{r['kind']} {r['step']} {r['status']}" for r in self.requests()[-20:])

    def requests(self) -> list[dict]:
        return read_jsonl(self.log)

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


@pytest.fixture
def oc_fleet(tmp_path: Path, netns: str, opencode_bin: Path) -> Iterator[Callable[..., OcFleet]]:
    """Factory: ``oc_fleet(by_marker, agents=("builder",), checks=None, default=None, watch=True)``
    -> a started :class:`OcFleet` (model server and, with ``watch``, ``ccci watch`` running)."""
    fleets: list[OcFleet] = []

    def make(by_marker: dict[str, list], agents: tuple[str, ...] = ("builder",),
             checks: dict[str, Any] | None = None, default: Any = None, watch: bool = True) -> OcFleet:
        f = OcFleet(tmp_path / f"f{len(fleets)}", netns, opencode_bin, by_marker, agents, checks, default)
        fleets.append(f)
        f.prepare()
        f.start_model_server()
        if watch:
            f.watch()
        return f

    yield make
    for f in fleets:
        f.close()
