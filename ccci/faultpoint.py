"""Test-only fault points: make the watcher die at a named point, deterministically.

``CCCI_FAULT_POINT=<name>`` in the watcher's environment makes :func:`fault_point`
``os._exit(FAULT_EXIT_STATUS)`` the first time the code reaches the point ``name``:
no ``finally`` blocks, no flush, no lock release other than the kernel's, exactly like
``kill -9`` at that instant, but without racing a signal against the code. Unset (the
normal case) every call is a dictionary lookup and returns.

``CCCI_FAULT_POINT=<name>@<n>`` dies at the ``n``-th time the point is reached
(1-based), e.g. ``after_stop@2`` lets the first (re)start through.

Points (see where :func:`fault_point` is called):

========================  ===============================================================
``after_stop``            :meth:`ccci.lifecycle.Lifecycle.launch`: the old process
                          and session are gone, the new one is not started yet
``after_fetch``           :mod:`ccci.gitwatch`: new commits are fetched into the mirror,
                          no ping is queued yet
``after_ping_queued``     :mod:`ccci.hooks.send`: pings queued and the baseline advanced
                          (one transaction), nothing delivered yet
``after_type``            :meth:`ccci.outbox.Outbox.deliver_pending`: the message
                          was typed and submitted, its row still says ``sending``
========================  ===============================================================

Used by ``tests/faults/test_watcher_killed_mid_remedy.py``.
"""
from __future__ import annotations

import os
import sys

FAULT_EXIT_STATUS = 86  #: exit status of a watcher stopped at a fault point
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Exit the process at once if ``CCCI_FAULT_POINT`` names this point (and hit)."""
    spec = os.environ.get("CCCI_FAULT_POINT")
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == (int(nth) if nth else 1):
        sys.stderr.write(f"ccci: CCCI_FAULT_POINT {spec}: exiting at {name}\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_STATUS)
