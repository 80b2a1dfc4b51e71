"""ccci's pytest plugin as a plugin author meets it: the fixtures, the fakes, and loading
the plugin with or without pytest's entry-point autoloading."""
from __future__ import annotations

from pathlib import Path

import pytest

from ccci.clock import FakeClock
from ccci.model import PaneInfo
from ccci.supervisor import Supervisor
from ccci.testing.fakes import FAKE_PID_BASE, FakePane, FakeTmux, GitOrigin
from ccci.tmux import TmuxError

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"


# --------------------------------------------------------------------------- the fakes


def test_fake_pane_typing_and_enter():
    got = []
    pane = FakePane("s", "%1", FAKE_PID_BASE, screen="header")
    pane.on_submit = lambda p, text: got.append(text)
    assert pane.capture().splitlines()[-1] == "> "
    pane.type("hello")
    pane.type(" world")
    assert pane.capture().splitlines()[-1] == "> hello world"
    pane.press("BSpace")
    pane.press("Enter")
    assert pane.submitted == got == ["hello worl"]
    assert pane.input == "" and "» hello worl" in pane.capture()
    pane.type("draft")
    pane.press("C-u")
    assert pane.input == ""
    pane.press("Enter")  # empty box: nothing submitted
    assert pane.submitted == ["hello worl"]
    assert pane.keys == ["BSpace", "Enter", "C-u", "Enter"]


def test_fake_pane_changes_are_visible_in_pane_info():
    pane = FakePane("s", "%1", FAKE_PID_BASE)
    before = pane.info().change_key()
    pane.busy(3)
    assert pane.capture().endswith("working… (3s)")
    assert pane.info().change_key() != before
    pane.kill(signal=9)
    info = pane.info()
    assert info.dead and info.dead_signal == 9 and info.dead_status is None
    assert pane.capture().splitlines()[-1] == "Pane is dead (signal 9)"


def test_fake_tmux_implements_the_tmux_methods_the_supervisor_uses():
    real = {n for n in vars(__import__("ccci.tmux", fromlist=["Tmux"]).Tmux) if not n.startswith("_")}
    fake = {n for n in dir(FakeTmux) if not n.startswith("_")}
    assert real - {"server"} <= fake


def test_fake_tmux_sessions(tmp_path):
    t = FakeTmux()
    info = t.new_session("ccci-x-a", ["/usr/bin/agent", "--flag"], tmp_path, {"K": "v"})
    assert isinstance(info, PaneInfo) and info.pid >= FAKE_PID_BASE
    with pytest.raises(TmuxError):
        t.new_session("ccci-x-a", ["agent"], None, {})
    assert t.has_session("ccci-x-a") and not t.has_session("ccci-x")
    pane = t.pane("a")
    assert pane.argv == ["/usr/bin/agent", "--flag"] and pane.env == {"K": "v"} and pane.cwd == tmp_path
    assert t.list_panes()["ccci-x-a"].current_command == "agent"
    t.send_literal(info.pane_id, "hi;")
    t.send_key(info.pane_id, "Enter")
    assert pane.submitted == ["hi;"]
    assert t.capture([info.pane_id, "%99"]) == {info.pane_id: pane.capture(), "%99": ""}
    assert t.scan_processes([info.pid, 1])[info.pid].alive and not t.scan_processes([1])[1].alive
    t.kill_pid(info.pid)
    assert pane.dead and t.killed_pids == [info.pid]
    t.kill_session("ccci-x-a")
    assert t.list_panes() == {} and t.launches("a") == [pane]
    with pytest.raises(TmuxError):
        t.send_key(info.pane_id, "Enter")
    assert t.calls == len(t.log)


# --------------------------------------------------------------------------- the fixtures


def test_fixture_types(fake_clock, fake_tmux, make_supervisor, git_origin):
    assert isinstance(fake_clock, FakeClock) and isinstance(fake_tmux, FakeTmux)
    sup = make_supervisor(agents=["a", "b"])
    assert isinstance(sup, Supervisor)
    assert sup.tmux is fake_tmux and sup.clock is fake_clock
    assert sorted(fake_tmux.panes) == ["ccci-test-a", "ccci-test-b"]  # started by adopt()
    assert isinstance(git_origin, GitOrigin) and len(git_origin.head()) == 40


def test_make_supervisor_without_start_launches_nothing(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], start=False)
    assert fake_tmux.panes == {} and sup.agents["a"].pid is None


def test_make_supervisor_adopts_a_running_agent(fleet_config, make_supervisor, fake_tmux):
    cfg = fleet_config(agents=["a"])
    running = fake_tmux.add_pane(cfg.session_name("a"))
    sup = make_supervisor(cfg)
    assert sup.agents["a"].pid == running.pid
    assert fake_tmux.launches() == []


def test_git_origin_push_commit(git_origin):
    sha = git_origin.push_commit("claim(step 1): x")
    assert git_origin.head() == sha
    assert git_origin.subjects() == ["initial commit", "claim(step 1): x"]
    sha2 = git_origin.push_commit("review(step 1): ok", files={"notes/review.md": "fine\n"})
    assert git_origin.head() == sha2 != sha


# --------------------------------------------------------------------------- as a plugin author


AUTHOR_TEST = '''
from ccci import Finding, Remedy, RemedyResult, hookimpl


class MarkerCheck:
    def __init__(self):
        self.acked = []

    @hookimpl
    def ccci_check_agent(self, agent, screen):
        if "PLEASE-ACK" in screen and agent.name not in self.acked:
            return Finding("marker", agent.name, "asks for an ack", immediate=True)

    @hookimpl
    def ccci_choose_remedy(self, finding, agent):
        if finding.check == "marker":
            self.acked.append(agent.name)
            return Remedy("send", agent.name, finding, text="ack", data={"now": True})


def test_marker(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], plugins=[MarkerCheck()])
    fake_clock.advance(1)
    sup.tick()
    fake_tmux.pane("a").append("PLEASE-ACK")
    fake_clock.advance(1)
    assert [f.check for f in sup.tick()] == ["marker"]
    assert fake_tmux.pane("a").submitted == ["ack"]


def test_git(git_origin, fleet_config):
    cfg = fleet_config(agents=["a"], git={"origin": git_origin.url})
    assert cfg.git.origin == git_origin.url
'''


def test_a_plugin_authors_tests_get_the_fixtures_from_the_entry_point(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_author=AUTHOR_TEST)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
    result.assert_outcomes(passed=2)


def test_the_plugin_loads_once_with_or_without_autoload(pytester, monkeypatch):
    """The repository's root conftest registers the plugin only when the entry point did
    not; a plain pytest_plugins line would fail with autoload on."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makeconftest(ROOT_CONFTEST.read_text().replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(test_author=AUTHOR_TEST)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
    result.assert_outcomes(passed=2)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
    result.assert_outcomes(passed=2)


def test_pytest_plugins_line_would_double_register(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makeconftest('pytest_plugins = ["ccci.testing.pytest_plugin"]\n')
    pytester.makepyfile(test_x="def test_x(fake_clock):\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
    assert "already registered" in result.stdout.str() + result.stderr.str()
