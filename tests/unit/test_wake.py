"""The runner's sleep between ticks is cut short by ``Supervisor.wake``."""
from __future__ import annotations

import threading
import time

from ccci.clock import Clock, FakeClock


def test_real_clock_wait_returns_early_when_woken():
    ev = threading.Event()
    clock = Clock()
    threading.Timer(0.05, ev.set).start()
    t0 = time.monotonic()
    assert clock.wait(ev, 5.0) is True
    assert time.monotonic() - t0 < 4.0
    assert not ev.is_set(), "the wake is consumed"
    assert clock.wait(ev, 0.01) is False


def test_fake_clock_wait_advances_only_when_not_woken():
    ev = threading.Event()
    clock = FakeClock()
    m0 = clock.monotonic()
    assert clock.wait(ev, 2.0) is False
    assert clock.monotonic() == m0 + 2.0
    ev.set()
    assert clock.wait(ev, 2.0) is True
    assert clock.monotonic() == m0 + 2.0
