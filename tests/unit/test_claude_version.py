"""Which pattern file reads a Claude Code pane: the version the binary reports
(``claude --version``, cached per binary file), the nearest tested version not newer than
it, else the newest; explicit overrides (constructor, ``use_cli_version``,
``$CCCI_CLAUDE_VERSION``, ``[patterns.claude] version``) win (issue 12)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ccci.backends import versions as versions_mod
from ccci.backends.claude import TESTED_VERSION, ClaudeBackend, binary_version, pattern_version_for
from ccci.model import AgentSpec, Role

SID = "70561c5c-809c-4421-9bd4-4b4c1a66b486"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("CCCI_CLAUDE_VERSION", raising=False)
    monkeypatch.setattr(versions_mod, "_VERSION_CACHE", {})


def fake_claude(directory: Path, version: str, name: str = "claude") -> Path:
    """A stand-in ``claude`` that prints ``<version> (Claude Code)`` and counts its runs."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho run >> '{directory}/runs'\n"
                    f"[ \"$1\" = --version ] && echo '{version} (Claude Code)'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def runs(directory: Path) -> int:
    f = directory / "runs"
    return len(f.read_text().splitlines()) if f.exists() else 0


@pytest.mark.parametrize("cli,chosen", [
    ("2.1.197", "2.1.197"),
    ("2.1.250", "2.1.197"),   # between two tested versions: the older one
    ("2.1.332", "2.1.332"),
    ("2.1.400", "2.1.332"),   # newer than every tested version: the newest
    ("3.0.0", "2.1.332"),
    ("2.0.14", "2.1.332"),    # older than every tested version: the newest
    (None, TESTED_VERSION),   # unknown
])
def test_nearest_tested_version_not_newer(cli, chosen):
    assert pattern_version_for(cli) == chosen


def test_binary_version_parses_and_caches_per_binary(tmp_path):
    d = tmp_path / "bin"
    b = fake_claude(d, "2.1.332")
    assert binary_version(str(b)) == "2.1.332"
    assert binary_version(str(b)) == "2.1.332"
    assert runs(d) == 1  # cached
    assert binary_version("claude", path=str(d)) == "2.1.332"  # found on a PATH value
    assert runs(d) == 1  # same file, same cache entry
    # upgraded in place: another size/mtime, asked again
    b.write_text(b.read_text().replace("2.1.332", "2.1.340") + "\n")
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    assert binary_version(str(b)) == "2.1.340"
    assert runs(d) == 2


def test_binary_version_missing_or_silent(tmp_path):
    assert binary_version("claude", path=str(tmp_path)) is None
    assert binary_version(str(tmp_path / "nope")) is None
    d = tmp_path / "quiet"
    assert binary_version(str(fake_claude(d, "no version here"))) is None


def test_backend_detects_the_binarys_version(tmp_path):
    b = ClaudeBackend(binary=str(fake_claude(tmp_path / "new", "2.1.332")))
    assert b.patterns.version == "2.1.332" and b.detected_version == "2.1.332"
    old = ClaudeBackend(binary=str(fake_claude(tmp_path / "old", "2.1.197")))
    assert old.patterns.version == "2.1.197"
    between = ClaudeBackend(binary=str(fake_claude(tmp_path / "mid", "2.1.300")))
    assert between.patterns.version == "2.1.197"


def test_backend_without_a_binary_uses_the_tested_version(tmp_path):
    b = ClaudeBackend(binary=str(tmp_path / "missing-claude"))
    assert b.patterns.version == TESTED_VERSION and b.detected_version is None


def test_explicit_overrides_win(tmp_path, monkeypatch):
    binary = str(fake_claude(tmp_path / "new", "2.1.332"))
    assert ClaudeBackend(cli_version="2.1.197", binary=binary).patterns.version == "2.1.197"
    monkeypatch.setenv("CCCI_CLAUDE_VERSION", "2.1.197")
    assert ClaudeBackend(binary=binary).patterns.version == "2.1.197"
    monkeypatch.setenv("CCCI_CLAUDE_VERSION", "2.1.332")
    assert ClaudeBackend(binary=str(tmp_path / "missing")).patterns.version == "2.1.332"
    monkeypatch.delenv("CCCI_CLAUDE_VERSION")
    b = ClaudeBackend(binary=binary)
    assert b.patterns.version == "2.1.332"
    b.use_cli_version("2.1.197")
    assert b.patterns.version == "2.1.197"
    b.use_cli_version(None)  # back to detection
    assert b.patterns.version == "2.1.332"


def test_overrides_survive_a_version_change(tmp_path):
    b = ClaudeBackend(binary=str(fake_claude(tmp_path / "new", "2.1.332")))
    b.set_overrides([{"id": "user.x", "state": "idle", "regex": "XYZZY", "scope": "screen", "source": "me"}], "test")
    b.use_cli_version("2.1.197")
    assert b.patterns.version == "2.1.197" and any(r.id == "user.x" for r in b.patterns.rules)


def test_launch_refreshes_the_version_from_the_agents_path(tmp_path, monkeypatch):
    monkeypatch.setattr(ClaudeBackend, "running_as_root", staticmethod(lambda: False))
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    fake_claude(old_dir, "2.1.197")
    fake_claude(new_dir, "2.1.332")
    b = ClaudeBackend()
    spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path, env={"PATH": str(old_dir)})
    b.launch(spec, None, SID, resume=False, prompt="p")
    assert b.patterns.version == "2.1.197" and b.detected_version == "2.1.197"
    spec2 = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path, env={"PATH": str(new_dir)})
    b.launch(spec2, None, SID, resume=True, prompt="")
    assert b.patterns.version == "2.1.332"
    assert runs(old_dir) == 1 and runs(new_dir) == 1
    b.launch(spec2, None, SID, resume=True, prompt="")  # cached: no second --version run
    assert runs(new_dir) == 1


def test_config_version_override(tmp_path):
    from ccci import config as config_mod

    (tmp_path / "ccci.toml").write_text(
        '[fleet]\nname = "f"\n[[agents]]\nname = "a"\nbackend = "claude"\nworkdir = "."\n'
        '[patterns.claude]\nversion = "2.1.332"\n')
    cfg = config_mod.load(tmp_path / "ccci.toml", environ={})
    assert cfg.pattern_versions == {"claude": "2.1.332"} and cfg.patterns == {"claude": []}
    (tmp_path / "ccci.toml").write_text(
        '[fleet]\nname = "f"\n[[agents]]\nname = "a"\nbackend = "claude"\nworkdir = "."\n'
        '[patterns.claude]\nversion = 2\n')
    with pytest.raises(Exception, match="patterns.claude.version"):
        config_mod.load(tmp_path / "ccci.toml", environ={})


def test_supervisor_applies_the_config_version(tmp_path):
    from ccci import config as config_mod
    from ccci.commands.init import render_config
    from ccci.plugins import get_plugin_manager
    from ccci.state import StateStore
    from ccci.supervisor import Supervisor

    for a in ("builder", "adversary"):
        (tmp_path / "work" / a).mkdir(parents=True)
    (tmp_path / "ccci.toml").write_text(render_config("v", "", "main", "claude")
                                        + '\n[patterns.claude]\nversion = "2.1.332"\n')
    cfg = config_mod.load(tmp_path, environ={})
    store = StateStore(cfg.state_dir)
    try:
        sup = Supervisor(cfg, get_plugin_manager(entrypoints=False), store, object())
        assert sup.backends["claude"].patterns.version == "2.1.332"
    finally:
        store.close()
