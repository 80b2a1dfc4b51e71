"""Event reporter: prints each event as one line when ``echo`` is on (``ccci watch`` in
the foreground turns it on). Events are already in the durable log (SQLite) before any
``ccci_report_event`` runs; ``ccci events`` reads them from there.
"""
from __future__ import annotations

import sys

from ccci.clock import iso
from ccci.hookspecs import hookimpl

echo = False


@hookimpl
def ccci_report_event(event):
    if not echo:
        return
    who = f" [{event.agent}]" if event.agent else ""
    sys.stderr.write(f"{iso(event.at)} {event.kind}{who} {event.message}\n")
    sys.stderr.flush()
