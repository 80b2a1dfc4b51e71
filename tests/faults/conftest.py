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
