"""StateStore.agents() reads every record in one query (ccci/state.py) and gives what
StateStore.agent(name) gives for each, in name order."""
from __future__ import annotations

from datetime import UTC, datetime

from ccci.state import StateStore


def test_agents_in_one_query_match_each_record(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.agents() == []
    store.update_agent("b", session="ccci-f-b", pane_id="%3", pid=42, conversation_id="c-b",
                       started_at=datetime(2026, 12, 7, 0, 1, 2, tzinfo=UTC), generation=3, restarts=2, resumes=1,
                       state="running", given_up=True, stopped=False, last_event="restart")
    store.update_agent("a", stopped=True)
    store.update_agent("c")
    queries: list[str] = []
    store.db.disk.set_trace_callback(queries.append)
    got = store.agents()
    store.db.disk.set_trace_callback(None)
    assert [q for q in queries if "agents" in q] == ["SELECT * FROM agents ORDER BY name"]  # one query
    assert [r.name for r in got] == ["a", "b", "c"]
    assert got == [store.agent(n) for n in ("a", "b", "c")]
    b = got[1]
    assert (b.pid, b.generation, b.given_up, b.stopped, b.started_at) == (
        42, 3, True, False, datetime(2026, 12, 7, 0, 1, 2, tzinfo=UTC))
    assert got[0].stopped and not got[0].given_up
    store.close()
