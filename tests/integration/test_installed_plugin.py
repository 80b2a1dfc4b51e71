"""A third-party plugin in its own directory, installed with pip, is listed by
``ccci plugins``, its finding leads to a remedy in a real watcher; a plugin whose import
fails is skipped with a one-line message and the watcher keeps running."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

GOOD = '''
"""ccci-check-marker: finds MARKER-PLEASE-ACK on an agent's screen and answers it."""
from ccci import Finding, Remedy, hookimpl


@hookimpl
def ccci_check_agent(agent, analysis, screen):
    for line in reversed(screen.splitlines()):
        if "MARKER-PLEASE-ACK" in line and not agent.__dict__.get("marker_acked"):
            return Finding("marker", agent.name, "marker on screen", evidence=line.strip(), immediate=True)
    return None


@hookimpl
def ccci_choose_remedy(finding, agent):
    if finding.check == "marker":
        agent.__dict__["marker_acked"] = True
        return Remedy("send", agent.name, finding, text="marker acknowledged", data={"now": True})
    return None
'''

BROKEN = '''
raise ImportError("ccci-check-broken needs a module that is not installed")
'''


def _package(root: Path, dist: str, module: str, source: str) -> Path:
    pkg = root / dist
    pkg.mkdir(parents=True)
    (pkg / f"{module}.py").write_text(textwrap.dedent(source))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.1.0"
        [project.entry-points.ccci]
        {module.removeprefix("ccci_check_")} = "{module}"
        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    return pkg


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    for dist, module, src in (("ccci-check-marker", "ccci_check_marker", GOOD),
                              ("ccci-check-broken", "ccci_check_broken", BROKEN)):
        pkg = _package(root, dist, module, src)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(pkg)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return site


def test_installed_plugin_is_listed_and_broken_one_skipped(fleet, plugin_site):
    r = fleet.ccci("plugins", "--json", env={"PYTHONPATH": str(plugin_site)})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    marker = [p for p in data["plugins"] if p["name"] == "marker"]
    assert marker, data
    assert marker[0]["source"].startswith("entrypoint:ccci-check-marker")
    assert set(marker[0]["hooks"]) == {"ccci_check_agent", "ccci_choose_remedy"}
    broken = [e for e in data["errors"] if "broken" in e]
    assert len(broken) == 1 and "import failed" in broken[0] and "\n" not in broken[0]
    builtin = {p["name"]: p["source"] for p in data["plugins"]}
    assert builtin["process_death"] == "builtin"


def test_installed_plugin_finding_leads_to_remedy(fleet, plugin_site):
    w = fleet.watch("--quiet", env={"PYTHONPATH": str(plugin_site)})
    assert fleet.wait(lambda: fleet.settled(), 40)
    assert w.poll() is None, "the broken plugin stopped the watcher"
    skipped = fleet.events("plugin_skipped")
    assert any("broken" in e["message"] for e in skipped)
    # make the marker appear on the adversary's screen (the scripted agent echoes its input)
    r = fleet.ccci("send", "adversary", "MARKER-PLEASE-ACK", timeout=30)
    assert r.returncode == 0, r.stderr
    remedy = fleet.wait(lambda: [e for e in fleet.events("remedy", "adversary") if e["data"].get("check") == "marker"], 20)
    assert remedy and remedy[0]["data"]["ok"], remedy
    assert fleet.wait(lambda: "» marker acknowledged" in fleet.screen("adversary"), 10)
    assert w.poll() is None
