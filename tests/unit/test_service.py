"""``ccci service``: the systemd unit (checked by ``systemd-analyze verify``), the launchd
plist's content, ``install --dry-run`` on a scaffolded fleet, the notifier's no-op mode."""
from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccci import config as config_mod
from ccci import service
from ccci.commands.cli import main
from ccci.commands.init import init_fleet


@pytest.fixture
def cfg(tmp_path):
    init_fleet(tmp_path / "my 100% fleet", name="demo-1")
    return config_mod.load(tmp_path / "my 100% fleet")


def _analyze_verify(unit_text: str, tmp_path: Path, user: bool) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/setup does it)")
    d = tmp_path / "units"
    d.mkdir()
    unit = d / "ccci-test.service"
    unit.write_text(unit_text)
    env = dict(os.environ)
    if user:
        # 'systemd-analyze --user' wants a runtime directory even when no user manager runs
        rt = tmp_path / "rt"
        rt.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(rt)
    r = subprocess.run([exe, *(["--user"] if user else []), "verify", str(unit)], capture_output=True, text=True,
                       env=env, timeout=60)
    if r.returncode != 0 and "Failed to initialize manager" in r.stderr:
        pytest.skip(f"systemd-analyze cannot run in this container: {r.stderr.strip()[:200]}")
    return r


@pytest.mark.parametrize("scope", ["user", "system"])
def test_the_unit_passes_systemd_analyze_verify(cfg, tmp_path, scope):
    text = service.systemd_unit(cfg, scope, user="root" if scope == "system" else None)
    r = _analyze_verify(text, tmp_path, user=scope == "user")
    # verify exits 0 on settings it ignores: any line about our file is a failure
    assert r.returncode == 0 and "ccci-test.service" not in r.stderr + r.stdout, r.stderr + r.stdout


def test_systemd_analyze_verify_does_catch_a_bad_setting(cfg, tmp_path):
    r = _analyze_verify(service.systemd_unit(cfg).replace("KillMode=process", "KillMode=nonsense"), tmp_path, True)
    assert "ccci-test.service" in r.stderr and "kill mode" in r.stderr


def test_unit_content(cfg):
    text = service.systemd_unit(cfg, "user", python="/opt/py 3/bin/python", path_env="/a b:/usr/bin")
    lines = text.splitlines()
    for want in ("Type=notify", "NotifyAccess=main", f"WatchdogSec={service.WATCHDOG_S}", "Restart=on-failure",
                 "KillMode=process", "WantedBy=default.target", "Environment=\"PATH=/a b:/usr/bin\""):
        assert want in lines, (want, text)
    exec_start = next(ln for ln in lines if ln.startswith("ExecStart="))
    # blanks quoted, the directory's % is no systemd specifier
    root = str(cfg.root).replace("%", "%%")
    assert exec_start == (f'ExecStart="/opt/py 3/bin/python" -m ccci --fleet "{root}" watch --quiet')
    assert "Description=ccci watcher of fleet demo-1" in lines
    assert not any(ln.startswith("User=") for ln in lines)
    system = service.systemd_unit(cfg, "system", user="ccci").splitlines()
    assert "User=ccci" in system and "WantedBy=multi-user.target" in system


def test_launchd_plist_content(cfg):
    raw = service.launchd_plist(cfg, "user", python="/usr/local/bin/python3", path_env="/usr/local/bin:/usr/bin")
    assert raw.startswith(b"<?xml")
    d = plistlib.loads(raw)
    assert d["Label"] == "io.ccci.ccci-demo-1"
    assert d["ProgramArguments"] == ["/usr/local/bin/python3", "-m", "ccci", "--fleet", str(cfg.root), "watch", "--quiet"]
    assert d["WorkingDirectory"] == str(cfg.root)
    assert d["RunAtLoad"] is True
    assert d["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a failure only
    assert d["EnvironmentVariables"]["PATH"] == "/usr/local/bin:/usr/bin"
    assert d["StandardOutPath"] == d["StandardErrorPath"] == str(cfg.state_dir / "watcher.log")
    t = service.target(cfg, "user", "launchd")
    assert t.path == Path.home() / "Library/LaunchAgents/io.ccci.ccci-demo-1.plist"
    assert service.target(cfg, "system", "launchd").path == Path("/Library/LaunchDaemons/io.ccci.ccci-demo-1.plist")


def test_targets_on_linux(cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    t = service.target(cfg, "user", "systemd")
    assert t.name == "ccci-demo-1.service" and t.path == tmp_path / "xdg/systemd/user/ccci-demo-1.service"
    assert service.target(cfg, "system", "systemd").path == Path("/etc/systemd/system/ccci-demo-1.service")
    with pytest.raises(service.ServiceError):
        service.target(cfg, "everyone")


@pytest.mark.skipif(sys.platform == "darwin", reason="the Linux path")
def test_install_dry_run_prints_the_unit_and_writes_nothing(cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    r = CliRunner().invoke(main, ["--fleet", str(cfg.root), "service", "install", "--user", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "Type=notify" in r.output and f"WatchdogSec={service.WATCHDOG_S}" in r.output
    assert not (tmp_path / "xdg").exists()


def test_notifier_without_notify_socket_does_nothing():
    n = service.ServiceNotifier({})
    assert not n.enabled
    n.tick_done("fleet x")
    n.stopping("bye")
    n.close()
