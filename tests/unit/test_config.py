"""ccci.toml validation: every kind of bad input is one line naming the file and the key;
CCCI_BACKEND / CCCI_MODEL override the defaults."""
from __future__ import annotations

import textwrap

import pytest

from ccci import config as config_mod
from ccci.config import ConfigError

GOOD_AGENT = '[[agents]]\nname = "a"\n'


def load_text(tmp_path, text, environ=None):
    path = tmp_path / "ccci.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return config_mod.load(path, environ={} if environ is None else environ), path


def config_error(tmp_path, text) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    msg = str(info.value)
    return msg, str((tmp_path / "ccci.toml").resolve())


BAD = {
    "unknown top-level key": ('[fleeet]\nname = "x"\n' + GOOD_AGENT, "fleeet"),
    "unknown agent key": ('[[agents]]\nname = "a"\nmodle = "opus"\n', "agents[0].modle"),
    "unknown threshold": ('[checks]\nstall_idel = 30\n' + GOOD_AGENT, "checks.stall_idel"),
    "unknown per-agent threshold": ('[[agents]]\nname = "a"\n[agents.checks]\nstall_idel = 30\n', "agents[0].checks.stall_idel"),
    "bad role": ('[[agents]]\nname = "a"\nrole = "lop"\n', "agents[0].role"),
    "duplicate agent name": (GOOD_AGENT + '[[agents]]\nname = "b"\n' + GOOD_AGENT, "agents[2].name"),
    "bad agent name": ('[[agents]]\nname = "Has Spaces"\n', "agents[0].name"),
    "missing agent name": ('[[agents]]\nrole = "loop"\n', "agents[0].name"),
    "threshold is a string": ('[checks]\nstall_idle = "300"\n' + GOOD_AGENT, "checks.stall_idle"),
    "threshold is a bool": ('[checks]\nfailure_threshold = true\n' + GOOD_AGENT, "checks.failure_threshold"),
    "negative threshold": ('[checks]\nstall_grace = -1\n' + GOOD_AGENT, "checks.stall_grace"),
    "per-agent threshold type": ('[[agents]]\nname = "a"\n[agents.checks]\nstall_idle = "x"\n', "agents[0].checks.stall_idle"),
    "handoff names no agent": (
        GOOD_AGENT + '[[handoff]]\nprefix = "claim("\nto = "advesary"\n', "handoff[0].to"),
    "handoff without prefix": (GOOD_AGENT + '[[handoff]]\nto = "a"\n', "handoff[0].prefix"),
    "fleet name": ('[fleet]\nname = "Bad Name"\n' + GOOD_AGENT, "fleet.name"),
    "tick too small": ('[fleet]\ntick_seconds = 0.001\n' + GOOD_AGENT, "fleet.tick_seconds"),
    "git origin type": ('[git]\norigin = 5\n' + GOOD_AGENT, "git.origin"),
    "agents not an array": ('agents = "a"\n', "agents"),
    "env not strings": ('[[agents]]\nname = "a"\nenv = {X = 1}\n', "agents[0].env"),
}


@pytest.mark.parametrize("text,key", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_one_line_naming_file_and_key(tmp_path, text, key):
    msg, path = config_error(tmp_path, text)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}: "), msg


def test_invalid_toml_is_one_line_naming_file_key_and_line(tmp_path):
    msg, path = config_error(tmp_path, '[[agents]]\nname = "a"\nrole = \n')
    assert "\n" not in msg
    assert msg.startswith(f"{path}: agents.role: invalid TOML at line 3") and "fix" in msg


def test_invalid_toml_in_a_table_header_names_the_table(tmp_path):
    msg, path = config_error(tmp_path, '[checks\nstall_idle = 3\n')
    assert msg.startswith(f"{path}: checks: invalid TOML at line 1") and "\n" not in msg


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_mod.load(tmp_path / "nope" / "ccci.toml")
    assert "\n" not in str(info.value) and "ccci init" in str(info.value)


def test_good_config_loads_with_defaults(tmp_path):
    cfg, path = load_text(tmp_path, '''
        [fleet]
        name = "demo"
        [checks]
        stall_idle = 120
        [[agents]]
        name = "builder"
        handoff_role = "builder"
        [agents.checks]
        stall_idle = 60
        [[agents]]
        name = "adversary"
        role = "job"
        backend = "scripted"
    ''')
    assert cfg.path == path.resolve() and cfg.name == "demo"
    assert cfg.state_dir == tmp_path.resolve() / ".ccci"
    assert [a.name for a in cfg.agents] == ["builder", "adversary"]
    assert cfg.agents[0].workdir == tmp_path.resolve() / "work" / "builder"
    assert cfg.settings_for("builder")["stall_idle"] == 60
    assert cfg.settings_for("adversary")["stall_idle"] == 120
    assert cfg.settings_for(None)["stall_grace"] == config_mod.DEFAULT_CHECKS["stall_grace"]
    assert cfg.session_name("builder") == "ccci-demo-builder"


def test_ccci_backend_and_model_override_the_defaults(tmp_path):
    text = '''
        [defaults]
        backend = "claude"
        model = "opus"
        [[agents]]
        name = "a"
        [[agents]]
        name = "b"
        backend = "claude"
        model = "sonnet"
    '''
    cfg, _ = load_text(tmp_path, text)
    assert [(a.backend, a.model) for a in cfg.agents] == [("claude", "opus"), ("claude", "sonnet")]
    cfg, _ = load_text(tmp_path, text, environ={"CCCI_BACKEND": "scripted", "CCCI_MODEL": "haiku"})
    # the environment replaces [defaults]; an agent naming its own keeps it
    assert [(a.backend, a.model) for a in cfg.agents] == [("scripted", "haiku"), ("claude", "sonnet")]


def test_environment_is_read_when_not_given(tmp_path, monkeypatch):
    (tmp_path / "ccci.toml").write_text(GOOD_AGENT)
    monkeypatch.setenv("CCCI_BACKEND", "scripted")
    monkeypatch.setenv("CCCI_MODEL", "tiny")
    cfg = config_mod.load(tmp_path)
    assert (cfg.agents[0].backend, cfg.agents[0].model) == ("scripted", "tiny")


def test_fleet_config_fixture_writes_a_loadable_file(fleet_config, tmp_path):
    cfg = fleet_config(agents=["a", {"name": "b", "role": "job", "options": {"turn_seconds": 0.5}}],
                       checks={"failure_threshold": 3}, git={"origin": "origin.git", "fetch_interval": 2})
    assert cfg.path == (tmp_path / "ccci.toml").resolve()
    assert [a.name for a in cfg.agents] == ["a", "b"]
    assert all(a.workdir.is_dir() and a.backend == "scripted" for a in cfg.agents)
    assert cfg.agents[1].options == {"turn_seconds": 0.5}
    assert cfg.checks["failure_threshold"] == 3
    assert cfg.git.origin == str((tmp_path / "origin.git").resolve()) and cfg.git.fetch_interval == 2
    with pytest.raises(ConfigError, match=r"agents\[0\]\.role"):
        fleet_config(agents=[{"name": "a", "role": "lop"}])
