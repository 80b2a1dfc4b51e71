"""A cheap stand-in agent for the tick-cost and memory benchmarks.

Run directly by tmux (no shell): ``python3 -S bench/standin.py PERIOD NAME``. It draws
what ccci's ``scripted`` backend reads as an idle agent that declared a far-future wait
(a turn block, ``WAITING-UNTIL``, the input line ``> ``) and redraws a new turn every
PERIOD seconds on average (uniformly 0.5-1.5 x PERIOD, random phase), so some panes
change between two ticks and most do not; PERIOD 0 draws one turn and then nothing (an
agent idle at its prompt: the idle-fleet measurement). ``-S`` skips site-packages:
about 9 MB RSS and no CPU between prints.
"""
import os
import random
import sys
import time

period = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
name = sys.argv[2] if len(sys.argv) > 2 else "standin"
rng = random.Random(os.getpid())
out = sys.stdout
out.write(f"stand-in agent {name} (pid {os.getpid()}), a turn every ~{period:g}s\n")
time.sleep(rng.uniform(0, period))
n = 0
while True:
    if period <= 0 and n:
        time.sleep(3600)
        continue
    n += 1
    out.write(
        f"\n» turn {n}\n● {name}: did item {n}\n✓ turn done in 0s\n"
        "WAITING-UNTIL: 2099-01-01T00:00:00Z\n" + "─" * 40 + "\n> "
    )
    out.flush()
    if period > 0:
        time.sleep(rng.uniform(0.5, 1.5) * period)
