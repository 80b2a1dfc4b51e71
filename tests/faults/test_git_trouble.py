"""Scenario 5: git trouble while the watcher runs: origin unreachable (the bare repository
moved away), a corrupt repository (origin's objects, the watcher's mirror), state files
missing (mirror and logs deleted). Meanwhile the other checks keep running (a killed
agent is restarted), the trouble is reported once as a ``degraded`` event (not every
fetch), and recovery is automatic: a claim pushed afterwards is pinged once."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ccci.testing.fleet import push_commit, typed_turns

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]


@pytest.fixture
def git_fleet(make_fleet):
    fleet = make_fleet()
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("message_delivered", "builder"), 40)  # one claim/review round
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    return fleet


def _kill_and_check_restart(fleet, agent="adversary"):
    assert fleet.kill_and_wait_restart(agent, 15), "a kill -9 during the git trouble was not restarted"


def _claim_is_pinged_once(fleet, tmp_path, label):
    sha = push_commit(fleet, tmp_path, f"claim(step 80): after {label}")
    key = f"ping:{sha}:adversary"
    assert fleet.wait(lambda: fleet.store.db.execute(
        "SELECT 1 FROM messages WHERE dedup_key=? AND status='delivered'", (key,)).fetchone(), 30), \
        f"no ping after recovering from {label}: {sha[:10]}\n" + "\n".join(
            f'{e["at"]} {e["kind"]} {e.get("agent") or "-"}: {e["message"]}' for e in fleet.events()[-40:])
    assert fleet.wait(lambda: typed_turns(fleet, "adversary", sha[:10]) == 1, 10)


def _degraded(fleet):
    return [e for e in fleet.events("degraded")]


def _trouble(fleet, tmp_path, trials_rec, label, break_it, fix_it, push_during=False):
    n0 = len(_degraded(fleet))
    r0 = len(fleet.events("recovered"))
    break_it()
    if push_during:
        push_commit(fleet, tmp_path, f"claim(step 79): pushed while {label}")
    assert fleet.wait(lambda: len(_degraded(fleet)) > n0, 15), f"{label}: no degraded event"
    _kill_and_check_restart(fleet)
    fleet.wait(lambda: False, 3)  # six fetch intervals more
    assert len(_degraded(fleet)) == n0 + 1, f"{label}: degraded reported more than once: {_degraded(fleet)[n0:]}"
    fix_it()
    assert fleet.wait(lambda: len(fleet.events("recovered")) > r0, 15), f"{label}: no recovered event"
    _claim_is_pinged_once(fleet, tmp_path, label)
    trials_rec.trial()


def test_origin_unreachable(git_fleet, trials, tmp_path):
    t = trials("5", "git trouble")
    origin = Path(git_fleet.cfg.git.origin)
    moved = origin.with_name("origin.moved")
    _trouble(git_fleet, tmp_path, t, "origin unreachable", lambda: origin.rename(moved), lambda: moved.rename(origin))
    t.check("origin unreachable: one degraded event, a kill -9 meanwhile restarted, recovered event, next claim pinged once")


def test_corrupt_origin_ref(git_fleet, trials, tmp_path):
    t = trials("5", "git trouble")
    origin = Path(git_fleet.cfg.git.origin)
    ref = origin / "refs" / "heads" / "main"
    packed = origin / "packed-refs"
    saved = {p: p.read_bytes() for p in (ref, packed) if p.exists()}

    def corrupt():
        packed.unlink(missing_ok=True)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text("this is not a sha\n")

    def repair():
        ref.unlink(missing_ok=True)
        for p, data in saved.items():
            p.write_bytes(data)

    _trouble(git_fleet, tmp_path, t, "origin branch ref corrupt", corrupt, repair)
    t.check("corrupt origin (branch ref garbage): one degraded event, supervision goes on, recovers when repaired")


def test_corrupt_mirror_is_rebuilt(git_fleet, trials, tmp_path):
    t = trials("5", "git trouble")
    head = git_fleet.cfg.state_dir / "mirror.git" / "HEAD"
    head.write_text("garbage: not a ref\n")
    sha = push_commit(git_fleet, tmp_path, "claim(step 81): pushed onto a corrupt mirror")
    key = f"ping:{sha}:adversary"
    assert git_fleet.wait(lambda: git_fleet.store.db.execute(
        "SELECT 1 FROM messages WHERE dedup_key=? AND status='delivered'", (key,)).fetchone(), 30), \
        "a corrupt mirror (the watcher's own cache) stopped the pings"
    assert typed_turns(git_fleet, "adversary", sha[:10]) == 1
    assert len(_degraded(git_fleet)) == 0 and len(git_fleet.events("mirror_rebuilt")) == 1
    _kill_and_check_restart(git_fleet)
    t.trial()
    t.check("corrupt mirror (damaged HEAD): rebuilt from origin, the claim pushed meanwhile pinged once")


def test_state_files_missing(git_fleet, trials, tmp_path):
    t = trials("5", "git trouble")
    state = git_fleet.cfg.state_dir
    shutil.rmtree(state / "mirror.git")
    shutil.rmtree(state / "logs")
    _kill_and_check_restart(git_fleet)
    assert (state / "logs" / "adversary.log").exists(), "the restarted agent has no log"
    _claim_is_pinged_once(git_fleet, tmp_path, "state files missing")
    assert not git_fleet.events("tick_error")
    t.trial()
    t.check("mirror and logs deleted under a running watcher: restarts, logs and pings carry on")


def test_state_directory_deleted_under_the_watcher(git_fleet, trials, tmp_path):
    t = trials("5", "git trouble")
    state = git_fleet.cfg.state_dir
    shutil.rmtree(state)
    git_fleet._store.close()
    git_fleet._store = None  # the test's connection was to the deleted file
    assert git_fleet.wait(lambda: (state / "state.db").exists() and git_fleet.events("state_restored"), 15), \
        "state.db deleted under the watcher was not written back"
    import json

    rows = {r["name"]: r for r in json.loads(git_fleet.ccci("status", "--json").stdout)}
    assert all(rows[a]["pid"] == git_fleet.live_pid(a) for a in git_fleet.AGENTS), rows
    second = git_fleet.ccci("watch", "--quiet", timeout=30)
    assert second.returncode == 3 and "another ccci watch" in second.stderr, \
        "the watcher's lock file was deleted and a second watcher could start"
    _kill_and_check_restart(git_fleet)
    assert len(git_fleet.restarts("adversary")) == 1
    _claim_is_pinged_once(git_fleet, tmp_path, "state directory deleted")
    assert not git_fleet.events("tick_error")
    t.trial()
    t.check("the whole state directory deleted under a running watcher: state.db written back from the open "
            "database (status shows the agents), the lock re-taken (a second watcher refused), restarts and pings go on")
