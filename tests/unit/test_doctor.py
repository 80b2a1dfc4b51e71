"""``ccci doctor`` with a stand-in CLI on PATH (a tiny script that prints a version), and
the version fields of ``ccci status --json``."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccci.backends.claude import ALSO_TESTED, TESTED_VERSION
from ccci.commands import cli
from ccci.commands.doctor import check_backend
from ccci.plugins import collect_backends, get_plugin_manager


def fake_cli(bindir: Path, name: str, body: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def fleet(tmp_path):
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "ccci.toml").write_text('[[agents]]\nname = "a"\nbackend = "claude"\n'
                                 '[[agents]]\nname = "s"\nbackend = "scripted"\n', encoding="utf-8")
    return d


def doctor(fleet_dir: Path, bindir: Path, *args: str):
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "CCCI_DISABLE_PLUGINS": ""}
    return CliRunner().invoke(cli.main, ["--fleet", str(fleet_dir), "doctor", *args], env=env)


def test_a_tested_claude_on_path(fleet, tmp_path):
    bindir = tmp_path / "bin"
    fake_cli(bindir, "claude", f'[ "$1" = --version ] && echo "{TESTED_VERSION} (Claude Code)"')
    res = doctor(fleet, bindir, "--json")
    assert res.exit_code == 0, res.output
    rows = {r["agent"]: r for r in json.loads(res.stdout)}
    a = rows["a"]
    assert a["backend"] == "claude" and a["executable"] == "claude" and a["path"] == str(bindir / "claude")
    assert a["version_output"] == f"{TESTED_VERSION} (Claude Code)" and a["version"] == TESTED_VERSION
    assert a["rules_version"] == TESTED_VERSION and a["tested"] is True and a["ok"] is True and a["advice"] == ""
    assert rows["s"]["executable"] is None and rows["s"]["ok"] is True  # the scripted agent is ccci's own
    text = doctor(fleet, bindir)
    assert text.exit_code == 0, text.output
    assert f"a (claude): {bindir / 'claude'} version {TESTED_VERSION}; rules for {TESTED_VERSION}; tested\n" \
        in text.stdout
    assert "advice" not in text.stdout


def test_an_untested_version_gets_one_line_of_advice(fleet, tmp_path):
    bindir = tmp_path / "bin"
    fake_cli(bindir, "claude", 'echo "2.1.400 (Claude Code)"')
    res = doctor(fleet, bindir, "--json")
    assert res.exit_code == 1
    a = next(r for r in json.loads(res.stdout) if r["agent"] == "a")
    assert a["version"] == "2.1.400" and a["tested"] is False and a["ok"] is False
    assert a["tested_versions"] == [TESTED_VERSION, *ALSO_TESTED]
    newest = max((TESTED_VERSION, *ALSO_TESTED), key=lambda v: tuple(int(x) for x in v.split(".")))
    assert a["rules_version"] == newest == "2.1.332"  # the nearest tested version not newer reads its screens
    assert f"pin it: npm install -g @anthropic-ai/claude-code@{TESTED_VERSION}," in a["advice"]
    assert "rules_drift" in a["advice"]
    text = doctor(fleet, bindir)
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("a (claude):"))
    assert lines[i].endswith("NOT tested") and lines[i + 1].startswith("  advice: claude 2.1.400 is not a version")


def test_a_missing_cli_and_a_version_printed_with_brackets_print_literally(fleet, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = doctor(fleet, empty, "--json")
    assert res.exit_code == 1
    a = next(r for r in json.loads(res.stdout) if r["agent"] == "a")
    assert a["path"] is None and a["version"] is None and a["tested"] is None
    assert a["advice"].startswith("claude is not on PATH; install it (npm install -g @anthropic-ai/claude-code@")
    assert "a (claude): claude not found on PATH; rules for" in doctor(fleet, empty).stdout
    bindir = tmp_path / "bin"
    fake_cli(bindir, "claude", 'echo "[bold]claude[/bold] :smile: dev build"')
    text = doctor(fleet, bindir)
    assert text.exit_code == 1
    assert "version [bold]claude[/bold] :smile: dev build;" in text.stdout  # no markup, no emoji code read
    assert "no version number in claude's answer '[bold]claude[/bold] :smile: dev build'" in text.stdout


def test_a_hanging_cli_is_given_up_after_the_timeout(fleet, tmp_path):
    bindir = tmp_path / "bin"
    fake_cli(bindir, "claude", "exec sleep 30")
    t0 = time.monotonic()
    res = doctor(fleet, bindir, "--json", "--timeout", "0.5")
    assert time.monotonic() - t0 < 10
    a = next(r for r in json.loads(res.stdout) if r["agent"] == "a")
    assert a["ok"] is False and a["advice"] == "`claude --version` did not answer within 0.5s"


def test_the_agents_own_path_is_searched(tmp_path):
    bindir = tmp_path / "agentbin"
    fake_cli(bindir, "claude", f'echo "{TESTED_VERSION}"')
    backend = collect_backends(get_plugin_manager(fleet_root=None))["claude"]
    row = check_backend(backend, "a", {"PATH": str(bindir)})
    assert row["path"] == str(bindir / "claude") and row["tested"] is True


def test_outside_a_fleet_every_backend_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli.main, ["doctor", "--json"], env={"PATH": str(empty), "CCCI_FLEET": None})
    rows = json.loads(res.stdout)
    assert {r["backend"] for r in rows} >= {"claude", "codex", "gemini", "opencode", "scripted"}
    assert all(r["agent"] is None for r in rows)


def test_status_json_names_the_rules_version_and_whether_it_is_tested(make_supervisor, tmp_path, monkeypatch):
    fake_cli(tmp_path / "bin", "claude", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ.get('PATH', '')}")
    sup = make_supervisor(agents=["a"], backend="claude")
    row = cli.status_rows(sup)[0]
    assert row["cli_version"] == TESTED_VERSION == row["rules_version"] and row["tested"] is True


def test_status_json_prefers_the_version_the_cli_recorded_at_launch(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ccci.backends.codex import TESTED_VERSION as CODEX_TESTED, CodexBackend
    from ccci.model import AgentSpec, Role

    sid = "01a2023b-d217-7183-93d8-730de81570f0"
    home = tmp_path / "home"
    spec = AgentSpec(name="c", role=Role.LOOP, backend="codex", workdir=tmp_path, env={"HOME": str(home)})
    cfg = SimpleNamespace(name="fleet", state_dir=tmp_path / "state")
    monkeypatch.delenv("CCCI_CODEX_VERSION", raising=False)
    backend = CodexBackend(binary=str(tmp_path / "no-codex"))  # no binary to ask: the pinned rules
    # no session file yet: the version the rules are for
    assert cli.version_fields(backend, spec, cfg, sid) == {
        "cli_version": CODEX_TESTED, "rules_version": CODEX_TESTED, "tested": True}
    day = home / ".codex" / "sessions" / "2026" / "12" / "02"
    day.mkdir(parents=True)
    meta = {"timestamp": "2026-12-02T04:00:00Z", "type": "session_meta",
            "payload": {"id": sid, "cwd": str(tmp_path), "cli_version": "0.171.2"}}
    (day / f"rollout-2026-12-02T04-00-00-{sid}.jsonl").write_text(json.dumps(meta) + "\n")
    assert backend.running_version(spec, cfg, sid) == "0.171.2"
    assert backend.running_version(spec, cfg, "../../etc") is None  # only UUIDs reach the glob
    assert cli.version_fields(backend, spec, cfg, sid) == {
        "cli_version": "0.171.2", "rules_version": CODEX_TESTED, "tested": False}
    assert [s.cli_version for s in CodexBackend.sessions(home / ".codex")] == ["0.171.2"]
