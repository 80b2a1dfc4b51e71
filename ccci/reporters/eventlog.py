"""Event echo: prints each event as one line on stderr. ``ccci watch`` in the
foreground (without ``--quiet``) registers an :class:`EventEcho`; events are already in
the durable log (SQLite) before any ``ccci_report_event`` runs, and ``ccci events``
reads them from there.
"""
from __future__ import annotations

import sys
from typing import TextIO

from ccci.clock import iso
from ccci.hookspecs import hookimpl


class EventEcho:
    """A reporter plugin writing ``<UTC> <kind> [<agent>] <message>`` lines to ``stream``
    (default ``sys.stderr``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    @hookimpl
    def ccci_report_event(self, event):
        out = self.stream or sys.stderr
        who = f" [{event.agent}]" if event.agent else ""
        out.write(f"{iso(event.at)} {event.kind}{who} {event.message}\n")
        out.flush()
