"""Notify a person: pages through Apprise URLs (ntfy, Slack, Telegram, Discord, e-mail,
Matrix...), a shell command and/or a webhook (JSON POST).

Configured in ``ccci.toml``::

    [notify]
    urls = ["ntfys://ntfy.sh/my-fleet-topic", "json://127.0.0.1:9000/ccci"]  # Apprise URLs
    command = ["notify-send", "ccci"]      # argv; the event JSON arrives on stdin
    webhook = "https://hooks.example/ccci" # JSON POST of the event
    events = ["escalation", "needs_input", "usage_limit", "breaker_open",
              "phase_complete", "sequence_complete", "watcher_restarted"]
    timeout = 5                # s per delivery attempt (connect and read)
    dedup_window = 3600        # s: the same page for the same agent and reason is sent once
    max_per_hour = 10          # pages per rolling hour; the rest are counted into the next page
    quiet_hours = "22:00-07:00" # pages held until the end, then sent as one page
    quiet_except = []          # reasons that page even in quiet hours (e.g. ["escalation"])
    digest = "08:00"           # one page a day summarising the last 24 h of events
    timezone = "UTC"           # zone of quiet_hours and digest (IANA name)

Reasons worth a page (:func:`page_for`): ``needs_input`` (the escalation of an
unanswered dialog, with the dialog's text and the lines that answer it; one per dialog:
its de-duplication key is the time the dialog was first seen, so a new dialog after an
answered one pages again), ``usage_limit``
(with the reset time), ``escalation`` (the first, and the final one when the automatic
retries are used up; ``escalation_repeated`` never pages), ``breaker_open``,
``phase_complete``, ``sequence_complete`` and ``watcher_restarted`` (this watcher started
while the previous one never reached ``watcher_stopped``: it was killed, e.g. by the OOM
killer or systemd's watchdog, or crashed, and a service manager or a person started it
again; "by systemd" when ``$INVOCATION_ID`` is set, as systemd sets it for a unit).

How an unclean exit is known: ``ccci_configure`` (once per watcher, under the fleet lock)
finds the persisted ``running`` mark the previous watcher set, and sets its own;
``watcher_stopped`` clears it. The watcher logs ``watcher_started`` before it configures
its plugins, so the page goes out on a ``watcher_restarted`` event this plugin emits at
the first tick (or with a ``watcher_started`` seen after configuring).

Delivery is off the tick's critical path: pages, commands and webhooks go to one worker
thread through a bounded queue; every attempt is bounded by ``timeout``; a failure
becomes a ``notify_failed`` event (emitted on the tick's thread at the next tick). The
command is run as an argv list (never through a shell). Secrets are never sent or
logged: event text is already redacted by the runner, and a URL is only ever shown in
Apprise's privacy form with its path and query hidden.

De-duplication, the rate limit, quiet hours and the digest apply to the Apprise pages;
the command and the webhook get every event of ``events`` as before.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import shlex
import subprocess
import threading
import urllib.parse
import urllib.request
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.stash import StashKey

UTC = timezone.utc
#: reasons that page by default (the names :func:`page_for` gives)
DEFAULT_EVENTS = ("escalation", "needs_input", "usage_limit", "breaker_open", "phase_complete",
                  "sequence_complete", "watcher_restarted")
#: event kinds the command and webhook receive by default (as before Apprise URLs)
DEFAULT_HOOK_EVENTS = ("escalation", "breaker_open", "phase_complete", "sequence_complete")
KNOWN_KEYS = {"urls", "command", "webhook", "events", "timeout", "dedup_window", "max_per_hour", "quiet_hours",
              "quiet_except", "digest", "timezone"}
QUEUE_MAX = 100  #: deliveries waiting for the worker; more are dropped and counted as failures
DIALOG_LINES = 14  #: lines of a dialog's screen text put into a needs_input page

SETTINGS = StashKey[dict]("settings")  #: the parsed ``[notify]`` table and the fleet name
RUNTIME = StashKey[object]("runtime")  #: the :class:`Notifier` of this watcher
#: ``{"pid": int, "at": ISO UTC}`` of the watcher that started and has not stopped yet
RUNNING = StashKey[dict]("running", persist=True)

_LIVE: "weakref.WeakSet[Deliverer]" = weakref.WeakSet()


# =========================================================================== settings


def _fail(path: Path | str, key: str, msg: str) -> Exception:
    from ccci.config import ConfigError

    return ConfigError(f"{path}: notify.{key}: {msg}")


def _clock(text: Any, path: Path | str, key: str) -> dtime:
    try:
        hh, mm = str(text).strip().split(":")
        return dtime(int(hh), int(mm))
    except (ValueError, TypeError):
        raise _fail(path, key, f"{text!r} is not a time of day; use HH:MM, e.g. \"22:00\"") from None


def url_label(url: str, index: int) -> str:
    """How a URL is shown in events and errors: ``urls[i] scheme://host`` with Apprise's
    privacy masking of credentials in the host part, and the path and query hidden (they
    often hold tokens: Slack, Discord, ntfy topics).

    :param url: the configured Apprise URL.
    :param index: its position in ``urls``.
    :returns: a string safe to log.
    """
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        shown = plugin.url(privacy=True) if plugin else ""
    except Exception:  # noqa: BLE001 - a label must never fail
        shown = ""
    netloc = urllib.parse.urlsplit(shown).netloc if shown else ""
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"urls[{index}] {scheme}://{netloc or '…'}/…"


def url_secrets(url: str) -> list[str]:
    """Fragments of ``url`` that may be secret (user, password, host, path segments and
    query values of 6 characters or more, and the URL itself), longest first: they are
    replaced by ``***`` in any text a delivery failure produces."""
    parts = urllib.parse.urlsplit(url)
    out = {url, parts.password or "", parts.username or "", parts.netloc}
    out |= {seg for seg in parts.path.split("/")}
    out |= {v for _, v in urllib.parse.parse_qsl(parts.query)}
    if "://" in url:  # hosts that are tokens (tgram://BOTTOKEN/...)
        out.add(url.split("://", 1)[1].split("/", 1)[0])
    return sorted((s for s in out if len(s) >= 6), key=len, reverse=True)


def validate(raw: Any, path: Path | str) -> dict:
    """Check the ``[notify]`` table and return it with defaults filled in.

    :param raw: the table as read from TOML.
    :param path: the config file (named in errors).
    :returns: a dict with every key of :data:`KNOWN_KEYS` (``urls`` as a list).
    :raises ccci.config.ConfigError: one line naming the file, ``notify.<key>`` and the
        fix; a URL Apprise cannot parse is named by its index and scheme only (never its
        secrets).
    """
    if not isinstance(raw, dict):
        raise _fail(path, "", "expected a table [notify]")
    for key in raw:
        if key not in KNOWN_KEYS:
            raise _fail(path, key, f"unknown key; known: {', '.join(sorted(KNOWN_KEYS))}")
    out = dict(raw)
    urls = raw.get("urls", [])
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _fail(path, "urls", "expected a list of Apprise URL strings, e.g. [\"ntfys://ntfy.sh/my-topic\"]")
    if urls:
        try:
            import apprise
        except ImportError:  # pragma: no cover - a declared dependency
            raise _fail(path, "urls", "the apprise package is not installed; pip install apprise") from None
        for i, url in enumerate(urls):
            if apprise.Apprise.instantiate(url) is None:
                scheme = url.split("://", 1)[0] if "://" in url else url[:8] + "…"
                raise _fail(path, f"urls[{i}]", f"Apprise cannot parse this {scheme!r} URL; fix its scheme and "
                            "format (https://github.com/caronc/apprise/wiki) or remove it")
    out["urls"] = list(urls)
    for key, default, low in (("timeout", 5.0, 0.1), ("dedup_window", 3600.0, 0.0), ("max_per_hour", 10, 1)):
        val = raw.get(key, default)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val < low:
            raise _fail(path, key, f"{val!r} is not allowed; use a number >= {low}")
        out[key] = val
    for key in ("events", "quiet_except"):
        val = raw.get(key, list(DEFAULT_EVENTS) if key == "events" else [])
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise _fail(path, key, f"expected a list of reasons, e.g. {list(DEFAULT_EVENTS[:2])}")
        out[key] = val
    out["_events_given"] = "events" in raw
    zone = raw.get("timezone", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(str(zone))
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError
        raise _fail(path, "timezone", f"{zone!r} is not a known time zone; use an IANA name, e.g. \"Europe/Paris\"") from None
    out["timezone"] = str(zone)
    quiet = raw.get("quiet_hours", "")
    if quiet:
        if not isinstance(quiet, str) or quiet.count("-") != 1:
            raise _fail(path, "quiet_hours", f"{quiet!r} is not a range; use \"HH:MM-HH:MM\", e.g. \"22:00-07:00\"")
        a, b = quiet.split("-")
        if _clock(a, path, "quiet_hours") == _clock(b, path, "quiet_hours"):
            raise _fail(path, "quiet_hours", f"{quiet!r} is empty; give a start and an end that differ")
    out["quiet_hours"] = quiet or ""
    digest = raw.get("digest", "")
    if digest:
        _clock(digest, path, "digest")
    out["digest"] = digest or ""
    return out


# =========================================================================== pages


@dataclass
class Page:
    """One message for a person.

    :param reason: ``needs_input``, ``usage_limit``, ``escalation``, ``breaker_open``,
        ``phase_complete``, ``sequence_complete``, ``watcher_restarted``, or ``digest``,
        ``quiet_hours`` (a summary page).
    :param agent: the agent concerned, or ``None``.
    :param title: one line.
    :param body: the text (several lines).
    :param key: the de-duplication key (default ``reason``).
    """

    reason: str
    agent: str | None
    title: str
    body: str
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.reason


def dialog_text(screen: str, limit: int = DIALOG_LINES) -> str:
    """The last ``limit`` lines of a screen that carry text (blank lines and lines made
    only of box-drawing characters dropped): where a CLI draws its dialog."""
    lines = [ln.rstrip() for ln in screen.splitlines()]
    keep = [ln for ln in lines if ln.strip() and any(c.isalnum() for c in ln)]
    return "\n".join(keep[-limit:])


def answer_lines(fleet_root: Path | str, socket: str, session: str, agent: str) -> str:
    """The commands a person runs to answer an agent, one per line: ``ccci attach`` (the
    agent's pane on the fleet's tmux socket; the plain ``tmux attach`` it runs is given
    too, for a machine without ccci on the PATH), and ``ccci send`` (delivered once the
    dialog is answered and the agent is idle).

    :param fleet_root: the fleet directory (``--fleet``).
    :param socket: the fleet's tmux socket name (``-L``), ``""`` for the default server.
    :param session: the agent's tmux session name.
    :param agent: the agent's name.
    :returns: three lines, every argument shell-quoted.
    """
    fleet = shlex.quote(str(fleet_root))
    tmux = f"tmux -L {shlex.quote(socket)}" if socket else "tmux"
    return (f"Answer it: ccci --fleet {fleet} attach {shlex.quote(agent)}   (detach: C-b d)\n"
            f"  (the same: {tmux} attach -t {shlex.quote(session)})\n"
            f"Then tell it: ccci --fleet {fleet} send {shlex.quote(agent)} \"...\"")


def page_for(event: Any, fleet: str, screen: Callable[[str], str], answer: Callable[[str], str],
             restarted: bool = False) -> Page | None:
    """The page an event is worth, or ``None``.

    :param event: a :class:`ccci.model.Event`.
    :param fleet: the fleet name (in every title).
    :param screen: ``agent -> screen text`` (the dialog of a needs_input page).
    :param answer: ``agent -> the lines that answer it`` (:func:`answer_lines`).
    :param restarted: for a ``watcher_started`` event: the previous watcher exited uncleanly.
    """
    kind, agent, data = event.kind, event.agent, event.data or {}
    who = f" {agent}" if agent else ""
    if kind == "escalation":
        final = bool(data.get("final"))
        if data.get("check") == "needs_input" and agent:
            text = dialog_text(screen(agent)) or str(data.get("evidence", ""))
            return Page("needs_input", agent, f"[{fleet}]{who} needs input",
                        f"{event.message}\n\n{text}\n\n{answer(agent)}",
                        key=f"needs_input:{data.get('since') or ''}" + (":final" if final else ""))
        return Page("escalation", agent, f"[{fleet}]{who} escalated" + (" (retries used up)" if final else ""),
                    event.message + (f"\n\n{answer(agent)}" if agent else ""), key="escalation" + (":final" if final else ""))
    if kind == "finding" and data.get("check") == "usage_limit":
        reset = data.get("reset_at") or "an unknown time"
        return Page("usage_limit", agent, f"[{fleet}]{who} hit its usage limit",
                    f"{event.message}\nResets at {reset} (UTC); ccci sends 'continue' after the reset by itself.")
    if kind in ("breaker_open", "phase_complete", "sequence_complete"):
        title = {"breaker_open": "fleet breaker open", "phase_complete": "phase complete",
                 "sequence_complete": "all phases complete"}[kind]
        return Page(kind, agent, f"[{fleet}] {title}", event.message,
                    key=f"{kind}:{data.get('phase', '')}")
    if (kind == "watcher_started" and restarted) or kind == "watcher_restarted":
        how = " by systemd" if os.environ.get("INVOCATION_ID") else ""
        return Page("watcher_restarted", None, f"[{fleet}] watcher restarted after an unclean exit",
                    f"The previous watcher never stopped cleanly (killed, crashed or out of memory); "
                    f"a new one started{how}: {event.message}. Agents still running were adopted.")
    return None


# =========================================================================== policy


class Pager:
    """The paging policy, on wall time given by the caller (UTC; a fake clock in tests).

    :param settings: the validated ``[notify]`` table (:func:`validate`).

    :meth:`offer` takes a page and returns what to send now; :meth:`due` returns what
    becomes due with time (pages held by quiet hours at their end; the daily digest);
    :meth:`record` keeps the events of the last 24 h for the digest.
    """

    def __init__(self, settings: dict, fleet: str = "") -> None:
        from zoneinfo import ZoneInfo

        self.fleet = fleet
        self.zone = ZoneInfo(settings.get("timezone", "UTC"))
        self.dedup_window = float(settings.get("dedup_window", 3600))
        self.max_per_hour = int(settings.get("max_per_hour", 10))
        self.quiet_except = set(settings.get("quiet_except", ()))
        q = settings.get("quiet_hours", "")
        self.quiet = tuple(_clock(x, "", "quiet_hours") for x in q.split("-")) if q else None
        self.digest_at = _clock(settings["digest"], "", "digest") if settings.get("digest") else None
        self.last_sent: dict[tuple, datetime] = {}  #: (agent, key) -> when last paged
        self.sent: deque[datetime] = deque()  #: pages sent in the last hour
        self.overflow: list[Page] = []  #: pages held by the rate limit, counted into the next page
        self.held: list[Page] = []  #: pages held by quiet hours
        self.events: deque[tuple[datetime, str, str | None, str]] = deque(maxlen=20000)
        self.stats: Counter = Counter()  #: suppressed, rate_limited, held, sent, failed (since the last digest)
        self.next_digest: datetime | None = None

    # ------------------------------------------------------------------ clock helpers
    def in_quiet(self, now: datetime) -> bool:
        """Whether ``now`` (UTC) falls in quiet hours (in the configured zone)."""
        if not self.quiet:
            return False
        t = now.astimezone(self.zone).time().replace(second=0, microsecond=0)
        a, b = self.quiet
        return a <= t < b if a < b else (t >= a or t < b)

    def _next_digest(self, now: datetime) -> datetime:
        local = now.astimezone(self.zone)
        at = datetime.combine(local.date(), self.digest_at, tzinfo=self.zone)
        if at <= local:
            at = datetime.combine(local.date() + timedelta(days=1), self.digest_at, tzinfo=self.zone)
        return at.astimezone(UTC)

    # ------------------------------------------------------------------ input
    def record(self, event: Any) -> None:
        """Keep ``event`` for the digest (kind, agent, message; 24 h)."""
        self.events.append((event.at or datetime.now(UTC), event.kind, event.agent, event.message[:160]))

    def offer(self, page: Page, now: datetime) -> list[Page]:
        """Apply de-duplication, quiet hours and the rate limit to ``page``.

        :returns: the pages to send now (zero or one).
        """
        k = (page.agent, page.key)
        last = self.last_sent.get(k)
        if last is not None and (now - last).total_seconds() < self.dedup_window:
            self.stats["suppressed"] += 1
            return []
        self.last_sent[k] = now
        if self.in_quiet(now) and page.reason not in self.quiet_except:
            self.held.append(page)
            self.stats["held"] += 1
            return []
        return self._rate(page, now)

    def _rate(self, page: Page, now: datetime) -> list[Page]:
        while self.sent and (now - self.sent[0]).total_seconds() >= 3600:
            self.sent.popleft()
        if len(self.sent) >= self.max_per_hour:
            self.overflow.append(page)
            self.stats["rate_limited"] += 1
            return []
        self.sent.append(now)
        self.stats["sent"] += 1
        if self.overflow:
            more = self.overflow
            self.overflow = []
            page = Page(page.reason, page.agent, page.title, page.body + "\n\n" + _summary(
                f"{len(more)} more page(s) held by the rate limit (max_per_hour {self.max_per_hour})", more),
                key=page.key)
        return [page]

    def due(self, now: datetime) -> list[Page]:
        """Pages that became due by ``now``: the pages held by quiet hours (one page, once
        quiet hours are over) and the daily digest."""
        out: list[Page] = []
        if self.held and not self.in_quiet(now):
            held, self.held = self.held, []
            a, b = self.quiet or (None, None)
            out += self._rate(Page("quiet_hours", None, f"[{self.fleet}] {len(held)} page(s) held during quiet hours",
                                   _summary(f"held from {a:%H:%M} to {b:%H:%M} ({self.zone})", held, full=True)), now)
        if self.digest_at is not None:
            if self.next_digest is None:
                self.next_digest = self._next_digest(now)
            elif now >= self.next_digest:
                self.next_digest = self._next_digest(now)
                out.append(self.digest(now))
        return out

    def digest(self, now: datetime) -> Page:
        """The digest page: the last 24 h of events by kind and agent, and what the
        policy did with pages (sent, suppressed as repeats, held, rate-limited, failed)."""
        since = now - timedelta(hours=24)
        while self.events and self.events[0][0] < since:
            self.events.popleft()
        evs = list(self.events)
        kinds = Counter(k for _, k, _, _ in evs)
        lines = [f"{len(evs)} events since {iso(since)}:"]
        lines += [f"  {n} {k}" for k, n in kinds.most_common(12)]
        notable = [(at, k, a, m) for at, k, a, m in evs
                   if k in ("escalation", "breaker_open", "phase_complete", "sequence_complete", "notify_failed")]
        if notable:
            lines.append("notable:")
            lines += [f"  {iso(at)} {k}{f' [{a}]' if a else ''} {m}" for at, k, a, m in notable[-15:]]
        s = self.stats
        lines.append(f"pages: {s['sent']} sent, {s['suppressed']} repeats suppressed, {s['held']} held in quiet hours, "
                     f"{s['rate_limited']} rate-limited, {s['failed']} failed deliveries")
        if self.overflow:
            more, self.overflow = self.overflow, []
            lines.append(_summary(f"{len(more)} page(s) still held by the rate limit", more))
        self.stats = Counter()
        return Page("digest", None, f"[{self.fleet}] daily digest", "\n".join(lines))


def _summary(head: str, pages: list[Page], full: bool = False) -> str:
    lines = [head + ":"]
    for p in pages[:20]:
        lines.append(f"- {p.title}" + (f"\n  {p.body[:600].replace(chr(10), chr(10) + '  ')}" if full else ""))
    if len(pages) > 20:
        lines.append(f"- ... and {len(pages) - 20} more")
    return "\n".join(lines)


# =========================================================================== delivery


class Deliverer:
    """One daemon thread delivering jobs from a bounded queue, so a receiver that hangs
    or refuses never blocks the tick.

    :param timeout: seconds allowed per attempt (each job bounds itself with it).

    A job is a callable returning ``None`` on success or a failure description (already
    free of secrets); failures are collected for :meth:`failures`.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.jobs: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._failures: queue.Queue = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ccci-notify", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, what: str, job: Callable[[], str | None]) -> bool:
        """Queue ``job`` (described by ``what``, safe to log); ``False`` (and a failure)
        when the queue is full."""
        with self._lock:
            self._busy += 1
        try:
            self.jobs.put_nowait((what, job))
            return True
        except queue.Full:
            with self._lock:
                self._busy -= 1
            self._failures.put((what, f"queue full ({QUEUE_MAX} deliveries waiting): dropped"))
            return False

    def _run(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            what, job = item
            try:
                err = job()
            except Exception as exc:  # noqa: BLE001 - a notifier must never stop
                err = f"{type(exc).__name__}: {str(exc)[:200]}"
            if err:
                self._failures.put((what, err))
            with self._lock:
                self._busy -= 1

    def failures(self) -> list[tuple[str, str]]:
        """Failures since the last call: ``(what, why)`` pairs."""
        out = []
        while True:
            try:
                out.append(self._failures.get_nowait())
            except queue.Empty:
                return out

    def idle(self) -> bool:
        """Whether every queued job is done."""
        with self._lock:
            return self._busy == 0

    def stop(self, wait: float = 0.0) -> None:
        """Stop the thread after the queued jobs, waiting at most ``wait`` seconds."""
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(wait)


def drain(timeout: float = 10.0) -> bool:
    """Wait until every live notifier's queue is delivered (tests; real seconds).

    :returns: ``True`` when all are idle within ``timeout``.
    """
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(d.idle() for d in list(_LIVE)):
            return True
        time.sleep(0.02)
    return False


def _apprise_job(plugin: Any, label: str, secrets: list[str], page: Page) -> Callable[[], str | None]:
    def job() -> str | None:
        import apprise

        with apprise.LogCapture(level=logging.WARNING) as log:
            ok = plugin.notify(body=page.body, title=page.title)
            detail = log.getvalue().strip().replace("\n", "; ")
        if ok:
            return None
        detail = re.sub(r"\d{4}-\d\d-\d\d [\d:,.]+ - \w+ - ", "", detail)  # Apprise's log prefix
        for s in secrets:
            detail = detail.replace(s, "***")
        return detail[-300:] or "delivery failed"
    return job


class Notifier:
    """The runtime of the notify plugin in one watcher: settings, Apprise plugins, the
    :class:`Pager` and the :class:`Deliverer`."""

    def __init__(self, settings: dict, fleet: str) -> None:
        self.settings = settings
        self.fleet = fleet
        self.timeout = float(settings.get("timeout", 5))
        self.pager = Pager(settings, fleet)
        self.worker = Deliverer(self.timeout)
        self.targets: list[tuple[Any, str, list[str]]] = []
        self.redactor: Any = None  #: a :class:`ccci.redact.Redactor` (set by ``ccci_configure``)
        #: the ``running`` mark of a previous watcher that never stopped (not yet paged), or ``None``
        self.unclean: dict | None = None
        if settings.get("urls"):
            import apprise

            for i, url in enumerate(settings["urls"]):
                plugin = apprise.Apprise.instantiate(url)
                if plugin is None:
                    continue
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
                if "cto" not in query:
                    plugin.socket_connect_timeout = self.timeout
                if "rto" not in query:
                    plugin.socket_read_timeout = self.timeout
                self.targets.append((plugin, url_label(url, i), url_secrets(url)))

    def send(self, page: Page) -> None:
        """Queue ``page`` for every URL."""
        for plugin, label, secrets in self.targets:
            self.worker.submit(label, _apprise_job(plugin, label, secrets, page))


# =========================================================================== hooks


@hookimpl
def ccci_configure(config, stash):
    raw = config.raw.get("notify", {})
    old = stash.get(RUNTIME)
    if old is not None:
        old.worker.stop()
    if not isinstance(raw, dict) or not raw:
        stash[SETTINGS] = {}
        stash.pop(RUNTIME, None)
        return
    settings = {**validate(raw, config.root / "ccci.toml"), "fleet": config.name,
                "root": str(config.root), "socket": config.tmux_socket,
                "sessions": {a.name: config.session_name(a.name) for a in config.agents}}
    stash[SETTINGS] = settings
    from ccci.redact import Redactor, collect_secrets

    rt = Notifier(settings, config.name)
    rt.redactor = Redactor(collect_secrets(config))
    if old is None:  # this watcher's first configure: did the previous one stop cleanly?
        prev = stash.get(RUNNING)
        rt.unclean = prev if isinstance(prev, dict) else ({} if prev else None)
        stash[RUNNING] = {"pid": os.getpid(), "at": iso(datetime.now(UTC))}
    stash[RUNTIME] = rt


@hookimpl
def ccci_unconfigure(stash):
    rt = stash.get(RUNTIME)
    if rt is not None:
        for page in rt.pager.held:  # held by quiet hours: not lost silently
            rt.send(page)
        rt.worker.stop(wait=rt.timeout)


def payload(event, fleet: str = "") -> dict:
    """The JSON object the command and webhook get: ``fleet``, ``kind``, ``agent``,
    ``message``, ``at`` (UTC), ``data``."""
    return {"fleet": fleet, "kind": event.kind, "agent": event.agent,
            "message": event.message, "at": iso(event.at), "data": event.data}


@hookimpl
def ccci_report_event(event, stash, services):
    s = stash.get(SETTINGS) or {}
    rt = stash.get(RUNTIME)
    if not s or rt is None:
        return
    restarted = False
    if event.kind == "watcher_started":
        restarted = rt.unclean is not None
        rt.unclean = None  # paged with this event
        stash[RUNNING] = {"pid": (event.data or {}).get("pid"), "at": iso(event.at)}
    elif event.kind == "watcher_stopped":
        stash.pop(RUNNING, None)
    rt.pager.record(event)
    if event.kind in tuple(s.get("events", DEFAULT_HOOK_EVENTS) if s.get("_events_given") else DEFAULT_HOOK_EVENTS):
        _hooks(rt, s, event)
    if not rt.targets:
        return

    def screen(agent: str) -> str:
        try:
            return services.agent(agent).screen or ""
        except Exception:  # noqa: BLE001 - an agent unknown to this watcher
            return ""

    def answer(agent: str) -> str:
        return answer_lines(s["root"], s["socket"], s["sessions"].get(agent, f"ccci-{s['fleet']}-{agent}"), agent)

    page = page_for(event, s["fleet"], screen, answer, restarted=restarted)
    if page is None or page.reason not in s.get("events", DEFAULT_EVENTS):
        return
    page.body = rt.redactor.text(page.body)  # the screen text is not redacted yet
    for p in rt.pager.offer(page, event.at or services.now()):
        rt.send(p)


def _hooks(rt: Notifier, s: dict, event) -> None:
    body = json.dumps(payload(event, s.get("fleet", "")), default=str).encode()
    timeout = rt.timeout
    cmd = s.get("command")
    if cmd:
        argv = [cmd] if isinstance(cmd, str) else [str(c) for c in cmd]

        def run_command() -> str | None:
            try:
                subprocess.run(argv, input=body, timeout=timeout, capture_output=True, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{type(exc).__name__}: {str(exc)[:160]}"
            return None
        rt.worker.submit(f"command {argv[0]}", run_command)
    url = s.get("webhook")
    if url:
        secrets = url_secrets(str(url))

        def post() -> str | None:
            req = urllib.request.Request(str(url), data=body, headers={"Content-Type": "application/json"}, method="POST")
            try:
                urllib.request.urlopen(req, timeout=timeout).close()
            except Exception as exc:  # noqa: BLE001 - notification is best effort
                detail = f"{type(exc).__name__}: {str(exc)[:160]}"
                for sec in secrets:
                    detail = detail.replace(sec, "***")
                return detail
            return None
        rt.worker.submit("webhook", post)


@hookimpl
def ccci_tick_start(now, stash, services):
    rt = stash.get(RUNTIME)
    if rt is None:
        return
    if rt.unclean is not None:  # the watcher_started event came before ccci_configure
        prev, rt.unclean = rt.unclean, None
        how = " by systemd" if os.environ.get("INVOCATION_ID") else ""
        services.emit("watcher_restarted", f"watcher pid {os.getpid()} started{how} after an unclean exit of the "
                      f"previous one (pid {prev.get('pid', '?')}, running since {prev.get('at', '?')})",
                      previous_pid=prev.get("pid"), previous_since=prev.get("at"), systemd=bool(how))
    for page in rt.pager.due(now):
        rt.send(page)
    for what, why in rt.worker.failures():
        rt.pager.stats["failed"] += 1
        services.emit("notify_failed", f"notification to {what} failed: {why}", target=what)
