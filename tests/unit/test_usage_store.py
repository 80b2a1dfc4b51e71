"""Token totals in the state database: absolute per source, summed per agent/day/model."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ccci.state import StateStore

AT = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_usage_totals_are_idempotent_and_summed_over_sources(tmp_path):
    st = StateStore(tmp_path)
    st.set_usage("builder", "2026-12-06", "conv-a", "claude-x", {"input_tokens": 10, "output_tokens": 5}, AT)
    st.set_usage("builder", "2026-12-06", "conv-a", "claude-x", {"input_tokens": 12, "output_tokens": 7}, AT)
    st.set_usage("builder", "2026-12-06", "conv-b", "claude-x", {"input_tokens": 3, "cache_read_tokens": 100}, AT)
    st.set_usage("reviewer", "2026-12-05", "s1", "m", {"output_tokens": 1}, AT)
    rows = st.usage_rows("builder")
    assert rows == [{"agent": "builder", "day": "2026-12-06", "model": "claude-x", "input_tokens": 15,
                     "output_tokens": 7, "cache_read_tokens": 100, "cache_write_tokens": 0}]
    assert [r["agent"] for r in st.usage_rows(since_day="2026-12-06")] == ["builder"]
    assert len(st.usage_rows()) == 2
    with pytest.raises(KeyError):
        st.set_usage("builder", "2026-12-06", "c", "m", {"tokens": 1}, AT)
