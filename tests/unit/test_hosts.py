"""[[hosts]] validation, this host's identity, the ssh argv and remote quoting, and the
deploy plan (the real ssh round trips are tests/multihost)."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.commands.hosts import deploy_steps, split_by_host
from ccci.config import ConfigError
from ccci.hosts import Hosts, remote_command
from ccci.service import watch_argv

BASE = """
[fleet]
name = "f"
[defaults]
backend = "scripted"
[[hosts]]
name = "box1"
ssh = "me@box1"
port = 2200
identity_file = "keys/id"
ssh_options = ["StrictHostKeyChecking=accept-new"]
fleet_dir = "/srv/fleet"
[[agents]]
name = "builder"
handoff_role = "builder"
[[agents]]
name = "adversary"
handoff_role = "adversary"
host = "box1"
"""


def load(tmp_path: Path, text: str = BASE, **env: str) -> config_mod.FleetConfig:
    (tmp_path / "ccci.toml").write_text(text)
    return config_mod.load(tmp_path, environ=env)


def test_agents_split_by_host(tmp_path):
    cfg = load(tmp_path)
    assert cfg.this_host == "local"
    assert [a.name for a in cfg.agents] == ["builder"]  # the watcher here supervises only these
    assert [a.name for a in cfg.all_agents] == ["builder", "adversary"]
    assert {h: [a.name for a in v] for h, v in cfg.remote_agents().items()} == {"box1": ["adversary"]}
    h = cfg.hosts["box1"]
    assert (h.port, h.identity_file, h.ssh_options) == (2200, str(tmp_path / "keys/id"), ("StrictHostKeyChecking=accept-new",))
    box = load(tmp_path, CCCI_HOST="box1")
    assert [a.name for a in box.agents] == ["adversary"]
    assert set(box.remote_agents()) == {"local"}
    assert split_by_host(cfg, ()) == (["builder"], {"box1": ["adversary"]})
    assert split_by_host(cfg, ("adversary",)) == ([], {"box1": ["adversary"]})
    with pytest.raises(ConfigError, match="no agent 'nope'"):
        split_by_host(cfg, ("nope",))


def test_this_host_from_the_file(tmp_path):
    cfg = load(tmp_path, BASE.replace('name = "f"', 'name = "f"\nthis_host = "box1"'))
    assert cfg.this_host == "box1" and [a.name for a in cfg.agents] == ["adversary"]


@pytest.mark.parametrize("edit, key, fix", [
    (('host = "box1"', 'host = "box2"'), "agents[1].host", "add [[hosts]] name = 'box2'"),
    (('name = "box1"', 'name = "local"'), "hosts[0].name", "rename it"),
    (('port = 2200', 'port = 70000'), "hosts[0].port", "1-65535"),
    (('port = 2200', 'port = "22"'), "hosts[0].port", "1-65535"),
    (('ssh = "me@box1"', 'ssh = "-oProxyCommand=x"'), "hosts[0].ssh", "ssh destination"),
    (('ssh = "me@box1"\n', ''), "hosts[0].ssh", "missing"),
    (('ssh_options = ["StrictHostKeyChecking=accept-new"]', 'ssh_options = "x"'), "hosts[0].ssh_options", "Key=Value"),
    (('port = 2200', 'prot = 2200'), "hosts[0].prot", "unknown key"),
    (('fleet_dir = "/srv/fleet"', 'fleet_dir = "-x"'), "hosts[0].fleet_dir", "give a path"),
])
def test_bad_hosts_are_one_line(tmp_path, edit, key, fix):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, BASE.replace(*edit))
    msg = str(exc.value)
    assert "\n" not in msg and f"ccci.toml: {key}:" in msg and fix in msg


def test_unknown_identity_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, CCCI_HOST="box9")
    assert "CCCI_HOST (or ccci --host): 'box9' is not a host of this fleet; use one of local, box1" in str(exc.value)


def test_ssh_argv_and_remote_quoting(tmp_path):
    cfg = load(tmp_path)
    argv = Hosts(cfg).ssh_argv("box1", Hosts(cfg).ccci_words("box1", ["send", "adversary", "it's $(rm -rf ~); `x`"]))
    assert argv[0] == "ssh" and argv[-3:-1] == ["--", "me@box1"]
    for opt in ("BatchMode=yes", "ConnectTimeout=5", "ControlMaster=auto", "ControlPersist=60",
                "StrictHostKeyChecking=accept-new", "IdentitiesOnly=yes"):
        assert opt in argv
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-i") + 1] == str(tmp_path / "keys/id")
    control = next(a for a in argv if a.startswith("ControlPath="))
    assert control.endswith("/%C") and len(control) < 100
    # the remote shell reads the words back exactly (a leading ~/ is the remote $HOME)
    words = shlex.split(argv[-1].replace('"$HOME"', "/home/me"))
    assert words == ["/home/me/.local/share/ccci/venv/bin/ccci", "--fleet", "/srv/fleet", "--host", "box1", "--local",
                     "send", "adversary", "it's $(rm -rf ~); `x`"]
    out = subprocess.run(["sh", "-c", remote_command(["printf", "%s|", "a b", "$(x)", "~/y"])],
                         capture_output=True, text=True, env={"HOME": "/h"}).stdout
    assert out == "a b|$(x)|/h/y|"


def test_unreachable_is_a_reply_not_an_exception(tmp_path):
    cfg = load(tmp_path, BASE.replace('ssh = "me@box1"', 'ssh = "me@127.0.0.1"').replace("port = 2200", "port = 1")
               .replace('fleet_dir = "/srv/fleet"', 'fleet_dir = "/srv/fleet"\nconnect_timeout = 2\ntimeout = 10'))
    data, r = Hosts(cfg).ccci_json("box1", ["status", "--json"])
    assert data is None and not r.ok and r.code is None
    assert r.error.startswith("box1: unreachable (") and "\n" not in r.error
    box = load(tmp_path, CCCI_HOST="box1")
    assert Hosts(box).ccci("local", ["status"]).error.startswith("local: not a [[hosts]] entry")


def test_deploy_plan(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "adversary.md").write_text("review\n")
    cfg = load(tmp_path, BASE.replace('host = "box1"', 'host = "box1"\nprompt_file = "prompts/adversary.md"'))
    steps = deploy_steps(cfg, "box1", "ccci-0.1.0-py3-none-any.whl", pip_args=["--no-deps"], service=True, scope="user")
    what = [s[0] for s in steps]
    assert what == ["make the venv", "send the wheel", "install ccci", "make the fleet directory", "send ccci.toml",
                    "send prompts/adversary.md", "install the watcher service"]
    assert steps[2][1][:4] == ["~/.local/share/ccci/venv/bin/python", "-m", "pip", "install"]
    assert "--no-deps" in steps[2][1] and steps[2][1][-1] == "~/.local/share/ccci/ccci-0.1.0-py3-none-any.whl"
    assert steps[1][1][-1] == steps[2][1][-1] and steps[1][2] == "WHEEL"
    assert steps[4][2] == str(cfg.path) and steps[5][1][-1] == "/srv/fleet/prompts/adversary.md"
    assert steps[-1][1][-5:] == ["--host", "box1", "service", "install", "--user"]


def test_service_unit_of_a_host_runs_its_watcher(tmp_path):
    assert "--host" not in watch_argv(load(tmp_path))
    argv = watch_argv(load(tmp_path, CCCI_HOST="box1"))
    assert argv[argv.index("--host") + 1] == "box1" and argv[-2:] == ["watch", "--quiet"]


def _cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(tmp_path), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200", **(env or {})})


UNREACHABLE = BASE.replace('ssh = "me@box1"', 'ssh = "me@127.0.0.1"').replace("port = 2200", "port = 1").replace(
    'name = "f"', 'name = "f"\ntmux_socket = "ccci-unit-hosts-%d"' % __import__("os").getpid()).replace(
    'fleet_dir = "/srv/fleet"', 'fleet_dir = "/srv/fleet"\nconnect_timeout = 2\ntimeout = 10')


def test_status_with_a_host_down_is_one_row(tmp_path):
    (tmp_path / "ccci.toml").write_text(UNREACHABLE)
    r = _cli(tmp_path, "status", "--json")
    rows = json.loads(r.stdout)
    assert [(x["host"], x["name"], x["state"]) for x in rows] == [("local", "builder", "exited"),
                                                                  ("box1", None, "unreachable")], r.stderr
    assert rows[1]["error"].startswith("box1: unreachable (")
    r = _cli(tmp_path, "status")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert [ln for ln in r.stdout.splitlines() if "unreachable" in ln][0].startswith("│ box1")
    assert sum("unreachable" in ln for ln in r.stdout.splitlines()) == 1
    r = _cli(tmp_path, "--local", "status", "--json")  # --local: no other host is asked
    assert [x["name"] for x in json.loads(r.stdout)] == ["builder"]
    r = _cli(tmp_path, "send", "--timeout", "1", "adversary", "hi")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "unreachable: box1: unreachable (" in r.stderr
    r = _cli(tmp_path, "hosts", "status", "--json")
    assert r.returncode == 1 and [(h["host"], h["reachable"]) for h in json.loads(r.stdout)] == [("local", True),
                                                                                               ("box1", False)]


def test_attach_to_another_hosts_agent_goes_through_ssh_t(tmp_path):
    (tmp_path / "ccci.toml").write_text(BASE)
    argv = json.loads(_cli(tmp_path, "attach", "adversary", "-r", "--print").stdout)
    assert argv[0] == "ssh" and "-t" in argv and argv[-2] == "me@box1"
    assert shlex.split(argv[-1].replace('"$HOME"', "/h"))[-3:] == ["attach", "adversary", "-r"]
    r = _cli(tmp_path, "attach", "nobody", "--print")
    assert r.returncode == 2 and "no agent 'nobody'" in r.stderr


def test_secrets_of_every_hosts_agents_are_redacted(tmp_path):
    from ccci.redact import collect_secrets

    text = BASE.replace('host = "box1"', 'host = "box1"\nenv = { API_TOKEN = "tok-of-box1-agent" }')
    cfg = load(tmp_path, text)
    assert [a.name for a in cfg.agents] == ["builder"]
    assert "tok-of-box1-agent" in collect_secrets(cfg, environ={})
