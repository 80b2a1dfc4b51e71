"""A persisted stash key that is unset costs one database read per runner, not one per
tick (ccci/stash.py): the miss is remembered, and setting, deleting and a new runner's
read-back still behave as before."""
from __future__ import annotations

import pytest

from ccci.stash import Stashes, StashKey
from ccci.state import StateStore

OUTAGE = StashKey[dict]("outage", persist=True)
LOCAL = StashKey[int]("local")


def _counting(store: StateStore) -> list[str]:
    reads: list[str] = []
    real = store.get

    def get(key, *a, **k):
        reads.append(key)
        return real(key, *a, **k)

    store.get = get  # type: ignore[method-assign]
    return reads


def test_a_missing_persisted_key_is_read_once_and_still_behaves(tmp_path):
    store = StateStore(tmp_path / "state")
    reads = _counting(store)
    stash = Stashes(store).get("api_error", "a1")
    for _ in range(5):  # five ticks
        assert stash.get(OUTAGE) is None and OUTAGE not in stash
    assert reads == ["stash.api_error.a1.outage"]
    with pytest.raises(KeyError):
        stash[OUTAGE]
    with pytest.raises(KeyError):
        del stash[OUTAGE]
    assert stash.pop(OUTAGE, "d") == "d"
    assert stash.setdefault(OUTAGE, {"since": "x"}) == {"since": "x"}
    assert stash[OUTAGE] == {"since": "x"} and OUTAGE in stash
    # written through: a new runner (a watcher restart) reads it back
    again = Stashes(store).get("api_error", "a1")
    assert again.get(OUTAGE) == {"since": "x"}
    del stash[OUTAGE]
    assert stash.get(OUTAGE) is None
    assert Stashes(store).get("api_error", "a1").get(OUTAGE) is None
    n = len(reads)
    assert stash.get(OUTAGE) is None and len(reads) == n  # the miss after the delete is remembered too
    # another agent's stash and a key that is not persisted never share the miss
    other = Stashes(store).get("api_error", "a2")
    other[OUTAGE] = {"since": "y"}
    assert stash.get(OUTAGE) is None and other.get(OUTAGE) == {"since": "y"}
    assert stash.get(LOCAL, 3) == 3
    store.close()
