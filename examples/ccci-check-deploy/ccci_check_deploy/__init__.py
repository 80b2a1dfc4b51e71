"""Example ccci plugin: a failed deploy is reported to a person once per occurrence.

Check: a line ``DEPLOY FAILED: <target>`` in the agent's newest screen block (the text
the example agent CLI prints; any CLI version). Remedy ``deploy_alert``: a
``deploy_failed`` event (carried to people by notifier plugins) and a count of alerts
per agent in this plugin's persisted stash.
"""
from __future__ import annotations

import re

from ccci import Finding, Remedy, RemedyResult, StashKey, hookimpl

CHECK = "deploy_failed"
LINE = re.compile(r"^DEPLOY FAILED: (?P<target>\S+)")
ALERTS = StashKey[int]("alerts", persist=True)  #: alerts sent for this agent, kept across restarts


@hookimpl
def ccci_check_agent(agent, block):
    for line in block.splitlines():
        m = LINE.match(line.strip())
        if m:
            return Finding(CHECK, agent.name, f"deploy to {m['target']} failed", evidence=line.strip(),
                           data={"target": m["target"]})
    return None


@hookimpl
def ccci_choose_remedy(finding):
    if finding.check != CHECK:
        return None
    return Remedy("deploy_alert", finding.agent, finding)


@hookimpl
def ccci_run_remedy(remedy, services, stash):
    if remedy.action != "deploy_alert":
        return None
    stash[ALERTS] = stash.get(ALERTS, 0) + 1
    services.emit("deploy_failed", f"{remedy.agent}: {remedy.reason.summary}", agent=remedy.agent,
                  target=remedy.reason.data["target"])
    return RemedyResult(True, f"alert sent for {remedy.reason.data['target']}")
