"""Fault-injection suite fixtures: real fleets tuned for fast trials, and the trial
recorder behind ``docs/reliability.md``.

Every test records what it proved through the ``trials`` fixture::

    t = trials("1", "Agent deaths")       # scenario number and title
    t.check("restarted exactly once")     # each property the test asserts
    t.trial()                             # once per trial (a kill, a fault, ...)

With ``CCCI_FAULTS_RESULTS=<file.json>`` in the environment (``tools/reliability.py``
sets it), the session writes every test's scenario, trial count, checks and outcome
there; the tool turns that into the table of ``docs/reliability.md``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from ccci.testing.fleet import Fleet, fleet_name

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

#: thresholds of the fault fleets: short enough that 100 trials fit in a CI minute, the
#: same code paths as the defaults (see ccci.config.DEFAULT_CHECKS for the real values)
FAST_CHECKS = {"startup_grace": 1, "failure_threshold": 2, "stall_idle": 30, "stall_grace": 10,
               "backoff_initial": 0.5, "api_error_backoff": 5}
FAST_FLEET = {"tick_seconds": 0.25}
FAST_GIT = {"fetch_interval": 0.5}

_RESULTS: dict[str, dict] = {}


@dataclass
class Trials:
    """What one test proved: scenario, trial count, checks (in order, unique)."""

    scenario: str
    title: str
    trials: int = 0
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def trial(self, n: int = 1) -> None:
        self.trials += n

    def check(self, what: str) -> None:
        if what not in self.checks:
            self.checks.append(what)

    def note(self, text: str) -> None:
        """A measured number for the report (e.g. 'classified 1 MB in 0.04 s')."""
        self.notes.append(text)


@pytest.fixture
def trials(request):
    made: list[Trials] = []

    def make(scenario: str, title: str) -> Trials:
        t = Trials(scenario, title)
        made.append(t)
        return t

    yield make
    for t in made:
        _RESULTS[request.node.nodeid] = {"scenario": t.scenario, "title": t.title, "trials": t.trials,
                                         "checks": t.checks, "notes": t.notes, "outcome": "unknown"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        item.stash.setdefault(_OUTCOME, []).append(rep.outcome if not hasattr(rep, "wasxfail") else "xfailed")
    if rep.when == "teardown":
        outs = item.stash.get(_OUTCOME, [])
        res = _RESULTS.get(item.nodeid)
        if res is not None:
            res["outcome"] = "failed" if "failed" in outs or rep.failed else (outs[-1] if outs else "unknown")


_OUTCOME = pytest.StashKey[list]()


def pytest_sessionfinish(session):
    out = os.environ.get("CCCI_FAULTS_RESULTS")
    if out and _RESULTS:
        Path(out).write_text(json.dumps(_RESULTS, indent=1, sort_keys=True))


@pytest.fixture
def make_fleet(tmp_path):
    """Factory: ``make_fleet(checks=..., fleet=..., git=..., options=..., agents=...)``
    -> :class:`ccci.testing.fleet.Fleet` with the fast thresholds above merged under the
    overrides; torn down (watchers, tmux server) after the test."""
    made: list[Fleet] = []

    def make(checks=None, fleet=None, git=None, options=None, agents=None) -> Fleet:
        n = len(made)
        f = Fleet(tmp_path / f"fleet{n}", fleet_name(tmp_path) + str(n),
                  checks={**FAST_CHECKS, **(checks or {})}, fleet={**FAST_FLEET, **(fleet or {})},
                  git={**FAST_GIT, **(git or {})}, options={"turn_seconds": 0.5, **(options or {})},
                  agents=agents)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def agent_processes(fleet: Fleet, agent: str) -> list[psutil.Process]:
    """Live scripted-agent processes of ``agent`` in ``fleet`` (found by command line,
    not through tmux: a process tmux lost track of counts too)."""
    state = str(fleet.cfg.state_dir)
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if cmd and os.path.basename(cmd[0]).startswith("tmux"):
                continue  # the tmux server keeps the argv of the client that started it
            if "ccci.scripted_agent" in cmd and "--name" in cmd and cmd[cmd.index("--name") + 1] == agent \
                    and any(a.startswith(state) for a in cmd):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, IndexError):
            pass
    return out


def sessions_named(fleet: Fleet, agent: str) -> int:
    """How many tmux sessions carry the agent's session name (must be 0 or 1)."""
    name = fleet.cfg.session_name(agent)
    try:
        out = fleet.tmux.cmd("list-sessions", "-F", "#{session_name}", check=False)
    except Exception:  # noqa: BLE001 - no server
        return 0
    return sum(1 for s in out if s == name)


def panes_in_session(fleet: Fleet, agent: str) -> int:
    try:
        out = fleet.tmux.cmd("list-panes", "-s", "-t", f"={fleet.cfg.session_name(agent)}", "-F", "#{pane_id}", check=False)
    except Exception:  # noqa: BLE001
        return 0
    return len([ln for ln in out if ln.startswith("%")])


def exactly_one_instance(fleet: Fleet, agent: str) -> str | None:
    """``None`` when the agent has exactly one session, one pane and one process; else
    what is wrong."""
    s, p, procs = sessions_named(fleet, agent), panes_in_session(fleet, agent), agent_processes(fleet, agent)
    if (s, p, len(procs)) != (1, 1, 1):
        return f"{agent}: {s} session(s), {p} pane(s), {len(procs)} process(es) {[x.pid for x in procs]}"
    return None


def push_commit(fleet: Fleet, tmp_path: Path, subject: str | bytes) -> str:
    """Commit a new file with ``subject`` (bytes: written raw, e.g. invalid UTF-8) from
    a scratch clone of the fleet's origin and push it, as an agent would.

    :returns: the commit sha.
    """
    import subprocess

    path = tmp_path / f"scratch-{fleet.cfg.name}"
    if not path.exists():
        subprocess.run(["git", "clone", "--quiet", fleet.cfg.git.origin, str(path)], check=True)
        for k, v in (("user.name", "tester"), ("user.email", "t@example.invalid")):
            subprocess.run(["git", "-C", str(path), "config", k, v], check=True)
    subprocess.run(["git", "-C", str(path), "pull", "--quiet", "origin", "main"], check=True, capture_output=True)
    name = f"f{len(list(path.iterdir()))}.txt"
    (path / name).write_text("x\n")
    subprocess.run(["git", "-C", str(path), "add", name], check=True)
    if isinstance(subject, bytes):
        # 'git commit' repairs invalid UTF-8 (as Latin-1); other tools do not: write the
        # commit object by hand, as libgit2 or a script could
        def out(*a):
            return subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True, text=True).stdout.strip()

        tree, parent = out("write-tree"), out("rev-parse", "HEAD")
        who = b"tester <t@example.invalid> 1767225600 +0000"
        raw = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n%s\n" % (tree.encode(), parent.encode(), who, who, subject)
        sha = subprocess.run(["git", "-C", str(path), "hash-object", "-t", "commit", "-w", "--stdin"], input=raw,
                             check=True, capture_output=True).stdout.decode().strip()
        out("update-ref", "HEAD", sha)
    else:
        msg = path / ".git" / "MSG"
        msg.write_text(subject)
        subprocess.run(["git", "-C", str(path), "commit", "--quiet", "--cleanup=verbatim", "-F", str(msg)], check=True)
    subprocess.run(["git", "-C", str(path), "push", "--quiet", "origin", "HEAD:main"], check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def typed_turns(fleet: Fleet, agent: str, needle: str) -> int:
    """How many turns the agent started with a prompt containing ``needle`` (its
    ``» <prompt>`` lines in the pane log: one per received message)."""
    from ccci.send import ANSI_RE

    log = (fleet.cfg.state_dir / "logs" / f"{agent}.log").read_text(errors="replace")
    return sum(1 for ln in ANSI_RE.sub("", log).replace("\r", "\n").splitlines() if ln.startswith("» ") and needle in ln)
