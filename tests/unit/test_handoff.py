"""Handoff pings from commits pushed to a real (temporary) git origin, delivered into
fake panes: first sight is silent, claim -> adversary, review -> builder, exactly once
across watcher restarts."""
from __future__ import annotations

import pytest

from ccci.gitwatch import BASELINE_KEY
from ccci.testing.fakes import events, run_ticks, tick

AGENTS = [{"name": "builder", "handoff_role": "builder"}, {"name": "adversary", "handoff_role": "adversary"}]


@pytest.fixture
def fleet(fleet_config, git_origin):
    return fleet_config(agents=AGENTS, git={"origin": git_origin.url, "fetch_interval": 1})


def pinged(fake_tmux, agent):
    return [t for t in fake_tmux.pane(agent).submitted if t.startswith("ccci: new")]


def test_first_sight_sets_the_baseline_silently(fleet, make_supervisor, fake_tmux, git_origin):
    git_origin.push_commit("claim(step 0): pushed before ccci watched")
    sup = make_supervisor(fleet)
    tick(sup)
    assert sup.store.get(BASELINE_KEY.format(branch="main")) == git_origin.head()
    assert sup.store.messages() == []
    assert pinged(fake_tmux, "adversary") == [] and pinged(fake_tmux, "builder") == []
    run_ticks(sup, 3)
    assert sup.store.messages() == []


def test_claim_pings_the_adversary_and_review_pings_the_builder_once(fleet, make_supervisor, fake_tmux, git_origin):
    sup = make_supervisor(fleet)
    tick(sup)
    sha = git_origin.push_commit("claim(step 1): parser handles empty input")
    tick(sup)
    [ping] = pinged(fake_tmux, "adversary")
    assert sha[:10] in ping and "claim(step 1): parser handles empty input" in ping
    assert pinged(fake_tmux, "builder") == []
    [queued] = events(sup, "ping_queued")
    assert queued["agent"] == "adversary" and queued["data"]["sha"] == sha
    [delivered] = events(sup, "message_delivered", "adversary")
    assert delivered["data"]["attempts"] == 1

    rsha = git_origin.push_commit("review(step 1): verified, two nits")
    run_ticks(sup, 3)
    [rping] = pinged(fake_tmux, "builder")
    assert rsha[:10] in rping and "review(step 1)" in rping
    assert len(pinged(fake_tmux, "adversary")) == 1  # not pinged again
    assert sup.store.get(BASELINE_KEY.format(branch="main")) == rsha

    # commits without a handoff prefix ping nobody but move the baseline
    other = git_origin.push_commit("docs: typo")
    run_ticks(sup, 3)
    assert len(pinged(fake_tmux, "builder")) == 1 and len(pinged(fake_tmux, "adversary")) == 1
    assert sup.store.get(BASELINE_KEY.format(branch="main")) == other


def test_the_baseline_persists_across_watcher_restarts(fleet, make_supervisor, fake_tmux, git_origin):
    sup = make_supervisor(fleet)
    tick(sup)
    git_origin.push_commit("claim(step 1): parser")
    run_ticks(sup, 2)
    assert len(pinged(fake_tmux, "adversary")) == 1
    pids = {a: fake_tmux.pane(a).pid for a in ("builder", "adversary")}

    # a second watcher on the same state (the first was killed): adopts, does not re-ping
    sup2 = make_supervisor(fleet)
    assert len(events(sup2, "agent_adopted")) == 2
    run_ticks(sup2, 5)
    assert len(pinged(fake_tmux, "adversary")) == 1
    assert pinged(fake_tmux, "builder") == []
    assert {a: fake_tmux.pane(a).pid for a in pids} == pids
    assert len(sup2.store.messages()) == 1

    # a commit pushed while no watcher ran is pinged by the next one (not re-baselined)
    rsha = git_origin.push_commit("review(step 1): verified")
    sup3 = make_supervisor(fleet)
    run_ticks(sup3, 3)
    [rping] = pinged(fake_tmux, "builder")
    assert rsha[:10] in rping
    assert len(pinged(fake_tmux, "adversary")) == 1


def test_valid_head():
    from ccci.gitwatch import valid_head

    assert valid_head("819b7be83ec20688c538f2819268922946faa3c8")
    assert not valid_head("0" * 40)  # git 2.39 ls-remote's answer for a ref file holding garbage
    assert not valid_head("this") and not valid_head("") and not valid_head(None)


def test_a_garbage_origin_ref_is_degraded_and_never_becomes_the_baseline(fleet, make_supervisor, fake_tmux,
                                                                        git_origin):
    """Found by tests/faults/test_git_trouble.py under load: origin's ref file overwritten
    with garbage made ls-remote print the null id, which became the head and then the
    silent baseline, so the first claim pushed after the repair was never pinged."""
    from pathlib import Path

    sup = make_supervisor(fleet)
    tick(sup)
    good = sup.store.get(BASELINE_KEY.format(branch="main"))
    bare = Path(git_origin.path)
    ref, packed = bare / "refs" / "heads" / "main", bare / "packed-refs"
    saved = {p: p.read_bytes() for p in (ref, packed) if p.exists()}
    packed.unlink(missing_ok=True)
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("this is not a sha\n")
    run_ticks(sup, 3)
    assert [e for e in events(sup, "degraded") if "broken ref" in e["message"]]
    assert sup.store.get(BASELINE_KEY.format(branch="main")) == good
    ref.unlink()
    for p, data in saved.items():
        p.write_bytes(data)
    sha = git_origin.push_commit("claim(step 2): pushed right after the repair")
    run_ticks(sup, 3)
    assert events(sup, "recovered")
    [ping] = pinged(fake_tmux, "adversary")
    assert sha[:10] in ping
