"""What every end-to-end helper shares: a real agent CLI in a tmux pane
(:class:`PaneSession`, the base of ``conftest.ClaudeSession`` and
``codexgemini_fixtures.CliSession``), a fleet under a real ``ccci watch``
(:class:`WatchedFleet`, the base of ``conftest.ClaudeFleet`` and
``opencode/conftest.OcFleet``), and the small steps both need: the pinned CLI, a git
origin, the scripted model server in the network namespace, stopping a process.

Not a conftest: the fixtures stay in ``conftest.py``, ``codexgemini_fixtures.py`` and
``opencode/conftest.py``; they import from here (``tests/e2e`` is on ``sys.path``, as for
``codexgemini_fixtures``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ccci.backends.claude import TESTED_VERSION as TESTED_CLAUDE_VERSION
from ccci.backends.codex import TESTED_VERSION as TESTED_CODEX_VERSION
from ccci.model import ScreenAnalysis
from ccci.state import USAGE_COUNTERS, StateStore
from ccci.testing.agent_clis import CliUnavailable, ensure_cli
from ccci.testing.model_server import step_to_json
from ccci.tmux import Tmux, socket_path_of

REPO = Path(__file__).resolve().parents[2]
NPM_PREFIX = REPO / ".cache" / "npm"
RECORD = os.environ.get("CCCI_E2E_RECORD") == "1"
#: the Claude Code version the e2e tests run: ``$CCCI_CLAUDE_VERSION`` or the pinned one
CLAUDE_VERSION = os.environ.get("CCCI_CLAUDE_VERSION") or TESTED_CLAUDE_VERSION
#: the Codex CLI version the e2e tests (and ``record_codexgemini.py``) run:
#: ``$CCCI_CODEX_VERSION`` or the pinned one
CODEX_VERSION = os.environ.get("CCCI_CODEX_VERSION") or TESTED_CODEX_VERSION


# ----------------------------------------------------------------------------- CLI


def pinned_cli(kind: str, override_env: str, version: str | None = None) -> Path:
    """The pinned CLI ``kind`` (``claude`` | ``opencode`` | ``codex`` | ``gemini``),
    installed under ``<repo>/.cache/npm`` on first use by
    :func:`ccci.testing.agent_clis.ensure_cli` (one prefix and lock for every e2e fixture
    and ``.ci/setup``); ``$<override_env>`` names another binary. ``version``: another
    version than the pin, in a prefix of its own (``.cache/npm-<kind>-<version>``).

    :raises pytest.skip.Exception: when it cannot be installed (npm missing, offline).
    """
    override = os.environ.get(override_env)
    if override:
        path = Path(override)
        if not path.exists():
            pytest.skip(f"{override_env}={override} does not exist")
        return path
    try:
        if version:
            return ensure_cli(kind, None, version)
        return ensure_cli(kind, NPM_PREFIX)
    except CliUnavailable as exc:
        pytest.skip(str(exc))


# ----------------------------------------------------------------------------- git


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def write_gitconfig(home: Path) -> None:
    """The agent's git identity in a throwaway HOME."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = e2e agent\n\temail = agent@example.invalid\n[init]\n\tdefaultBranch = main\n")


def seed_origin(origin: Path, work: Path, readme: str = "e2e project\n") -> None:
    """A bare ``origin`` on ``main`` with one commit, pushed from the new repository
    ``work`` (remote ``origin``; the agent's identity set repo-locally too: Gemini CLI's
    shell tool did not pick up ``$HOME/.gitconfig``)."""
    git(origin.parent, "init", "-q", "--bare", "-b", "main", str(origin))
    work.mkdir(parents=True, exist_ok=True)
    git(work, "init", "-q", "-b", "main")
    git(work, "config", "user.name", "e2e agent")
    git(work, "config", "user.email", "agent@example.invalid")
    (work / "README.md").write_text(readme)
    git(work, "add", "README.md")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "origin", "main")


# ----------------------------------------------------------------------------- usage


#: Anthropic usage field (the model server's ``usage`` of an answer) -> ccci counter
AS_CCCI = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
           "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}


def sent_totals(requests: list[dict]) -> dict[str, int]:
    """What the model server's answers (``status`` 200 with a ``usage``) reported,
    summed, under ccci's counter names (:data:`ccci.state.USAGE_COUNTERS`)."""
    out = dict.fromkeys(USAGE_COUNTERS, 0)
    for r in requests:
        if r.get("status") == 200 and r.get("usage"):
            for theirs, ours in AS_CCCI.items():
                out[ours] += r["usage"][theirs]
    return out


def wait_usage(read: Callable[[], Any], want: dict[str, int], timeout: float = 20,
               interval: float = 0.3) -> tuple[dict[str, int], Any]:
    """Call ``read`` (a backend's ``read_usage``: a :class:`ccci.usage.UsageReading` or
    ``None``) until its totals, every day, source and model summed, equal ``want`` or
    ``timeout`` seconds passed (the CLI writes its records a little after the screen
    shows the answer); read at least once. :returns: ``(summed totals, the last reading)``
    for the caller to assert on."""
    deadline = time.monotonic() + timeout
    while True:
        reading = read()
        got = dict.fromkeys(USAGE_COUNTERS, 0)
        for counts in (reading.totals.values() if reading else ()):
            for k in USAGE_COUNTERS:
                got[k] += counts[k]
        if got == want or time.monotonic() > deadline:
            return got, reading
        time.sleep(interval)


# ---------------------------------------------------------------------- processes


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (a model server's request log, a hook spool)."""
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def write_script(path: Path, steps: list | None = None, by_marker: dict[str, list] | None = None) -> Path:
    """A model-server script file: one list of steps, or one per prompt marker."""
    if by_marker is not None:
        doc = {"by_marker": {m: [step_to_json(s) for s in ss] for m, ss in by_marker.items()}}
    else:
        doc = {"steps": [step_to_json(s) for s in steps or []]}
    path.write_text(json.dumps(doc))
    return path


def start_model_server(netns: str, script: Path, log: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    """:mod:`ccci.testing.model_server` in the namespace; returns the process and its URL
    (the first line it prints). Its stderr goes to ``<log>.err`` (never a pipe nobody
    reads), quoted when it does not start."""
    err_path = log.with_suffix(".err")
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "ccci.testing.model_server",
            "--port", "0", "--script", str(script), "--log", str(log)]
    with open(err_path, "wb") as err:
        srv = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    line = srv.stdout.readline().strip() if srv.stdout else ""
    if not line.startswith("http://127.0.0.1:"):
        stop_process(srv)
        raise RuntimeError(f"model server did not start: {line!r} {err_path.read_text(errors='replace')[-1000:]}")
    return srv, line


def stop_process(proc: subprocess.Popen | None, *, group: bool = False, timeout: float = 5) -> None:
    """SIGTERM (to its process group with ``group``), SIGKILL after ``timeout`` s; close
    its pipes."""
    if proc is None:
        return
    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(timeout=5)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def kill_tmux_server(socket: str) -> None:
    """``tmux -L socket kill-server`` and the socket file tmux can leave behind."""
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    Path(socket_path_of(socket)).unlink(missing_ok=True)


# ------------------------------------------------------------------- one CLI in a pane


class PaneSession:
    """One real agent CLI in a tmux pane, with its own model server and request log.

    Subclasses prepare HOME and project and define ``launch()``, which sets
    ``pane_id`` (and ``name``, the tmux session).

    :param root: a fresh directory for HOME, project, origin, script and request log.
    :param name: tmux session name.
    :param tmux: the private tmux server.
    :param netns: the loopback-only network namespace.
    :param bin_path: the CLI.
    :param backend: the ccci backend that launches the CLI and reads its screens.
    :param script: model-server steps.
    :param env: extra environment for the CLI.
    """

    def __init__(self, *, root: Path, name: str, tmux: Tmux, netns: str, bin_path: Path, backend: Any,
                 script: list, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.name = name
        self.tmux = tmux
        self.netns = netns
        self.bin_path = bin_path
        self.backend = backend
        self.extra_env = dict(env or {})
        self.server: subprocess.Popen | None = None
        self.url = ""
        self.pane_id = ""
        self.log = root / f"requests-{name}.jsonl"
        self.script_file = write_script(root / f"script-{name}.json", script)

    def start_server(self) -> str:
        self.server, self.url = start_model_server(self.netns, self.script_file, self.log, self.root)
        return self.url

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

    def wait_settled(self, state: str, quiet_s: float = 1.0, timeout: float = 60.0,
                     also: Callable[[str], bool] | None = None) -> tuple[str, ScreenAnalysis]:
        """Wait for ``state`` and then for the screen to stay unchanged for ``quiet_s``
        seconds: a TUI that has just started may draw its idle prompt a moment before it
        takes keys (Codex CLI 0.169.0 sometimes lost the first Enter right after startup)."""
        deadline = time.monotonic() + timeout
        screen, an = self.wait_state(state, timeout, also)
        since = time.monotonic()
        while time.monotonic() - since < quiet_s:
            time.sleep(0.1)
            now_screen, _title, an = self.read()
            if now_screen != screen or an.state.value != state:
                if time.monotonic() > deadline:
                    pytest.fail(f"the screen never settled in state {state} within {timeout}s")
                screen, an = self.wait_state(state, max(0.1, deadline - time.monotonic()), also)
                since = time.monotonic()
        return screen, an

    def requests(self) -> list[dict]:
        return read_jsonl(self.log)

    def main_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["kind"] == "main"]

    # ------------------------------------------------------------------ writing
    def type_text(self, text: str) -> None:
        """Type ``text`` into the pane without Enter (unsent input)."""
        self.tmux.send_literal(self.pane_id, text)

    def press(self, key: str) -> None:
        self.tmux.send_key(self.pane_id, key)

    def type_and_enter(self, text: str) -> None:
        """Type ``text`` and press Enter in two tmux calls (docs/agent-clis.md#enter-after-paste)."""
        self.type_text(text)
        self.press("Enter")

    # ------------------------------------------------------------------ teardown
    def stop_cli(self) -> None:
        self.tmux.kill_session(self.name)

    def stop_server(self) -> None:
        stop_process(self.server)

    def close(self) -> None:
        self.stop_cli()
        self.stop_server()


def pane_sessions(new: Callable[..., PaneSession]) -> Iterator[Callable[..., PaneSession]]:
    """The body of a session fixture: yields ``make(script, *, start=True, resume_of=None,
    **kw)``, which builds a session with ``new(script, index, resume_of=..., **kw)`` and,
    with ``start``, starts its model server and launches the CLI (resuming when
    ``resume_of`` is given); every session made is closed afterwards."""
    made: list[PaneSession] = []

    def make(script: list, *, start: bool = True, resume_of: PaneSession | None = None, **kw: Any) -> PaneSession:
        s = new(script, len(made), resume_of=resume_of, **kw)
        made.append(s)
        if start:
            s.start_server()
            s.launch(resume=resume_of is not None)
        return s

    yield make
    for s in made:
        s.close()


# ------------------------------------------------------- a fleet under a real ccci watch


class WatchedFleet:
    """A fleet directory supervised by a real ``ccci watch`` in the namespace, read from
    outside through its state files. Subclasses write ``ccci.toml`` and start the model
    servers (append them to ``servers``), set ``state_dir`` (where ``state.db`` is), and
    call :meth:`_start_watcher`.

    :param root: a fresh directory for the fleet's files.
    :param netns: the loopback-only network namespace.
    :param socket: the tmux socket name in the fleet's ``ccci.toml``.
    """

    state_dir: Path

    def __init__(self, root: Path, netns: str, socket: str) -> None:
        self.root = root
        self.netns = netns
        self.socket = socket
        self.servers: list[subprocess.Popen] = []
        self.watcher: subprocess.Popen | None = None
        self.watcher_log = root / "watch.log"
        root.mkdir(parents=True, exist_ok=True)

    def _start_watcher(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        """``ccci watch`` in a process group of its own, output to ``watch.log``."""
        with open(self.watcher_log, "ab") as out:
            self.watcher = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                            start_new_session=True)

    # ------------------------------------------------------------------ reading
    def store(self) -> StateStore:
        """A fresh :class:`StateStore` on the fleet's state (the caller closes it)."""
        return StateStore(self.state_dir)

    def agent(self, name: str):
        """The agent's row in the state database (``StateStore.agent``)."""
        st = self.store()
        try:
            return st.agent(name)
        finally:
            st.close()

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict]:
        if not (self.state_dir / "state.db").exists():
            return []
        st = self.store()
        try:
            evs = st.events(limit=10**6)
        finally:
            st.close()
        return [e for e in evs if (kind is None or e["kind"] == kind) and (agent is None or e.get("agent") == agent)]

    def wait(self, pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
        """Poll ``pred()`` until it is truthy and return it; fails with :meth:`tail` when
        ``timeout`` s pass or the watcher exits."""
        deadline = time.monotonic() + timeout
        while True:
            res = pred()
            if res:
                return res
            if self.watcher is not None and self.watcher.poll() is not None:
                pytest.fail(f"ccci watch exited ({self.watcher.returncode}) waiting for {what}\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.tail()}")
            time.sleep(poll)

    def wait_event(self, pred: Callable[[list[dict]], Any], timeout: float, what: str) -> Any:
        """:meth:`wait` for ``pred(events)``."""
        return self.wait(lambda: pred(self.events()), timeout, what)

    def tail(self) -> str:
        """What a failing test prints: the last events, :meth:`_diagnostics`, the watcher's
        output."""
        evs = "\n".join(f"{e['at']} {e['kind']} {e.get('agent') or '-'}: {e['message'][:200]}"
                        for e in self.events()[-40:])
        watch = self.watcher_log.read_text(errors="replace")[-3000:] if self.watcher_log.exists() else ""
        return f"--- events ---\n{evs}\n{self._diagnostics()}\n--- watch ---\n{watch}"

    def _diagnostics(self) -> str:
        return ""

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        if self.watcher is not None and self.watcher.poll() is None:
            stop_process(self.watcher, group=True, timeout=15)
        kill_tmux_server(self.socket)
        for srv in self.servers:
            stop_process(srv)
