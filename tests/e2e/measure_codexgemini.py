"""Measure how soon each state can be read from the screen of the real Codex CLI /
Gemini CLI (not a test).

    PYTHONPATH=$PWD python tests/e2e/measure_codexgemini.py codex  [ROUNDS]
    PYTHONPATH=$PWD python tests/e2e/measure_codexgemini.py gemini [ROUNDS]

Each round sends three messages through ccci's send path (:func:`ccci.send.deliver`) to a
CLI running offline against the scripted model server, whose script answers them with a
slow text reply, a thinking-block 400 and a prompt-too-long error; one usage-limit 429
comes last.
For every signal it prints the seconds from the moment the model server received the
request (its log's ``time``) to the first capture (``capture-pane`` every 50 ms, the
backend's ``analyse`` with the pane title) that reads the expected state: the CLI's own
render delay plus ccci's reading, without ccci's 1 s tick. ``busy`` is timed from the
Enter instead, ``startup`` (one sample) from the tmux launch to the first idle reading.
Prints one line per signal: median and max over the rounds. ``$CCCI_CODEX_VERSION`` picks
the Codex CLI version (default the pin). Needs root.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from codexgemini_fixtures import CliSession, ensure_cli  # noqa: E402

from ccci.clock import Clock  # noqa: E402
from ccci.send import deliver  # noqa: E402
from ccci.testing.model_server import Fail, Text  # noqa: E402
from ccci.tmux import Tmux  # noqa: E402


def wait_state(s: CliSession, state: str, timeout: float = 90.0) -> float:
    """time.time() of the first capture reading ``state``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _screen, _title, an = s.read()
        if an.state.value == state:
            return time.time()
        time.sleep(0.05)
    raise RuntimeError(f"{state} not seen in {timeout}s:\n{s.screen()}")


def main() -> int:
    kind = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    bin_path = ensure_cli(kind)
    ns = f"ccci-meas-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    tmux = Tmux(socket_name=f"ccci-meas-{uuid.uuid4().hex[:6]}")
    plan = [("busy+idle", Text("A reply that streams for a moment, in pieces.", delay=0.15, chunk=6)),
            ("fatal_error", Fail.thinking_400()),
            ("context_limit", Fail.prompt_too_long())]
    # the usage limit once, last: Gemini CLI retries a quota 429 before its dialog, so the
    # step answers every later call there
    last = ("usage_limit", Fail.usage_limit(int(time.time()) + 7200, repeat=None if kind == "gemini" else 1))
    script = [step for _ in range(rounds) for _, step in plan] + [last[1]]
    rounds_plan = [plan] * rounds + [[last]]
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix=f"meas-{kind}-") as tmp:
            s = CliSession(kind=kind, root=Path(tmp), name=f"meas-{kind}", tmux=tmux, netns=ns,
                           bin_path=bin_path, script=script)
            s.start_server()
            t_launch = time.time()
            s.launch()
            results["startup (launch to idle box)"] = [wait_state(s, "idle", 60) - t_launch]
            time.sleep(2.0)
            for r, round_plan in enumerate(rounds_plan):
                for label, _step in round_plan:
                    before = len(s.main_requests())
                    state = "idle" if label == "busy+idle" else label
                    # deliver in a thread: its own verification waits must not delay the polling
                    box: dict = {}
                    sender = threading.Thread(target=lambda: box.update(res=deliver(
                        s.tmux, s.pane_id, s.backend, f"round {r} {label}", {"send_enter_delay": 0.2},
                        Clock(), Path(tmp))))
                    t_enter = time.time() + 0.2  # Enter goes 0.2 s after the text
                    sender.start()
                    seen: dict[str, float] = {}
                    end = time.monotonic() + 90
                    while time.monotonic() < end:
                        _sc, _ti, an = s.read()
                        got = an.state.value
                        if len(s.main_requests()) > before or got == "busy":
                            seen.setdefault(got, time.time())
                        if state in seen and len(s.main_requests()) > before:
                            break
                        time.sleep(0.05)
                    sender.join()
                    res = box["res"]
                    if state not in seen:
                        raise RuntimeError(f"{state} not seen:\n{s.screen()}")
                    t_req = s.main_requests()[before]["time"]
                    if label == "busy+idle":
                        if "busy" in seen:
                            results.setdefault("busy (from Enter)", []).append(seen["busy"] - t_enter)
                        # includes the reply's own streaming, 8 chunks 0.15 s apart
                        results.setdefault("idle (from request; reply streams ~1.2 s)", []).append(seen["idle"] - t_req)
                    else:
                        results.setdefault(f"{state} (from request)", []).append(seen[state] - t_req)
                    if kind == "gemini" and label == "usage_limit":
                        # leave the dialog: '2. Stop' brings the input box back
                        s.tmux.send_key(s.pane_id, "Down")
                        time.sleep(0.2)
                        s.tmux.send_key(s.pane_id, "Enter")
                        s.wait_until(lambda sc, a: a.input_present, 30, "input box after Stop")
                    assert res.delivered or label == "usage_limit", res.detail
                    time.sleep(0.5)
            s.close()
    finally:
        tmux.kill_server()
        subprocess.run(["ip", "netns", "delete", ns])
    for name, xs in results.items():
        print(f"{kind}\t{name}\tmedian {statistics.median(xs):.2f} s\tmax {max(xs):.2f} s\tn={len(xs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
