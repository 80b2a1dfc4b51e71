"""Tests of the example plugin with the fixtures ccci ships (fake tmux, fake clock)."""
from __future__ import annotations

import ccci_check_deploy as plugin
from ccci.plugins import get_plugin_manager
from ccci.testing.fakes import events, run_ticks


def test_a_failed_deploy_alerts_once_while_it_stays_on_screen(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "deploy")], checks={"startup_grace": 0})
    fake_tmux.pane("a").append("» deploy it", "DEPLOY FAILED: prod-eu", "> ")
    run_ticks(sup, 30)
    [alert] = events(sup, "deploy_failed")
    assert alert["agent"] == "a" and alert["data"]["target"] == "prod-eu"
    assert sup.stashes.get("deploy", "a").get(plugin.ALERTS) == 1


def test_no_second_alert_after_a_watcher_restart_but_one_for_a_new_failure(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "deploy")], checks={"startup_grace": 0})
    fake_tmux.pane("a").append("» deploy it", "DEPLOY FAILED: prod-eu", "> ")
    run_ticks(sup, 5)
    restarted = make_supervisor(sup.config, plugins=[(plugin, "deploy")])
    run_ticks(restarted, 5)
    assert len(events(restarted, "deploy_failed")) == 1
    fake_tmux.pane("a").append("» deploy again", "DEPLOY FAILED: prod-us", "> ")
    run_ticks(restarted, 5)
    assert [e["data"]["target"] for e in events(restarted, "deploy_failed")] == ["prod-eu", "prod-us"]
    assert restarted.stashes.get("deploy", "a")[plugin.ALERTS] == 2  # persisted across the restart


def test_a_failure_that_scrolled_past_does_not_count(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "deploy")], checks={"startup_grace": 0})
    fake_tmux.pane("a").append("» deploy", "DEPLOY FAILED: prod-eu", "» fix it", "fixed and redeployed", "> ")
    run_ticks(sup, 5)
    assert events(sup, "deploy_failed") == []


def test_the_installed_package_is_found_through_its_entry_point():
    pm = get_plugin_manager(environ={})
    assert pm.get_plugin("deploy") is plugin
    assert pm.sources["deploy"].startswith("entrypoint:ccci-check-deploy ")
