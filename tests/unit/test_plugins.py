"""The plugin manager (ccci.plugins): blocking by name, essential plugins, broken
plugins skipped with a one-line error, and where each plugin came from."""
from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from ccci import hookimpl
from ccci.plugins import BUILTIN_PLUGINS, get_plugin_manager

ESSENTIAL = ("process_death", "restart")  # the builtins that declare CCCI_ESSENTIAL = True

BUILTIN_NAMES = [m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS]


def pm_with(environ=None, **kw):
    return get_plugin_manager(environ=environ or {}, entrypoints=kw.pop("entrypoints", False), **kw)


def check_impl_plugins(pm):
    return {i.plugin_name for i in pm.hook.ccci_check_agent.get_hookimpls()}


def test_every_builtin_is_registered_with_source_builtin():
    pm = pm_with()
    assert pm.load_errors == []
    sources = {p.name: p.source for p in pm.describe()}
    assert {n: sources.get(n) for n in BUILTIN_NAMES} == {n: "builtin" for n in BUILTIN_NAMES}


def test_ccci_disable_plugins_blocks_a_named_builtin():
    pm = pm_with({"CCCI_DISABLE_PLUGINS": "stall, usage_limit"})
    assert pm.get_plugin("stall") is None and pm.get_plugin("usage_limit") is None
    assert "stall" not in check_impl_plugins(pm) and "fatal_error" in check_impl_plugins(pm)
    assert {"stall", "usage_limit"}.isdisjoint(p.name for p in pm.describe())
    assert pm.load_errors == []


def test_ccci_disable_plugins_accepts_a_module_path():
    pm = pm_with({"CCCI_DISABLE_PLUGINS": "ccci.checks.stall"})
    assert pm.get_plugin("stall") is None


@pytest.mark.parametrize("name", sorted(ESSENTIAL) + ["ccci.checks.process_death"])
def test_essential_plugins_cannot_be_disabled(name):
    pm = pm_with({"CCCI_DISABLE_PLUGINS": name})
    short = name.rsplit(".", 1)[-1]
    assert pm.get_plugin(short) is not None
    [err] = pm.load_errors
    assert "\n" not in err and f"plugin {short} cannot be disabled" in err
    assert pm.disable(short) is False and pm.get_plugin(short) is not None


def test_the_essential_builtins_are_those_that_declare_it():
    pm = pm_with()
    assert sorted(pm.essential) == sorted(ESSENTIAL)
    assert all(pm.is_builtin(n) for n in pm.essential)


def test_a_third_party_plugin_cannot_declare_itself_essential():
    mod = types.ModuleType("sneaky")
    mod.CCCI_ESSENTIAL = True
    pm = pm_with(extra=[(mod, "sneaky")])
    assert not pm.is_essential("sneaky") and pm.disable("sneaky") is True


class Wrapper:
    @hookimpl(wrapper=True)
    def ccci_check_agent(self, agent):
        return (yield)


class OldWrapper:
    @hookimpl(hookwrapper=True)
    def ccci_report_event(self, event):
        yield


@pytest.mark.parametrize("plugin", [Wrapper(), OldWrapper()], ids=["wrapper", "hookwrapper"])
def test_hook_wrappers_are_refused_at_registration_in_one_line(plugin):
    pm = pm_with(extra=[(plugin, "wrapping")])
    assert not pm.is_registered(plugin) and pm.get_plugin("wrapping") is None
    [err] = pm.load_errors
    assert "\n" not in err and "plugin wrapping (registered) skipped: hook wrappers are not supported" in err
    assert "tryfirst/trylast" in err


def test_a_non_essential_plugin_can_be_disabled_at_run_time():
    pm = pm_with()
    assert pm.disable("stall") is True
    assert pm.get_plugin("stall") is None and "stall" not in check_impl_plugins(pm)


class Misspelt:
    @hookimpl
    def ccci_chek_agent(self, agent):  # typo: no such hook
        return None


class UnmarkedMisspelt:
    def ccci_chek_agent(self, agent):  # ccci_* functions count as hooks even unmarked
        return None


class BadSignature:
    @hookimpl
    def ccci_check_agent(self, agent, screne):  # 'screne' is not an argument of the spec
        return None


class Good:
    @hookimpl
    def ccci_check_agent(self, agent):
        return None


@pytest.mark.parametrize("plugin,expect", [
    (Misspelt(), "unknown hook ccci_chek_agent"),
    (UnmarkedMisspelt(), "unknown hook ccci_chek_agent"),
    (BadSignature(), "screne"),
], ids=["misspelt", "misspelt-unmarked", "bad-signature"])
def test_broken_plugin_is_skipped_with_a_one_line_error(plugin, expect):
    pm = pm_with(extra=[(plugin, "broken"), (Good(), "good")])
    assert not pm.is_registered(plugin) and pm.get_plugin("broken") is None
    [err] = pm.load_errors
    assert "\n" not in err
    assert err.startswith("plugin broken (registered) skipped: ") and expect in err
    # the others are unaffected
    assert "good" in check_impl_plugins(pm) and "process_death" in check_impl_plugins(pm)


def test_make_supervisor_refuses_a_skipped_plugin(make_supervisor):
    with pytest.raises(RuntimeError, match="unknown hook ccci_chek_agent"):
        make_supervisor(plugins=[(Misspelt(), "typo")])
    sup = make_supervisor(plugins=[(Misspelt(), "typo")], strict=False)
    assert any("typo" in e for e in sup.pm.load_errors)


def test_describe_lists_sources_and_hooks(tmp_path, monkeypatch):
    # an installed entry point, a broken one, the fleet's local file and a registered one
    good = types.ModuleType("ccci_test_ep_good")
    exec("from ccci import hookimpl\n@hookimpl\ndef ccci_tick_end(tick):\n    pass\n", good.__dict__)
    monkeypatch.setitem(sys.modules, "ccci_test_ep_good", good)
    eps = [
        importlib.metadata.EntryPoint("epgood", "ccci_test_ep_good", "ccci"),
        importlib.metadata.EntryPoint("epbroken", "ccci_test_ep_missing_module", "ccci"),
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [e for e in eps if e.group == kw.get("group")] if "group" in kw else real(**kw))
    (tmp_path / "ccci_plugins.py").write_text(
        "from ccci import hookimpl\n\n@hookimpl\ndef ccci_tick_start(tick):\n    pass\n")
    pm = get_plugin_manager(fleet_root=tmp_path, environ={}, entrypoints=True, extra=[(Good(), "mine")])
    info = {p.name: p for p in pm.describe()}
    assert info["stall"].source == "builtin" and info["stall"].hooks == ["ccci_check_agent", "ccci_choose_remedy"]
    assert info["epgood"].source.startswith("entrypoint") and info["epgood"].hooks == ["ccci_tick_end"]
    assert info["ccci_plugins"].source == f"local:{tmp_path / 'ccci_plugins.py'}"
    assert info["ccci_plugins"].hooks == ["ccci_tick_start"]
    assert info["mine"].source == "registered" and info["mine"].hooks == ["ccci_check_agent"]
    assert "epbroken" not in info
    [err] = pm.load_errors
    assert "\n" not in err and err.startswith("plugin epbroken (entrypoint) skipped: import failed: ModuleNotFoundError")


def test_a_local_plugin_file_that_fails_to_import_is_skipped(tmp_path):
    (tmp_path / "ccci_plugins.py").write_text("import no_such_module_for_ccci\n")
    pm = get_plugin_manager(fleet_root=tmp_path, environ={}, entrypoints=False)
    assert pm.get_plugin("ccci_plugins") is None
    [err] = pm.load_errors
    assert "\n" not in err and "ccci_plugins" in err and "no_such_module_for_ccci" in err
    assert pm.get_plugin("process_death") is not None


class HalfBad:
    @hookimpl
    def ccci_check_agent(self, agent):  # valid, and verified before the bad one
        return None

    @hookimpl
    def ccci_run_remedy(self, remedy, bogus):
        return None


def test_a_skipped_plugin_leaves_no_hook_behind():
    plugin = HalfBad()
    pm = pm_with(extra=[(plugin, "halfbad")])
    assert len(pm.load_errors) == 1 and "bogus" in pm.load_errors[0]
    assert not pm.is_registered(plugin)
    assert "halfbad" not in check_impl_plugins(pm)
    assert "halfbad" not in {p.name for p in pm.describe()}
    # the name is free again: a fixed version can be registered
    assert pm.register_checked(Good(), "halfbad", "registered")


def test_a_duplicate_name_does_not_unregister_the_first_plugin():
    first = Good()
    pm = pm_with(extra=[(first, "dup"), (Good(), "dup")])
    assert pm.get_plugin("dup") is first
    [err] = pm.load_errors
    assert "\n" not in err and "plugin dup (registered) skipped" in err
