"""Handoffs through git: a new commit on origin's branch whose subject starts with a
rule's prefix (``claim(`` -> the adversary, ``review(`` -> the builder, by default) pings
the agent(s) the rule names; a commit that changes ``INBOX-<agent>.md`` pings that agent.

Reads the ``git`` fact of :mod:`ccci.gitwatch` (commits pushed to origin since the
persisted baseline). The first time origin is seen the baseline is set silently; the
``ping`` remedy queues each ping with a per-commit dedup key and advances the baseline
in the same SQLite transaction, so a commit pings once, ever, across watcher restarts.

Across hosts (``[[hosts]]``): every host's watcher reads the same origin, and its
``config.agents`` holds only that host's agents, so each ping (key ``ping:<sha>:<agent>``,
per commit and per target) is queued by the one watcher whose host runs the target; two
watchers seeing the same commit never ping the same agent twice (tests/multihost).
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import Finding, Remedy

CHECK = "handoff"


def _targets(config, to: str) -> list[str]:
    return [a.name for a in config.agents if to in (a.name, a.handoff_role)]


@hookimpl
def ccci_check_fleet(snapshot, config):
    facts = snapshot.facts.get("git")
    if facts is None or facts.error or facts.head is None:
        return None
    if facts.baseline is None:
        return Finding(CHECK, None, f"first sight of origin/{facts.branch}; baseline {facts.head[:10]} set silently",
                       evidence=facts.head, immediate=True, data={"head": facts.head, "pings": [], "first_sight": True})
    if facts.head == facts.baseline:
        return None
    pings = []
    for c in facts.commits:
        for rule in config.handoffs:
            if not c.subject.startswith(rule.prefix):
                continue
            text = rule.message.format(sha=c.sha, short=c.sha[:10], subject=c.subject, author=c.author, branch=facts.branch)
            for agent in _targets(config, rule.to):
                pings.append({"agent": agent, "text": text, "key": f"ping:{c.sha}:{agent}", "sha": c.sha, "subject": c.subject})
        for agent in config.agents:
            inbox = f"INBOX-{agent.name}.md"
            if inbox in c.files and not any(p["key"] == f"ping:{c.sha}:{agent.name}" for p in pings):
                text = (f"ccci: {inbox} changed on origin/{facts.branch} in {c.sha[:10]} {c.subject}. "
                        f"Read it and act on it.")
                pings.append({"agent": agent.name, "text": text, "key": f"ping:{c.sha}:{agent.name}", "sha": c.sha,
                              "subject": c.subject})
    evidence = "; ".join(f"{c.sha[:10]} {c.subject}" for c in facts.commits[:5])
    return Finding(CHECK, None, f"{len(facts.commits)} new commit(s) on origin/{facts.branch}, {len(pings)} ping(s)",
                   evidence=evidence, immediate=True, data={"head": facts.head, "pings": pings})


@hookimpl
def ccci_choose_remedy(finding):
    if finding.check != CHECK:
        return None
    return Remedy("ping", None, finding)
