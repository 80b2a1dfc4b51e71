"""Which pattern file reads a Codex CLI pane: the version the binary reports
(``codex --version`` prints ``codex-cli 0.171.0``, cached per binary file), the nearest
tested version not newer than it, else the newest; explicit overrides (constructor,
``use_cli_version``, ``$CCCI_CODEX_VERSION``, ``[patterns.codex] version``) win (issue 12)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ccci.backends import versions as versions_mod
from ccci.backends.codex import (ALSO_TESTED, TESTED_VERSION, CodexBackend, binary_version,
                                 pattern_version_for)
from ccci.model import AgentSpec, Role
from ccci.patterns import PATTERN_DIR

CONFIG = None  # launch() reads state_dir from the config only for the session hook


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("CCCI_CODEX_VERSION", raising=False)
    monkeypatch.setattr(versions_mod, "_VERSION_CACHE", {})


def fake_codex(directory: Path, version: str, name: str = "codex") -> Path:
    """A stand-in ``codex`` that prints ``codex-cli <version>`` and counts its runs."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho run >> '{directory}/runs'\n"
                    f"[ \"$1\" = --version ] && echo 'codex-cli {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def runs(directory: Path) -> int:
    f = directory / "runs"
    return len(f.read_text().splitlines()) if f.exists() else 0


def test_both_tested_versions_ship_a_pattern_file_and_recorded_screens():
    assert TESTED_VERSION == "0.171.0" and ALSO_TESTED == ("0.169.0",)
    assert CodexBackend().versions_tested() == ("0.171.0", "0.169.0")
    golden = Path(__file__).resolve().parents[1] / "golden"
    for v in (TESTED_VERSION, *ALSO_TESTED):
        assert (PATTERN_DIR / f"codex-{v}.toml").is_file()
        assert (golden / f"codex-{v}" / "LABELS.toml").is_file()


@pytest.mark.parametrize("cli,chosen", [
    ("0.169.0", "0.169.0"),
    ("0.170.3", "0.169.0"),   # between two tested versions: the older one
    ("0.171.0", "0.171.0"),
    ("0.171.2", "0.171.0"),
    ("0.180.0", "0.171.0"),   # newer than every tested version: the newest
    ("0.100.0", "0.171.0"),   # older than every tested version: the newest
    (None, TESTED_VERSION),   # unknown
])
def test_nearest_tested_version_not_newer(cli, chosen):
    assert pattern_version_for(cli) == chosen


def test_binary_version_parses_and_caches_per_binary(tmp_path):
    d = tmp_path / "bin"
    b = fake_codex(d, "0.171.0")
    assert binary_version(str(b)) == "0.171.0"
    assert binary_version(str(b)) == "0.171.0"
    assert runs(d) == 1  # cached
    assert binary_version("codex", path=str(d)) == "0.171.0"  # found on a PATH value
    assert runs(d) == 1
    b.write_text(b.read_text().replace("0.171.0", "0.171.5") + "\n")  # upgraded in place
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    assert binary_version(str(b)) == "0.171.5"
    assert runs(d) == 2


def test_binary_version_missing_or_silent(tmp_path):
    assert binary_version("codex", path=str(tmp_path)) is None
    assert binary_version(str(tmp_path / "nope")) is None
    assert binary_version(str(fake_codex(tmp_path / "quiet", "no version here"))) is None


def test_backend_detects_the_binarys_version(tmp_path):
    b = CodexBackend(binary=str(fake_codex(tmp_path / "new", "0.171.0")))
    assert b.patterns.version == "0.171.0" and b.detected_version == "0.171.0"
    assert CodexBackend(binary=str(fake_codex(tmp_path / "old", "0.169.0"))).patterns.version == "0.169.0"
    assert CodexBackend(binary=str(fake_codex(tmp_path / "mid", "0.170.0"))).patterns.version == "0.169.0"


def test_backend_without_a_binary_uses_the_tested_version(tmp_path):
    b = CodexBackend(binary=str(tmp_path / "missing-codex"))
    assert b.patterns.version == TESTED_VERSION and b.detected_version is None


def test_explicit_overrides_win(tmp_path, monkeypatch):
    binary = str(fake_codex(tmp_path / "new", "0.171.0"))
    assert CodexBackend(cli_version="0.169.0", binary=binary).patterns.version == "0.169.0"
    monkeypatch.setenv("CCCI_CODEX_VERSION", "0.169.0")
    assert CodexBackend(binary=binary).patterns.version == "0.169.0"
    monkeypatch.delenv("CCCI_CODEX_VERSION")
    b = CodexBackend(binary=binary)
    assert b.patterns.version == "0.171.0"
    b.use_cli_version("0.169.0")
    assert b.patterns.version == "0.169.0"
    b.use_cli_version(None)  # back to detection
    assert b.patterns.version == "0.171.0"


def test_overrides_survive_a_version_change(tmp_path):
    b = CodexBackend(binary=str(fake_codex(tmp_path / "new", "0.171.0")))
    b.set_overrides([{"id": "user.x", "state": "idle", "regex": "XYZZY", "scope": "screen", "source": "me"}], "test")
    b.use_cli_version("0.169.0")
    assert b.patterns.version == "0.169.0" and any(r.id == "user.x" for r in b.patterns.rules)


def test_launch_refreshes_the_version_from_the_agents_path(tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    fake_codex(old_dir, "0.169.0")
    fake_codex(new_dir, "0.171.0")
    b = CodexBackend()
    spec = AgentSpec(name="a", role=Role.LOOP, backend="codex", workdir=tmp_path, env={"PATH": str(old_dir)})
    b.launch(spec, CONFIG, "handle", resume=False, prompt="p")
    assert b.patterns.version == "0.169.0" and b.detected_version == "0.169.0"
    spec2 = AgentSpec(name="a", role=Role.LOOP, backend="codex", workdir=tmp_path, env={"PATH": str(new_dir)})
    b.launch(spec2, CONFIG, "handle", resume=True, prompt="")
    assert b.patterns.version == "0.171.0"
    assert runs(old_dir) == 1 and runs(new_dir) == 1
    b.launch(spec2, CONFIG, "handle", resume=True, prompt="")  # cached: no second --version run
    assert runs(new_dir) == 1


def test_supervisor_applies_the_config_version(tmp_path):
    from ccci import config as config_mod
    from ccci.commands.init import render_config
    from ccci.plugins import get_plugin_manager
    from ccci.state import StateStore
    from ccci.supervisor import Supervisor

    for a in ("builder", "adversary"):
        (tmp_path / "work" / a).mkdir(parents=True)
    (tmp_path / "ccci.toml").write_text(render_config("v", "", "main", "codex")
                                        + '\n[patterns.codex]\nversion = "0.169.0"\n')
    cfg = config_mod.load(tmp_path, environ={})
    store = StateStore(cfg.state_dir)
    try:
        sup = Supervisor(cfg, get_plugin_manager(entrypoints=False), store, object())
        assert sup.backends["codex"].patterns.version == "0.169.0"
    finally:
        store.close()
