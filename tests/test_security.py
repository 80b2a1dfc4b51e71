"""Security rules that hold for the whole package: no shell=True anywhere, secrets never
reach the event log, state files are private."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

from ccci import config as config_mod
from ccci.fleet import render_config
from ccci.plugins import get_plugin_manager
from ccci.state import StateStore
from ccci.supervisor import Supervisor, collect_secrets

PKG = Path(__file__).resolve().parents[1] / "ccci"


def test_no_subprocess_call_uses_shell_true():
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        offenders.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("system", "popen") and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "os":
                    offenders.append(f"{path.relative_to(PKG.parent)}:{node.lineno} os.{name}")
    assert offenders == []


class _NoTmux:
    calls = 0

    def list_panes(self):
        return {}


def _fleet(tmp_path, env_line=""):
    (tmp_path / "work" / "builder").mkdir(parents=True)
    (tmp_path / "work" / "adversary").mkdir(parents=True)
    (tmp_path / "ccci.toml").write_text(render_config("sec", "", "main", "scripted") +
                                        (f"\n[agents.env]\n{env_line}\n" if env_line else ""))
    return config_mod.load(tmp_path, environ={})


def test_secrets_from_environment_and_agent_env_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    cfg = _fleet(tmp_path, 'GITHUB_TOKEN = "ghp_supersecretvalue42"')
    assert "ghp_supersecretvalue42" in collect_secrets(cfg)
    store = StateStore(cfg.state_dir)
    sup = Supervisor(cfg, get_plugin_manager(entrypoints=False), store, _NoTmux())
    sup.emit("finding", "key sk-ant-test-0123456789abcdef and token ghp_supersecretvalue42 leaked", agent="builder")
    dump = "\n".join(f"{e['message']} {e['data']}" for e in store.events())
    assert "sk-ant-test-0123456789abcdef" not in dump and "ghp_supersecretvalue42" not in dump
    assert "***" in dump


def test_state_directory_and_database_are_private(tmp_path):
    cfg = _fleet(tmp_path)
    store = StateStore(cfg.state_dir)
    store.put("x", "y")  # makes SQLite create its -wal/-shm files
    assert stat.S_IMODE(os.stat(cfg.state_dir).st_mode) == 0o700
    for f in cfg.state_dir.iterdir():
        if f.is_file():
            assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f"{f.name} is readable by others"
