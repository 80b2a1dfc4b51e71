"""Cost of reading an agent's token usage (issue 16 part 5, issue 17): the first read of a
large Claude Code transcript, an incremental read after one more answer, and a read with
nothing new (what ``ccci.usage_watch`` does every ``usage_interval`` s per agent).

Run from the repository root: ``python bench/usage_read.py``. Writes
``bench/usage_results.json``. The transcript is the recorded capture
(``tests/golden/claude-2.1.332-recorded/transcripts/usage_turns.jsonl``) repeated with fresh
message ids until it is about ``--mb`` MB.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ccci.backends.claude import ClaudeBackend  # noqa: E402
from ccci.model import AgentSpec, Role  # noqa: E402

CAPTURE = REPO / "tests" / "golden" / "claude-2.1.332-recorded" / "transcripts" / "usage_turns.jsonl"
SID = "00000000-0000-4000-8000-000000000001"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    lines = CAPTURE.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        d = home / ".claude" / "projects" / "-bench"
        d.mkdir(parents=True)
        path = d / f"{SID}.jsonl"
        n = 0
        with open(path, "w") as fh:
            while fh.tell() < args.mb * 1e6:
                for ln in lines:
                    fh.write(ln.replace('"msg_', f'"msg_{n}_') + "\n")
                n += 1
        size = path.stat().st_size
        spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=home, env={"HOME": str(home)})
        b = ClaudeBackend()
        t0 = time.perf_counter()
        r = b.read_usage(spec, None, SID)
        first = time.perf_counter() - t0
        idle, incr = [], []
        answer = next(ln for ln in lines if '"type":"assistant"' in ln)
        for i in range(args.repeat):
            t0 = time.perf_counter()
            b.read_usage(spec, None, SID)
            idle.append(time.perf_counter() - t0)
            with open(path, "a") as fh:
                fh.write(answer.replace('"msg_', f'"msg_new{i}_') + "\n")
            t0 = time.perf_counter()
            r = b.read_usage(spec, None, SID)
            incr.append(time.perf_counter() - t0)
        out = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
            "transcript_mb": round(size / 1e6, 1), "answers": len(r.totals) and sum(1 for _ in b._usage_cursors.values()
                                                                                   for _m in _.messages),
            "first_read_s": round(first, 3),
            "nothing_new_ms_p50": round(1e3 * statistics.median(idle), 3),
            "one_more_answer_ms_p50": round(1e3 * statistics.median(incr), 3),
            "one_more_answer_ms_max": round(1e3 * max(incr), 3),
        }
    (REPO / "bench" / "usage_results.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
