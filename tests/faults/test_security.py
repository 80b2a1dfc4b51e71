"""Scenario 11, security rules that hold for the whole package: no shell=True anywhere,
secrets (environment, agents' ``env``) never reach the event log, the watcher's output
or notifications, state files are private (directory 0700, files 0600)."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.commands.init import render_config
from ccci.plugins import get_plugin_manager
from ccci.state import StateStore
from ccci.redact import collect_secrets
from ccci.supervisor import Supervisor

PKG = Path(__file__).resolve().parents[2] / "ccci"
pytestmark = [pytest.mark.faults]


def test_no_subprocess_call_uses_shell_true(trials):
    t = trials("11", "Security")
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
    t.trial()
    t.note(f"AST scan: {len(list(PKG.rglob('*.py')))} modules of ccci/")
    assert offenders == []
    t.check("no subprocess call in ccci/ uses shell=True, os.system or os.popen (AST scan of every module)")


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


def test_secrets_from_environment_and_agent_env_are_redacted(tmp_path, monkeypatch, trials):
    t = trials("11", "Security")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    cfg = _fleet(tmp_path, 'GITHUB_TOKEN = "ghp_supersecretvalue42"')
    assert "ghp_supersecretvalue42" in collect_secrets(cfg)
    store = StateStore(cfg.state_dir)
    sup = Supervisor(cfg, get_plugin_manager(entrypoints=False), store, _NoTmux())
    sup.emit("finding", "key sk-ant-test-0123456789abcdef and token ghp_supersecretvalue42 leaked", agent="builder")
    dump = "\n".join(f"{e['message']} {e['data']}" for e in store.events())
    assert "sk-ant-test-0123456789abcdef" not in dump and "ghp_supersecretvalue42" not in dump
    assert "***" in dump
    t.trial()
    t.check("secrets from the environment and from agents' env are redacted in events (unit)")


def test_state_directory_and_database_are_private(tmp_path, trials):
    t = trials("11", "Security")
    cfg = _fleet(tmp_path)
    store = StateStore(cfg.state_dir)
    store.put("x", "y")  # makes SQLite create its -wal/-shm files
    assert stat.S_IMODE(os.stat(cfg.state_dir).st_mode) == 0o700
    for f in cfg.state_dir.iterdir():
        if f.is_file():
            assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f"{f.name} is readable by others"
    t.trial()
    t.check("state directory 0700, state.db and its -wal/-shm 0600")


API_KEY, TOKEN = "sk-ant-fault-0123456789abcdef", "ghp_faultsecret987654321"


@pytest.mark.tmux
@pytest.mark.slow
def test_secrets_never_leave_a_real_fleet(make_fleet, trials, tmp_path):
    import signal
    import sys

    from ccci.testing.fleet import push_commit

    t = trials("11", "Security")
    notified = tmp_path / "notified.jsonl"
    fleet = make_fleet(checks={"restart_intensity": 1, "backoff_initial": 0}, agents={"env": {"GITHUB_TOKEN": TOKEN}})
    with open(fleet.root / "ccci.toml", "a") as fh:
        fh.write(f"\n[notify]\ncommand = [{sys.executable!r}, \"-c\", "
                 f"\"import sys; open({str(notified)!r}, 'a').write(sys.stdin.read() + chr(10))\"]\n"
                 f"events = [\"escalation\", \"ping_queued\", \"message_delivered\", \"finding\", \"remedy\"]\n")
    w = fleet.watch(env={"ANTHROPIC_API_KEY": API_KEY})  # not --quiet: every event is echoed on stderr
    assert fleet.wait(lambda: fleet.events("message_delivered", "builder"), 40)
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    sha = push_commit(fleet, tmp_path, f"claim(leak): works with {API_KEY} and {TOKEN}")
    assert fleet.wait(lambda: [e for e in fleet.events("message_delivered", "adversary") if "claim(leak)" in e["message"]], 30)
    for _ in range(2):  # restart_intensity 1: the second death escalates
        old = fleet.wait(lambda: fleet.store.agent("adversary").state == "running" and fleet.live_pid("adversary"), 15)
        os.kill(old, signal.SIGKILL)
        fleet.wait(lambda: (p := fleet.live_pid("adversary")) and p != old, 5)
    assert fleet.wait(lambda: fleet.events("escalation", "adversary"), 15)
    assert fleet.wait(lambda: notified.exists() and "escalation" in notified.read_text(), 10)
    w.terminate()
    w.wait(10)
    places = {
        "event log": "\n".join(f"{e['message']} {e['data']}" for e in fleet.events()),
        "watcher output": fleet.watcher_output(0),
        "notifications": notified.read_text(),
    }
    for where, text in places.items():
        assert API_KEY not in text and TOKEN not in text, f"a secret leaked into the {where}"
        t.trial()
    assert "***" in places["event log"] and sha[:10] in places["event log"]
    assert "***" in places["watcher output"]
    t.check("real fleet: an API key in the watcher's environment and a token in an agent's env, both in a "
            "pinged commit subject, never appear in the event log, the watcher's output or notifications")
