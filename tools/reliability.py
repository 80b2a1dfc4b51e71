"""Run the fault-injection suite (tests/faults) and regenerate the table in
docs/reliability.md from what the tests recorded.

Usage (from the repository root)::

    python tools/reliability.py            # run tests/faults, rewrite the table
    python tools/reliability.py -- -x      # extra arguments go to pytest

Each test in tests/faults records its scenario, trial count, checks and measurements
through the ``trials`` fixture (tests/faults/conftest.py); with
``CCCI_FAULTS_RESULTS=<file>`` the session writes them as JSON. This script runs pytest
with that variable set, then replaces the part of docs/reliability.md between the
``<!-- reliability-table -->`` markers. Exit status: pytest's.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability-table:begin -->", "<!-- reliability-table:end -->"
SCENARIOS = {
    "1": "Agent deaths (kill -9)", "2": "Concurrent watchers", "3": "Watcher killed mid-remedy",
    "4": "tmux server killed", "5": "git trouble", "6": "Plugin faults", "7": "Crash loop",
    "8": "Quiet but healthy", "9": "Full disk / read-only state directory", "10": "Hostile input",
    "11": "Security",
}


def run(pytest_args: list[str]) -> tuple[int, dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        env = {**os.environ, "CCCI_FAULTS_RESULTS": str(out), "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "faults",
                              "tests/faults", *pytest_args], cwd=ROOT, env=env)
        took = time.monotonic() - t0
        results = json.loads(out.read_text()) if out.exists() else {}
    return rc, results, took


def table(results: dict, took: float) -> str:
    by: dict[str, dict] = {}
    for nodeid, r in sorted(results.items()):
        s = by.setdefault(r["scenario"], {"trials": 0, "checks": [], "notes": [], "outcomes": [], "tests": 0})
        s["trials"] += r["trials"]
        s["tests"] += 1
        s["outcomes"].append(r["outcome"])
        s["checks"] += [c for c in r["checks"] if c not in s["checks"]]
        s["notes"] += r["notes"]
    rows = ["| # | Scenario | Tests | Trials | What was checked | Result |", "|---|---|---|---|---|---|"]
    notes = []
    for num in sorted(set(SCENARIOS) | set(by), key=lambda n: int(n)):
        s = by.get(num)
        if s is None:
            rows.append(f"| {num} | {SCENARIOS.get(num, '?')} | 0 | 0 | | not run |")
            continue
        outs = s["outcomes"]
        failed = sum(o == "failed" for o in outs)
        skipped = sum(o == "skipped" for o in outs)
        result = "**FAILED** " + f"({failed} of {len(outs)} tests)" if failed else (
            f"passed ({skipped} skipped)" if skipped else "passed")
        checks = "<br>".join(c.replace("|", "\\|") for c in s["checks"])
        rows.append(f"| {num} | {SCENARIOS.get(num, '?')} | {s['tests']} | {s['trials']} | {checks} | {result} |")
        notes += [f"- scenario {num}: {n}" for n in s["notes"]]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"Generated {when} by `python tools/reliability.py` on {platform.system()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; the suite took {took:.0f} s.\n")
    return "\n".join([head, *rows, "", "Measured in that run:", "", *notes, ""])


def write(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    pre, rest = doc.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    DOC.write_text(f"{pre}{BEGIN}\n{text}{END}{post}")


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else argv
    rc, results, took = run(extra)
    if not results:
        print("tools/reliability.py: no results recorded (did pytest collect tests/faults?)", file=sys.stderr)
        return rc or 1
    write(table(results, took))
    print(f"tools/reliability.py: {len(results)} tests recorded; table written to {DOC.relative_to(ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
