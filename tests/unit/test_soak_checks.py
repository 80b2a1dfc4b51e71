"""The chaos soak's own checks (bench/soak.py) can fail: fed a journal with two writers of
one conversation, a repeated send and a growing series, they report violations."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("ccci_bench_soak", REPO / "bench" / "soak.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _harness(soak, tmp_path):
    s = soak.Soak(soak.parse_args(["--seconds", "1", "--out", str(tmp_path / "r.json")]))
    shutil.rmtree(s.tmp)  # the fleet directory: no fleet is built here
    s.t0 = time.time()
    s.journal_path = tmp_path / "journal.jsonl"
    return s


def test_two_writers_of_one_conversation_are_a_violation(soak, tmp_path):
    s = _harness(soak, tmp_path)
    t = time.time()
    lines = [
        {"t": t, "agent": "b01", "pid": 10, "conversation": "c1", "kind": "start", "text": ""},
        {"t": t + 1, "agent": "b01", "pid": 10, "conversation": "c1", "kind": "turn", "text": "x"},
        {"t": t + 2, "agent": "b01", "pid": 11, "conversation": "c1", "kind": "start", "text": ""},  # resumed
        {"t": t + 3, "agent": "b01", "pid": 11, "conversation": "c1", "kind": "turn", "text": "y"},
    ]
    s.journal_path.write_text("".join(json.dumps(j) + "\n" for j in lines))
    s.read_journal()
    assert s.violations == []  # the old process wrote nothing after the new one started
    extra = {"t": t + 4, "agent": "b01", "pid": 10, "conversation": "c1", "kind": "turn", "text": "z"}
    with open(s.journal_path, "a") as fh:
        fh.write(json.dumps(extra) + "\n")
    s.read_journal()
    assert [v["kind"] for v in s.violations] == ["two_writers"]


def test_a_send_received_twice_is_a_violation(soak, tmp_path):
    s = _harness(soak, tmp_path)
    s.all_messages = [{"id": 1, "agent": "a01", "text": "soak-send-0001: note", "dedup_key": None}]
    s.resubmitted = {}
    s.faults = []
    s.sends = [{"agent": "a01", "token": "soak-send-0001", "t": 0, "rc": 0}]
    s.received = {"a01": [{"t": 1, "pid": 5, "text": "soak-send-0001: note"}]}
    s.check_sends()
    assert s.violations == []
    s.received["a01"].append({"t": 2, "pid": 5, "text": "soak-send-0001: note"})
    s.check_sends()
    assert [v["kind"] for v in s.violations] == ["send_repeated"]
    s.resubmitted = {1: 1}  # ccci sent it again after a failed turn: allowed once
    s.violations.clear()
    s.check_sends()
    assert s.violations == []


def test_rss_slope_in_kb_per_hour(soak):
    assert soak.slope_per_hour([(0, 100), (1800, 150), (3600, 200)]) == pytest.approx(100.0)
    assert soak.slope_per_hour([(0, 100), (60, 100), (120, 100)]) == 0.0
    assert soak.slope_per_hour([(0, 1)]) is None
