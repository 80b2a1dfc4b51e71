"""Clocks: monotonic seconds for intervals, UTC wall time for persisted state.

The runner never calls :func:`time.time` or :func:`time.monotonic` directly; it asks a
:class:`Clock`, so tests can inject :class:`FakeClock` and move time by hand.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone, tzinfo

UTC = timezone.utc


class Clock:
    """The real clock."""

    def monotonic(self) -> float:
        """Monotonic seconds (never jumps; for intervals, dwell times and backoff)."""
        return time.monotonic()

    def now(self) -> datetime:
        """UTC wall time (``tzinfo=UTC``; for persisted state and declared deadlines)."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (no-op for ``seconds <= 0``)."""
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: "threading.Event", seconds: float) -> bool:
        """Block until ``event`` is set or ``seconds`` pass; clear it and return whether it
        was set (the runner's sleep between ticks, cut short by :meth:`Supervisor.wake`)."""
        woke = event.wait(seconds) if seconds > 0 else event.is_set()
        event.clear()
        return woke


class FakeClock(Clock):
    """A clock that only moves when told to.

    :param start: initial UTC wall time (default 2026-01-01T00:00:00Z).
    :param mono: initial monotonic reading in seconds (default 1000.0).

    ``sleep`` advances both readings instead of blocking. ``jump_wall`` moves only the
    wall clock, to simulate NTP steps and manual clock changes.
    """

    def __init__(self, start: datetime | None = None, mono: float = 1000.0) -> None:
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = float(mono)

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """A set ``event`` ends the wait at once; otherwise time advances by ``seconds``."""
        if event.is_set():
            event.clear()
            return True
        self.sleep(seconds)
        return False

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (may be negative); monotonic time is untouched."""
        self._wall += timedelta(seconds=seconds)


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 time; naive times are taken as UTC; ``Z`` is accepted.

    :raises ValueError: when ``text`` is not ISO-8601.
    """
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """Format a UTC ``datetime`` as ``YYYY-MM-DDTHH:MM:SSZ`` (``None`` stays ``None``)."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(dt: datetime) -> str:
    """Format a UTC ``datetime`` with milliseconds: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_zone() -> "tzinfo":
    """The zone a CLI started by ccci prints local clock times in: ``$TZ`` when it names an
    IANA zone (read at each call, so a test or a service unit can set it), else this
    host's zone (its current UTC offset). Agent CLIs run on ccci's host with ccci's
    environment, so their "local" is ccci's."""
    import os
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("TZ", "").strip().lstrip(":")
    if name:
        if name.upper() in ("UTC", "GMT", "Z", "UTC0"):
            return UTC
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or UTC
